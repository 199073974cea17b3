"""Unit conversion for the electrolyte and renal labs (clinical-reference §2.5), to exact values.

Every path through ``plugin.units.convert`` is checked against the value worked out by hand from the molar
masses (Mg 24.305, Ca 40.078, creatinine 113.12 g/mol) and the valences (K 1, Mg and Ca 2), with a
tolerance of float rounding only: a 0.1% error in a factor (µmol/L divided by 999, say) fails.
"""
from __future__ import annotations

import pytest

from plugin.units import MOLAR_MASS, canonical_unit, convert

EXACT = 1e-12  # relative: float rounding, nothing more


@pytest.mark.parametrize(("value", "unit", "target", "element", "expected"), [
    # identity: the same unit, however it is spelled
    (3.4, "mmol/L", "mmol/L", "potassium", 3.4),
    (3.4, "mmol / L", "mmol/L", "potassium", 3.4),
    (3.4, "MMOL/LITER", "mmol/L", "potassium", 3.4),
    # mEq/L: equal to mmol/L for potassium, twice it for the divalent magnesium and calcium
    (4.0, "mEq/L", "mmol/L", "potassium", 4.0),
    (4.0, "[mEq]/L", "mmol/L", "magnesium", 2.0),
    (2.5, "meq/l", "mmol/L", "calcium", 1.25),
    (2.0, "mmol/L", "meq/L", "magnesium", 4.0),
    (1.25, "mmol/L", "mEq/L", "calcium", 2.5),
    (3.8, "mmol/L", "meq/L", "potassium", 3.8),
    # mass concentration via the molar mass: mg/dL is ten times mg/L
    (2.4305, "mg/dL", "mmol/L", "magnesium", 1.0),
    (24.305, "mg/L", "mmol/L", "magnesium", 1.0),
    (40.078, "mg/100mL", "mmol/L", "calcium", 10.0),
    (1.0, "mmol/L", "mg/dL", "magnesium", 2.4305),
    (1.0, "mmol/L", "mg/L", "calcium", 40.078),
    (2.0, "mEq/L", "mg/dL", "calcium", 4.0078),
    (8.0156, "mg/dL", "meq/L", "calcium", 4.0),
    # µmol/L, the usual SI unit for creatinine, in all three spellings (micro sign, Greek mu, u)
    (1000.0, "µmol/L", "mmol/L", "creatinine", 1.0),
    (88.4, "μmol/L", "mmol/L", "creatinine", 0.0884),
    (88.4, "umol/L", "mg/dL", "creatinine", 0.0884 * 113.12 / 10),
    (1.0, "mg/dL", "umol/L", "creatinine", 10 / 113.12 * 1000),
    (1130.0, "mg/L", "µmol/L", "creatinine", 1130.0 / 113.12 * 1000),
    (0.85, "mmol/L", "umol/L", "magnesium", 850.0),
    (850.0, "umol/L", "mEq/L", "magnesium", 1.7),
])
def test_each_conversion_path_to_the_exact_value(value, unit, target, element, expected):
    assert convert(value, unit, target, element) == pytest.approx(expected, rel=EXACT)


def test_molar_masses_are_the_clinical_references():
    assert MOLAR_MASS == {"magnesium": 24.305, "calcium": 40.078, "creatinine": 113.12}


@pytest.mark.parametrize(("value", "unit", "target", "element"), [
    (1.0, "furlongs", "mmol/L", "potassium"),          # unknown source unit
    (1.0, "mmol/L", "furlongs", "potassium"),          # unknown target unit
    (None, None, "mmol/L", "potassium"),               # no unit at all
    (39.1, "mg/dL", "mmol/L", "potassium"),            # no molar mass for potassium: not guessed
    (3.9, "mmol/L", "mg/L", "potassium"),
])
def test_conversions_that_cannot_be_made_are_none(value, unit, target, element):
    assert convert(value, unit, target, element) is None


@pytest.mark.parametrize(("spelling", "canonical"), [
    ("mmol/L", "mmol/L"), (" mmol / l ", "mmol/L"), ("mM/L", "mmol/L"),
    ("mEq/L", "meq/L"), ("[mEq]/L", "meq/L"), ("mEq/liter", "meq/L"),
    ("mg/dL", "mg/dL"), ("mg/100 mL", "mg/dL"), ("MG/L", "mg/L"),
    ("umol/L", "umol/L"), ("µmol/L", "umol/L"), ("μmol/l", "umol/L"),
    ("mg", None), ("", None), (None, None), (4, None),
])
def test_unit_spellings(spelling, canonical):
    assert canonical_unit(spelling) == canonical
