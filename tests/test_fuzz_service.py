"""Property-based fuzzing of the HTTP service with hypothesis: malformed and adversarial requests.

What is thrown at it: arbitrary JSON bodies, bytes that are not UTF-8 or not JSON, wrong content types and
methods, a wrong type for every request and context field, deep and huge JSON, NaN/Infinity in JSON text,
FHIR-ish prefetch and draft orders whose fields hold anything (codings that are numbers, impossible dates such
as ``2024-13-45``, huge numbers, nested Bundles of garbage), adversarial feedback, long strings and unicode, and
a ``fhirServer`` that is unreachable on loopback or a mocked server answering garbage.

Properties of every response (:func:`check`): never 5xx; answered within ``MAX_SECONDS``; every 4xx is an
OperationOutcome as documented in ``cds_hooks/service/openapi.json``; no body ever holds a stack trace or a Python
exception class name (unless the client sent that word itself); every 200 from a service is ``{"cards": [...]}``
with cards valid per checklist §6 (summary under 140 characters, indicator info or warning).

The network: ``responses`` intercepts every outgoing request. A mocked FHIR server lives at ``FHIR_MOCK``;
anything else fails to connect, except one loopback port (``closed_port``) that is bound but never listening,
so a real connection to it is refused at once. Budgets are bounded and derandomized (reproducible in CI).
"""
from __future__ import annotations

import builtins
import copy
import json
import re
import socket
import sqlite3
import time
from datetime import date, timedelta, timezone
from urllib.parse import quote

import jsonschema_rs
import pytest
import requests
import responses
import werkzeug.exceptions
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import cds_hooks.service.errors
from cds_hooks.app import create_app
from cds_hooks.service.openapi import openapi_document
from tests.card_checks import assert_valid_card
from tests.service_fixtures.support import (
    FUROSEMIDE,
    HYDROCHLOROTHIAZIDE,
    KEYS,
    LOINC,
    QUININE,
    RXNORM,
    SERVICE_FOR,
    cramps,
    draft_order,
    full_prefetch,
    hook_request,
    make_settings,
    med_request,
    patient,
    potassium,
    searchset,
)

pytestmark = pytest.mark.slow

MAX_SECONDS = 2.0
HOOKS = tuple(SERVICE_FOR)
SERVICE_PATHS = tuple(f"/cds-services/{sid}" for sid in SERVICE_FOR.values())
FEEDBACK_PATHS = tuple(p + "/feedback" for p in SERVICE_PATHS)
FHIR_MOCK = "https://fhir.fuzz.example/r4"
FUZZ = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
SMALL = settings(FUZZ, max_examples=50)


# --- the properties --------------------------------------------------------------------------------------------

def _validator(name: str) -> jsonschema_rs.Draft202012Validator:
    """The OpenAPI document's component schema ``name`` as a standalone validator (formats asserted)."""
    document = openapi_document()

    def local(value):
        if isinstance(value, dict):
            return {k: (v.replace("#/components/schemas/", "#/$defs/") if k == "$ref" else local(v))
                    for k, v in value.items()}
        return [local(v) for v in value] if isinstance(value, list) else value

    schema = {"$ref": f"#/$defs/{name}", "$defs": local(document["components"]["schemas"])}
    return jsonschema_rs.Draft202012Validator(schema, validate_formats=True)


OUTCOME = _validator("OperationOutcome")
CDS_RESPONSE = _validator("CdsResponse")


def _exception_names() -> set[str]:
    modules = (builtins, requests.exceptions, werkzeug.exceptions, cds_hooks.service.errors, json, sqlite3)
    return {name for module in modules for name, obj in vars(module).items()
            if isinstance(obj, type) and issubclass(obj, BaseException) and not issubclass(obj, Warning)}


_NAMES = sorted(_exception_names() | {"JSONDecodeError", "ValidationError", "InvalidURL"}, key=len, reverse=True)
LEAK = re.compile(r'Traceback|File "|\b(?:' + "|".join(map(re.escape, _NAMES)) + r")\b|\b\w+(?:Error|Exception)\b")


RAW_HTML = re.compile(r"(?<!\\)<[A-Za-z/!?]")  # the detail is GFM: text from the record is escaped, never HTML


def _words(text: str) -> set[str]:
    """What the client itself sent may be echoed (e.g. a medication named "ValueError"): not a leak."""
    return {m.group(0) for m in LEAK.finditer(text)}


def check(response, elapsed: float, sent: str, path: str):
    """The properties every response must have; returns the response."""
    status = response.status_code
    text = response.get_data(as_text=True)
    assert elapsed < MAX_SECONDS, f"took {elapsed:.2f} s (limit {MAX_SECONDS} s)"
    assert status < 500, f"{status}: {text[:500]}"
    assert response.headers.get("X-Request-ID")
    leaked = _words(text) - _words(sent + " " + path)
    assert not leaked, f"{status} body names {sorted(leaked)}: {text[:500]}"
    if response.request.method == "HEAD":
        assert not text, "HEAD answers carry no body"
    elif status >= 400:
        assert response.mimetype == "application/json", response.mimetype
        OUTCOME.validate(response.get_json())
    elif status == 200 and path in SERVICE_PATHS and response.request.method == "POST":
        body = response.get_json()
        CDS_RESPONSE.validate(body)
        for card in body["cards"]:
            assert_valid_card(card)
            assert not RAW_HTML.search(card["detail"]), f"record text is not escaped: {card['detail'][:300]}"
    elif status == 200 and path in FEEDBACK_PATHS and response.request.method == "POST":
        assert response.get_json() == {}
    return response


