"""How a worklist names a patient: their identity (only with `--identifiers`) and the link into the EHR.

Identity is read for every patient (age bands are counted from birth dates) but shown only when the
person running the review asks for it; it never goes to a log or to stderr.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from urllib.parse import quote

from plugin.record import PatientIdentity

MRN_TYPE = "MR"   # HL7 v2-0203 "Medical record number"
LINK_FIELDS = ("{id}", "{identifier}")
AGE_BANDS = ((0, 18, "<18"), (18, 45, "18-44"), (45, 65, "45-64"), (65, 75, "65-74"), (75, 85, "75-84"),
             (85, 200, "85+"))


def age_at(birth_date: str | None, on: date) -> int | None:
    """Whole years on `on`; a partial birth date (year, year-month) counts from its first day."""
    if not birth_date:
        return None
    parts = birth_date[:10].split("-")
    try:
        born = date(int(parts[0]), int(parts[1]) if len(parts) > 1 else 1, int(parts[2]) if len(parts) > 2 else 1)
    except (ValueError, IndexError):
        return None
    years = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    return years if years >= 0 else None


def age_band(age: int | None) -> str:
    if age is None:
        return "unknown"
    return next(label for low, high, label in AGE_BANDS if low <= age < high)


def identifier_of(identity: PatientIdentity | None, system: str | None) -> str | None:
    """The identifier of `system` when given; else the first typed MR (medical record number), else the first."""
    if identity is None or not identity.identifiers:
        return None
    if system:
        return next((value for sys, _, value in identity.identifiers if sys == system), None)
    return next((value for _, kind, value in identity.identifiers if kind == MRN_TYPE), identity.identifiers[0][2])


@dataclass(frozen=True)
class ShownIdentity:
    name: str | None
    identifier: str | None
    birth_date: str | None
    age: int | None
    sex: str | None

    def to_dict(self) -> dict:
        return {"name": self.name, "identifier": self.identifier, "birthDate": self.birth_date, "age": self.age,
                "sex": self.sex}


def shown_identity(identity: PatientIdentity | None, system: str | None, on: date) -> ShownIdentity:
    identity = identity or PatientIdentity()
    return ShownIdentity(identity.name, identifier_of(identity, system), identity.birth_date,
                         age_at(identity.birth_date, on), identity.sex)


def check_link_template(template: str) -> str:
    """`https://ehr.example.org/patient/{id}`: an http(s) URL with {id} and/or {identifier}; else ValueError."""
    if not template.startswith(("https://", "http://")):
        raise ValueError("the patient link must start with https:// or http://")
    if not any(f in template for f in LINK_FIELDS):
        raise ValueError("the patient link must contain {id} (the FHIR id) or {identifier} (the MRN)")
    return template


def patient_link(template: str | None, patient: str, identifier: str | None) -> str | None:
    """The template filled in (values URL-quoted); None when it needs an identifier the patient lacks."""
    if not template or not patient:
        return None
    if "{identifier}" in template and not identifier:
        return None
    return (template.replace("{id}", quote(patient.split("/", 1)[-1], safe=""))
            .replace("{identifier}", quote(identifier or "", safe="")))
