"""Batched anchoring: many records, one ledger transaction.

Leaves wait in the durable index (pending). A batch closes when it holds
`max_records` leaves or its oldest leaf is `max_age_s` old; it is a contiguous
run of record seqs of this storage instance, and its RFC 6962 Merkle root is
anchored in ONE ledger transaction (`AnchorRecords`) that names the instance
and the range, so the ledger alone says what must be anchored. Closing is
recorded in the index before the ledger is called, so a crash or a ledger
outage never loses a batch: it is retried, with the same id and root, until
the ledger takes it.

A batch the ledger refuses for good (its range overlaps anchored records, as
after an index restored from a backup; or its rows no longer check out) is set
aside and reported, and anchoring goes on with the next one. A row whose MAC
fails is never anchored. Access events are flushed the same way, a batch per
transaction; each carries an id fixed when it was queued, so a resend after a
crash is logged once (the chaincode skips ids it has seen).
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from ehr_common.errors import (
    AlreadyExists,
    DecodeError,
    EhrAbeError,
    IntegrityError,
    InvalidArgument,
    NotFound,
)
from storage_service.anchors import AnchorBook
from storage_service.index import AccessEvent, BadRow, BatchRow, IndexedRecord, RecordIndex
from storage_service.integrity import merkle
from storage_service.ledger.client import LedgerClient
from storage_service.records import utc_now

log = logging.getLogger(__name__)

#: ledger refusals that retrying cannot cure: the batch is set aside
_FOR_GOOD = (AlreadyExists, InvalidArgument, DecodeError, IntegrityError, NotFound)


@dataclass(frozen=True)
class AnchorPolicy:
    max_records: int = 1000
    max_age_s: float = 2.0
    retry_s: float = 1.0
    max_access_events: int = 1000
    #: a record no anchor covers this long after its batch was due is an integrity failure
    grace_s: float = 300.0

    @property
    def deadline_s(self) -> float:
        """Seconds from a record's acceptance to the latest time it must be anchored."""
        return self.max_age_s + self.grace_s


def batch_due(n: int, oldest: datetime | None, now: datetime, policy: AnchorPolicy) -> bool:
    """Should the `n` pending records, the oldest accepted at `oldest`, close into a
    batch now? By count, or by age. A pending time further in the future than a
    batch's age (a row altered on disk, or the clock stepped back) counts as due: the
    pass then reads the rows, checks their MACs and sets a bad one aside, where
    waiting for it would hold the records back and hide their age from
    `records anchoring` forever."""
    if n == 0:
        return False
    if n >= policy.max_records or oldest is None:
        return True
    age = now - oldest
    limit = timedelta(seconds=policy.max_age_s)
    return age >= limit or age < -limit


@dataclass(frozen=True)
class FlushResult:
    batches: int
    records: int
    set_aside: tuple[str, ...] = ()


BadRowHandler = Callable[[BadRow], None]


