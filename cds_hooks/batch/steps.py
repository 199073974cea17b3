"""The two pure steps of a Bulk ndjson review, shared by every driver so that they agree by construction.

Drivers (the process pool in `runner`, the Spark job in `cds_hooks.batch.spark`) only decide *where* these
run and how the data moves between them:

1. **per line** — `line_facts(line, export, state, observations=…)`: one ndjson line → a `LineFacts`: the
   facts the line holds for one patient, keyed by `(export, patient)`, or why it holds none (blank, a bad
   record, no patient). A driver folds the consecutive lines of one file into partial records with
   `add_line` (a chunk in the pool, a file block in Spark); nothing else touches a record.
2. **per patient** — `review_patient(export, patient, parts, state)`: a patient's partial records, each with
   its order key (where its lines sit in the run's input order: file, then position), merged in that order,
   evaluated by `plugin.rules.evaluate` → a `PatientResult` (the report's rows).

Both are deterministic and read nothing but their arguments (the knowledge, the export's Medications and
the as-of date travel in `StreamState`).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from operator import itemgetter

import orjson

from cds_hooks.batch.model import PatientResult
from plugin.fhir_read import MEDICATION_TYPES, Resolver, local_reference, subject_of
from plugin.knowledge import Knowledge
from plugin.patient import identity_of
from plugin.record import ConditionFact, LabFact, MedicationFact, PatientIdentity, PatientRecord
from plugin.review import deceased_of, facts_of
from plugin.rules import ReviewOptions, evaluate
from plugin.validation import validation_problem

FACT_TYPES = frozenset({"Condition", "Observation", *MEDICATION_TYPES})
_BOM = b"\xef\xbb\xbf"
_MEDICATION_KEYS = ("resourceType", "id", "code", "ingredient")
# The value of every "code" key: where a LOINC the rules read must sit. The literal start makes the scan several
# times cheaper than looking at every JSON string (which cost about as much as parsing the line).
CODE_VALUE = re.compile(rb'"code"\s*:\s*"([^"]{1,16})"')

Fact = MedicationFact | ConditionFact | LabFact
Order = tuple[int, ...]   # where a part's lines sit in the run's input order (compared as tuples)
Part = tuple[Order, PatientRecord]


@dataclass(frozen=True)
class StreamState:
    """What every worker needs: the knowledge, the Medications of each export, whether to validate, the
    as-of date (records are kept compact: only what the rules can use as of then) and the review options."""

    knowledge: Knowledge
    resolvers: dict[str, Resolver]
    validate: bool
    as_of: datetime | None = None
    options: ReviewOptions | None = None

    @cached_property
    def lab_codes(self) -> frozenset[bytes]:
        """The LOINCs the rules read, as bytes: most Observations carry none of them."""
        return frozenset(code.encode() for code in self.knowledge.lab_loincs)

    def resolver(self, export: str) -> Resolver:
        return self.resolvers.get(export) or _NO_MEDICATIONS


_NO_MEDICATIONS = Resolver()


@dataclass(frozen=True, slots=True)
class LineFacts:
    """What one ndjson line contributes. `key` is `(export, "Patient/id")` when the line is about a patient."""

    key: tuple[str, str] | None = None
    facts: tuple[Fact, ...] = ()
    deceased: str | None = None
    warnings: tuple[str, ...] = ()
    resource: bool = False             # the line held a FHIR resource (counted in the run's totals)
    error: str | None = None           # a bad record: why the line could not be read
    unattributed: str | None = None    # the resource type of a relevant resource with no patient reference
    identity: PatientIdentity | None = None  # a Patient line: name, identifiers, birth date, sex (worklist only)


BLANK = LineFacts()                    # an empty line
UNREAD = LineFacts(resource=True)      # a resource no rule reads (counted, not kept)


def parse_line(line: bytes) -> tuple[dict | None, str | None]:
    """(resource, None) or (None, error) for one non-blank ndjson line."""
    if line.startswith(_BOM):
        line = line[3:]
    try:
        resource = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return None, f"invalid JSON ({str(exc)[:120]})"
    if not isinstance(resource, dict):
        return None, f"not a JSON object ({type(resource).__name__})"
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        return None, "no resourceType: not a FHIR resource"
    return resource, None


def trimmed_medication(resource: dict) -> dict:
    """The parts of a Medication the engine reads (code and ingredients)."""
    return {k: resource[k] for k in _MEDICATION_KEYS if k in resource}


def is_unread_observation(body: bytes, lab_codes: frozenset[bytes]) -> bool:
    """A JSON-object-shaped line with none of the rules' LOINCs (vital signs, other labs: most Observations).

    It is counted, never parsed. A line not shaped like one JSON object is parsed all the same, to be
    reported as a bad record. (The Spark driver applies the same test in the JVM, see `spark.job`.)
    """
    return body[:1] == b"{" and body[-1:] == b"}" and lab_codes.isdisjoint(CODE_VALUE.findall(body))


def line_facts(line: bytes, export: str, state: StreamState, *, observations: bool = False) -> LineFacts:
    """Step 1: one ndjson line of `export` -> its `LineFacts`. Never raises: a bad line is a `LineFacts.error`.

    `observations`: the file holds only Observations, so lines without a rule's LOINC are skipped unparsed.
    """
    body = line.strip()
    if not body:
        return BLANK
    if observations and is_unread_observation(body, state.lab_codes):
        return UNREAD
    resource, error = parse_line(body)
    if error:
        return LineFacts(error=error)
    rtype = resource["resourceType"]
    key = None
    try:
        if rtype == "Patient":
            ref = local_reference(resource)
            if ref is None:
                return LineFacts(resource=True, error="Patient without an id")
            return LineFacts((export, ref), deceased=deceased_of(resource), resource=True,
                             identity=identity_of(resource))
        if rtype not in FACT_TYPES:
            return UNREAD
        resolver = state.resolver(export)
        subject = subject_of(resource, resolver)
        if not subject or not subject.startswith("Patient/"):
            return LineFacts(resource=True, unattributed=rtype)
        key = (export, subject)
        warnings: list[str] = []
        facts = facts_of(resource, state.knowledge, resolver, warnings, current_only=True)
        # Strict validation for the medications and conditions that count; labs are read for their numbers,
        # and validating every one of them would be most of the batch's time.
        if state.validate and rtype != "Observation" and facts:
            problem = validation_problem(resource)
            if problem:
                warnings.append(f"{local_reference(resource) or rtype} is not valid FHIR R4 ({problem}); read anyway")
        # every patient seen is reviewed, even one with no facts: the key alone makes the record
        return LineFacts(key, tuple(facts), warnings=tuple(warnings), resource=True)
    except Exception as exc:  # noqa: BLE001 - one resource must never stop the review
        # the patient is still reviewed (with what the other lines hold); the line is a bad record
        return LineFacts(key, resource=True, error=f"{rtype} could not be reviewed ({type(exc).__name__})")


def add_line(records: dict[str, PatientRecord], facts: LineFacts, as_of: datetime | None) -> None:
    """Fold one line's facts into the partial records (by patient) of the file range being read."""
    if facts.key is None:
        return
    ref = facts.key[1]
    rec = records.get(ref)
    if rec is None:
        rec = records[ref] = PatientRecord(patient=ref, now=as_of)
    if facts.deceased and not rec.deceased:
        rec.deceased = facts.deceased
    if facts.identity is not None and rec.identity is None:
        rec.identity = facts.identity
    rec.warnings.extend(facts.warnings)
    for fact in facts.facts:
        rec.add(fact)


def review_patient(export: str, patient: str, parts: Iterable[Part], state: StreamState) -> PatientResult:
    """Step 2: a patient's partial records merged in their order -> the engine's review -> the report row.

    The parts are left as they are. Sorting by the order key makes the result independent of the order they
    arrive in (a shuffle, a process pool), so every driver produces the same review.
    """
    record = PatientRecord(patient=patient, now=state.as_of)
    for _, part in sorted(parts, key=itemgetter(0)):
        record.merge(part)
    assert state.as_of is not None, "a review needs its as-of date"
    rv = evaluate(record, now=state.as_of, knowledge=state.knowledge, options=state.options or ReviewOptions())
    return PatientResult(rv, export)
