"""A finding in the batch report is exactly what the live card lists: same engine, same data, same answer.

For each sample patient Bundle: the batch review of the Bundle file, and of the same resources as Bulk ndjson
(one file per type, the streaming path), list the contributors that `build_card(review([bundle]))` lists.
"""
from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cds_hooks.batch.runner import RunConfig, run_review
from plugin import build_card, review
from plugin.fhir_read import flatten
from tests.conftest import SAMPLES

AS_OF = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
BUNDLES = sorted((SAMPLES / "patients").glob("*.json")) if (SAMPLES / "patients").is_dir() else []
TRIGGER = "leg-cramps-documented"


def card_contributors(bundle: dict) -> list[str]:
    card = build_card(review([bundle], now=AS_OF), hook="patient-view", trigger="any")
    return card.body["extension"]["org.cramp-cds.review"]["contributors"] if card else []


def as_ndjson(bundle: dict, folder: Path) -> Path:
    """The Bundle as a Bulk export would give it. Only for Bundles whose references survive without fullUrls."""
    by_type: dict[str, list[str]] = defaultdict(list)
    for resource, _ in flatten([bundle]):
        by_type[resource["resourceType"]].append(json.dumps(resource))
    folder.mkdir()
    for rtype, lines in by_type.items():
        (folder / f"{rtype}.000.ndjson").write_text("\n".join(lines) + "\n")
    return folder


def uses_urn_references(bundle: dict) -> bool:
    return "urn:uuid:" in json.dumps(bundle)


@pytest.mark.skipif(not BUNDLES, reason=f"no sample patient bundles in {SAMPLES / 'patients'} yet")
@pytest.mark.parametrize("path", BUNDLES, ids=[p.stem for p in BUNDLES])
def test_batch_findings_are_the_cards_contributors(path, tmp_path):
    bundle = json.loads(path.read_text())
    expected = card_contributors(bundle)
    inputs = [path]
    if not uses_urn_references(bundle):
        inputs.append(as_ndjson(bundle, tmp_path / "export"))
    for source in inputs:
        result = run_review([str(source)], RunConfig(as_of=AS_OF))
        assert len(result.reviewed) == 1, source
        found = [c for c in result.reviewed[0].contributor_ids if c != TRIGGER]
        assert sorted(found) == sorted(expected), source
        assert result.reviewed[0].review.findings == review([bundle], now=AS_OF).findings, source
