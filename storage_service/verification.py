"""End-to-end verification of stored records (VerifyRecords, `ehr-abe verify`).

The ledger, not the index, says what is anchored: verification takes the
storage instance's anchors as listed by the ledger and checks the index and
the object store against them.

Streams the index in chunks; for each chunk, fetches the envelopes from the
object store concurrently and hashes them all at once with the integrity core
(numba, parallel SHA-256). Per record (rows whose MAC fails are failures):
- its stored bytes must hash to the content hash its (MAC-checked) row holds;
- if an anchor covers its seq, the index's leaves for the anchor's whole range
  must hash to the anchored root (one root recomputation checks every leaf of
  the batch at once);
- if none does, it is pending only while the index does not claim an anchor
  for it and its anchoring deadline has not passed.
Then the instance as a whole: anchors the index lost (wholly or partly), index
batches the ledger does not hold or holds with another root.

The ledger is listed before the index is read, so an anchor the index lacks is
lost. The anchorer may anchor a batch, and the index call it anchored, after that
listing: before the index's claim of an anchor the ledger lacks is reported, the
ledger is listed once more (`relist`), after the index was read. A batch whose
anchor is on the ledger while its index row has no transaction yet may be the
anchorer between those two writes: the row is read again (for up to 2 s) before
it is reported.

Memory is bounded by the chunk size, whatever the volume. Never raises on bad
local state: every problem becomes an entry of the report. Timings are kept
per stage so the report can say where the time goes.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ehr_common.errors import EhrAbeError, NotFound, Unavailable
from storage_service.index import BadRow, BatchRow, IndexedRecord, RecordIndex
from storage_service.integrity.merkle import merkle_root_or_none
from storage_service.integrity.sha256 import sha256_many
from storage_service.ledger.client import Anchor
from storage_service.objectstore.base import ObjectStore
from storage_service.stored_bytes import read_records


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
    #: (record id or "", batch id or "", what is wrong), one per failed record or batch
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    lost_anchors: list[str] = field(default_factory=list)
    root_mismatches: list[str] = field(default_factory=list)
    missing_on_ledger: list[str] = field(default_factory=list)
    missing_in_index: list[str] = field(default_factory=list)
    stages: StageTimes = field(default_factory=StageTimes)

    def fail(self, record_id: str, batch_id: str, detail: str) -> None:
        self.failed_record_ids.append(record_id)
        self.problems.append((record_id, batch_id, detail))


class _Anchors:
    """The ledger's anchors for the instance, sorted, with the index's leaves for each
    range checked once against its root."""

    def __init__(
        self,
        anchors: list[Anchor],
        index: RecordIndex,
        report: StreamReport,
        relist: Callable[[], list[Anchor]] | None,
    ):
        self._use(anchors)
        self.listed_first = self.anchors
        self._relist = relist
        self._index = index
        self._report = report
        self.checked: dict[str, str] = {}  # batch id -> "" (root holds) or what is wrong
        self._leaves: dict[str, dict[int, bytes]] = {}

    def _use(self, anchors: list[Anchor]) -> None:
        self.anchors = sorted(anchors, key=lambda a: a.first_seq)
        self.firsts = [a.first_seq for a in self.anchors]

    def relist_once(self) -> bool:
        """List the ledger again, once per verification (the index claims an anchor
        the first listing lacks); True if this call did."""
        if self._relist is None:
            return False
        relist, self._relist = self._relist, None
        t0 = time.perf_counter()
        self._use(relist())
        self._report.stages.ledger += time.perf_counter() - t0
        return True

    def covering(self, seq: int) -> Anchor | None:
        i = bisect.bisect_right(self.firsts, seq) - 1
        if i >= 0 and self.anchors[i].covers(seq):
            return self.anchors[i]
        return None

    def check(self, a: Anchor) -> tuple[str, dict[int, bytes]]:
        """('' and the leaves) if the index's leaves for the anchor's range hash to its
        root; else what is wrong. Reports missing positions and differing roots once."""
        if a.batch_id in self.checked:
            return self.checked[a.batch_id], self._leaves.get(a.batch_id, {})
        t = self._report.stages
        t0 = time.perf_counter()
        leaves = self._index.leaves_in_range(a.first_seq, a.last_seq)
        t.index += time.perf_counter() - t0
        problem = ""
        if len(leaves) != a.tree_size:
            missing = [s for s in range(a.first_seq, a.last_seq + 1) if s not in leaves]
            self._report.missing_in_index.extend(f"{a.batch_id}:{s}" for s in missing)
            self._report.lost_anchors.append(a.batch_id)
            problem = f"{len(missing)} records of anchored batch {a.batch_id} are missing"
        else:
            ordered = [leaves[s] for s in range(a.first_seq, a.last_seq + 1)]
            if merkle_root_or_none(ordered) != a.merkle_root:
                # a neighbour's leaf column was edited: recompute from MAC-checked rows
                leaves = self._index.authenticated_leaves(a.first_seq, a.last_seq)
                ordered = [leaves[s] for s in range(a.first_seq, a.last_seq + 1)]
                if merkle_root_or_none(ordered) != a.merkle_root:
                    self._report.root_mismatches.append(a.batch_id)
                    problem = f"the index's leaves for batch {a.batch_id} differ from its root"
        self.checked[a.batch_id] = problem
        if not problem and len(self._leaves) < 64:  # keep memory flat across many batches
            self._leaves[a.batch_id] = leaves
        return problem, leaves


def verify_instance(
    index: RecordIndex,
    store: ObjectStore,
    anchors: list[Anchor],
    *,
    deadline_s: float,
    patient_id: str | None = None,
    batch_id: str | None = None,
    now: datetime | None = None,
    chunk_records: int = 4096,
    on_progress: Callable[[int, int], None] | None = None,
    relist: Callable[[], list[Anchor]] | None = None,
) -> StreamReport:
    """Verify the index and the object store against `anchors` (the ledger's anchors
    for this instance, listed before this call). Scope: everything, one patient, or
    one batch. `relist` lists them again; without it, a batch anchored while this
    runs can be reported as missing on the ledger."""
    report = StreamReport()
    now = now or datetime.now(UTC)
    book = _Anchors(anchors, index, report, relist)
    batch_rows: dict[str, BatchRow] = {}
    malformed_batches: list[str] = []
    for b in index.batches():
        if isinstance(b, str):
            malformed_batches.append(b)
        else:
            batch_rows[b.batch_id] = b

    first, last = 1, None
    if batch_id is not None:
        scoped = next((a for a in book.anchors if a.batch_id == batch_id), None)
        row = batch_rows.get(batch_id)
        if scoped is not None:
            first, last = scoped.first_seq, scoped.last_seq
        elif row is not None:
            first, last = row.first_seq, row.last_seq
        else:
            raise NotFound(f"no batch {batch_id} on the ledger or in the index")

    def claimed(rec_batch: str | None) -> bool:
        b = batch_rows.get(rec_batch or "")
        return b is not None and b.tx_id is not None

    t = report.stages
    scan = index.scan(patient_id=patient_id, first_seq=first, last_seq=last, chunk=chunk_records)
    while True:
        t0 = time.perf_counter()
        chunk = next(scan, None)
        t.index += time.perf_counter() - t0
        if chunk is None:
            break
        records: list[IndexedRecord] = []
        for r in chunk:
            report.checked += 1
            if isinstance(r, BadRow):
                report.fail(r.record_id or f"seq-{r.seq}", r.batch_id or "", r.detail)
            else:
                records.append(r)
        t0 = time.perf_counter()
        try:
            fetched = read_records(store, index, [r.meta for r in records])
        except Unavailable:
            raise
        except EhrAbeError:  # one unreadable object must not hide the others: one by one
            fetched = [_get_or_none(store, index, r) for r in records]
        t.fetch += time.perf_counter() - t0

        t0 = time.perf_counter()
        present = [(r, d) for r, d in zip(records, fetched, strict=True) if d is not None]
        digests = sha256_many([d for _, d in present])
        t.hashing += time.perf_counter() - t0

        t0 = time.perf_counter()
        ok = {r.seq for r, _ in present}
        for r in records:
            if r.seq not in ok:
                report.fail(r.meta.record_id, r.batch_id or "", "the stored object is missing")
        for i, (r, data) in enumerate(present):
            report.bytes += len(data)
            rid = r.meta.record_id
            if bytes(digests[i]) != r.meta.content_sha256:
                report.fail(rid, r.batch_id or "", "the stored object does not match its hash")
                continue
            a = book.covering(r.seq)
            if a is None and claimed(r.batch_id) and book.relist_once():
                a = book.covering(r.seq)
            if a is not None:
                problem, leaves = book.check(a)
                placed = (a.batch_id, r.seq - a.first_seq)
                if (r.batch_id, r.leaf_index) != placed:
                    report.fail(
                        rid,
                        a.batch_id,
                        f"the index places it at {r.batch_id}/{r.leaf_index}; the ledger anchors "
                        f"it at {placed[0]}/{placed[1]}",
                    )
                elif problem:
                    report.fail(rid, a.batch_id, problem)
                elif leaves and leaves.get(r.seq) != r.leaf_hash:
                    report.fail(rid, a.batch_id, "its leaf is not the one anchored")
                else:
                    report.passed += 1
                continue
            if claimed(r.batch_id):
                report.missing_on_ledger.append(rid)
                report.fail(
                    rid,
                    r.batch_id or "",
                    f"the index says batch {r.batch_id} is anchored; no anchor on the ledger "
                    "covers this record",
                )
            elif now - r.meta.created_at > timedelta(seconds=deadline_s):
                report.missing_on_ledger.append(rid)
                report.fail(rid, r.batch_id or "", "no anchor covers it past its deadline")
            else:
                report.passed += 1
                report.pending += 1
        t.proofs += time.perf_counter() - t0
        if on_progress is not None:
            on_progress(report.checked, report.bytes)

    # -- the instance as a whole: what the ledger holds that the index lost, and back
    t0 = time.perf_counter()
    in_scope = [a for a in book.listed_first if batch_id is None or a.batch_id == batch_id]
    for a in in_scope:
        if a.batch_id not in book.checked:
            # every scope: a batch the index lost may have held anyone's records
            problem, _ = book.check(a)
            if problem:
                report.problems.append(("", a.batch_id, problem))
        elif book.checked[a.batch_id] and not any(p[1] == a.batch_id for p in report.problems):
            report.problems.append(("", a.batch_id, book.checked[a.batch_id]))
    scoped_rows = [b for b in batch_rows.values() if batch_id is None or b.batch_id == batch_id]
    listed = {a.batch_id for a in book.anchors}
    if any(b.tx_id is not None and b.batch_id not in listed for b in scoped_rows):
        book.relist_once()
    on_ledger = {a.batch_id: a for a in book.anchors}
    noted = _noted_soon(
        index,
        {
            b.batch_id: on_ledger[b.batch_id].tx_id
            for b in scoped_rows
            if b.tx_id is None and b.batch_id in on_ledger
        },
    )
    for a in in_scope:
        if a.batch_id not in batch_rows and a.batch_id not in report.lost_anchors:
            report.lost_anchors.append(a.batch_id)
            report.problems.append(("", a.batch_id, "the index lost its batch row"))
    for b in scoped_rows:
        a = on_ledger.get(b.batch_id)
        if b.tx_id is not None and a is None:
            report.missing_on_ledger.append(b.batch_id)
            report.problems.append(
                ("", b.batch_id, "the index says it is anchored; the ledger has no such anchor")
            )
        elif a is not None and (
            (a.merkle_root, a.first_seq, a.last_seq, a.tree_size)
            != (b.merkle_root, b.first_seq, b.last_seq, b.tree_size)
            or (b.tx_id != a.tx_id and not (b.tx_id is None and b.batch_id in noted))
        ):
            if b.batch_id not in report.root_mismatches:
                report.root_mismatches.append(b.batch_id)
            report.problems.append(
                ("", b.batch_id, "the index's batch differs from the anchor on the ledger")
            )
    for bid in malformed_batches:
        report.problems.append(("", bid, "its batch row in the index is malformed"))
    t.index += time.perf_counter() - t0
    return report


def _noted_soon(index: RecordIndex, unnoted: dict[str, str], wait_s: float = 2.0) -> set[str]:
    """Of batches whose index row had no anchor transaction while the ledger held one
    (batch id -> its tx id): those whose row notes it within `wait_s` in all. The
    anchorer notes it right after the ledger commits; a row that never does was
    edited (or the anchorer crashed in between, which it repairs on restart)."""
    until = time.monotonic() + wait_s
    noted: set[str] = set()
    while unnoted.keys() - noted:
        for batch_id in unnoted.keys() - noted:
            row = index.batch(batch_id)
            if row is not None and row.tx_id == unnoted[batch_id]:
                noted.add(batch_id)
        if not unnoted.keys() - noted or time.monotonic() >= until:
            break
        time.sleep(0.1)
    return noted


def _get_or_none(store: ObjectStore, index: RecordIndex, r: IndexedRecord) -> bytes | None:
    try:
        return read_records(store, index, [r.meta])[0]
    except Unavailable:
        raise
    except EhrAbeError:
        return None
