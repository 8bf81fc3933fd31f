"""Versioned, validated (de)serialization of the multi-authority objects.

Same rules as abe_service/serialization.py: kind, version and scheme checked,
canonical encoding only, every point validated (curve, subgroup, no identity),
DecodeError for anything malformed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message

from abe_service.ma.labels import AUTHORITY_RE, authority_of_label
from abe_service.ma.scheme import (
    SCHEME_ID,
    AttributeKey,
    AuthorityPublicKey,
    AuthoritySecretKey,
    CiphertextRow,
    UserKey,
)
from abe_service.pairing.base import PairingBackend
from abe_service.serialization import ENVELOPE_VERSION
from ehr_common.api.v1 import formats_pb2 as fpb
from ehr_common.errors import DecodeError

FORMAT_VERSION = 1  # keys; envelopes share FAME's ENVELOPE_VERSION (key-committing)
MAX_ROWS = 4096
MAX_PARTS = 4096
MAX_LABEL_CHARS = 512
MAX_GID_CHARS = 256

M = TypeVar("M", bound=Message)


def _parse(cls: type[M], data: bytes, kind: int, what: str, version: int = FORMAT_VERSION) -> M:
    if not isinstance(data, bytes | bytearray) or not data:
        raise DecodeError(f"{what}: empty or not bytes")
    try:
        msg = cls.FromString(bytes(data))
    except (ProtobufDecodeError, ValueError, RuntimeError):
        raise DecodeError(f"{what}: not a valid serialized {what}") from None
    if getattr(msg, "kind") != kind:  # noqa: B009 - generated attribute
        raise DecodeError(f"{what}: this is not a {what}")
    if getattr(msg, "version") != version:  # noqa: B009
        raise DecodeError(f"{what}: unsupported format version {getattr(msg, 'version')}")  # noqa: B009
    if getattr(msg, "scheme") != SCHEME_ID:  # noqa: B009
        raise DecodeError(f"{what}: unsupported scheme {getattr(msg, 'scheme')!r}")  # noqa: B009
    msg.DiscardUnknownFields()
    if msg.SerializeToString(deterministic=True) != bytes(data):
        raise DecodeError(f"{what}: not in canonical encoding (unknown or repeated fields)")
    return msg


def _scalar(data: bytes, order: int, what: str) -> int:
    k = int.from_bytes(data, "big")
    if len(data) != 32 or not 0 < k < order:
        raise DecodeError(f"{what}: a scalar is 32 bytes, in 1 .. r-1")
    return k


def _authority(value: str, what: str) -> str:
    if not AUTHORITY_RE.fullmatch(value):
        raise DecodeError(f"{what}: invalid authority id")
    return value


def fingerprint(public_key: bytes) -> bytes:
    """SHA-256 of a serialized authority public key: what the ledger, user keys and
    envelopes use to name one version of an authority's key."""
    return hashlib.sha256(b"ehr-abe/ma-authority-key/v1\x00" + public_key).digest()


# -- authority keys --------------------------------------------------------------------
def public_key_to_bytes(group: PairingBackend, pk: AuthorityPublicKey) -> bytes:
    return fpb.MaAuthorityPublicKey(
        kind=fpb.OBJECT_KIND_MA_AUTHORITY_PUBLIC_KEY,
        version=FORMAT_VERSION,
        scheme=SCHEME_ID,
        authority=pk.authority,
        e_alpha=group.gt_to_bytes(pk.e_alpha),
        g_y=group.g1_to_bytes(pk.g_y),
    ).SerializeToString(deterministic=True)


def public_key_from_bytes(group: PairingBackend, data: bytes) -> AuthorityPublicKey:
    what = "authority public key"
    msg = _parse(fpb.MaAuthorityPublicKey, data, fpb.OBJECT_KIND_MA_AUTHORITY_PUBLIC_KEY, what)
    return AuthorityPublicKey(
        _authority(msg.authority, what),
        group.gt_from_bytes(msg.e_alpha),
        group.g1_from_bytes(msg.g_y),
    )


def secret_key_to_bytes(group: PairingBackend, sk: AuthoritySecretKey, pk_bytes: bytes) -> bytes:
    return fpb.MaAuthoritySecretKey(
        kind=fpb.OBJECT_KIND_MA_AUTHORITY_SECRET_KEY,
        version=FORMAT_VERSION,
        scheme=SCHEME_ID,
        authority=sk.authority,
        alpha=(sk.alpha % group.order).to_bytes(32, "big"),
        y=(sk.y % group.order).to_bytes(32, "big"),
        public_key_sha256=fingerprint(pk_bytes),
    ).SerializeToString(deterministic=True)


def secret_key_from_bytes(group: PairingBackend, data: bytes) -> tuple[AuthoritySecretKey, bytes]:
    """The secret key and the fingerprint of the public key it belongs to."""
    what = "authority secret key"
    msg = _parse(fpb.MaAuthoritySecretKey, data, fpb.OBJECT_KIND_MA_AUTHORITY_SECRET_KEY, what)
    if len(msg.public_key_sha256) != 32:
        raise DecodeError(f"{what}: bad public key fingerprint")
    return (
        AuthoritySecretKey(
            _authority(msg.authority, what),
            _scalar(msg.alpha, group.order, what),
            _scalar(msg.y, group.order, what),
        ),
        bytes(msg.public_key_sha256),
    )


# -- user keys -------------------------------------------------------------------------
@dataclass(frozen=True)
class IssuedKey:
    """One authority's attribute keys for one GID, with what was issued."""

    authority: str
    gid: str
    key_id: str
    attributes: tuple[str, ...]
    authority_key_sha256: bytes
    key: UserKey = field(repr=False)  # secret