def send(client, path: str, body=None, *, data: bytes | str | None = None, content_type: str | None =
         "application/json", method: str = "POST"):
    """One request, timed and checked. ``body`` is sent as JSON text; ``data`` as given."""
    if data is None and body is not None:
        data = json.dumps(body)
    started = time.perf_counter()
    kwargs = {"content_type": content_type} if content_type is not None else {}
    response = client.open(path, method=method, data=data, **kwargs)
    elapsed = time.perf_counter() - started
    sent = data.decode("utf-8", "replace") if isinstance(data, bytes) else (data or "")
    return check(response, elapsed, sent, path)


# --- fixtures --------------------------------------------------------------------------------------------------

QUIET = {"CRAMP_LOG_LEVEL": "WARNING"}  # no access log line per request; errors (a 500's traceback) still logged


@pytest.fixture(scope="module")
def closed_port():
    """A loopback port that is bound but never listens: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


class MockFhir:
    """The mocked FHIR server's current behaviour: one answer for first pages, one for ``page=2`` URLs."""

    def __init__(self) -> None:
        self.first: tuple = (200, b"{}")
        self.next: tuple = (200, b"{}")

    def __call__(self, request):
        status, body = self.next if "page=2" in request.url else self.first
        if isinstance(body, Exception):
            raise body
        return status, {"Content-Type": "application/fhir+json"}, body


@pytest.fixture(scope="module")
def fhir(closed_port):
    server = MockFhir()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_passthru(f"http://127.0.0.1:{closed_port}")
        mock.add_callback(responses.GET, re.compile(re.escape(FHIR_MOCK) + r"(/.*)?$"), callback=server)
        yield server


@pytest.fixture(scope="module")
def client(tmp_path_factory, fhir):
    return create_app(make_settings(tmp_path_factory.mktemp("fuzz"), QUIET)).test_client()


@pytest.fixture(scope="module")
def small_client(tmp_path_factory, fhir):
    """Small limits, to reach every 413 cheaply."""
    settings_ = make_settings(tmp_path_factory.mktemp("fuzz-small"), {
        "CRAMP_MAX_BODY_BYTES": "65536", "CRAMP_MAX_PREFETCH_RESOURCES": "40", "CRAMP_MAX_FEEDBACK_ENTRIES": "5",
        "CRAMP_FHIR_MAX_PAGES": "3", **QUIET})
    return create_app(settings_).test_client()


# --- strategies ------------------------------------------------------------------------------------------------

SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=30))
JSON = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                    max_leaves=12)
WEIRD_DATES = st.sampled_from([
    "2024-13-45", "2024-02-30", "2024-02-30T25:61:00Z", "0000", "0001-01-01", "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-12:00", "9999-12-31", "99999-01-01", "2024-1", "2024", "", " ", "2024-06-01T10:00:00",
    "2024-06-01T10:00:00+99:99", "-2024-01-01", "2024-06-01T10:00:00.123456789Z", "now", "1e10", "２０２４-０１-０１",
])
HUGE_NUMBERS = st.sampled_from([0, -0.0, 1e308, -1e308, 5e-324, 2**63, -(2**63), 2**64 + 1, 10**30, 3.0e-5, -1])
LONG_STRINGS = st.builds(lambda s, n: s * n, st.sampled_from(["a", " ", "é", "💊", "leg cramps ", "quinine ",
                                                             "hydrochlorothiazide ", "\u202e", "\\*_`<b>"]),
                         st.integers(100, 20_000))
MARKUP = st.sampled_from(["x` <img src=x onerror=alert(1)> `", "<script>alert(1)</script>", "**bold**", "a`b",
                          "[link](javascript:alert(1))", "<b>", "|table|", "\\", "# heading\n", "a\n\nb"])
WEIRD = JSON | WEIRD_DATES | HUGE_NUMBERS | LONG_STRINGS | MARKUP | st.text()
DELETE = object()
DATE_FIELDS = {"authoredOn", "start", "end", "effectiveDateTime", "effectiveInstant", "issued", "whenHandedOver",
               "whenPrepared", "dateAsserted", "onsetDateTime", "recordedDate", "abatementDateTime",
               "deceasedDateTime", "birthDate", "outcomeTimestamp"}
