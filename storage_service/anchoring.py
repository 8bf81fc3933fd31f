"""Batched anchoring: many records, one ledger transaction.

Leaves wait in the durable index (pending). A batch closes when it holds
`max_records` leaves or its oldest leaf is `max_age_s` old; its RFC 6962
Merkle root is anchored in ONE ledger transaction. Closing is recorded in the
index before the ledger is called, so a crash or a ledger outage never loses a
batch: it is retried, with the same id and root, until the ledger takes it.
Access events are flushed to the ledger the same way, a batch per transaction.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from ehr_common.errors import AlreadyExists, EhrAbeError, IntegrityError
from storage_service.index import RecordIndex
from storage_service.integrity import merkle
from storage_service.ledger.client import LedgerClient
from storage_service.records import utc_now

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnchorPolicy:
    max_records: int = 1000
    max_age_s: float = 2.0
    retry_s: float = 1.0
    max_access_events: int = 1000


@dataclass(frozen=True)
class FlushResult:
    batches: int
    records: int


class Anchorer:
    def __init__(
        self, index: RecordIndex, ledger: LedgerClient, policy: AnchorPolicy, instance_id: str
    ):
        self._index = index
        self._ledger = ledger
        self._policy = policy
        self._instance = instance_id
        self._wake = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._work_lock = threading.Lock()  # one anchoring pass at a time
        self.ledger_healthy = True

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="anchorer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def notify(self) -> None:
        """A record was added: wake up if a batch may be full."""
        with self._wake:
            self._wake.notify_all()

    def _run(self) -> None:
        while True:
            with self._wake:
                if self._stop:
                    return
            try:
                self.run_once(force=False)
                delay = self._policy.max_age_s / 4
            except EhrAbeError as exc:
                if self.ledger_healthy:
                    log.warning("ledger unavailable, anchoring will be retried: %s", exc)
                self.ledger_healthy = False
                delay = self._policy.retry_s
            except Exception:
                log.exception("anchoring pass failed; retrying")
                delay = self._policy.retry_s
            with self._wake:
                if not self._stop:
                    self._wake.wait(timeout=max(0.05, delay))

    # -- one pass ------------------------------------------------------------
    def run_once(self, *, force: bool) -> FlushResult:
        """Close due batches, anchor every unanchored batch, flush access events.
        With force=True the open batch closes whatever its size or age."""
        with self._work_lock:
            self._close_due_batches(force=force)
            batches, records = self._anchor_unanchored()
            self._flush_accesses(force=force)
            self.ledger_healthy = True
            return FlushResult(batches, records)

    def _close_due_batches(self, *, force: bool) -> None:
        p = self._policy
        while True:
            n, oldest = self._index.pending_count_and_oldest()
            if n == 0:
                return
            due_by_age = oldest is not None and utc_now() - oldest >= timedelta(seconds=p.max_age_s)
            if not (force or n >= p.max_records or due_by_age):
                return
            records = self._index.pending(p.max_records)
            root = merkle.merkle_root([r.leaf_hash for r in records])
            batch_id = f"{self._instance}-{records[0].seq:012d}"
            self._index.close_batch(batch_id, records, root, utc_now())
            if len(records) < p.max_records:
                return

    def _anchor_unanchored(self) -> tuple[int, int]:
        batches = records = 0
        for batch in self._index.unanchored_batches():
            try:
                receipt = self._ledger.anchor_batch(
                    batch.batch_id,
                    batch.merkle_root,
                    batch.tree_size,
                    {"closed_at": batch.closed_at.isoformat(), "instance": self._instance},
                )
                tx_id, block = receipt.tx_id, receipt.block
            except AlreadyExists:
                # A previous attempt committed but we crashed before recording it.
                anchor = self._ledger.get_anchor(batch.batch_id)
                if anchor.merkle_root != batch.merkle_root or anchor.tree_size != batch.tree_size:
                    raise IntegrityError(
                        f"batch {batch.batch_id} is anchored on the ledger with a different root"
                    ) from None
                tx_id, block = anchor.tx_id, anchor.block
            self._index.mark_anchored(batch.batch_id, tx_id, block, utc_now())
            batches += 1
            records += batch.tree_size
        return batches, records

    def _flush_accesses(self, *, force: bool) -> None:
        while True:
            events = self._index.queued_accesses(self._policy.max_access_events)
            if not events:
                return
            if not force and len(events) < self._policy.max_access_events:
                age = utc_now() - events[0].at
                if age < timedelta(seconds=self._policy.max_age_s):
                    return
            self._ledger.log_accesses(
                [(e.record_id, e.patient_id, e.subject, e.at) for e in events]
            )
            self._index.drop_accesses(events[-1].seq)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until nothing is pending (tests, demo, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            n, _ = self._index.pending_count_and_oldest()
            if n == 0 and not self._index.unanchored_batches():
                return True
            time.sleep(0.05)
        return False
