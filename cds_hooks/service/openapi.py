"""The OpenAPI 3.1 description of the service, served at ``GET /openapi.json`` (docs/api.md).

The document is the static file ``cds_hooks/service/openapi.json`` (package data); tests check it against the service
registry and fuzz the service with it (``tests/test_fuzz_schemathesis.py``). Only ``servers`` is filled in at
run time: from ``CRAMP_PUBLIC_BASE_URL`` when set, so clients behind a proxy see the URL they must call.
"""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def _document() -> dict:
    return json.loads(resources.files("cds_hooks.service").joinpath("openapi.json").read_text(encoding="utf-8"))


def openapi_document(public_base_url: str | None = None) -> dict:
    """The OpenAPI document; with ``public_base_url`` its ``servers`` names that URL."""
    document = _document()
    if not public_base_url:
        return document
    document = copy.copy(document)  # shallow: only the top-level "servers" member differs
    document["servers"] = [{"url": public_base_url, "description": "this deployment (CRAMP_PUBLIC_BASE_URL)"}]
    return document
