"""Reading IoMT segments: fetch a patient's time range, check each item against
its receipt, open window keys with the reader's CP-ABE key (once per window)
and segments with AES-GCM, and return the FHIR Observations.

Client-side checks (the server already checked each record against the root
anchored on the ledger before sending it): the envelope's SHA-256 matches its
metadata, the metadata hashes to the receipt's leaf, an anchored receipt's
inclusion proof leads to its Merkle root, and every decrypted segment is the
requested patient's, bound to its window by AES-GCM.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from abe_service.client import AbeKeyring
from abe_service.segments import open_segment, parse_segment, window_context
from ehr_common.api.v1 import storage_pb2 as pb
from ehr_common.errors import DecodeError, IntegrityError
from storage_service.integrity import merkle
from storage_service.records import RecordMeta


@dataclass(frozen=True)
class FetchedSegment:
    record_id: str
    device_id: str
    first_seq: int
    last_seq: int
    anchored: bool
    observations: list[dict[str, Any]]


def _meta(m: pb.RecordMetadata) -> RecordMeta:
    return RecordMeta(
        record_id=m.record_id,
        patient_id=m.patient_id,
        record_type=m.record_type,
        author=m.author,
        created_at=m.created_at.ToDatetime(tzinfo=UTC),
        policy=m.policy,
        size=m.size,
        content_sha256=bytes(m.content_sha256),
    )


def check_item(item: pb.FetchedItem) -> RecordMeta:
    """The item's metadata, once its bytes, leaf and (if anchored) proof agree."""
    meta = _meta(item.metadata)
    if hashlib.sha256(item.envelope).digest() != meta.content_sha256:
        raise IntegrityError(f"record {meta.record_id}: bytes do not match their hash")
    leaf = merkle.leaf_hash(meta.leaf_bytes())
    r = item.receipt
    if leaf != bytes(r.leaf_hash):
        raise IntegrityError(f"record {meta.record_id}: metadata does not match its leaf")
    if r.status == pb.ANCHOR_STATUS_ANCHORED and not merkle.verify_inclusion(
        leaf, r.leaf_index, r.tree_size, [bytes(p) for p in r.inclusion_proof], bytes(r.merkle_root)
    ):
        raise IntegrityError(f"record {meta.record_id}: inclusion proof does not verify")
    return meta


def _names(qualified: str, given: str) -> bool:
    """Does `given` (a qualified `<MSP>/<subject>` id, or a bare subject, as devices
    and edge gateways write them) name the service's qualified id?"""
    return given == qualified or ("/" not in given and qualified.endswith("/" + given))


def open_items(
    items: Iterator[pb.FetchedItem], keyring: AbeKeyring, patient_id: str
) -> Iterator[FetchedSegment]:
    """Decrypt a FetchSegments stream. PolicyNotSatisfied if the key cannot open a window.
    The service's metadata carries organisation-qualified ids; `patient_id` and the
    sealed headers may carry bare subjects."""
    windows: dict[str, bytes] = {}  # window record id -> its envelope
    keys: dict[tuple[str, str], bytes] = {}  # (window record id, window id) -> window key
    for item in items:
        meta = check_item(item)
        if not _names(meta.patient_id, patient_id):
            raise IntegrityError(f"record {meta.record_id} is another patient's")
        if not item.window_record_id:
            windows[meta.record_id] = bytes(item.envelope)
            continue
        header, _, _ = parse_segment(bytes(item.envelope))
        wkey = (item.window_record_id, header.window_id)
        if wkey not in keys:
            envelope = windows.get(item.window_record_id)
            if envelope is None:
                raise IntegrityError(f"segment {meta.record_id}: its window was not sent")
            keys[wkey] = keyring.decrypt(
                envelope, window_context(header.patient_id, header.device_id, header.window_id)
            )
        header, payload = open_segment(keys[wkey], bytes(item.envelope))
        if not (
            _names(meta.patient_id, header.patient_id) and _names(meta.author, header.device_id)
        ):
            raise IntegrityError(f"segment {meta.record_id}: header does not match its record")
        try:
            observations = [json.loads(line) for line in payload.decode().splitlines() if line]
        except (ValueError, RecursionError):  # a writer's own bytes, well sealed but not NDJSON
            raise DecodeError(f"segment {meta.record_id}: its payload is not NDJSON") from None
        yield FetchedSegment(
            meta.record_id,
            header.device_id,
            header.first_seq,
            header.last_seq,
            item.receipt.status == pb.ANCHOR_STATUS_ANCHORED,
            observations,
        )


def fetch_request(
    patient_id: str, since: datetime | None, until: datetime | None, limit: int = 0
) -> pb.FetchSegmentsRequest:
    req = pb.FetchSegmentsRequest(patient_id=patient_id, limit=limit)
    if since is not None:
        req.since.FromDatetime(since.astimezone(UTC))
    if until is not None:
        req.until.FromDatetime(until.astimezone(UTC))
    return req
