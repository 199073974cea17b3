"""cramp-cds: the CDS Hooks 2.0 protocol around the leg-cramp review engine (``plugin``).

Modules: ``app`` (Flask factory, request pipeline, routes), ``services`` (the registry discovery is built
from), ``validation`` (hook requests and feedback), ``prefetch`` (the prefetch pipeline), ``fhir_client``
(FHIR server fallback), ``hooks`` (one hook call end to end), ``store`` (SQLite feedback store),
``conformance`` (card checks), ``errors`` (typed errors → OperationOutcome), ``settings``, ``cli``, ``auth``.
"""
