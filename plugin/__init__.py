"""The leg-cramp review engine: FHIR R4 data -> evidence-graded findings -> one CDS Hooks card.

Pure and deterministic: no HTTP, no Flask, no clock (callers pass `now`).
"""
from plugin.cards import Card, build_card
from plugin.knowledge import Knowledge, KnowledgeError, default_knowledge, load_knowledge
from plugin.review import deceased_of, facts_of, review
from plugin.rules import Finding, Review, ReviewOptions

__all__ = [
    "Card", "Finding", "Knowledge", "KnowledgeError", "Review", "ReviewOptions",
    "build_card", "deceased_of", "default_knowledge", "facts_of", "load_knowledge", "review",
]
