"""Patient resource -> `PatientIdentity` (name, birth date, sex, identifiers): for a reviewer's worklist only.

The engine never puts these on a card; the batch report shows them only when asked (`--identifiers`).
"""
from __future__ import annotations

from plugin.record import PatientIdentity

MR_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0203"   # HL7 v2 table 0203: identifier type
_NAME_USES = ("official", "usual", None)   # preferred first; "old", "maiden", "nickname" and the rest after


def _name_text(name: dict) -> str | None:
    if isinstance(name.get("text"), str) and name["text"].strip():
        return " ".join(name["text"].split())
    given = [g for g in name.get("given") or () if isinstance(g, str)]
    family = name.get("family") if isinstance(name.get("family"), str) else ""
    text = " ".join([*given, family]).strip()
    return " ".join(text.split()) or None


def _best_name(names: object) -> str | None:
    candidates = [n for n in names if isinstance(n, dict)] if isinstance(names, list) else []
    rank = {use: i for i, use in enumerate(_NAME_USES)}
    for name in sorted(candidates, key=lambda n: rank.get(n.get("use"), len(rank))):
        if text := _name_text(name):
            return text
    return None


def _type_code(identifier: dict) -> str:
    kind = identifier.get("type")
    codings = kind.get("coding") if isinstance(kind, dict) else None
    for coding in codings if isinstance(codings, list) else ():
        if (isinstance(coding, dict) and isinstance(coding.get("code"), str)
                and coding.get("system") in (MR_TYPE_SYSTEM, None)):
            return coding["code"]
    return ""


def identity_of(patient: dict) -> PatientIdentity:
    """What a person needs to find the patient in the EHR; absent or malformed parts stay None."""
    identifiers = tuple(
        (i.get("system") if isinstance(i.get("system"), str) else "", _type_code(i), i["value"])
        for i in patient.get("identifier") or () if isinstance(i, dict) and isinstance(i.get("value"), str))
    birth = patient.get("birthDate")
    sex = patient.get("gender")
    return PatientIdentity(name=_best_name(patient.get("name")),
                           birth_date=birth if isinstance(birth, str) and birth else None,
                           sex=sex if isinstance(sex, str) and sex else None, identifiers=identifiers)
