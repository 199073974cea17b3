"""cramp-cds: the CDS Hooks 2.0 protocol and the tools around the leg-cramp review engine (``plugin``).

Folders: ``service`` (the CDS Hooks service), ``auth`` (client JWTs), ``fhir`` (the FHIR REST client),
``storage`` (feedback persistence), ``batch`` (chart review over many patients), ``sandbox`` (cards without
an EHR). ``app`` composes the deployable app; ``settings`` and ``cli`` serve all of them.
"""
