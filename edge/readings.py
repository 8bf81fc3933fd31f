"""Device readings: schema per device type, physiological bounds, sequence order (pure).

A device publishes one JSON object per message on `devices/<device id>/readings`:
`{"seq": <int>, "t": <Unix ms>, ...fields of its type}`. `seq` increases by at
least one per reading (a device counts its readings); `t` is the measurement
time. Anything else is refused with a reason the edge counts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

MAX_READING_BYTES = 16 * 1024
#: Readings older than this or further in the future than the skew are refused.
MAX_AGE_MS = 24 * 3600 * 1000
MAX_SKEW_MS = 5 * 60 * 1000
MAX_SEQ = 2**53  # JSON integers stay exact below this


class Reason(StrEnum):
    MALFORMED = "malformed"
    OUT_OF_RANGE = "out_of_range"
    REPLAYED = "replayed"
    UNKNOWN_DEVICE = "unknown_device"
    WRONG_TYPE = "wrong_type"


class Rejected(Exception):
    def __init__(self, reason: Reason, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Field:
    name: str
    low: float
    high: float
    integer: bool = False


#: Physiological bounds: outside them a value is a device fault, not a patient state.
DEVICE_TYPES: dict[str, tuple[Field, ...]] = {
    "pulse-oximeter": (Field("spo2", 50, 100), Field("hr", 20, 300)),
    "bp-cuff": (Field("sys", 40, 300), Field("dia", 20, 200), Field("hr", 20, 300)),
    "thermometer": (Field("temp_c", 25, 45),),
    "heart-rate": (Field("hr", 20, 300),),
    "ecg": (Field("fs", 50, 2000, integer=True),),
}
ECG_MAX_SAMPLES = 2000
ECG_SAMPLE_LIMIT_UV = 20_000  # ±20 mV covers every physiological ECG lead


@dataclass(frozen=True)
class Reading:
    device_id: str
    device_type: str
    seq: int
    t_ms: int
    values: dict[str, float]
    samples: tuple[int, ...] = ()


def _number(obj: dict[str, Any], f: Field) -> float:
    v = obj.get(f.name)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise Rejected(Reason.MALFORMED, f"field {f.name!r} must be a number")
    if f.integer and not isinstance(v, int):
        raise Rejected(Reason.MALFORMED, f"field {f.name!r} must be an integer")
    if not math.isfinite(v) or not f.low <= v <= f.high:
        raise Rejected(Reason.OUT_OF_RANGE, f"{f.name}={v} outside [{f.low}, {f.high}]")
    return float(v)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # {"hr": 60, "hr": 250}: parsers disagree on which one counts; refuse, don't pick.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity, -Infinity


#: One decoder for every reading (json.loads with hooks builds a new one per call).
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)


def parse_reading(device_id: str, device_type: str, payload: bytes, now_ms: int) -> Reading:
    """The reading in `payload`, checked against its device type; Rejected otherwise."""
    if len(payload) > MAX_READING_BYTES:
        raise Rejected(Reason.MALFORMED, f"larger than {MAX_READING_BYTES} bytes")
    fields = DEVICE_TYPES.get(device_type)
    if fields is None:
        raise Rejected(Reason.WRONG_TYPE, f"unknown device type {device_type!r}")
    try:
        obj = _DECODER.decode(payload.decode("utf-8"))  # devices send UTF-8 JSON
    except (ValueError, UnicodeDecodeError):  # JSONDecodeError and our hooks' refusals
        raise Rejected(Reason.MALFORMED, "not JSON") from None
    except RecursionError:  # "[[[[..." within the size bound: a bomb, not a crash
        raise Rejected(Reason.MALFORMED, "JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise Rejected(Reason.MALFORMED, "not a JSON object")
    allowed = {"seq", "t", "type", "samples", *(f.name for f in fields)}
    extra = set(obj) - allowed
    if extra:
        raise Rejected(Reason.MALFORMED, f"unexpected fields {sorted(extra)}")
    if "type" in obj and obj["type"] != device_type:
        raise Rejected(Reason.WRONG_TYPE, f"a {device_type} sent a {obj['type']!r} reading")
    seq, t = obj.get("seq"), obj.get("t")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < MAX_SEQ:
        raise Rejected(Reason.MALFORMED, "seq must be a non-negative integer")
    if isinstance(t, bool) or not isinstance(t, int):
        raise Rejected(Reason.MALFORMED, "t must be an integer (Unix milliseconds)")
    if not now_ms - MAX_AGE_MS <= t <= now_ms + MAX_SKEW_MS:
        raise Rejected(Reason.OUT_OF_RANGE, "t is too far from the edge's clock")
    values = {f.name: _number(obj, f) for f in fields}
    samples: tuple[int, ...] = ()
    if device_type == "ecg":
        raw = obj.get("samples")
        if not isinstance(raw, list) or not 1 <= len(raw) <= ECG_MAX_SAMPLES:
            raise Rejected(
                Reason.MALFORMED, f"samples must be a list of 1-{ECG_MAX_SAMPLES} integers"
            )
        for s in raw:
            if isinstance(s, bool) or not isinstance(s, int):
                raise Rejected(Reason.MALFORMED, "samples must be integers (microvolts)")
            if not -ECG_SAMPLE_LIMIT_UV <= s <= ECG_SAMPLE_LIMIT_UV:
                raise Rejected(Reason.OUT_OF_RANGE, f"ECG sample {s} µV out of range")
        samples = tuple(raw)
    elif "samples" in obj:
        raise Rejected(Reason.MALFORMED, "only an ECG sends samples")
    if device_type == "bp-cuff" and values["sys"] <= values["dia"]:
        raise Rejected(Reason.OUT_OF_RANGE, "systolic must exceed diastolic")
    return Reading(device_id, device_type, seq, t, values, samples)


def check_sequence(last_seq: int | None, seq: int) -> None:
    """Sequence numbers strictly increase per device: an equal or lower one is a
    duplicate (a redelivery after a crash) or a replay, and is dropped."""
    if last_seq is not None and seq <= last_seq:
        raise Rejected(Reason.REPLAYED, f"seq {seq} is not after {last_seq}")
