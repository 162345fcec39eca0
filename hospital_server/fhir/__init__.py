"""FHIR R4 views of stored readings, patients and errors, in the style of the HL7 PHD IG.

Plain functions from values to JSON-ready dicts (and :func:`to_json` from dicts to bytes);
the ``/fhir`` routes call them after access control. This package must never do I/O, touch the
database, import FastAPI or log: whatever it is given it turns into a resource, and an invalid
argument raises ValueError/TypeError whose message names the argument, never its value.

- :func:`observation_resource`: one stored reading -> Observation (PhdNumericObservation or
  PhdCompoundNumericObservation; MDC + LOINC codings, UCUM units, exact decimals).
- :func:`bundle`: resources -> ``searchset`` Bundle with paging links.
- :func:`patient_resource`: minimal Patient (PhdPatient) with the MRN as an MR identifier.
- :func:`operation_outcome`: one error issue.
- :func:`to_json`: resource -> UTF-8 JSON bytes with decimals written exactly.

The mapping, its sources and what is not mapped yet: docs/fhir.md.
"""

from __future__ import annotations

from hospital_server.fhir.codes import PLAUSIBILITY_EXTENSION_URL
from hospital_server.fhir.encoding import MEDIA_TYPE, to_json
from hospital_server.fhir.observation import observation_resource
from hospital_server.fhir.resources import bundle, operation_outcome, patient_resource

__all__ = [
    "MEDIA_TYPE",
    "PLAUSIBILITY_EXTENSION_URL",
    "bundle",
    "observation_resource",
    "operation_outcome",
    "patient_resource",
    "to_json",
]
