"""Plausibility ranges per observation type and unit: flag, never drop, never "fix".

A value outside its range is stored as measured with quality ``implausible`` so a clinician
sees it and a device fault is visible; the ranges are wide physiological bounds (what a living
patient at home can show), not clinical alarm limits. SFLOAT/FLOAT special values (NaN, NRes,
+/-INF, reserved) are stored as those special values with quality ``special``. Types without a
listed range are ``ok``: we do not guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from phd_protocol import mdc
from phd_protocol.observation import Observation
from phd_protocol.sfloat import MedicalNumber, SpecialValue

__all__ = ["IMPLAUSIBLE", "OK", "RANGES", "SPECIAL", "quality"]

OK = "ok"
IMPLAUSIBLE = "implausible"
SPECIAL = "special"

D = Decimal
_BP = ("mm[Hg]", D(10), D(300))
_BP_KPA = ("kPa", D("1.3"), D(40))
_PULSE = ("/min", D(20), D(300))
_GLU_MG = ("mg/dL", D(10), D(1500))
_GLU_MMOL = ("mmol/L", D("0.5"), D("83"))
_TEMP_C = ("Cel", D(25), D(45))
_TEMP_F = ("[degF]", D(77), D(113))

_GLUCOSE_TERMS = (
    mdc.CONC_GLU_CAPILLARY_WHOLEBLOOD,
    mdc.CONC_GLU_CAPILLARY_PLASMA,
    mdc.CONC_GLU_VENOUS_WHOLEBLOOD,
    mdc.CONC_GLU_VENOUS_PLASMA,
    mdc.CONC_GLU_ARTERIAL_WHOLEBLOOD,
    mdc.CONC_GLU_ARTERIAL_PLASMA,
    mdc.CONC_GLU_UNDETERMINED_WHOLEBLOOD,
    mdc.CONC_GLU_UNDETERMINED_PLASMA,
    mdc.CONC_GLU_ISF,
)
_TEMP_TERMS = (
    mdc.TEMP_BODY,
    mdc.TEMP_TYMP,
    mdc.TEMP_RECT,
    mdc.TEMP_ORAL,
    mdc.TEMP_EAR,
    mdc.TEMP_FINGER,
    mdc.TEMP_TOE,
    mdc.TEMP_AXILLA,
    mdc.TEMP_GIT,
)


def _table() -> dict[tuple[int, str], tuple[Decimal, Decimal]]:
    rows: list[tuple[int, tuple[str, Decimal, Decimal]]] = []
    for term in mdc.BLOOD_PRESSURE_COMPONENTS:
        rows += [(term.code, _BP), (term.code, _BP_KPA)]
    rows += [(mdc.PRESS_CUFF.code, ("mm[Hg]", D(0), D(350)))]
    for term in (mdc.PULS_RATE_NON_INV, mdc.ECG_HEART_RATE, mdc.PULS_OXIM_PULS_RATE):
        rows.append((term.code, _PULSE))
    for term in _GLUCOSE_TERMS:
        rows += [(term.code, _GLU_MG), (term.code, _GLU_MMOL)]
    for term in _TEMP_TERMS:
        rows += [(term.code, _TEMP_C), (term.code, _TEMP_F)]
    rows += [
        (mdc.MASS_BODY_ACTUAL.code, ("kg", D("0.5"), D(650))),
        (mdc.MASS_BODY_ACTUAL.code, ("[lb_av]", D(1), D(1430))),
        (mdc.LEN_BODY_ACTUAL.code, ("cm", D(20), D(275))),
        (mdc.LEN_BODY_ACTUAL.code, ("[in_i]", D(8), D(108))),
        (mdc.RATIO_MASS_BODY_LEN_SQ.code, ("kg/m2", D(5), D(250))),
        (mdc.PULS_OXIM_SAT_O2.code, ("%", D(30), D(100))),
    ]
    return {(code, unit): (low, high) for code, (unit, low, high) in rows}


RANGES: Mapping[tuple[int, str], tuple[Decimal, Decimal]] = _table()


def _check(code: int, unit: str, value: MedicalNumber) -> str:
    if isinstance(value, SpecialValue):
        return SPECIAL
    bounds = RANGES.get((code, unit))
    if bounds is None:
        return OK
    low, high = bounds
    return OK if low <= value <= high else IMPLAUSIBLE


def quality(obs: Observation) -> str:
    """``special`` beats ``implausible`` beats ``ok`` over the value and every component."""
    results = []
    if obs.value is not None:
        results.append(_check(obs.mdc_code, obs.unit, obs.value))
    results += [_check(c.mdc_code, obs.unit, c.value) for c in obs.components]
    for level in (SPECIAL, IMPLAUSIBLE):
        if level in results:
            return level
    return OK
