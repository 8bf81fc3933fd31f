"""Sealed IoMT segments: CP-ABE once per stream window, AES-256-GCM per segment.

A stream window (one device, one patient, one policy, a configurable period)
has a 32-byte random window key W. W is CP-ABE encrypted once, as an ordinary
envelope (`abe_service.envelope`) bound to `window_context(...)`, and stored
as one record. Each segment of the window is sealed with
AES-256-GCM under HKDF-SHA256(W, info = window id + first sequence number), a
fresh key per segment; the associated data binds every header field (window,
patient, device, type, sequence and time range, count), so a segment cannot be
moved to another patient, window or position without failing authentication.

Pure apart from randomness. Who holds W can open every segment of that one
window (and only of that window); nothing else.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from google.protobuf.message import DecodeError as ProtoDecodeError

from ehr_common.api.v1 import formats_pb2 as fpb
from ehr_common.errors import DecodeError, IntegrityError, InvalidArgument

WINDOW_KEY_BYTES = 32
SEGMENT_VERSION = 1
MAX_SEGMENT_BYTES = 8 * 1024 * 1024
_MAX_ID = 128
_WINDOW_CONTEXT = b"ehr-abe/iomt-window/v1\x00"
_KDF_INFO = b"ehr-abe/iomt-segment/aes-256-gcm/v1\x00"
_AD_PREFIX = b"ehr-abe/iomt-segment/v1\x00"


@dataclass(frozen=True)
class SegmentHeader:
    window_id: str
    patient_id: str
    device_id: str
    device_type: str
    first_seq: int
    last_seq: int
    first_time_ms: int
    last_time_ms: int
    count: int

    def check(self) -> None:
        for name in ("window_id", "patient_id", "device_id", "device_type"):
            value = getattr(self, name)
            if not value or len(value) > _MAX_ID or not value.isprintable():
                raise InvalidArgument(f"segment {name} must be 1-{_MAX_ID} printable characters")
        if not 0 <= self.first_seq <= self.last_seq < 2**63:
            raise InvalidArgument("segment sequence range is not ordered")
        if not 1 <= self.count <= min(self.last_seq - self.first_seq + 1, 2**32 - 1):
            raise InvalidArgument("segment count does not fit its sequence range")
        if not 0 <= self.first_time_ms <= self.last_time_ms < 2**62:
            raise InvalidArgument("segment time range is not ordered")


def _lp(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def window_context(patient_id: str, device_id: str, window_id: str) -> bytes:
    """Associated data of a window key's CP-ABE envelope: it opens only as that window's."""
    return (
        _WINDOW_CONTEXT
        + _lp(patient_id.encode())
        + _lp(device_id.encode())
        + _lp(window_id.encode())
    )


def new_window_key() -> bytes:
    return os.urandom(WINDOW_KEY_BYTES)


def _segment_key(window_key: bytes, header: SegmentHeader) -> bytes:
    if not isinstance(window_key, bytes) or len(window_key) != WINDOW_KEY_BYTES:
        raise InvalidArgument(f"a window key is {WINDOW_KEY_BYTES} bytes")
    info = _KDF_INFO + _lp(header.window_id.encode()) + struct.pack(">Q", header.first_seq)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(window_key)


def _associated_data(h: SegmentHeader) -> bytes:
    return b"".join(
        [
            _AD_PREFIX,
            struct.pack(">I", SEGMENT_VERSION),
            _lp(h.window_id.encode()),
            _lp(h.patient_id.encode()),
            _lp(h.device_id.encode()),
            _lp(h.device_type.encode()),
            struct.pack(
                ">QQqqI", h.first_seq, h.last_seq, h.first_time_ms, h.last_time_ms, h.count
            ),
        ]
    )


def seal_segment(window_key: bytes, header: SegmentHeader, payload: bytes) -> bytes:
    header.check()
    if not isinstance(payload, bytes | bytearray):
        raise InvalidArgument("a segment payload is bytes")
    nonce = os.urandom(12)
    sealed = AESGCM(_segment_key(window_key, header)).encrypt(
        nonce, payload, _associated_data(header)
    )
    msg = fpb.SegmentEnvelope(
        kind=fpb.OBJECT_KIND_SEGMENT,
        version=SEGMENT_VERSION,
        window_id=header.window_id,
        patient_id=header.patient_id,
        device_id=header.device_id,
        device_type=header.device_type,
        first_seq=header.first_seq,
        last_seq=header.last_seq,
        first_time_ms=header.first_time_ms,
        last_time_ms=header.last_time_ms,
        count=header.count,
        nonce=nonce,
        ciphertext=sealed,
    )
    data: bytes = msg.SerializeToString(deterministic=True)
    if len(data) > MAX_SEGMENT_BYTES:
        raise InvalidArgument(f"segment larger than {MAX_SEGMENT_BYTES} bytes")
    return data


def parse_segment(data: bytes) -> tuple[SegmentHeader, bytes, bytes]:
    """(header, nonce, ciphertext) of a sealed segment, structure checked; no key needed.
    DecodeError if it is not a well-formed segment of this version."""
    if not isinstance(data, bytes | bytearray):
        raise DecodeError("segment: not bytes")
    if len(data) > MAX_SEGMENT_BYTES:
        raise DecodeError(f"segment larger than {MAX_SEGMENT_BYTES} bytes")
    msg = fpb.SegmentEnvelope()
    try:
        msg.ParseFromString(bytes(data))
    except (ProtoDecodeError, ValueError, RuntimeError):
        raise DecodeError("segment: not a SegmentEnvelope") from None
    # One encoding per segment, as for envelopes (serialization._parse): unknown or
    # repeated fields would give one sealed segment many byte strings that all open.
    msg.DiscardUnknownFields()
    if msg.SerializeToString(deterministic=True) != bytes(data):
        raise DecodeError("segment: not in canonical encoding (unknown or repeated fields)")
    if msg.kind != fpb.OBJECT_KIND_SEGMENT:
        raise DecodeError("segment: wrong object kind")
    if msg.version != SEGMENT_VERSION:
        raise DecodeError(f"segment: version {msg.version} is not supported")
    if len(msg.nonce) != 12 or len(msg.ciphertext) < 16:
        raise DecodeError("segment: bad nonce or ciphertext length")
    header = SegmentHeader(
        window_id=msg.window_id,
        patient_id=msg.patient_id,
        device_id=msg.device_id,
        device_type=msg.device_type,
        first_seq=msg.first_seq,
        last_seq=msg.last_seq,
        first_time_ms=msg.first_time_ms,
        last_time_ms=msg.last_time_ms,
        count=msg.count,
    )
    try:
        header.check()
    except InvalidArgument as exc:
        raise DecodeError(f"segment: {exc}") from None
    return header, bytes(msg.nonce), bytes(msg.ciphertext)


def open_segment(window_key: bytes, data: bytes) -> tuple[SegmentHeader, bytes]:
    """(header, payload); IntegrityError if any byte was changed or the key is not its window's."""
    header, nonce, ciphertext = parse_segment(data)
    try:
        payload = AESGCM(_segment_key(window_key, header)).decrypt(
            nonce, ciphertext, _associated_data(header)
        )
    except InvalidTag:
        raise IntegrityError(
            "the segment failed authentication (modified, or another window's key)"
        ) from None
    return header, payload
