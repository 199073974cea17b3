"""Negation and context for the short texts a record carries (problem-list displays, `code.text`).

The semantics are NegEx's and ConText's (Chapman et al. 2001, Harkema et al. 2009), as medspaCy's `ConText`
implements them: a *trigger* phrase carries a category and a direction, and modifies a concept only inside its
*scope* — the next (forward) or previous (backward) few words, cut short by a *terminator* ("but", "however",
a full stop or semicolon). *Pseudo-triggers* ("not otherwise specified", "gram negative") look like triggers and
are not. So "Type 2 diabetes mellitus without complication" keeps its diabetes ("without" scopes only
"complication"), and "R/O peripheral arterial disease" does not count.

Why not medspaCy or negspacy themselves: both need spaCy (hundreds of MB of dependencies, about a second of
start-up per process and a pipeline per text), while our texts are display strings of a few words read inside a
hook call's latency budget, and the trigger lists would still have to be ours. The phrase lists below are the
project's own, written for those semantics.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

NEGATED, POSSIBLE, HISTORICAL, FAMILY, HYPOTHETICAL = "negated", "possible", "historical", "family", "hypothetical"
MAX_SCOPE_WORDS = 6  # NegEx's window: a trigger reaches at most this many words

_FORWARD, _BACKWARD, _BOTH = "forward", "backward", "both"

# (phrase, category, direction). Longer phrases win over the shorter ones they contain ("no history of" over
# "history of", "family history of" over "history of", "not ruled out" over "not").
_TRIGGERS: tuple[tuple[str, str, str], ...] = (
    # absent
    *((p, NEGATED, _FORWARD) for p in (
        "no", "not", "denies", "denied", "denying", "without", "negative for", "no evidence of", "no sign of",
        "no signs of", "no history of", "no h/o", "no known", "free of", "absence of", "never had", "never",
        "ruled out", "rules out", "excluded")),
    *((p, NEGATED, _BACKWARD) for p in (
        "ruled out", "was ruled out", "has been ruled out", "is ruled out", "excluded", "absent", "not present",
        "not seen", "not found", "resolved", "unlikely")),
    ("negative", NEGATED, _BOTH),
    # uncertain
    *((p, POSSIBLE, _FORWARD) for p in (
        "possible", "possibly", "suspected", "suspect", "suspicion of", "suspicious for", "questionable",
        "question of", "query", "r/o", "r / o", "rule out", "rule-out", "to rule out", "cannot rule out",
        "cannot exclude", "concern for", "concerning for", "evaluate for", "evaluation for", "evaluation of",
        "work-up for", "workup for", "not ruled out")),
    *((p, POSSIBLE, _BACKWARD) for p in ("suspected", "possible", "questionable", "not ruled out", "?")),
    # in the past (counts only where the condition persists: see the knowledge's "episodic" flag)
    *((p, HISTORICAL, _FORWARD) for p in (
        "history of", "hx of", "h/o", "past history of", "past medical history of", "previous", "prior",
        "former", "old", "resolved")),
    *((p, HISTORICAL, _BACKWARD) for p in ("in the past", "in remote past", "remote")),
    # someone else's
    *((p, FAMILY, _FORWARD) for p in (
        "family history of", "family history", "family hx of", "family hx", "fh of", "fh:", "fhx")),
    *((p, FAMILY, _BACKWARD) for p in (
        "in mother", "in father", "in sister", "in brother", "in sibling", "in family", "in the family")),
    # not (yet) a diagnosis
    *((p, HYPOTHETICAL, _FORWARD) for p in (
        "screening for", "screening", "screen for", "encounter for screening for", "risk of", "risk for",
        "at risk of", "at risk for", "high risk of", "high risk for", "risk factor for", "prevention of",
        "monitoring for")),
    *((p, HYPOTHETICAL, _BACKWARD) for p in ("screening", "screen", "risk")),
)
_PSEUDO = ("no increase", "no change", "not only", "not necessarily", "without difficulty", "gram negative",
           "rh negative", "not otherwise specified", "not elsewhere classified", "history of present illness",
           "no further")
_TERMINATORS = ("but", "however", "although", "though", "except", "apart from", "aside from", "which")
_PUNCTUATION_END = re.compile(r"[;\n]|\.(?![0-9])")
_PREFIX_NEGATION = re.compile(r"(?<![a-z0-9])non[\s-]?$")  # "non-diabetic": negates only the word it is fused to
_WORD = re.compile(r"[a-z0-9]+")


def _phrase_pattern(phrase: str) -> str:
    body = r"\s+".join(map(re.escape, phrase.split()))
    head = r"(?<![a-z0-9])" if phrase[0].isalnum() else ""
    tail = r"(?![a-z0-9])" if phrase[-1].isalnum() else ""
    return head + body + tail


def _alternation(phrases) -> re.Pattern:
    return re.compile("|".join(f"(?:{_phrase_pattern(p)})" for p in sorted(set(phrases), key=len, reverse=True)))


_ANY_TRIGGER = _alternation([p for p, _, _ in _TRIGGERS] + list(_PSEUDO) + list(_TERMINATORS))
_RULES: dict[str, list[tuple[str, str]]] = {}
for _phrase, _category, _direction in _TRIGGERS:
    _RULES.setdefault(" ".join(_phrase.split()), []).append((_category, _direction))
_PSEUDO_SET = {" ".join(p.split()) for p in _PSEUDO}
_TERMINATOR_SET = set(_TERMINATORS)


@dataclass(frozen=True)
class _Cue:
    category: str
    direction: str
    start: int
    end: int


@dataclass(frozen=True)
class TextContext:
    """The triggers and boundaries of one text; asks which categories modify a span of it."""
    text: str
    cues: tuple[_Cue, ...]
    boundaries: tuple[int, ...]  # terminator positions (start of the terminating word or mark)

    def categories(self, start: int, end: int) -> frozenset[str]:
        """The context categories that modify the concept at text[start:end] (empty: affirmed, current, own)."""
        found = set()
        if _PREFIX_NEGATION.search(self.text[:start]):
            found.add(NEGATED)
        for cue in self.cues:
            if cue.direction in (_FORWARD, _BOTH) and cue.end <= start and self._reaches(cue.end, start):
                found.add(cue.category)
            if cue.direction in (_BACKWARD, _BOTH) and cue.start >= end and self._reaches(end, cue.start):
                found.add(cue.category)
        return frozenset(found)

    def _reaches(self, left: int, right: int) -> bool:
        """Whether a trigger reaches across text[left:right]: no terminator and few enough words between."""
        if any(left <= b < right for b in self.boundaries):
            return False
        return len(_WORD.findall(self.text, left, right)) <= MAX_SCOPE_WORDS


@lru_cache(maxsize=20_000)
def analyse(text: str) -> TextContext:
    """Find the triggers of `text` once (texts repeat endlessly across records)."""
    lowered = text.lower()
    cues: list[_Cue] = []
    boundaries = [m.start() for m in _PUNCTUATION_END.finditer(lowered)]
    for m in _ANY_TRIGGER.finditer(lowered):
        phrase = " ".join(m.group(0).split())
        if phrase in _PSEUDO_SET:
            continue
        if phrase in _TERMINATOR_SET:
            boundaries.append(m.start())
            continue
        for category, direction in _RULES.get(phrase, ()):
            cues.append(_Cue(category, direction, m.start(), m.end()))
    return TextContext(lowered, tuple(cues), tuple(sorted(boundaries)))


def modifiers(text: str, start: int, end: int) -> frozenset[str]:
    """The ConText categories (negated, possible, historical, family, hypothetical) of text[start:end]."""
    return analyse(text).categories(start, end)
