"""Readings as FHIR R4 Observations, each validated with fhir.resources (pure).

fhir.resources 8 ships R5 as its default and R4B as `fhir.resources.R4B`; the
Observation resource and every data type used here are unchanged between R4
(4.0.1) and R4B (4.3.0), so R4B's model validates R4 Observations.
"""

from __future__ import annotations

import json
import time
from collections.abc import Hashable
from typing import Any

import orjson
from fhir.resources.R4B.observation import Observation

from edge.readings import Reading
from ehr_common.errors import InvalidArgument

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MDC = "urn:oid:2.16.840.1.113883.6.24"
READING_ID_SYSTEM = "urn:ehr-abe:iomt-reading"
_VITAL_SIGNS = [
    {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "vital-signs",
                "display": "Vital Signs",
            }
        ]
    }
]


def _code(*codings: tuple[str, str, str]) -> dict[str, Any]:
    return {"coding": [{"system": s, "code": c, "display": d} for s, c, d in codings]}


def _when(t_ms: int) -> str:
    """FHIR dateTime of a Unix-ms time, UTC, milliseconds: integer arithmetic, exact."""
    day_time = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t_ms // 1000))
    return f"{day_time}.{t_ms % 1000:03d}Z"


def _qty(value: float, unit: str, code: str) -> dict[str, Any]:
    v: float | int = int(value) if float(value).is_integer() else round(value, 3)
    return {"value": v, "unit": unit, "system": UCUM, "code": code}


HEART_RATE = (LOINC, "8867-4", "Heart rate")
SPO2 = (LOINC, "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry")
SPO2_ARTERIAL = (LOINC, "2708-6", "Oxygen saturation in Arterial blood")
BP_PANEL = (LOINC, "85354-9", "Blood pressure panel with all children optional")
SYSTOLIC = (LOINC, "8480-6", "Systolic blood pressure")
DIASTOLIC = (LOINC, "8462-4", "Diastolic blood pressure")
BODY_TEMP = (LOINC, "8310-5", "Body temperature")
ECG_LEAD = (MDC, "131328", "MDC_ECG_ELEC_POTL")

# Built once and shared by every Observation (serialised, never mutated).
_HEART_RATE_CODE = _code(HEART_RATE)
_SPO2_CODE = _code(SPO2, SPO2_ARTERIAL)
_BP_PANEL_CODE = _code(BP_PANEL)
_SYSTOLIC_CODE = _code(SYSTOLIC)
_DIASTOLIC_CODE = _code(DIASTOLIC)
_BODY_TEMP_CODE = _code(BODY_TEMP)
_ECG_CODE = _code(ECG_LEAD)
_UV_ORIGIN = {"value": 0, "unit": "uV", "system": UCUM, "code": "uV"}


def _base(r: Reading, patient_id: str, suffix: str, code: dict[str, Any]) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": READING_ID_SYSTEM, "value": f"{r.device_id}/{r.seq}{suffix}"}],
        "status": "final",
        "code": code,
        "subject": {"reference": f"Patient/{patient_id}"},
        "device": {"reference": f"Device/{r.device_id}"},
        "effectiveDateTime": _when(r.t_ms),
    }
    if r.device_type != "ecg":
        obs["category"] = _VITAL_SIGNS
    return obs


def observations(r: Reading, patient_id: str) -> list[dict[str, Any]]:
    """The FHIR Observation(s) of one reading, as JSON-ready dicts (not yet validated)."""
    v = r.values
    if r.device_type == "heart-rate":
        return [
            {
                **_base(r, patient_id, "", _HEART_RATE_CODE),
                "valueQuantity": _qty(v["hr"], "/min", "/min"),
            }
        ]
    if r.device_type == "pulse-oximeter":
        return [
            {
                **_base(r, patient_id, "#spo2", _SPO2_CODE),
                "valueQuantity": _qty(v["spo2"], "%", "%"),
            },
            {
                **_base(r, patient_id, "#hr", _HEART_RATE_CODE),
                "valueQuantity": _qty(v["hr"], "/min", "/min"),
            },
        ]
    if r.device_type == "bp-cuff":
        panel = _base(r, patient_id, "", _BP_PANEL_CODE)
        panel["component"] = [
            {"code": _SYSTOLIC_CODE, "valueQuantity": _qty(v["sys"], "mmHg", "mm[Hg]")},
            {"code": _DIASTOLIC_CODE, "valueQuantity": _qty(v["dia"], "mmHg", "mm[Hg]")},
        ]
        return [
            panel,
            {
                **_base(r, patient_id, "#hr", _HEART_RATE_CODE),
                "valueQuantity": _qty(v["hr"], "/min", "/min"),
            },
        ]
    if r.device_type == "thermometer":
        return [
            {
                **_base(r, patient_id, "", _BODY_TEMP_CODE),
                "valueQuantity": _qty(v["temp_c"], "Cel", "Cel"),
            }
        ]
    if r.device_type == "ecg":
        obs = _base(r, patient_id, "", _ECG_CODE)
        obs["valueSampledData"] = {
            "origin": _UV_ORIGIN,
            "period": round(1000.0 / v["fs"], 6),
            "dimensions": 1,
            "data": " ".join(str(s) for s in r.samples),
        }
        return [obs]
    raise InvalidArgument(f"no FHIR mapping for device type {r.device_type!r}")