def user_key_to_bytes(group: PairingBackend, issued: IssuedKey) -> bytes:
    parts = [
        fpb.MaAttributeKey(label=label, k=group.g2_to_bytes(part.k), kp=group.g1_to_bytes(part.kp))
        for label, part in sorted(issued.key.parts.items())
    ]
    return fpb.MaUserKey(
        kind=fpb.OBJECT_KIND_MA_USER_KEY,
        version=FORMAT_VERSION,
        scheme=SCHEME_ID,
        authority=issued.authority,
        gid=issued.gid,
        key_id=issued.key_id,
        attributes=list(issued.attributes),
        parts=parts,
        authority_key_sha256=issued.authority_key_sha256,
    ).SerializeToString(deterministic=True)


def user_key_from_bytes(group: PairingBackend, data: bytes) -> IssuedKey:
    what = "multi-authority user key"
    msg = _parse(fpb.MaUserKey, data, fpb.OBJECT_KIND_MA_USER_KEY, what)
    authority = _authority(msg.authority, what)
    if not 1 <= len(msg.gid) <= MAX_GID_CHARS or not msg.gid.isprintable():
        raise DecodeError(f"{what}: bad global identifier")
    if not msg.parts or len(msg.parts) > MAX_PARTS or len(msg.attributes) > MAX_PARTS:
        raise DecodeError(f"{what}: no parts, or too many")
    if len(msg.authority_key_sha256) != 32:
        raise DecodeError(f"{what}: bad authority key fingerprint")
    if len(msg.key_id) > MAX_GID_CHARS or any(len(a) > MAX_LABEL_CHARS for a in msg.attributes):
        raise DecodeError(f"{what}: an over-long key id or attribute")
    labels = [p.label for p in msg.parts]
    if labels != sorted(set(labels)):
        raise DecodeError(f"{what}: parts not sorted or repeated")
    parts: dict[str, AttributeKey] = {}
    for p in msg.parts:
        if len(p.label) > MAX_LABEL_CHARS or authority_of_label(p.label) != authority:
            raise DecodeError(f"{what}: a part's label is not {authority}'s")
        parts[p.label] = AttributeKey(group.g2_from_bytes(p.k), group.g1_from_bytes(p.kp))
    return IssuedKey(
        authority,
        msg.gid,
        msg.key_id,
        tuple(msg.attributes),
        bytes(msg.authority_key_sha256),
        UserKey(msg.gid, parts),
    )


# -- envelope headers --------------------------------------------------------------------
def header_to_fields(
    group: PairingBackend, rows: Sequence[CiphertextRow]
) -> tuple[list[fpb.MaCiphertextRow], tuple[tuple[bytes, ...], ...]]:
    """Protobuf rows and their bytes (for the associated data)."""
    encoded = tuple(
        (
            group.gt_to_bytes(r.c1),
            group.g1_to_bytes(r.c2),
            group.g1_to_bytes(r.c3),
            group.g2_to_bytes(r.c4),
        )
        for r in rows
    )
    return [fpb.MaCiphertextRow(c1=a, c2=b, c3=c, c4=d) for a, b, c, d in encoded], encoded


def envelope_header_from_bytes(data: bytes) -> fpb.Envelope:
    """Structure only (kinds, counts, lengths); points are decoded by `rows_used`."""
    what = "multi-authority envelope"
    msg = _parse(fpb.Envelope, data, fpb.OBJECT_KIND_ENVELOPE, what, ENVELOPE_VERSION)
    if msg.authority_id or msg.ct0 or msg.rows:
        raise DecodeError(f"{what}: carries FAME fields")
    if not 1 <= len(msg.ma_rows) <= MAX_ROWS:
        raise DecodeError(f"{what}: bad number of header rows")
    for r in msg.ma_rows:
        if (len(r.c1), len(r.c2), len(r.c3), len(r.c4)) != (576, 48, 48, 96):
            raise DecodeError(f"{what}: a header row has elements of the wrong size")
    names = [a.authority for a in msg.ma_authorities]
    if not names or names != sorted(set(names)):
        raise DecodeError(f"{what}: authorities missing, unsorted or repeated")
    for a in msg.ma_authorities:
        _authority(a.authority, what)
        if len(a.public_key_sha256) != 32:
            raise DecodeError(f"{what}: bad authority key fingerprint")
    if len(msg.nonce) != 12 or len(msg.ciphertext) < 16 or len(msg.key_commitment) != 32:
        raise DecodeError(f"{what}: bad nonce, key commitment or ciphertext")
    return msg


def envelope_header_bytes(msg: fpb.Envelope) -> tuple[tuple[bytes, ...], ...]:
    return tuple((r.c1, r.c2, r.c3, r.c4) for r in msg.ma_rows)


def rows_used(
    group: PairingBackend, msg: fpb.Envelope, gammas: Mapping[int, int]
) -> dict[int, CiphertextRow]:
    """Decode and validate only the rows decryption uses (C2, C3, C4: curve and subgroup)."""
    out: dict[int, CiphertextRow] = {}
    for i in gammas:
        r = msg.ma_rows[i]
        out[i] = CiphertextRow(
            # C1 is only multiplied (or raised to a public coefficient) into K, which goes through
            # HKDF and the AEAD: no secret meets it, so a non-GT element can only make
            # decryption fail, and the costly subgroup check (≈ 5 GT exponentiations)
            # is skipped. Every point that meets a key component IS checked.
            group.gt_from_bytes(r.c1, check_subgroup=False),
            group.g1_from_bytes(r.c2),
            group.g1_from_bytes(r.c3),
            group.g2_from_bytes(r.c4),
        )
    return out


def decode_all_rows(group: PairingBackend, msg: fpb.Envelope) -> list[CiphertextRow]:
    return list(rows_used(group, msg, dict.fromkeys(range(len(msg.ma_rows)), 1)).values())
