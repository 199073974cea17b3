"""The FHIR fallback against a real misbehaving server on 127.0.0.1 (issue 13, item 5; checklist P7, R2).

One deadline covers connect, headers and the streamed body; answers are capped in bytes and the resource limit
is counted while pages arrive. Each failure is a 412 naming the key and the reason, or, for a supplementary
key, a review without it that the card names. The server drips, hangs or floods forever: without the deadline
and the caps these calls would never end (pytest-timeout would fail them).
"""
from __future__ import annotations

import resource

import pytest

from tests.service_fixtures.misbehaving_fhir import misbehaving_fhir
from tests.service_fixtures.support import TOKEN, hook_request, issue_diagnostics, make_client, post_hook


@pytest.fixture(scope="module")
def fhir():
    with misbehaving_fhir() as server:
        yield server


def call(tmp_path, base: str, env: dict | None = None):
    client = make_client(tmp_path, {"CRAMP_FHIR_BUDGET": "1", **(env or {})})
    return post_hook(client, hook_request(fhir_server=base, token=TOKEN, omit_prefetch=True))


def assert_412(response, key: str, *words: str) -> str:
    assert response.status_code == 412, response.get_data(as_text=True)
    diagnostics = issue_diagnostics(response)
    assert f"'{key}'" in diagnostics, diagnostics
    for word in words:
        assert word in diagnostics, diagnostics
    assert TOKEN not in diagnostics
    return diagnostics


@pytest.mark.parametrize("mode", ["drip", "drip-headers", "hung"])
def test_p7_a_dripping_or_hung_server_is_cut_at_the_deadline(tmp_path, fhir, mode):
    response = call(tmp_path, fhir.base(mode, "Observation"))
    diagnostics = assert_412(response, "observations")
    assert "budget of 1 s was exhausted" in diagnostics or "timed out" in diagnostics


def test_p7_a_dripping_supplementary_key_is_reviewed_without_and_the_call_answers(tmp_path, fhir):
    response = call(tmp_path, fhir.base("drip", "MedicationDispense"))
    assert response.status_code == 200 and response.get_json() == {"cards": []}  # no findings, but no 412


def test_p7_a_huge_answer_is_cut_at_the_size_limit_while_it_streams(tmp_path, fhir):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    response = call(tmp_path, fhir.base("huge", "Observation"),
                    {"CRAMP_FHIR_MAX_RESPONSE_BYTES": str(4 * 1024 * 1024), "CRAMP_FHIR_BUDGET": "30"})
    assert_412(response, "observations", "over the limit of 4194304 bytes")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 200 * 1024, "the answer was not held in memory beyond the limit"


def test_p7_an_answer_announcing_more_than_the_limit_is_refused_before_reading(tmp_path, fhir):
    response = call(tmp_path, fhir.base("huge-declared", "Observation"))
    assert_412(response, "observations", "300000000 bytes, over the limit of 33554432")


def test_p7_the_resource_limit_is_checked_while_pages_arrive(tmp_path, fhir):
    fhir.pages_served = 0
    response = call(tmp_path, fhir.base("pages", "Condition"),
                    {"CRAMP_MAX_PREFETCH_RESOURCES": "120", "CRAMP_FHIR_MAX_PAGES": "1000", "CRAMP_FHIR_BUDGET": "30"})
    assert_412(response, "conditions", "more than 120 resources")
    assert fhir.pages_served == 3, "paging stopped at the page that crossed the limit"


def test_p7_an_unreachable_server_is_412(tmp_path, fhir):
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert_412(call(tmp_path, f"http://127.0.0.1:{port}/r4"), "patient", "could not be reached")