OFFSETS = st.builds(timezone, st.timedeltas(min_value=-timedelta(hours=23, minutes=59),
                                            max_value=timedelta(hours=23, minutes=59)).map(
    lambda d: timedelta(minutes=d // timedelta(minutes=1))))
DATES = WEIRD_DATES | st.dates().map(date.isoformat) | st.builds(
    lambda d, tz, sep: d.replace(tzinfo=tz).isoformat(sep=sep), st.datetimes(), st.none() | OFFSETS,
    st.sampled_from(["T", " "]))


def value_for(path: tuple) -> st.SearchStrategy:
    """Weird values, biased by what the field is: dates get (impossible) dates, quantities odd numbers."""
    last = path[-1]
    if last in DATE_FIELDS:
        return DATES | WEIRD
    if last == "value":
        return HUGE_NUMBERS | WEIRD
    if last in ("id", "reference", "text", "display"):
        return MARKUP | WEIRD
    return WEIRD | st.just(DELETE)


def paths_of(value, prefix=()):
    """Every path (dict keys, list indexes) to every node below ``value``."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from paths_of(child, (*prefix, key))


def put(resource, path, value):
    """Set (or delete) ``path`` in ``resource``; a path an earlier change broke is skipped."""
    target = resource
    for key in path[:-1]:
        try:
            target = target[key]
        except (KeyError, IndexError, TypeError):
            return
    last = path[-1]
    if isinstance(target, dict) and isinstance(last, str):
        if value is DELETE:
            target.pop(last, None)
        else:
            target[last] = value
    elif isinstance(target, list) and isinstance(last, int) and last < len(target):
        if value is DELETE:
            del target[last]
        else:
            target[last] = value


def _quantity(value, unit):
    return {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}


def _concept(system, code, display):
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _seeds() -> dict[str, list[dict]]:
    """Resources that the review reads, with every field it looks at: the starting points for mutation."""
    hctz = med_request("hctz1", HYDROCHLOROTHIAZIDE)
    hctz.update(doNotPerform=False, dispenseRequest={"validityPeriod": {"start": "2024-01-02"}})
    by_reference = med_request("byref1", FUROSEMIDE)
    by_reference.pop("medicationCodeableConcept")
    by_reference.update(medicationReference={"reference": "#med1", "display": "furosemide"}, contained=[{
        "resourceType": "Medication", "id": "med1", "code": _concept(RXNORM, *FUROSEMIDE),
        "ingredient": [{"itemCodeableConcept": _concept(RXNORM, *QUININE)}]}])
    statement = {"resourceType": "MedicationStatement", "id": "st1", "status": "active",
                 "medicationCodeableConcept": _concept(RXNORM, *FUROSEMIDE), "subject": {"reference": "Patient/p1"},
                 "effectivePeriod": {"start": "2024-02-01"}, "dateAsserted": "2024-02-02"}
    dispense = {"resourceType": "MedicationDispense", "id": "md1", "status": "completed",
                "medicationCodeableConcept": _concept(RXNORM, *QUININE), "subject": {"reference": "Patient/p1"},
                "whenHandedOver": "2026-01-01", "whenPrepared": "2025-12-31"}
    condition = cramps()
    condition.update(recordedDate="2024-05-01", onsetPeriod={"start": "2024-04-01"}, abatementDateTime="2025-01-01")
    ckd = {"resourceType": "Condition", "id": "ckd1", "subject": {"reference": "Patient/p1"},
           "code": {"coding": [{"system": "http://snomed.info/sct", "code": "709044004"},
                               {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "N18.4"}],
                    "text": "chronic kidney disease"}}
    k = potassium("k1", 3.1)
    k.update(referenceRange=[{"low": _quantity(3.5, "mmol/L"), "high": _quantity(5.1, "mmol/L")}],
             interpretation=[{"coding": [{"code": "L"}]}], issued="2026-01-01T00:00:00Z")
    panel = {"resourceType": "Observation", "id": "panel1", "status": "final", "subject": {"reference": "Patient/p1"},
             "code": {"text": "electrolytes"}, "effectivePeriod": {"start": "2026-01-01"},
             "component": [{"code": {"coding": [{"system": LOINC, "code": "19123-9"}]},
                            "valueQuantity": _quantity(1.2, "mg/dL")},
                           {"code": {"coding": [{"system": LOINC, "code": "17861-6"}]},
                            "valueQuantity": _quantity(2.0, "mmol/L")}]}
    return {
        "patient": [patient("p1") | {"deceasedBoolean": False, "deceasedDateTime": "2099-01-01"}],
        "medications": [hctz, by_reference, med_request("q1", QUININE)],
        "statements": [statement],
        "dispenses": [dispense],
        "administrations": [{"resourceType": "MedicationAdministration", "id": "a1", "status": "completed",
                             "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-01-01T10:00:00Z",
                             "medicationCodeableConcept": {"text": "iron sucrose 20 MG/ML injection"}}],
        "conditions": [condition, ckd],
        "observations": [k, panel],
    }


SEEDS = _seeds()


@st.composite
def mutated(draw, key: str) -> dict:
    """A seed resource for prefetch ``key`` with 1-4 of its fields set to something weird (or removed)."""
    resource = copy.deepcopy(draw(st.sampled_from(SEEDS[key])))
    paths = list(paths_of(resource))
    for path in draw(st.lists(st.sampled_from(paths), min_size=1, max_size=4)):
        put(resource, path, draw(value_for(path)))
    return resource


@st.composite
def dated(draw, key: str) -> dict:
    """A seed resource whose every date field holds a drawn date (impossible, extreme or any time zone)."""
    resource = copy.deepcopy(draw(st.sampled_from(SEEDS[key])))
    for path in paths_of(resource):
        if path[-1] in DATE_FIELDS:
            put(resource, path, draw(DATES))
    return resource


GARBAGE_ENTRY = (JSON | st.builds(lambda r: {"resource": r}, JSON)
                 | st.builds(lambda e: {"resource": {"resourceType": "Bundle", "entry": e}}, JSON)
                 | st.builds(lambda u, r: {"fullUrl": u, "resource": r}, JSON, st.sampled_from(SEEDS["medications"]))
                 | st.builds(lambda link: {"resource": {"resourceType": "Bundle", "link": link}}, JSON))


@st.composite
def prefetch_bundle(draw, key: str) -> dict:
    entries = [{"resource": r} for r in draw(st.lists(mutated(key), max_size=3))]
    entries += draw(st.lists(GARBAGE_ENTRY, max_size=2))
    draw(st.randoms(use_true_random=False)).shuffle(entries)
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
    if draw(st.booleans()):
        bundle["link"] = draw(JSON)
    return bundle


@st.composite
def fhirish_request(draw, hook: str) -> dict:
    """A well-formed request whose FHIR content is adversarial (mutated seeds and garbage entries)."""
    prefetch = {"patient": draw(st.none() | mutated("patient") | st.just(patient("p1")))}
    for key in KEYS[1:]:
        prefetch[key] = draw(st.none() | prefetch_bundle(key))
    quinine = draft_order("draft-1", QUININE)
    put(quinine, ("id",), draw(st.just("draft-1") | value_for(("id",)) | st.just(DELETE)))
    drafts = [quinine] + draw(st.lists(mutated("medications"), max_size=2))
    body = hook_request(hook, prefetch=prefetch, drafts=drafts, selections=["MedicationRequest/draft-1"])
    if hook != "patient-view":
        entries = body["context"]["draftOrders"]["entry"]
        entries += [{"resource": r} for r in draw(st.lists(mutated("statements"), max_size=1))]
        entries += draw(st.lists(GARBAGE_ENTRY.filter(lambda e: isinstance(e, dict) and (
            e.get("resource") is None or isinstance(e["resource"], dict) and e["resource"].get("resourceType"))),
            max_size=2))
    return body


def post(client, hook: str, body):
    return send(client, f"/cds-services/{SERVICE_FOR[hook]}", body)


# --- bodies that are not CDS Hooks requests ----------------------------------------------------------------------

ANY_POST_PATH = st.sampled_from(SERVICE_PATHS + FEEDBACK_PATHS) | st.builds(
    lambda t, fb: "/cds-services/" + quote(t, safe="") + ("/feedback" if fb else ""), st.text(min_size=1),
    st.booleans())


@FUZZ
@given(path=ANY_POST_PATH, body=JSON)
def test_any_json_body_on_any_endpoint(client, path, body):
    send(client, path, body)


@FUZZ
@given(path=ANY_POST_PATH, data=st.binary(max_size=300) | st.builds(
    lambda t, enc: t.encode(enc, "replace"), st.text(max_size=60),
    st.sampled_from(["utf-16", "utf-32", "latin-1", "cp1252", "utf-8-sig"])),
    content_type=st.sampled_from(["application/json", "application/fhir+json", "application/json; charset=latin-1",
                                  "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                  "multipart/form-data; boundary=x", "application/+json", "APPLICATION/JSON",
                                  "application/", "*/*", ""]) | st.none())
def test_bytes_that_are_not_utf8_json_and_wrong_content_types(client, path, data, content_type):
    send(client, path, data=data, content_type=content_type)


@SMALL
@given(path=st.sampled_from(("/cds-services", "/healthz", "/openapi.json") + SERVICE_PATHS + FEEDBACK_PATHS),
       method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"]),
       body=st.none() | JSON)
def test_every_method_on_every_path(client, path, method, body):
    send(client, path, body, method=method, content_type="application/json" if body is not None else None)


# --- wrong types for every field ---------------------------------------------------------------------------------

TOP_FIELDS = ("hook", "hookInstance", "fhirServer", "fhirAuthorization", "context", "prefetch", "extension")
CONTEXT_FIELDS = ("patientId", "userId", "encounterId", "selections", "draftOrders")


@FUZZ
@given(hook=st.sampled_from(HOOKS), where=st.sampled_from(TOP_FIELDS + tuple(f"context.{f}" for f in CONTEXT_FIELDS)),
       value=WEIRD | st.just(DELETE))
def test_wrong_type_or_missing_value_for_each_request_field(client, hook, where, value):
    body = hook_request(hook)
    put(body, tuple(where.split(".")), value)
    response = post(client, hook, body)
    assert response.status_code in (200, 400, 412), response.get_data(as_text=True)


@FUZZ
@given(hook=st.sampled_from(("order-select", "order-sign")),
       selections=st.lists(JSON | st.text(max_size=80), max_size=5) | JSON,
       draft_orders=JSON | st.builds(lambda e: {"resourceType": "Bundle", "entry": e}, JSON | st.lists(
           GARBAGE_ENTRY, max_size=4)))
def test_selections_not_strings_and_draft_orders_not_a_bundle(client, hook, selections, draft_orders):
    body = hook_request(hook)
    body["context"]["draftOrders"] = draft_orders
    if hook == "order-select":
        body["context"]["selections"] = selections
    post(client, hook, body)


@FUZZ
@given(hook=st.sampled_from(HOOKS), fhir_authorization=JSON | st.fixed_dictionaries({}, optional={
    "access_token": WEIRD, "token_type": st.sampled_from(["Bearer", "bearer", "MAC"]) | WEIRD, "expires_in": WEIRD,
    "scope": WEIRD, "subject": WEIRD, "patient": WEIRD}))
def test_fhir_authorization_of_any_shape_never_echoes_the_token(client, hook, fhir_authorization):
    body = hook_request(hook, fhir_server=FHIR_MOCK)
    body["fhirAuthorization"] = fhir_authorization
    token = fhir_authorization.get("access_token") if isinstance(fhir_authorization, dict) else None
    response = post(client, hook, body)
    if isinstance(token, str) and len(token) >= 8:
        assert token not in response.get_data(as_text=True)


# --- prefetch and draft orders: adversarial FHIR ----------------------------------------------------------------

@FUZZ
@given(hook=st.sampled_from(HOOKS),
       prefetch=st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=10), JSON, max_size=6) | JSON)
def test_prefetch_values_are_arbitrary_json(client, hook, prefetch):
    body = hook_request(hook, prefetch={})
    body["prefetch"] = prefetch
    response = post(client, hook, body)
    assert response.status_code in (200, 400, 412), response.get_data(as_text=True)


@settings(FUZZ, max_examples=200)
@given(data=st.data(), hook=st.sampled_from(HOOKS))
def test_fhir_resources_with_wrong_field_types_dates_and_numbers(client, data, hook):
    body = data.draw(fhirish_request(hook))
    if hook == "order-select":  # point the selection at a draft when one has a usable id
        ids = [e["resource"].get("id") for e in body["context"]["draftOrders"]["entry"]
               if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
        usable = [i for i in ids if isinstance(i, str) and re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", i)]
        body["context"]["selections"] = [f"MedicationRequest/{data.draw(st.sampled_from(usable))}"] if usable \
            else ["MedicationRequest/draft-1"]
    response = post(client, hook, body)
    assert response.status_code in (200, 400), response.get_data(as_text=True)


@settings(FUZZ, max_examples=150)
@given(hook=st.sampled_from(HOOKS), data=st.data())
def test_impossible_and_extreme_dates_everywhere(client, hook, data):
    prefetch = {"patient": patient("p1") | {"birthDate": data.draw(DATES)}}
    for key in KEYS[1:]:
        prefetch[key] = searchset(*data.draw(st.lists(dated(key), min_size=1, max_size=2)))
    drafts = [data.draw(dated("medications")) | {"status": "draft"}]
    body = hook_request(hook, prefetch=prefetch, drafts=drafts, selections=[f"MedicationRequest/{drafts[0]['id']}"])
    response = post(client, hook, body)
    assert response.status_code in (200, 400), response.get_data(as_text=True)


@SMALL
@given(hook=st.sampled_from(HOOKS), n=st.integers(0, 60), key=st.sampled_from(KEYS[1:]))
@example(hook="patient-view", n=39, key="observations")  # 39 + the Patient = the limit of 40
@example(hook="patient-view", n=40, key="observations")
def test_prefetch_size_limit_is_a_413_naming_it(small_client, hook, n, key):
    prefetch = full_prefetch()
    prefetch[key] = searchset(*[potassium(f"k{i}", 4.0) for i in range(n)])
    response = post(small_client, hook, hook_request(hook, prefetch=prefetch))
    assert response.status_code == (413 if n + 1 > 40 else 200), response.get_data(as_text=True)
    if response.status_code == 413:
        assert "limit of 40" in response.get_json()["issue"][0]["diagnostics"]


# --- fhirServer: unreachable loopback, invalid URLs, a mocked server answering garbage ------------------------

PAGE_BUNDLE = searchset(med_request("hctz1", HYDROCHLOROTHIAZIDE), cramps())


def _bundle_with_link(url):
    return {**PAGE_BUNDLE, "link": [{"relation": "next", "url": url}]}


PAGES = st.one_of(
    st.just(PAGE_BUNDLE), st.just(patient("p1")), st.just(patient("other")), JSON,
    st.builds(lambda link: {**PAGE_BUNDLE, "link": link}, JSON),
    st.sampled_from([FHIR_MOCK + "/MedicationRequest?page=2", FHIR_MOCK + "/x?page=1", "?page=2",
                     "https://elsewhere.example/r4/x?page=2", "http://[::1", "http://[::1]:99999/?page=2",
                     "javascript:alert(1)", "", FHIR_MOCK + "/../../etc?page=2"]).map(_bundle_with_link),
    st.just({"resourceType": "OperationOutcome", "issue": []}),
    st.just(searchset(med_request("x", QUININE, pid="someone-else"))),
)
ANSWERS = st.one_of(
    st.tuples(st.sampled_from([200, 200, 200, 201, 204, 302, 401, 403, 404, 410, 429, 500, 503]),
              PAGES.map(lambda p: json.dumps(p).encode())),
    st.tuples(st.just(200), st.binary(max_size=100) | st.sampled_from([b"", b"{", b"[]", b"null", b"NaN"])),
    st.tuples(st.just(200), st.sampled_from([requests.ConnectionError(), requests.Timeout(),
                                             requests.exceptions.ChunkedEncodingError(),
                                             requests.exceptions.ContentDecodingError(),
                                             requests.exceptions.SSLError(), requests.exceptions.InvalidHeader()])),
)


@settings(FUZZ, max_examples=150)
@given(hook=st.sampled_from(HOOKS), first=ANSWERS, second=ANSWERS,
       sent=st.lists(st.sampled_from(KEYS), unique=True), paginated=st.sampled_from([None, *KEYS[1:]]),
       token=st.booleans())
def test_fhir_server_answering_garbage(client, fhir, hook, first, second, sent, paginated, token):
    fhir.first, fhir.next = first, second
    full = full_prefetch()
    prefetch = {k: full[k] for k in sent}
    if paginated:
        prefetch[paginated] = _bundle_with_link(FHIR_MOCK + "/MedicationRequest?page=2")
    body = hook_request(hook, prefetch=prefetch, fhir_server=FHIR_MOCK, token="t0ken-" * 3 if token else None)
    response = post(client, hook, body)
    assert "t0ken-" not in response.get_data(as_text=True)
    assert response.status_code in (200, 400, 412, 413), response.get_data(as_text=True)


@SMALL
@given(hook=st.sampled_from(HOOKS), suffix=st.sampled_from(["", "/", "/fhir", "/fhir/r4/", "/?x=1"]),
       host=st.sampled_from(["127.0.0.1:{port}", "localhost:{port}", "[::1", "a b.example", "127.0.0.1:99999",
                             "127.0.0.1:0", "user:pw@127.0.0.1:{port}", "xn--.example", "a..b", "%00",
                             "fhir.unregistered.example"]),
       scheme=st.sampled_from(["http", "https", "HTTP"]))
def test_fhir_server_unreachable_or_invalid(client, closed_port, hook, suffix, host, scheme):
    body = hook_request(hook, omit_prefetch=True, fhir_server=f"{scheme}://{host.format(port=closed_port)}{suffix}")
    response = post(client, hook, body)
    assert response.status_code in (400, 412), response.get_data(as_text=True)


# --- deep, huge and non-finite JSON ------------------------------------------------------------------------------

def _deep(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    if kind == "dict":
        return '{"a":' * depth + "1" + "}" * depth
    resource = json.dumps(med_request("deep", QUININE))  # Bundles nested in Bundle entries
    return '{"resourceType":"Bundle","entry":[{"resource":' * depth + resource + "}]}" * depth


DEEP_PLACES = ("body", "hook", "hookInstance", "context", "context.patientId", "context.draftOrders",
               "prefetch", "prefetch.medications", "prefetch.patient", "extension", "fhirAuthorization")


DEPTHS = (1, 2, 100, 330, 340, 341, 500, 900, 950, 980, 990, 1000, 1010, 1023, 1024, 1025, 5000)


@pytest.mark.parametrize("kind", ["list", "dict", "bundle"])
@pytest.mark.parametrize("place", DEEP_PLACES)
def test_deeply_nested_json_anywhere(client, place, kind):
    """Every depth around Python's recursion limit (1000) and orjson's nesting limit (1024): never a 500."""
    hook = "order-sign" if place == "context.draftOrders" else "patient-view"
    for depth in DEPTHS:
        if place == "body":
            text = _deep(depth, kind)
        else:
            body = hook_request(hook)
            put(body, tuple(place.split(".")), "__DEEP__")
            text = json.dumps(body).replace('"__DEEP__"', _deep(depth, kind))
        send(client, f"/cds-services/{SERVICE_FOR[hook]}", data=text)


@pytest.mark.parametrize("kind", ["list", "dict"])
@pytest.mark.parametrize("place", ["feedback", "feedback[0]", "card", "outcome", "outcomeTimestamp",
                                   "acceptedSuggestions", "overrideReason"])
def test_deeply_nested_feedback(client, place, kind):
    for depth in DEPTHS:
        entry = {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2024-01-01T00:00:00Z",
                 "acceptedSuggestions": [{"id": "s"}], "overrideReason": {"userComment": "x"}}
        body = {"feedback": [entry]}
        if place == "feedback":
            body["feedback"] = "__DEEP__"
        elif place == "feedback[0]":
            body["feedback"][0] = "__DEEP__"
        else:
            entry[place] = "__DEEP__"
        send(client, FEEDBACK_PATHS[0], data=json.dumps(body).replace('"__DEEP__"', _deep(depth, kind)))


NON_FINITE = ["NaN", "-NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" + "0" * 400, "1e-999", "0e99999",
              "18446744073709551616", "-9223372036854775809", "1.7976931348623157e309", "nan", "inf"]


@pytest.mark.parametrize("token", NON_FINITE)
@pytest.mark.parametrize("place", ["hook", "fhirAuthorization.expires_in", "prefetch.observations.entry",
                                   "feedback"])
def test_nan_infinity_and_huge_numbers_in_json_text(client, token, place):
    if place == "feedback":
        text = f'{{"feedback": [{{"card": "c", "outcome": "overridden", "outcomeTimestamp": {token}}}]}}'
        send(client, FEEDBACK_PATHS[0], data=text)
        return
    body = hook_request(fhir_server=FHIR_MOCK, token="abcdefgh")
    obs = potassium("k1", 4.0)
    obs["valueQuantity"]["value"] = "__N__"
    body["prefetch"]["observations"] = searchset(obs)
    put(body, tuple(place.split(".")), "__N__")
    send(client, SERVICE_PATHS[0], data=json.dumps(body).replace('"__N__"', token))


def test_body_over_the_byte_limit_is_413_from_content_length(small_client):
    response = send(small_client, SERVICE_PATHS[0], data="x" * 70_000)
    assert response.status_code == 413


@SMALL
@given(hook=st.sampled_from(HOOKS), text=LONG_STRINGS | st.text(min_size=1),
       where=st.sampled_from(["medicationCodeableConcept.text", "medicationCodeableConcept.coding.0.display",
                              "id", "status", "authoredOn", "subject.reference", "medicationCodeableConcept.coding.0.code"]))
def test_long_and_unicode_strings_in_resources(client, hook, text, where):
    med = med_request("m1", HYDROCHLOROTHIAZIDE)
    put(med, tuple(int(p) if p.isdigit() else p for p in where.split(".")), text)
    response = post(client, hook, hook_request(hook, prefetch=full_prefetch(meds=[med], conditions=[cramps()])))
    assert response.status_code in (200, 400), response.get_data(as_text=True)


# --- feedback ---------------------------------------------------------------------------------------------------

TIMESTAMPS = DATES | st.sampled_from([
    "2024-06-01T10:00:00Z", "2024-06-01t10:00:00z", "2024-06-01 10:00:00+02:00", "2024-06-01T10:00:00.5-05:00",
    "0001-01-01T00:00:00+01:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59Z",
    "2024-13-45T00:00:00Z", "2024-02-30T10:00:00Z", "2024-06-01T24:00:00Z", "2024-06-31T10:00:00+25:00",
    "2016-12-31T23:59:60Z", "2024-06-01T10:00:00", "2024-06-01", "",
]) | WEIRD
ENTRY_FIELDS = {
    "card": st.uuids().map(str) | WEIRD,
    "outcome": st.sampled_from(["accepted", "overridden"]) | WEIRD,
    "acceptedSuggestions": st.lists(st.fixed_dictionaries({}, optional={"id": st.uuids().map(str) | WEIRD}) | JSON,
                                    max_size=3) | JSON,
    "overrideReason": st.fixed_dictionaries({}, optional={
        "reason": st.fixed_dictionaries({}, optional={
            "system": st.just("https://cramp-cds.org/fhir/CodeSystem/override-reason") | WEIRD,
            "code": st.sampled_from(["already-addressed", "patient-declined"]) | WEIRD}) | JSON,
        "userComment": WEIRD}) | JSON,
    "extension": JSON,
}


@st.composite
def feedback_entry(draw) -> dict:
    """A valid entry with 0-2 fields replaced by anything (or removed), and a drawn timestamp."""
    outcome = draw(st.sampled_from(["accepted", "overridden"]))
    entry = {"card": draw(st.uuids()).hex, "outcome": outcome, "outcomeTimestamp": draw(TIMESTAMPS)}
    if outcome == "accepted":
        entry["acceptedSuggestions"] = [{"id": "s1"}]
    else:
        entry["overrideReason"] = {"reason": {"system": "https://cramp-cds.org/fhir/CodeSystem/override-reason",
                                              "code": "already-addressed"}}
    for name in draw(st.lists(st.sampled_from(sorted(ENTRY_FIELDS)), max_size=2, unique=True)):
        entry[name] = draw(ENTRY_FIELDS[name] | st.just(DELETE))
    return {k: v for k, v in entry.items() if v is not DELETE}


FEEDBACK_ENTRY = feedback_entry()


@settings(FUZZ, max_examples=200)
@given(path=st.sampled_from(FEEDBACK_PATHS), entries=st.lists(FEEDBACK_ENTRY | JSON, max_size=6))
def test_adversarial_feedback_entries(small_client, path, entries):
    response = send(small_client, path, {"feedback": entries})
    assert response.status_code in (200, 400, 413), response.get_data(as_text=True)
    if len(entries) > 5:
        assert response.status_code == 413


# --- regressions found by the fuzzers above ------------------------------------------------------------------------
# Each was a 500 (or a wrong answer) before its fix; the fixed module and function are named.

def _deep_text(body: dict, place: tuple, nested: str) -> str:
    put(body, place, "__DEEP__")
    return json.dumps(body).replace('"__DEEP__"', nested)


@pytest.mark.parametrize("fhir_server", ["http://[::1", "https://[fe80::1/r4", "http://fhir.example.org:99999/r4",
                                         "http://:8080/r4"])
def test_regression_fhir_server_that_urlsplit_rejects_is_400(client, fhir_server):
    """cds_hooks/service/validation.py is_http_url: urlsplit's ValueError (an unclosed IPv6 bracket) was a 500."""
    response = post(client, "patient-view", hook_request(fhir_server=fhir_server))
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["fhirServer"]


def test_regression_deeply_nested_hook_value_is_400(client):
    """cds_hooks/service/validation.py parse_hook_request: str() of a 1000-deep "hook" raised RecursionError (500)."""
    text = _deep_text(hook_request(), ("hook",), "[" * 1000 + "]" * 1000)
    response = send(client, SERVICE_PATHS[0], data=text)
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["diagnostics"] == "hook must be a string"


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_regression_feedback_timestamp_outside_utc_range_is_400(client, timestamp):
    """cds_hooks/service/validation.py parse_rfc3339: the store's UTC conversion raised OverflowError (500)."""
    entry = {"card": "c1", "outcome": "overridden", "outcomeTimestamp": timestamp}
    response = send(client, FEEDBACK_PATHS[0], {"feedback": [entry]})
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["feedback[0].outcomeTimestamp"]


@pytest.mark.parametrize("link", [5, 1.5, True, {"relation": "next", "url": "x"}])
def test_regression_bundle_link_that_is_not_an_array(client, link):
    """cds_hooks/fhir/client.py next_link: iterating a non-array Bundle.link raised TypeError (500)."""
    prefetch = full_prefetch()
    prefetch["medications"]["link"] = link
    assert post(client, "patient-view", hook_request(prefetch=prefetch)).status_code == 200


def test_regression_next_link_that_urllib_cannot_parse(client):
    """cds_hooks/fhir/client.py _follow: urljoin of a next link "http://[" raised ValueError (500); now a 412."""
    prefetch = full_prefetch()
    prefetch["medications"] = _bundle_with_link("http://[")
    body = hook_request("patient-view", prefetch=prefetch, fhir_server=FHIR_MOCK)
    response = post(client, "patient-view", body)
    assert response.status_code == 412, response.get_data(as_text=True)
    assert "next link is not a valid URL" in response.get_data(as_text=True)


def test_regression_fhir_failures_name_no_python_exception(client, fhir):
    """cds_hooks/fhir/client.py FhirClient._get: the 412 said "(InvalidURL)" / "(ChunkedEncodingError)"."""
    fhir.first = (200, requests.exceptions.ChunkedEncodingError())
    try:
        for server in (FHIR_MOCK, "http://a b.example/r4"):
            response = post(client, "patient-view", hook_request(omit_prefetch=True, fhir_server=server))
            assert response.status_code == 412
            text = response.get_data(as_text=True)
            assert "Error" not in text and "InvalidURL" not in text
    finally:
        fhir.first = MockFhir().first


def _thiazide_and_cramps(**changes) -> dict:
    med = med_request("m1", HYDROCHLOROTHIAZIDE)
    for path, value in changes.items():
        put(med, tuple(int(p) if p.isdigit() else p for p in path.split("__")), value)
    return hook_request(prefetch=full_prefetch(meds=[med], conditions=[cramps()]))


@pytest.mark.parametrize("changes", [
    {"medicationCodeableConcept__coding": 5},
    {"medicationCodeableConcept__coding": True},
    {"authoredOn": DELETE, "dispenseRequest": "x"},
    {"authoredOn": DELETE, "dispenseRequest": {"validityPeriod": ["2024"]}},
    {"contained": 3, "medicationReference": {"reference": "#x"}},
])
def test_regression_fhir_arrays_and_objects_of_the_wrong_type(client, changes):
    """plugin/fhir_read.py + plugin/codes.py (codes.array): "coding": 5 and the like raised TypeError (500)."""
    assert post(client, "patient-view", _thiazide_and_cramps(**changes)).status_code == 200


def test_regression_wrong_types_in_labs_conditions_and_nested_bundles(client):
    k = potassium("k1", 3.0)
    k.update(referenceRange=7, interpretation=False, component={"code": 1})
    condition = cramps()
    condition["clinicalStatus"] = {"coding": 12}
    prefetch = full_prefetch(meds=[med_request("m1", HYDROCHLOROTHIAZIDE)], conditions=[condition], observations=[k])
    prefetch["statements"]["entry"].append({"resource": {"resourceType": "Bundle", "entry": True}})
    assert post(client, "patient-view", hook_request(prefetch=prefetch)).status_code == 200


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_regression_dates_whose_utc_is_out_of_range(client, when):
    """plugin/dates.py parse_when: astimezone(UTC) raised OverflowError (500) for authoredOn, lab dates, ..."""
    k = potassium("k1", 3.0)
    k["effectiveDateTime"] = when
    dispense = {"resourceType": "MedicationDispense", "id": "md1", "status": "completed", "whenHandedOver": when,
                "medicationCodeableConcept": _concept(RXNORM, *QUININE), "subject": {"reference": "Patient/p1"}}
    med = med_request("m1", HYDROCHLOROTHIAZIDE, authored=when)
    prefetch = full_prefetch(meds=[med], statements=[dispense], conditions=[cramps()], observations=[k])
    assert post(client, "patient-view", hook_request(prefetch=prefetch)).status_code == 200
    from plugin.dates import parse_when

    assert parse_when(when) is None


@pytest.mark.parametrize("draft_id", [DELETE, "", 5, "a b", "a/b", "x` <img src=x onerror=alert(1)> `", "x" * 65])
def test_regression_quinine_draft_without_a_valid_id(client, draft_id):
    """plugin/cards.py build_card/_line: a delete suggestion named "MedicationRequest/(no id)" (or any string) and
    the record's id went into the Markdown detail unescaped. Now: no removal suggestion, the id escaped."""
    draft = draft_order("draft-1", QUININE)
    put(draft, ("id",), draft_id)
    response = post(client, "order-sign", hook_request("order-sign", drafts=[draft]))
    [card] = response.get_json()["cards"]
    assert card["indicator"] == "warning" and "suggestions" not in card and "selectionBehavior" not in card
    assert "<img" not in card["detail"].replace("\\<img", "")


def test_regression_quinine_draft_with_a_valid_id_still_gets_its_removal_suggestion(client):
    response = post(client, "order-sign", hook_request("order-sign", drafts=[draft_order("q-1.a", QUININE)]))
    [card] = response.get_json()["cards"]
    [suggestion] = card["suggestions"]
    [action] = suggestion["actions"]
    assert action["type"] == "delete" and action["resourceId"] == "MedicationRequest/q-1.a"
    assert action["description"].startswith("Remove the quinine draft order") and "q-1.a" not in action["description"]
