"""Code systems and code normalisation: the one place that knows URIs and code spellings."""
from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
NDC = "http://hl7.org/fhir/sid/ndc"

# Spellings seen in real feeds for the same systems (trailing slash, OID form, http/https).
_ALIASES = {
    RXNORM: RXNORM,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    ATC: ATC,
    "urn:oid:2.16.840.1.113883.6.73": ATC,
    ICD10CM: ICD10CM,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "http://hl7.org/fhir/sid/icd-10-us": ICD10CM,
    SNOMED: SNOMED,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    LOINC: LOINC,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    UCUM: UCUM,
    NDC: NDC,
    "urn:oid:2.16.840.1.113883.6.69": NDC,
}


def array(value: object) -> list:
    """A FHIR JSON array as a list; anything else (a number, a string, an object, null) as []."""
    return value if isinstance(value, list) else []


def canonical_system(system: object) -> str | None:
    """The canonical URI for a code-system string, or None for systems we do not read."""
    if not isinstance(system, str):
        return None
    found = _ALIASES.get(system)  # the common case: already canonical
    return found if found is not None else _canonical_variant(system)


@lru_cache(maxsize=512)
def _canonical_variant(system: str) -> str | None:
    s = system.strip().rstrip("/")
    if s.startswith("https://"):
        s = "http://" + s[len("https://"):]
    return _ALIASES.get(s)


def normalise_icd10(code: str) -> str:
    """ICD-10-CM without the dot, upper case: 'e11.42' and 'E1142' are the same code."""
    return code.replace(".", "").strip().upper()


def normalise_ndc(code: str) -> str:
    """An NDC as digits: a package code as 11 (the HIPAA 5-4-2 form: '0093-3002-01', '00093300201' and
    '0093-3002-1' agree), a product code (labeler-product, no package) as 9 ('0093-3002' is '000933002').

    Hyphenated 10-digit forms (4-4-2, 5-3-2, 5-4-1) are padded in the short segment; anything else is
    returned without hyphens, unchanged otherwise (and then matches nothing).
    """
    parts = code.strip().split("-")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        return f"{parts[0]:0>5}{parts[1]:0>4}{parts[2]:0>2}"
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return f"{parts[0]:0>5}{parts[1]:0>4}"
    return code.strip().replace("-", "")


def ndc_product(ndc: str) -> str | None:
    """The product code (first 9 digits) of an 11-digit package NDC: every package of a product is the same
    drug, strength and form, so a list that names one package (or the product) places all of them."""
    return ndc[:9] if len(ndc) == 11 and ndc.isdigit() else None


def local_codings(concept: object) -> Iterator[tuple[str, str]]:
    """(system as written, code) for the codings in systems we do not know: a site's local drug or
    problem ids (Epic ERX, Cerner Multum, First Databank …), which only a site code map can match."""
    if not isinstance(concept, dict):
        return
    for coding in array(concept.get("coding")):
        if isinstance(coding, dict):
            system, code = coding.get("system"), coding.get("code")
            if (isinstance(system, str) and isinstance(code, str) and code.strip()
                    and canonical_system(system) is None):
                yield system.strip(), code.strip()


def normalise_atc(code: str) -> str:
    return code.replace(" ", "").strip().upper()


def codings(concept: object) -> Iterator[tuple[str, str, str | None]]:
    """(canonical system, code, display) for every coding of a CodeableConcept we can read.

    Every coding is read, not just coding[0]: a record may carry a local code first.
    """
    if not isinstance(concept, dict):
        return
    for coding in array(concept.get("coding")):
        if not isinstance(coding, dict):
            continue
        system = canonical_system(coding.get("system"))
        code = coding.get("code")
        if system and isinstance(code, str) and code.strip():
            display = coding.get("display")
            yield system, code.strip(), display if isinstance(display, str) else None


def concept_texts(concept: object) -> list[str]:
    """The human words of a CodeableConcept: its text and every coding display."""
    if not isinstance(concept, dict):
        return []
    texts = []
    if isinstance(concept.get("text"), str):
        texts.append(concept["text"])
    for coding in array(concept.get("coding")):
        if isinstance(coding, dict) and isinstance(coding.get("display"), str):
            texts.append(coding["display"])
    return texts


def concept_label(concept: object) -> str | None:
    """The best short human label of a CodeableConcept."""
    texts = concept_texts(concept)
    return texts[0].strip() if texts else None
