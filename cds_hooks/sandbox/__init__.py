"""The sandbox: play the EHR against this service without an EHR.

* :mod:`cds_hooks.sandbox.requests_builder` builds a hook request from a patient Bundle and the service's
  discovery entry, resolving prefetch locally the way the reference CDS Hooks sandbox does (checklist §12);
* :mod:`cds_hooks.sandbox.cli` is ``cramp-cds sandbox`` (also ``python -m cds_hooks.sandbox``);
* :mod:`cds_hooks.sandbox.web` is the ``/sandbox`` page and its small JSON API.
"""