def validate(obs: dict[str, Any]) -> None:
    """InvalidArgument unless `obs` is a valid FHIR Observation (fhir.resources R4B model)."""
    try:
        Observation.model_validate(obs)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise InvalidArgument(f"not a valid FHIR Observation: {str(exc)[:300]}") from None


def _shape(value: Any) -> Any:
    """The structure of a JSON value with its leaves replaced by their types."""
    if isinstance(value, dict):
        return tuple((k, _shape(v)) for k, v in value.items())
    if isinstance(value, list):
        return tuple(_shape(v) for v in value)
    return type(value).__name__


def structure_key(r: Reading) -> Hashable:
    """What decides the JSON structure of `observations(r)`: the device type and,
    for each value, whether `_qty` writes an int or a float. Everything else that
    varies is a string (ids, times, ECG data) or a float (ECG period).
    tests/test_edge_core.py checks that readings with equal keys give Observations
    of equal `_shape`."""
    return (r.device_type, *(float(v).is_integer() for v in r.values.values()))


class ObservationValidator:
    """Validates Observations with fhir.resources.

    mode "every": each Observation through the library (~330 µs each on these
    machines: it would cap the edge near 2,500 readings/s). mode "shape": each
    distinct structure once through the library, cached; the leaves that vary
    between Observations of one structure are the reading's values, already
    checked by `edge.readings` (finite numbers within physiological bounds,
    integer samples), ids checked by the edge's configuration, and times and
    codes produced here. tests/test_edge_core.py checks, over generated
    readings of every device type, that both modes agree. `check_reading`
    goes by the reading's `structure_key` first (a few hundred ns instead of
    ~12 µs for `_shape`): a key seen before had all its Observations' shapes
    validated.
    """

    def __init__(self, mode: str = "shape"):
        if mode not in ("every", "shape"):
            raise InvalidArgument("FHIR validation mode must be 'every' or 'shape'")
        self.mode = mode
        self._shapes: set[Any] = set()
        self._keys: set[Hashable] = set()

    def __call__(self, obs: dict[str, Any]) -> None:
        if self.mode == "every":
            validate(obs)
            return
        shape = _shape(obs)
        if shape in self._shapes:
            return
        validate(obs)
        if len(self._shapes) < 10_000:  # bounded: shapes are per device type
            self._shapes.add(shape)

    def check_reading(self, r: Reading, obs: list[dict[str, Any]]) -> None:
        """`obs` = observations(r): each validated (mode every) or its structure known."""
        if self.mode == "every":
            for o in obs:
                validate(o)
            return
        key = structure_key(r)
        if key in self._keys:
            return
        for o in obs:
            self(o)
        if len(self._keys) < 10_000:
            self._keys.add(key)


_DEFAULT = ObservationValidator("every")

#: The code of each device type's first Observation (see `observations`).
_FIRST_CODE = {
    "heart-rate": HEART_RATE[1],
    "pulse-oximeter": SPO2[1],
    "bp-cuff": BP_PANEL[1],
    "thermometer": BODY_TEMP[1],
    "ecg": ECG_LEAD[1],
}


def reading_belongs(body: bytes, device_type: str, patient_id: str) -> bool:
    """Whether a spooled reading's Observations (made by `to_ndjson`) are of this
    device type and patient: the edge's configuration may have changed since."""
    try:
        first = json.loads(body.split(b"\n", 1)[0])
        return bool(
            first["subject"]["reference"] == f"Patient/{patient_id}"
            and first["code"]["coding"][0]["code"] == _FIRST_CODE.get(device_type)
        )
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def to_ndjson(r: Reading, patient_id: str, validator: ObservationValidator = _DEFAULT) -> bytes:
    """One reading's Observations, validated, as NDJSON lines (compact UTF-8 JSON)."""
    obs = observations(r, patient_id)
    validator.check_reading(r, obs)
    return b"".join(orjson.dumps(o) + b"\n" for o in obs)