class Anchorer:
    def __init__(
        self,
        index: RecordIndex,
        ledger: LedgerClient,
        policy: AnchorPolicy,
        book: AnchorBook,
        on_bad_row: BadRowHandler | None = None,
    ):
        self._index = index
        self._ledger = ledger
        self._policy = policy
        self._book = book
        self._instance = book.instance
        self._on_bad_row = on_bad_row
        self._wake = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._work_lock = threading.Lock()  # one anchoring pass at a time
        self._just_closed: dict[str, bytes] = {}  # batch id -> root, within one pass
        self._added = 0  # records added since the last pass began (notify)
        self._ledger_seen = -math.inf  # monotonic time of the last pass that reached it
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

    def notify(self, count: int = 1) -> None:
        """`count` records were added: wake up once a batch may be full. (Waking on
        every write made the anchorer run a pass, with its ledger query, per request.)"""
        with self._wake:
            self._added += count
            if self._added >= self._policy.max_records:
                self._wake.notify_all()

    def _run(self) -> None:
        while True:
            with self._wake:
                if self._stop:
                    return
                self._added = 0
            try:
                self._pass(force=False)
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
        With force=True the open batch closes whatever its size or age. The stages
        are independent: access events flow even when anchoring cannot."""
        batches, records = self._pass(force=force)
        return FlushResult(batches, records, self.set_aside())

    def _pass(self, *, force: bool) -> tuple[int, int]:
        """One pass; (batches, records) anchored. A background pass runs every
        max_age_s / 4; one with no batch due, none waiting for its anchor and the
        ledger reached less than max_age_s ago leaves the ledger alone (every pass
        used to query it)."""
        with self._work_lock:
            self._just_closed.clear()
            failure: EhrAbeError | None = None
            batches = records = 0
            anchoring = (
                force
                or not self.ledger_healthy
                # an idle service still asks once per max_age_s: an outage shows at once
                or time.monotonic() - self._ledger_seen >= self._policy.max_age_s
                or self._anchoring_due()
            )
            try:
                if anchoring:
                    self._book.refresh()
                    head = self._book.head()
                    self._index.reserve_seqs_through(head)
                    self._adopt_ledger_placement(head)
                    self._close_due_batches(force=force, head=head)
                    batches, records = self._anchor_unanchored()
                    # A background pass leaves it to the next pass to learn these anchors
                    # from the ledger (covering() lists it sooner for a seq past the
                    # head): the anchoring cycle is serial, and a listing here delayed
                    # every next batch. A flush is asked for, so its caller sees them.
                    if batches and force:
                        self._book.refresh()
            except EhrAbeError as exc:
                failure = exc
            try:
                self._flush_accesses(force=force)
            except EhrAbeError as exc:
                failure = failure or exc
            if failure is not None:
                raise failure
            if anchoring:  # only a pass that reached the ledger says it is healthy
                self.ledger_healthy = True
                self._ledger_seen = time.monotonic()
            return batches, records

    def _anchoring_due(self) -> bool:
        """A batch would close now (by count or age), or a closed one awaits its anchor
        (read from the index alone; the ledger's head as last seen)."""
        if self._index.has_unanchored_batches():
            return True
        n, oldest = self._index.pending_count_and_oldest(after_seq=self._book.head())
        return batch_due(n, oldest, utc_now(), self._policy)

    def set_aside(self, *, every_row: bool = True) -> tuple[str, ...]:
        """Batches set aside, and (every_row) the ids of batch rows too malformed to
        read, which takes reading every batch ever closed. Status calls, which
        monitoring repeats, pass every_row=False: only the rows marked set aside,
        through a partial index (an unanchored malformed row is marked by the next
        pass; one claiming an anchor is verification's to find)."""
        out = []
        rows = self._index.batches() if every_row else self._index.set_aside_batches()
        for b in rows:
            if isinstance(b, str):
                out.append(b)
            elif b.set_aside is not None:
                out.append(b.batch_id)
        return tuple(out)

    def _bad_row(self, row: BadRow) -> None:
        log.error("integrity failure: index row %d (%s): %s", row.seq, row.record_id, row.detail)
        self._index.set_aside_row(row.seq)
        if self._on_bad_row is not None:
            self._on_bad_row(row)

    def _adopt_ledger_placement(self, head: int) -> None:
        """Rows the index holds as pending though the ledger already covers their seq
        (an index restored from a backup taken before their batch was anchored): take
        the ledger's placement, once the index's leaves for the whole range hash to the
        anchored root. Never re-anchored: the ledger refuses overlapping ranges."""
        done: set[str] = set()
        for r in self._index.pending(self._policy.max_records, through_seq=head):
            a = self._book.covering(r.seq)
            if a is None or a.batch_id in done:
                continue
            done.add(a.batch_id)
            rows = self._index.in_range(a.first_seq, a.last_seq)
            sound = [x for x in rows if isinstance(x, IndexedRecord)]
            if len(sound) != a.tree_size:
                continue  # rows missing or bad: verification reports it
            if merkle.merkle_root([x.leaf_hash for x in sound]) != a.merkle_root:
                continue
            log.warning(
                "adopting the ledger's anchor %s for records the index held as pending", a.batch_id
            )
            self._index.adopt_anchor(a.batch_id, sound, a.merkle_root, a.tx_id, utc_now())

    def _close_due_batches(self, *, force: bool, head: int) -> None:
        p = self._policy
        while True:
            n, oldest = self._index.pending_count_and_oldest(after_seq=head)
            if n == 0 or not (force or batch_due(n, oldest, utc_now(), p)):
                return
            rows = self._index.pending(p.max_records, after_seq=head)
            run: list[IndexedRecord] = []
            cut = False
            for r in rows:
                if isinstance(r, BadRow):
                    if run:
                        cut = True
                        break
                    self._bad_row(r)  # never anchored; the next pass starts after it
                    continue
                if run and r.seq != run[-1].seq + 1:
                    cut = True  # a gap (a row deleted from the index): a batch is contiguous
                    break
                run.append(r)
            if run:
                root = merkle.merkle_root([r.leaf_hash for r in run])
                # the nonce keeps ids unique even if an index restored from a backup
                # closes a batch at the same seq again
                batch_id = f"{self._instance}-{run[0].seq:012d}-{secrets.token_hex(4)}"
                self._index.close_batch(batch_id, run, root, utc_now())
                self._just_closed[batch_id] = root  # rows checked a moment ago
            if (
                not cut
                and len(rows) < p.max_records
                and not any(isinstance(r, BadRow) for r in rows)
            ):
                return

    def _check_batch(self, b: BatchRow) -> tuple[bytes | None, str]:
        """(root, "") recomputed from the batch's rows as they are now, or (None, why not)."""
        if b.first_seq < 1 or b.last_seq < b.first_seq:
            return None, "its record range is malformed"
        rows = self._index.in_range(b.first_seq, b.last_seq)
        if len(rows) != b.last_seq - b.first_seq + 1:
            return None, "records of the batch are missing from the index"
        leaves = []
        for r in rows:
            if isinstance(r, BadRow):
                if self._on_bad_row is not None:
                    self._on_bad_row(r)
                return None, f"index row {r.seq} fails its check: {r.detail}"
            if r.batch_id != b.batch_id:
                return None, f"index row {r.seq} is no longer in this batch"
            leaves.append(r.leaf_hash)
        return merkle.merkle_root(leaves), ""

    def _set_aside(self, batch_id: str, reason: str) -> None:
        log.error("batch %s cannot be anchored and is set aside: %s", batch_id, reason)
        self._index.mark_set_aside(batch_id, reason)

    def _anchor_unanchored(self) -> tuple[int, int]:
        batches = records = 0
        for b in self._index.unanchored_batches():
            if isinstance(b, str):
                self._set_aside(b, "its index row is malformed")
                continue
            root = self._just_closed.pop(b.batch_id, None)
            problem = ""
            if root is None:  # closed in an earlier pass: the rows may have changed since
                root, problem = self._check_batch(b)
            if root is None:
                self._set_aside(b.batch_id, problem)
                continue
            meta = {"closed_at": b.closed_at.isoformat()}
            try:
                receipt = self._ledger.anchor_records(
                    b.batch_id, root, self._instance, b.first_seq, b.last_seq, meta
                )
                tx_id, block = receipt.tx_id, receipt.block
            except AlreadyExists as exc:
                # Either a previous attempt committed and we crashed before recording it,
                # or the range or id is taken (an index restored from a backup).
                try:
                    anchor = self._ledger.get_anchor(b.batch_id)
                except NotFound:
                    self._set_aside(b.batch_id, str(exc))
                    continue
                same = (anchor.merkle_root, anchor.first_seq, anchor.last_seq, anchor.instance)
                if same != (root, b.first_seq, b.last_seq, self._instance):
                    self._set_aside(b.batch_id, "the ledger holds this batch id with another root")
                    continue
                tx_id, block = anchor.tx_id, anchor.block
            except _FOR_GOOD as exc:
                self._set_aside(b.batch_id, str(exc))
                continue
            self._index.mark_anchored(b.batch_id, tx_id, block, utc_now())
            batches += 1
            records += b.last_seq - b.first_seq + 1
        return batches, records

    def _flush_accesses(self, *, force: bool) -> None:
        while True:
            queued = self._index.queued_accesses(self._policy.max_access_events)
            if not queued:
                return
            events: list[AccessEvent] = []
            for e in queued:
                if isinstance(e, int):
                    log.error("dropping malformed access event %d from the queue", e)
                    self._index.drop_access(e)
                else:
                    events.append(e)
            if not events:
                continue
            if not force and len(queued) < self._policy.max_access_events:
                age = utc_now() - events[0].at
                if age < timedelta(seconds=self._policy.max_age_s):
                    return
            try:
                self._ledger.log_accesses(
                    [(e.record_id, e.patient_id, e.subject, e.at, e.event_id) for e in events]
                )
                self._index.drop_accesses(events[-1].seq)
            except InvalidArgument:
                # One bad event must not block the rest: send them one by one (ids make
                # a resend harmless) and drop the ones the ledger refuses.
                for e in events:
                    try:
                        self._ledger.log_accesses(
                            [(e.record_id, e.patient_id, e.subject, e.at, e.event_id)]
                        )
                    except InvalidArgument as exc:
                        log.error("access event %d refused by the ledger, dropped: %s", e.seq, exc)
                    self._index.drop_access(e.seq)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until nothing is pending (tests, demo, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            n, _ = self._index.pending_count_and_oldest(after_seq=self._book.head())
            if n == 0 and not self._index.unanchored_batches():
                return True
            time.sleep(0.05)
        return False
