"""Unit conversion for the electrolyte labs (UCUM codes and the unit strings labs really send).

Only mass <-> molar concentration for Mg and Ca needs molar masses; no general UCUM library
does that, so the factors live here with their source (clinical-reference.md §2.5).
"""
from __future__ import annotations

MOLAR_MASS = {"magnesium": 24.305, "calcium": 40.078, "creatinine": 113.12}  # g/mol, clinical-reference §2.5

# Unit spellings -> canonical UCUM. 'meq/l' equals mmol/L for monovalent K only; divalent handled below.
_UNIT_ALIASES = {
    "mmol/l": "mmol/L", "mmol/liter": "mmol/L", "mm/l": "mmol/L",
    "meq/l": "meq/L", "meq/liter": "meq/L", "[meq]/l": "meq/L",
    "mg/dl": "mg/dL", "mg/100ml": "mg/dL",
    "mg/l": "mg/L",
    "umol/l": "umol/L", "µmol/l": "umol/L", "μmol/l": "umol/L",
}


def canonical_unit(unit: object) -> str | None:
    if not isinstance(unit, str):
        return None
    return _UNIT_ALIASES.get(unit.strip().lower().replace(" ", ""))


def convert(value: float, unit: str | None, target: str, element: str) -> float | None:
    """Convert a concentration of `element` (potassium, magnesium, calcium, creatinine) to `target`.

    Returns None when the unit is unknown or the conversion is not meaningful.
    """
    src = canonical_unit(unit)
    dst = canonical_unit(target)
    if src is None or dst is None:
        return None
    if src == dst:
        return value
    valence = 2 if element in ("magnesium", "calcium") else 1  # mEq = mmol x charge
    # Everything via mmol/L.
    if src == "mmol/L":
        mmol = value
    elif src == "meq/L":
        mmol = value / valence
    elif src in ("mg/dL", "mg/L") and element in MOLAR_MASS:
        mg_per_l = value * (10 if src == "mg/dL" else 1)
        mmol = mg_per_l / MOLAR_MASS[element]
    elif src == "umol/L":
        mmol = value / 1000
    else:
        return None
    if dst == "mmol/L":
        return mmol
    if dst == "meq/L":
        return mmol * valence
    if dst in ("mg/dL", "mg/L") and element in MOLAR_MASS:
        mg_per_l = mmol * MOLAR_MASS[element]
        return mg_per_l / 10 if dst == "mg/dL" else mg_per_l
    if dst == "umol/L":
        return mmol * 1000
    return None
