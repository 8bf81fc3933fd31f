"""End-to-end verification of stored records (VerifyRecords, `ehr-abe verify`).

Streams the index in chunks; for each chunk, fetches the envelopes from the
object store concurrently, hashes them all at once with the integrity core
(numba, parallel SHA-256), recomputes every record's RFC 6962 leaf from its
metadata and the hash of what is actually stored, and checks the leaves
against the Merkle roots anchored on the ledger. Memory is bounded by the
chunk size, whatever the volume. Timings are kept per stage so the report can
say where the time goes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from storage_service.index import IndexedRecord, RecordIndex
from storage_service.integrity import merkle
from storage_service.integrity.sha256 import sha256_many
from storage_service.objectstore.base import ObjectStore
from storage_service.records import envelope_key


@dataclass
class StageTimes:
    fetch: float = 0.0
    hashing: float = 0.0
    proofs: float = 0.0
    ledger: float = 0.0
    index: float = 0.0


@dataclass
class StreamReport:
    checked: int = 0
    passed: int = 0
    pending: int = 0
    bytes: int = 0
    failed_record_ids: list[str] = field(default_factory=list)
    stages: StageTimes = field(default_factory=StageTimes)


def verify_records_stream(
    index: RecordIndex,
    store: ObjectStore,
    *,
    root_of: Callable[[str], bytes],
    patient_id: str | None = None,
    batch_id: str | None = None,
    concurrency: int = 16,
    chunk_records: int = 4096,
    on_progress: Callable[[int, int], None] | None = None,
) -> StreamReport:
    del concurrency  # the store's get_many decides its own pool size
    report = StreamReport()
    batch_leaves: dict[str, list[bytes]] = {}
    t = report.stages
    scan = index.scan(patient_id=patient_id, batch_id=batch_id, chunk=chunk_records)
    while True:
        t0 = time.perf_counter()
        chunk = next(scan, None)
        t.index += time.perf_counter() - t0
        if chunk is None:
            break
        t0 = time.perf_counter()
        fetched = list(store.get_many(envelope_key(r.meta.record_id) for r in chunk))
        t.fetch += time.perf_counter() - t0

        t0 = time.perf_counter()
        present = [
            (r, data) for r, (_, data) in zip(chunk, fetched, strict=True) if data is not None
        ]
        missing = [r for r, (_, data) in zip(chunk, fetched, strict=True) if data is None]
        digests = sha256_many([data for _, data in present])
        leaves = sha256_many([b"\x00" + r.meta.leaf_bytes() for r, _ in present])
        t.hashing += time.perf_counter() - t0

        ok = np.ones(len(present), dtype=bool)
        for i, (r, _) in enumerate(present):
            if bytes(digests[i]) != r.meta.content_sha256 or bytes(leaves[i]) != r.leaf_hash:
                ok[i] = False

        t0 = time.perf_counter()
        for i, (r, data) in enumerate(present):
            report.bytes += len(data)
            if not ok[i]:
                continue
            if not _is_anchored(index, r):
                report.pending += 1
                continue
            assert r.batch_id is not None and r.leaf_index is not None
            if r.batch_id not in batch_leaves:
                tl = time.perf_counter()
                batch_leaves[r.batch_id] = index.batch_leaf_hashes(r.batch_id)
                t.index += time.perf_counter() - tl
                tl = time.perf_counter()
                root = root_of(r.batch_id)
                t.ledger += time.perf_counter() - tl
                # One root recomputation checks every leaf of the batch at once.
                if merkle.merkle_root(batch_leaves[r.batch_id]) != root:
                    batch_leaves[r.batch_id] = []
            leaves_of_batch = batch_leaves[r.batch_id]
            if not leaves_of_batch or leaves_of_batch[r.leaf_index] != bytes(leaves[i]):
                ok[i] = False
        t.proofs += time.perf_counter() - t0

        for i, (r, _) in enumerate(present):
            report.checked += 1
            if ok[i]:
                report.passed += 1
            else:
                report.failed_record_ids.append(r.meta.record_id)
        for r in missing:
            report.checked += 1
            report.failed_record_ids.append(r.meta.record_id)
        if len(batch_leaves) > 64:  # keep memory flat across many batches
            batch_leaves.clear()
        if on_progress is not None:
            on_progress(report.checked, report.bytes)
    return report


def _is_anchored(index: RecordIndex, r: IndexedRecord) -> bool:
    if r.batch_id is None or r.leaf_index is None:
        return False
    batch = index.batch(r.batch_id)
    return batch is not None and batch.tx_id is not None
