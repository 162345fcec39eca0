"""IEEE 11073-10101 nomenclature used by our health devices: observation types and units.

Codes are the full 32-bit context-free codes, ``partition * 2**16 + term code``, as the HL7 PHD
Implementation Guide uses them in ``Observation.code`` (PHD IG "Obtaining the Observation Code":
"final 32-bit MDC code: value = partition * 2^16 + termCode"; system
``urn:iso:std:iso:11073:10101``). Partitions: 2 = SCADA (measurements), 4 = DIM (units),
128 = PHD_DM (disease management context), 129 = PHD_HF (health and fitness).

LOINC codes are given where the PHD IG asks for them: it requires the FHIR vital-signs code
next to the MDC code whenever the observation is one of the vital signs (PHD IG "Obtaining the
Observation Code" and "Terminology": blood pressure panel and components, heart rate, body
temperature, body weight and height, BMI, oxygen saturation). Other observations carry only
the MDC code (``loinc`` is None).

UCUM spellings follow the FHIR vital-signs profiles (``mm[Hg]``, ``/min``, ``Cel``, ``[degF]``,
``kg``, ``[lb_av]``, ``cm``, ``[in_i]``, ``kg/m2``, ``%``) and UCUM itself for the rest.

This module is data only: no parsing, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BLOOD_PRESSURE_COMPONENTS",
    "CONC_GLU_ARTERIAL_PLASMA",
    "CONC_GLU_ARTERIAL_WHOLEBLOOD",
    "CONC_GLU_CAPILLARY_PLASMA",
    "CONC_GLU_CAPILLARY_WHOLEBLOOD",
    "CONC_GLU_CONTROL",
    "CONC_GLU_ISF",
    "CONC_GLU_UNDETERMINED_PLASMA",
    "CONC_GLU_UNDETERMINED_WHOLEBLOOD",
    "CONC_GLU_VENOUS_PLASMA",
    "CONC_GLU_VENOUS_WHOLEBLOOD",
    "CONC_HBA1C",
    "CTXT_GLU_CARB",
    "CTXT_GLU_EXERCISE",
    "CTXT_MEDICATION",
    "DIM_BEAT_PER_MIN",
    "DIM_CENTI_M",
    "DIM_DEGC",
    "DIM_FAHR",
    "DIM_INCH",
    "DIM_KG_PER_M_SQ",
    "DIM_KILO_G",
    "DIM_KILO_JOULES",
    "DIM_KILO_PASCAL",
    "DIM_LB",
    "DIM_MILLI_G",
    "DIM_MILLI_G_PER_DL",
    "DIM_MILLI_L",
    "DIM_MILLI_MOLE_PER_L",
    "DIM_MILLI_SEC",
    "DIM_MMHG",
    "DIM_PERCENT",
    "DIM_SEC",
    "DIM_X_G",
    "ECG_HEART_RATE",
    "ECG_TIME_PD_RR_GL",
    "GLUCOSE_BY_TYPE_SAMPLE",
    "HF_ACTIVITY_TIME",
    "HF_ENERGY",
    "LEN_BODY_ACTUAL",
    "MASS_BODY_ACTUAL",
    "PRESS_BLD_NONINV",
    "PRESS_BLD_NONINV_DIA",
    "PRESS_BLD_NONINV_MEAN",
    "PRESS_BLD_NONINV_SYS",
    "PRESS_CUFF",
    "PULS_OXIM_PERF_REL",
    "PULS_OXIM_PULS_RATE",
    "PULS_OXIM_SAT_O2",
    "PULS_RATE_NON_INV",
    "RATIO_MASS_BODY_LEN_SQ",
    "TEMPERATURE_BY_SITE",
    "TEMP_AXILLA",
    "TEMP_BODY",
    "TEMP_EAR",
    "TEMP_FINGER",
    "TEMP_GIT",
    "TEMP_ORAL",
    "TEMP_RECT",
    "TEMP_TOE",
    "TEMP_TYMP",
    "TERMS",
    "UNITS",
    "Term",
    "Unit",
    "term",
    "unit",
]


@dataclass(frozen=True, slots=True)
class Term:
    """An observation type: MDC code, reference id and (vital signs only) LOINC code."""

    code: int
    ref_id: str
    loinc: str | None = None


@dataclass(frozen=True, slots=True)
class Unit:
    """A unit: MDC dimension code (partition 4), reference id and UCUM code."""

    code: int
    ref_id: str
    ucum: str


def _scada(term_code: int) -> int:
    return (2 << 16) | term_code


def _dim(term_code: int) -> int:
    return (4 << 16) | term_code


# --- Observation types --------------------------------------------------------------------
# Blood pressure (IEEE 11073-10407; PHD IG blood pressure example; FHIR vital-signs BP panel
# 85354-9 with systolic 8480-6 / diastolic 8462-4; mean 8478-0).
PRESS_BLD_NONINV = Term(_scada(18948), "MDC_PRESS_BLD_NONINV", "85354-9")  # 150020
PRESS_BLD_NONINV_SYS = Term(_scada(18949), "MDC_PRESS_BLD_NONINV_SYS", "8480-6")  # 150021
PRESS_BLD_NONINV_DIA = Term(_scada(18950), "MDC_PRESS_BLD_NONINV_DIA", "8462-4")  # 150022
PRESS_BLD_NONINV_MEAN = Term(_scada(18951), "MDC_PRESS_BLD_NONINV_MEAN", "8478-0")  # 150023
# Intermediate cuff pressure (BLS 0x2A36) is the cuff pressure during inflation/deflation.
PRESS_CUFF = Term(_scada(19228), "MDC_PRESS_CUFF")  # 150300
PULS_RATE_NON_INV = Term(_scada(18474), "MDC_PULS_RATE_NON_INV", "8867-4")  # 149546

# Glucose (IEEE 11073-10417 section 6.7.2; GLS type/sample location nibble -> code).
CONC_GLU_CAPILLARY_WHOLEBLOOD = Term(_scada(29112), "MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD")
CONC_GLU_CAPILLARY_PLASMA = Term(_scada(29116), "MDC_CONC_GLU_CAPILLARY_PLASMA")
CONC_GLU_VENOUS_WHOLEBLOOD = Term(_scada(29120), "MDC_CONC_GLU_VENOUS_WHOLEBLOOD")
CONC_GLU_VENOUS_PLASMA = Term(_scada(29124), "MDC_CONC_GLU_VENOUS_PLASMA")
CONC_GLU_ARTERIAL_WHOLEBLOOD = Term(_scada(29128), "MDC_CONC_GLU_ARTERIAL_WHOLEBLOOD")
CONC_GLU_ARTERIAL_PLASMA = Term(_scada(29132), "MDC_CONC_GLU_ARTERIAL_PLASMA")
CONC_GLU_CONTROL = Term(_scada(29136), "MDC_CONC_GLU_CONTROL")
CONC_GLU_ISF = Term(_scada(29140), "MDC_CONC_GLU_ISF")
CONC_GLU_UNDETERMINED_WHOLEBLOOD = Term(_scada(29292), "MDC_CONC_GLU_UNDETERMINED_WHOLEBLOOD")
CONC_GLU_UNDETERMINED_PLASMA = Term(_scada(29296), "MDC_CONC_GLU_UNDETERMINED_PLASMA")
CONC_HBA1C = Term(_scada(29148), "MDC_CONC_HBA1C")  # 160220
# Glucose context (IEEE 11073-10417, partition PHD_DM = 128).
CTXT_GLU_EXERCISE = Term((128 << 16) | 29152, "MDC_CTXT_GLU_EXERCISE")
CTXT_GLU_CARB = Term((128 << 16) | 29156, "MDC_CTXT_GLU_CARB")
CTXT_MEDICATION = Term((128 << 16) | 29188, "MDC_CTXT_MEDICATION")

# Body temperature (IEEE 11073-10408; every site maps to the vital-signs code 8310-5).
TEMP_BODY = Term(_scada(19292), "MDC_TEMP_BODY", "8310-5")  # 150364
TEMP_TYMP = Term(_scada(19320), "MDC_TEMP_TYMP", "8310-5")  # 150392
TEMP_RECT = Term(_scada(57348), "MDC_TEMP_RECT", "8310-5")  # 188420
TEMP_ORAL = Term(_scada(57352), "MDC_TEMP_ORAL", "8310-5")  # 188424
TEMP_EAR = Term(_scada(57356), "MDC_TEMP_EAR", "8310-5")  # 188428
TEMP_FINGER = Term(_scada(57360), "MDC_TEMP_FINGER", "8310-5")  # 188432
TEMP_TOE = Term(_scada(57376), "MDC_TEMP_TOE", "8310-5")  # 188448
TEMP_AXILLA = Term(_scada(57380), "MDC_TEMP_AXILLA", "8310-5")  # 188452
TEMP_GIT = Term(_scada(57384), "MDC_TEMP_GIT", "8310-5")  # 188456

# Weight scale (IEEE 11073-10415).
MASS_BODY_ACTUAL = Term(_scada(57664), "MDC_MASS_BODY_ACTUAL", "29463-7")  # 188736
LEN_BODY_ACTUAL = Term(_scada(57668), "MDC_LEN_BODY_ACTUAL", "8302-2")  # 188740
RATIO_MASS_BODY_LEN_SQ = Term(_scada(57680), "MDC_RATIO_MASS_BODY_LEN_SQ", "39156-5")  # 188752

# Heart rate sensor (ECG-derived heart rate; RR interval; energy from 11073-10441 PHD_HF).
ECG_HEART_RATE = Term(_scada(16770), "MDC_ECG_HEART_RATE", "8867-4")  # 147842
ECG_TIME_PD_RR_GL = Term(_scada(16168), "MDC_ECG_TIME_PD_RR_GL")  # 147240
HF_ENERGY = Term((129 << 16) | 119, "MDC_HF_ENERGY")
# Exercise duration of the glucose context (IEEE 11073-10441 PHD_HF term 125).
HF_ACTIVITY_TIME = Term((129 << 16) | 125, "MDC_HF_ACTIVITY_TIME")

# Pulse oximeter (IEEE 11073-10404; FHIR vital-signs oxygen saturation by pulse oximetry).
PULS_OXIM_SAT_O2 = Term(_scada(19384), "MDC_PULS_OXIM_SAT_O2", "59408-5")  # 150456
PULS_OXIM_PULS_RATE = Term(_scada(18458), "MDC_PULS_OXIM_PULS_RATE", "8867-4")  # 149530
PULS_OXIM_PERF_REL = Term(_scada(19376), "MDC_PULS_OXIM_PERF_REL")  # 150448

# --- Units (partition DIM) -----------------------------------------------------------------
DIM_MMHG = Unit(_dim(3872), "MDC_DIM_MMHG", "mm[Hg]")
DIM_KILO_PASCAL = Unit(_dim(3843), "MDC_DIM_KILO_PASCAL", "kPa")
DIM_BEAT_PER_MIN = Unit(_dim(2720), "MDC_DIM_BEAT_PER_MIN", "/min")
DIM_MILLI_G_PER_DL = Unit(_dim(2130), "MDC_DIM_MILLI_G_PER_DL", "mg/dL")
DIM_MILLI_MOLE_PER_L = Unit(_dim(4722), "MDC_DIM_MILLI_MOLE_PER_L", "mmol/L")
DIM_PERCENT = Unit(_dim(544), "MDC_DIM_PERCENT", "%")
DIM_DEGC = Unit(_dim(6048), "MDC_DIM_DEGC", "Cel")
DIM_FAHR = Unit(_dim(4416), "MDC_DIM_FAHR", "[degF]")
DIM_KILO_G = Unit(_dim(1731), "MDC_DIM_KILO_G", "kg")
DIM_LB = Unit(_dim(1760), "MDC_DIM_LB", "[lb_av]")
DIM_X_G = Unit(_dim(1728), "MDC_DIM_X_G", "g")
DIM_MILLI_G = Unit(_dim(1746), "MDC_DIM_MILLI_G", "mg")
DIM_MILLI_L = Unit(_dim(1618), "MDC_DIM_MILLI_L", "mL")
DIM_CENTI_M = Unit(_dim(1297), "MDC_DIM_CENTI_M", "cm")
DIM_INCH = Unit(_dim(1376), "MDC_DIM_INCH", "[in_i]")
DIM_KG_PER_M_SQ = Unit(_dim(1952), "MDC_DIM_KG_PER_M_SQ", "kg/m2")
DIM_MILLI_SEC = Unit(_dim(2194), "MDC_DIM_MILLI_SEC", "ms")
DIM_SEC = Unit(_dim(2176), "MDC_DIM_SEC", "s")
DIM_KILO_JOULES = Unit(_dim(3971), "MDC_DIM_KILO_JOULES", "kJ")

TERMS: dict[int, Term] = {
    t.code: t
    for t in (
        PRESS_BLD_NONINV,
        PRESS_BLD_NONINV_SYS,
        PRESS_BLD_NONINV_DIA,
        PRESS_BLD_NONINV_MEAN,
        PRESS_CUFF,
        PULS_RATE_NON_INV,
        CONC_GLU_CAPILLARY_WHOLEBLOOD,
        CONC_GLU_CAPILLARY_PLASMA,
        CONC_GLU_VENOUS_WHOLEBLOOD,
        CONC_GLU_VENOUS_PLASMA,
        CONC_GLU_ARTERIAL_WHOLEBLOOD,
        CONC_GLU_ARTERIAL_PLASMA,
        CONC_GLU_CONTROL,
        CONC_GLU_ISF,
        CONC_GLU_UNDETERMINED_WHOLEBLOOD,
        CONC_GLU_UNDETERMINED_PLASMA,
        CONC_HBA1C,
        CTXT_GLU_EXERCISE,
        CTXT_GLU_CARB,
        CTXT_MEDICATION,
        TEMP_BODY,
        TEMP_TYMP,
        TEMP_RECT,
        TEMP_ORAL,
        TEMP_EAR,
        TEMP_FINGER,
        TEMP_TOE,
        TEMP_AXILLA,
        TEMP_GIT,
        MASS_BODY_ACTUAL,
        LEN_BODY_ACTUAL,
        RATIO_MASS_BODY_LEN_SQ,
        ECG_HEART_RATE,
        ECG_TIME_PD_RR_GL,
        HF_ENERGY,
        HF_ACTIVITY_TIME,
        PULS_OXIM_SAT_O2,
        PULS_OXIM_PULS_RATE,
        PULS_OXIM_PERF_REL,
    )
}
"""Every observation type this project emits, by MDC code."""

UNITS: dict[int, Unit] = {
    u.code: u
    for u in (
        DIM_MMHG,
        DIM_KILO_PASCAL,
        DIM_BEAT_PER_MIN,
        DIM_MILLI_G_PER_DL,
        DIM_MILLI_MOLE_PER_L,
        DIM_PERCENT,
        DIM_DEGC,
        DIM_FAHR,
        DIM_KILO_G,
        DIM_LB,
        DIM_X_G,
        DIM_MILLI_G,
        DIM_MILLI_L,
        DIM_CENTI_M,
        DIM_INCH,
        DIM_KG_PER_M_SQ,
        DIM_MILLI_SEC,
        DIM_SEC,
        DIM_KILO_JOULES,
    )
}
"""Every unit this project emits, by MDC dimension code."""

BLOOD_PRESSURE_COMPONENTS = (PRESS_BLD_NONINV_SYS, PRESS_BLD_NONINV_DIA, PRESS_BLD_NONINV_MEAN)

# GLS "Type" nibble of the Type-Sample Location field (GLS 3.106.2.6, GSS 3.106) -> MDC code.
GLUCOSE_BY_TYPE_SAMPLE: dict[int, Term] = {
    1: CONC_GLU_CAPILLARY_WHOLEBLOOD,
    2: CONC_GLU_CAPILLARY_PLASMA,
    3: CONC_GLU_VENOUS_WHOLEBLOOD,
    4: CONC_GLU_VENOUS_PLASMA,
    5: CONC_GLU_ARTERIAL_WHOLEBLOOD,
    6: CONC_GLU_ARTERIAL_PLASMA,
    7: CONC_GLU_UNDETERMINED_WHOLEBLOOD,
    8: CONC_GLU_UNDETERMINED_PLASMA,
    9: CONC_GLU_ISF,
    10: CONC_GLU_CONTROL,
}

# HTS Temperature Type (HTS 3.2, GSS 3.224) -> MDC site-specific code; None = not given.
TEMPERATURE_BY_SITE: dict[int | None, Term] = {
    None: TEMP_BODY,
    1: TEMP_AXILLA,
    2: TEMP_BODY,
    3: TEMP_EAR,
    4: TEMP_FINGER,
    5: TEMP_GIT,
    6: TEMP_ORAL,
    7: TEMP_RECT,
    8: TEMP_TOE,
    9: TEMP_TYMP,
}


def term(code: int) -> Term:
    """The term for an MDC code; KeyError if this project does not emit it."""
    return TERMS[code]


def unit(code: int) -> Unit:
    """The unit for an MDC dimension code; KeyError if this project does not emit it."""
    return UNITS[code]
