"""Versioned, validated (de)serialization of the CP-ABE objects.

Every parser checks the object kind, format version and scheme, the number of
elements, and every point (length, encoding, curve, prime-order subgroup, no
identity). Anything malformed raises `DecodeError`; nothing half-parsed is
ever returned.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message

from abe_service.fame import SCHEME_ID, AttributeKey, Ciphertext, MasterKey, PublicKey, SecretKey
from abe_service.pairing.base import PairingBackend
from abe_service.policy.compiler import MAX_ROWS as POLICY_MAX_ROWS
from abe_service.policy.language import MAX_ATTRIBUTE_CHARS
from ehr_common.api.v1 import formats_pb2 as fpb
from ehr_common.errors import DecodeError

FORMAT_VERSION = 1
#: Envelopes are at version 2: version 1 had no key commitment (see hybrid.py) and
#: is refused, because accepting it would let any writer keep using the
#: split-plaintext attack simply by writing version 1.
ENVELOPE_VERSION = 2
#: An envelope header has at most as many rows as a policy may compile to.
MAX_ROWS = POLICY_MAX_ROWS
#: User-key limits. The authority enforces the same ones when it issues a key.
MAX_KEY_ATTRIBUTES = 256  # as issued (`age=42` counts once)
MAX_KEY_LABELS = 4096  # after expansion (an integer attribute is up to 65 labels)
MAX_ATTRIBUTES = MAX_KEY_LABELS
MAX_LABEL_CHARS = 512
MAX_ID_CHARS = 256  # subject and key ids (the authority issues at most 256)

M = TypeVar("M", bound=Message)


def _parse(cls: type[M], data: bytes, kind: int, what: str, version: int = FORMAT_VERSION) -> M:
    if not isinstance(data, bytes | bytearray) or not data:
        raise DecodeError(f"{what}: empty or not bytes")
    try:
        msg = cls.FromString(bytes(data))
    except (ProtobufDecodeError, ValueError, RuntimeError):
        raise DecodeError(f"{what}: not a valid serialized {what}") from None
    if getattr(msg, "kind") != kind:  # noqa: B009 - generated attribute
        raise DecodeError(f"{what}: this is not a {what} (object kind {getattr(msg, 'kind')})")  # noqa: B009
    if kind == fpb.OBJECT_KIND_ENVELOPE and getattr(msg, "version") == 1:  # noqa: B009
        raise DecodeError(
            "envelope: format version 1 is no longer read: it is not key-committing, so a "
            "writer could make it open to different plaintexts for different readers; "
            "re-encrypt the payload with this version"
        )
    if getattr(msg, "version") != version:  # noqa: B009
        raise DecodeError(f"{what}: unsupported format version {getattr(msg, 'version')}")  # noqa: B009
    scheme = getattr(msg, "scheme", SCHEME_ID)
    if scheme != SCHEME_ID:
        raise DecodeError(f"{what}: unsupported scheme {scheme!r}")
    # One encoding per object: unknown, repeated or reordered fields are refused, so
    # no byte of a serialized object can change without the parse failing or the
    # object changing (and every object we write is in this canonical form).
    msg.DiscardUnknownFields()  # recursive; re-serializing then shows they were there
    if msg.SerializeToString(deterministic=True) != bytes(data):
        raise DecodeError(f"{what}: not in canonical encoding (unknown or repeated fields)")
    return msg


def _scalar(data: bytes, order: int, what: str) -> int:
    if len(data) != 32:
        raise DecodeError(f"{what}: a scalar is 32 bytes")
    k = int.from_bytes(data, "big")
    if not 0 < k < order:
        raise DecodeError(f"{what}: scalar out of range")
    return k


def _scalar_bytes(k: int) -> bytes:
    return k.to_bytes(32, "big")


def _g1s(group: PairingBackend, items: Sequence[bytes], n: int, what: str) -> list[Any]:
    if len(items) != n:
        raise DecodeError(f"{what}: expected {n} G1 elements, found {len(items)}")
    return [group.g1_from_bytes(b) for b in items]


def _g2s(group: PairingBackend, items: Sequence[bytes], n: int, what: str) -> list[Any]:
    if len(items) != n:
        raise DecodeError(f"{what}: expected {n} G2 elements, found {len(items)}")
    return [group.g2_from_bytes(b) for b in items]


# -- public parameters ------------------------------------------------------------
def public_params_to_bytes(group: PairingBackend, pk: PublicKey) -> bytes:
    return fpb.PublicParams(
        kind=fpb.OBJECT_KIND_PUBLIC_PARAMS,
        version=FORMAT_VERSION,
        scheme=SCHEME_ID,
        h1=group.g2_to_bytes(pk.H1),
        h2=group.g2_to_bytes(pk.H2),
        t1=group.gt_to_bytes(pk.T1),
        t2=group.gt_to_bytes(pk.T2),
    ).SerializeToString(deterministic=True)


def public_params_from_bytes(group: PairingBackend, data: bytes) -> PublicKey:
    msg = _parse(fpb.PublicParams, data, fpb.OBJECT_KIND_PUBLIC_PARAMS, "public parameters")
    return PublicKey(
        h=group.g2_generator(),
        H1=group.g2_from_bytes(msg.h1),
        H2=group.g2_from_bytes(msg.h2),
        T1=group.gt_from_bytes(msg.t1),
        T2=group.gt_from_bytes(msg.t2),
    )


def authority_id(public_params: bytes) -> str:
    """A short fingerprint naming an authority (hash of its public parameters)."""
    return hashlib.sha256(b"ehr-abe/authority-id/v1\x00" + public_params).hexdigest()[:32]


# -- master key ----------------------------------------------------------------------
def master_key_to_bytes(group: PairingBackend, msk: MasterKey, auth_id: str) -> bytes:
    return fpb.MasterKey(
        kind=fpb.OBJECT_KIND_MASTER_KEY,
        version=FORMAT_VERSION,
        scheme=SCHEME_ID,
        authority_id=auth_id,
        a1=_scalar_bytes(msk.a1),
        a2=_scalar_bytes(msk.a2),
        b1=_scalar_bytes(msk.b1),
        b2=_scalar_bytes(msk.b2),
        g_d1=group.g1_to_bytes(msk.g_d1),
        g_d2=group.g1_to_bytes(msk.g_d2),
        g_d3=group.g1_to_bytes(msk.g_d3),
    ).SerializeToString(deterministic=True)


def master_key_from_bytes(group: PairingBackend, data: bytes) -> tuple[MasterKey, str]:
    msg = _parse(fpb.MasterKey, data, fpb.OBJECT_KIND_MASTER_KEY, "master key")
    r = group.order
    msk = MasterKey(
        a1=_scalar(msg.a1, r, "master key a1"),
        a2=_scalar(msg.a2, r, "master key a2"),
        b1=_scalar(msg.b1, r, "master key b1"),
        b2=_scalar(msg.b2, r, "master key b2"),
        g_d1=group.g1_from_bytes(msg.g_d1),
        g_d2=group.g1_from_bytes(msg.g_d2),
        g_d3=group.g1_from_bytes(msg.g_d3),
    )
    return msk, msg.authority_id


# -- user keys ---------------------------------------------------------------------------
@dataclass(frozen=True)
class UserKey:
    subject_id: str
    key_id: str
    attributes: tuple[str, ...]
    authority_id: str
    public_params: bytes = field(repr=False)
    secret: SecretKey = field(repr=False)


def user_key_to_bytes(group: PairingBackend, key: UserKey) -> bytes:
    s = key.secret
    return fpb.UserKey(
        kind=fpb.OBJECT_KIND_USER_KEY,
        version=FORMAT_VERSION,
        scheme=SCHEME_ID,
        authority_id=key.authority_id,
        subject_id=key.subject_id,
        key_id=key.key_id,
        attributes=list(key.attributes),
        sk0=[group.g2_to_bytes(p) for p in s.sk0],
        parts=[
            fpb.AttributeKeyPart(
                label=label,
                sk1=group.g1_to_bytes(part.sk1),
                sk2=group.g1_to_bytes(part.sk2),
                sk3=group.g1_to_bytes(part.sk3),
            )
            for label, part in s.sk.items()
        ],
        sk_prime=[group.g1_to_bytes(p) for p in s.sk_prime],
        public_params=key.public_params,
    ).SerializeToString(deterministic=True)


def user_key_from_bytes(group: PairingBackend, data: bytes) -> UserKey:
    msg = _parse(fpb.UserKey, data, fpb.OBJECT_KIND_USER_KEY, "user key")
    if len(msg.parts) > MAX_KEY_LABELS or len(msg.attributes) > MAX_KEY_ATTRIBUTES:
        raise DecodeError("user key: too many attributes")
    if any(len(a) > MAX_ATTRIBUTE_CHARS for a in msg.attributes):
        raise DecodeError("user key: an over-long attribute")
    if len(msg.subject_id) > MAX_ID_CHARS or len(msg.key_id) > MAX_ID_CHARS:
        raise DecodeError("user key: an over-long subject or key id")
    parts: dict[str, AttributeKey] = {}
    for part in msg.parts:
        if not part.label or len(part.label) > MAX_LABEL_CHARS or part.label in parts:
            raise DecodeError("user key: empty, over-long or repeated attribute label")
        parts[part.label] = AttributeKey(
            group.g1_from_bytes(part.sk1),
            group.g1_from_bytes(part.sk2),
            group.g1_from_bytes(part.sk3),
        )
    sk0 = _g2s(group, msg.sk0, 3, "user key sk0")
    skp = _g1s(group, msg.sk_prime, 3, "user key sk'")
    if authority_id(msg.public_params) != msg.authority_id:
        raise DecodeError("user key: its public parameters do not match its authority id")
    return UserKey(
        subject_id=msg.subject_id,
        key_id=msg.key_id,
        attributes=tuple(msg.attributes),
        authority_id=msg.authority_id,
        public_params=bytes(msg.public_params),
        secret=SecretKey((sk0[0], sk0[1], sk0[2]), parts, (skp[0], skp[1], skp[2])),
    )


# -- envelopes -------------------------------------------------------------------------------
@dataclass(frozen=True)
class EnvelopeData:
    authority_id: str
    policy: str
    header: Ciphertext
    nonce: bytes
    ciphertext: bytes
    header_bytes: tuple[tuple[bytes, ...], ...]  # encodings, for associated data
    key_commitment: bytes = b""


def envelope_to_bytes(env: EnvelopeData) -> bytes:
    ct0 = env.header_bytes[0]
    rows = env.header_bytes[1:]
    return fpb.Envelope(
        kind=fpb.OBJECT_KIND_ENVELOPE,
        version=ENVELOPE_VERSION,
        scheme=SCHEME_ID,
        authority_id=env.authority_id,
        policy=env.policy,
        ct0=list(ct0),
        rows=[fpb.CiphertextRow(ct1=r[0], ct2=r[1], ct3=r[2]) for r in rows],
        nonce=env.nonce,
        ciphertext=env.ciphertext,
        key_commitment=env.key_commitment,
    ).SerializeToString(deterministic=True)


def envelope_header_from_bytes(data: bytes) -> fpb.Envelope:
    """Structural parse only (no point validation): enough to read the policy."""
    msg = _parse(fpb.Envelope, data, fpb.OBJECT_KIND_ENVELOPE, "envelope", ENVELOPE_VERSION)
    if msg.ma_rows or msg.ma_authorities:
        # The multi-authority fields are not bound by FAME's associated data: left in,
        # they would give one envelope many encodings that all open.
        raise DecodeError("envelope: a FAME envelope carries multi-authority fields")
    if len(msg.ct0) != 3 or not msg.rows or len(msg.rows) > MAX_ROWS:
        raise DecodeError("envelope: wrong number of header elements")
    if len(msg.nonce) != 12 or len(msg.ciphertext) < 16 or len(msg.key_commitment) != 32:
        raise DecodeError("envelope: bad nonce, ciphertext or key commitment length")
    if not msg.policy:
        raise DecodeError("envelope: no policy")
    g1, g2 = 48, 96  # compressed encodings: lengths are checked before any point is decoded
    if any(len(b) != g2 for b in msg.ct0) or any(
        len(r.ct1) != g1 or len(r.ct2) != g1 or len(r.ct3) != g1 for r in msg.rows
    ):
        raise DecodeError("envelope: a header point has the wrong length")
    return msg


def envelope_header_bytes(msg: fpb.Envelope) -> tuple[tuple[bytes, ...], ...]:
    """The header encodings as the associated data binds them: ct0, then each row."""
    return (
        tuple(bytes(b) for b in msg.ct0),
        *((bytes(r.ct1), bytes(r.ct2), bytes(r.ct3)) for r in msg.rows),
    )


def envelope_points(
    group: PairingBackend, msg: fpb.Envelope, rows: Iterable[int]
) -> tuple[tuple[Any, Any, Any], dict[int, tuple[Any, Any, Any]]]:
    """ct0 and the named rows, every point validated (curve, subgroup, not identity)."""
    ct0 = _g2s(group, msg.ct0, 3, "envelope ct0")
    out: dict[int, tuple[Any, Any, Any]] = {}
    for i in rows:
        r = msg.rows[i]
        out[i] = (
            group.g1_from_bytes(r.ct1),
            group.g1_from_bytes(r.ct2),
            group.g1_from_bytes(r.ct3),
        )
    return (ct0[0], ct0[1], ct0[2]), out


def envelope_from_bytes(group: PairingBackend, data: bytes) -> EnvelopeData:
    msg = envelope_header_from_bytes(data)
    ct0 = _g2s(group, msg.ct0, 3, "envelope ct0")
    rows = []
    for r in msg.rows:
        rows.append(
            (group.g1_from_bytes(r.ct1), group.g1_from_bytes(r.ct2), group.g1_from_bytes(r.ct3))
        )
    header_bytes = (
        tuple(bytes(b) for b in msg.ct0),
        *((bytes(r.ct1), bytes(r.ct2), bytes(r.ct3)) for r in msg.rows),
    )
    return EnvelopeData(
        authority_id=msg.authority_id,
        policy=msg.policy,
        header=Ciphertext((ct0[0], ct0[1], ct0[2]), tuple(rows)),
        nonce=bytes(msg.nonce),
        ciphertext=bytes(msg.ciphertext),
        header_bytes=header_bytes,
        key_commitment=bytes(msg.key_commitment),
    )
