"""Pure record model: ids, object keys, and the canonical leaf bytes that get anchored.

The anchored leaf binds the record's metadata and the SHA-256 of its envelope,
so neither the ciphertext nor who/what/when it is about can change unnoticed.
"""

from __future__ import annotations

import base64
import functools
import re
import secrets
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from ehr_common.errors import InvalidArgument

LEAF_DOMAIN = b"ehr-abe/record-leaf/v1\x00"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$")
_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MAX_POLICY_CHARS = 8192


def validate_id(kind: str, value: str) -> str:
    if not _ID_RE.fullmatch(value or ""):
        raise InvalidArgument(
            f"{kind} {value!r} is not valid: 1-128 characters from letters, digits and . _ @ : -"
        )
    return value


def validate_record_type(value: str) -> str:
    if not _TYPE_RE.fullmatch(value or ""):
        raise InvalidArgument(
            f"record type {value!r} is not valid: 1-64 lower-case letters, digits and . _ -"
        )
    return value


def new_record_id() -> str:
    """A random record id. (Ids for idempotency keys are keyed MACs:
    `storage_service.record_ids.RecordIdKeys.record_id`.)"""
    raw = secrets.token_bytes(16)
    return "r-" + base64.b32encode(raw).decode().rstrip("=").lower()


def envelope_key(record_id: str) -> str:
    return f"records/{record_id}.env"


@dataclass(frozen=True)
class PackRef:
    """Where a record's bytes sit inside a pack: the segments one WriteSegments call
    stores, and PutRecords that arrive together (storage_service/shared_puts.py),
    share one object (a MinIO PUT costs about a millisecond of its CPU, and a
    1,000-device ward closes ~500 segments a second). The record's length is its
    size; its hash, leaf and anchor are its own, as for a record with an object."""

    key: str
    offset: int


def new_pack_key() -> str:
    # flat under records/ like envelope keys (no prefix checks on write)
    return f"records/pack-{secrets.token_hex(16)}.pack"


#: a pack closes at this many bytes or records (a reader fetches ranges)
PACK_MAX_BYTES = 1024 * 1024
PACK_MAX_ITEMS = 256


class Pack:
    """Records' bytes gathered into one object, each at its PackRef."""

    def __init__(self) -> None:
        self.key = new_pack_key()
        self.parts: list[bytes] = []
        self.size = 0
        self.count = 0

    def add(self, data: bytes) -> PackRef:
        ref = PackRef(self.key, self.size)
        self.parts.append(data)
        self.size += len(data)
        self.count += 1
        return ref

    @property
    def full(self) -> bool:
        return self.size >= PACK_MAX_BYTES or self.count >= PACK_MAX_ITEMS

    def seal(self) -> tuple[bytes, dict[str, str]]:
        """The object's body and metadata; the parts are let go (not held twice)."""
        body = b"".join(self.parts)
        self.parts = []
        return body, {"ehr-pack": f"v1;{self.count}"}


def metadata_key(record_id: str) -> str:
    return f"records/{record_id}.meta.json"


def record_context(patient_id: str) -> bytes:
    """Associated data every record envelope is bound to: an envelope written for
    one patient cannot be replayed as another patient's record. `patient_id` is
    the organisation-qualified id (`Hosp1MSP/p-17`)."""
    return b"ehr-abe/record/v1\x00" + patient_id.encode()


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RecordMeta:
    record_id: str
    patient_id: str
    record_type: str
    author: str
    created_at: datetime
    policy: str
    size: int
    content_sha256: bytes

    def leaf_bytes(self) -> bytes:
        return self._leaf

    @functools.cached_property
    def _leaf(self) -> bytes:
        # Computed once: a write needs it for the leaf hash and for the row's MAC.
        return _encode_leaf(self)

    def to_json_dict(self) -> dict[str, object]:
        return {
            "record_id": self.record_id,
            "patient_id": self.patient_id,
            "record_type": self.record_type,
            "author": self.author,
            "created_at": self.created_at.isoformat(),
            "policy": self.policy,
            "size": self.size,
            "content_sha256": self.content_sha256.hex(),
        }

    @staticmethod
    def from_json_dict(d: dict[str, object]) -> RecordMeta:
        try:
            return RecordMeta(
                record_id=str(d["record_id"]),
                patient_id=str(d["patient_id"]),
                record_type=str(d["record_type"]),
                author=str(d["author"]),
                created_at=datetime.fromisoformat(str(d["created_at"])),
                policy=str(d["policy"]),
                size=int(str(d["size"])),
                content_sha256=bytes.fromhex(str(d["content_sha256"])),
            )
        except (KeyError, ValueError) as exc:
            raise InvalidArgument(f"malformed record metadata: {exc}") from None


def _field(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def leaf_bytes(meta: RecordMeta) -> bytes:
    """Canonical, length-prefixed encoding (unambiguous: no field can bleed into another)."""
    return meta.leaf_bytes()


def _encode_leaf(meta: RecordMeta) -> bytes:
    ts = meta.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
    return (
        LEAF_DOMAIN
        + _field(meta.record_id.encode())
        + _field(meta.patient_id.encode())
        + _field(meta.record_type.encode())
        + _field(meta.author.encode())
        + _field(ts)
        + _field(meta.policy.encode())
        + struct.pack(">Q", meta.size)
        + _field(meta.content_sha256)
    )
