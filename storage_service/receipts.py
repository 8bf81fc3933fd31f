"""Receipts a writer can check on its own (pure; the client-side verifier lives here).

An anchored receipt is checked against the ledger: the leaf's inclusion proof
must lead to the Merkle root the ledger's anchor holds, for the anchor's tree
size. A pending receipt (the record is durable but its batch is not anchored
yet) is a promise signed by the service with Ed25519: record id, leaf hash,
the time the service accepted the record, and the deadline by which it will be
anchored. Certificate Transparency's signed certificate timestamps and maximum
merge delay are the model: a writer who holds a valid pending receipt for a
record that no anchor covers after the deadline holds evidence against the
service.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ehr_common.errors import IntegrityError
from storage_service.integrity import merkle

PENDING_DOMAIN = b"ehr-abe/pending-receipt/v1\x00"


@dataclass(frozen=True)
class PendingPromise:
    """What the service signs for a record it has not anchored yet."""

    record_id: str
    leaf_hash: bytes
    accepted_at: datetime
    anchor_deadline: datetime
    instance_id: str
    key_id: str


def _micros(t: datetime) -> int:
    return round(t.astimezone(UTC).timestamp() * 1_000_000)


def _field(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def promise_bytes(p: PendingPromise) -> bytes:
    """Canonical, length-prefixed encoding of a pending receipt (what is signed)."""
    return (
        PENDING_DOMAIN
        + _field(p.record_id.encode())
        + _field(p.leaf_hash)
        + struct.pack(">qq", _micros(p.accepted_at), _micros(p.anchor_deadline))
        + _field(p.instance_id.encode())
        + _field(p.key_id.encode())
    )


def sign_promise(key: Ed25519PrivateKey, p: PendingPromise) -> bytes:
    return key.sign(promise_bytes(p))


def verify_pending_receipt(public_key: bytes, p: PendingPromise, signature: bytes) -> None:
    """Raise IntegrityError unless `signature` is the service's signature over `p`."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, promise_bytes(p))
    except (InvalidSignature, ValueError):
        raise IntegrityError(
            f"the pending receipt of record {p.record_id} is not signed by this service"
        ) from None


def verify_anchored_receipt(
    leaf_hash: bytes,
    leaf_index: int,
    tree_size: int,
    proof: tuple[bytes, ...] | list[bytes],
    anchored_root: bytes,
    anchored_tree_size: int,
) -> None:
    """Raise IntegrityError unless the receipt's proof leads to the root the ledger
    anchored, for the tree size the ledger anchored (read both from the ledger, not
    from the receipt)."""
    if tree_size != anchored_tree_size:
        raise IntegrityError(
            f"the receipt's tree size {tree_size} is not the anchored {anchored_tree_size}"
        )
    if not merkle.verify_inclusion(leaf_hash, leaf_index, tree_size, proof, anchored_root):
        raise IntegrityError("the receipt's inclusion proof does not lead to the anchored root")


def verify_pending_receipt_pb(receipt: Any, service_key: Any) -> None:
    """Client-side check of a pending `Receipt` (protobuf) against the service's
    published key (`GetServiceKey`). Raises IntegrityError if it is not the service's
    signed promise, or if it names another key."""
    if receipt.service_key_id != service_key.key_id or receipt.instance_id != (
        service_key.instance_id
    ):
        raise IntegrityError("the pending receipt names another service key or instance")
    promise = PendingPromise(
        record_id=receipt.record_id,
        leaf_hash=bytes(receipt.leaf_hash),
        accepted_at=receipt.accepted_at.ToDatetime(tzinfo=UTC),
        anchor_deadline=receipt.anchor_deadline.ToDatetime(tzinfo=UTC),
        instance_id=receipt.instance_id,
        key_id=receipt.service_key_id,
    )
    verify_pending_receipt(bytes(service_key.ed25519_public_key), promise, bytes(receipt.signature))
