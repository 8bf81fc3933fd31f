"""The storage service's durable local index (SQLite).

It holds what the service must not lose between a PutRecord answered OK and
the moment the record's batch is anchored: record metadata, pending leaves,
closed-but-unanchored batches, and the queue of access events waiting for the
ledger. It is an index, not the source of truth: every read is verified
against the ledger's anchored Merkle root.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from storage_service.records import RecordMeta

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  record_id TEXT NOT NULL UNIQUE,
  patient_id TEXT NOT NULL,
  record_type TEXT NOT NULL,
  author TEXT NOT NULL,
  created_at TEXT NOT NULL,
  policy TEXT NOT NULL,
  size INTEGER NOT NULL,
  content_sha256 BLOB NOT NULL,
  leaf_hash BLOB NOT NULL,
  batch_id TEXT,
  leaf_index INTEGER
);
CREATE INDEX IF NOT EXISTS records_by_patient ON records(patient_id, seq);
CREATE INDEX IF NOT EXISTS records_pending ON records(batch_id, seq);
CREATE TABLE IF NOT EXISTS batches(
  batch_id TEXT PRIMARY KEY,
  merkle_root BLOB NOT NULL,
  tree_size INTEGER NOT NULL,
  closed_at TEXT NOT NULL,
  tx_id TEXT,
  block INTEGER,
  anchored_at TEXT
);
CREATE TABLE IF NOT EXISTS access_queue(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  record_id TEXT NOT NULL,
  patient_id TEXT NOT NULL,
  subject TEXT NOT NULL,
  at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments(
  record_id TEXT PRIMARY KEY,
  patient_id TEXT NOT NULL,
  device_id TEXT NOT NULL,
  window_record_id TEXT NOT NULL,
  first_seq INTEGER NOT NULL,
  last_seq INTEGER NOT NULL,
  first_time_ms INTEGER NOT NULL,
  last_time_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS segments_by_patient_time ON segments(patient_id, last_time_ms);
"""


@dataclass(frozen=True)
class IndexedRecord:
    seq: int
    meta: RecordMeta
    leaf_hash: bytes
    batch_id: str | None
    leaf_index: int | None


@dataclass(frozen=True)
class BatchRow:
    batch_id: str
    merkle_root: bytes
    tree_size: int
    closed_at: datetime
    tx_id: str | None
    block: int | None


@dataclass(frozen=True)
class SegmentRow:
    """Where a segment sits in a patient's timeline (from its sealed header, whose
    bytes are hashed into the anchored leaf; readers re-check it after decryption)."""

    record_id: str
    patient_id: str
    device_id: str
    window_record_id: str
    first_seq: int
    last_seq: int
    first_time_ms: int
    last_time_ms: int


@dataclass
class _Ticket:
    rows: list[tuple[RecordMeta, bytes, SegmentRow | None]]
    inserted: list[bool] = field(default_factory=list)
    error: BaseException | None = None
    done: bool = False


@dataclass(frozen=True)
class AccessEvent:
    seq: int
    record_id: str
    patient_id: str
    subject: str
    at: datetime


_RECORD_COLS = (
    "seq, record_id, patient_id, record_type, author, created_at, policy, size, "
    "content_sha256, leaf_hash, batch_id, leaf_index"
)


def _record(row: tuple[object, ...]) -> IndexedRecord:
    (seq, rid, pid, rtype, author, created, policy, size, sha, leaf, batch, idx) = row
    meta = RecordMeta(
        record_id=str(rid),
        patient_id=str(pid),
        record_type=str(rtype),
        author=str(author),
        created_at=datetime.fromisoformat(str(created)),
        policy=str(policy),
        size=int(size),  # type: ignore[call-overload]
        content_sha256=bytes(sha),  # type: ignore[call-overload]
    )
    return IndexedRecord(
        seq=int(seq),  # type: ignore[call-overload]
        meta=meta,
        leaf_hash=bytes(leaf),  # type: ignore[call-overload]
        batch_id=None if batch is None else str(batch),
        leaf_index=None if idx is None else int(idx),  # type: ignore[call-overload]
    )


def _batch(row: tuple[object, ...]) -> BatchRow:
    bid, root, size, closed, tx, block = row
    return BatchRow(
        batch_id=str(bid),
        merkle_root=bytes(root),  # type: ignore[call-overload]
        tree_size=int(size),  # type: ignore[call-overload]
        closed_at=datetime.fromisoformat(str(closed)),
        tx_id=None if tx is None else str(tx),
        block=None if block is None else int(block),  # type: ignore[call-overload]
    )


class RecordIndex:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        # Point reads on a connection of their own: WAL lets them proceed while a
        # (group) commit holds the writer connection through its fsync.
        self._reader = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._reader_lock = threading.Lock()
        # Group commit: concurrent writers' rows share one transaction (one fsync).
        self._group = threading.Condition()
        self._group_queue: list[_Ticket] = []
        self._group_leader = False
        self.group_commits = 0  # how many transactions served commit_group (bench, tests)

    def close(self) -> None:
        with self._lock, self._reader_lock:
            self._db.close()
            self._reader.close()

    # -- settings -----------------------------------------------------------
    def setting(self, key: str, default_factory: object) -> str:
        """Read a persistent setting, creating it once with default_factory()."""
        with self._lock:
            row = self._db.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
            if row:
                return str(row[0])
            value = str(default_factory() if callable(default_factory) else default_factory)
            self._db.execute("INSERT INTO settings(key, value) VALUES(?, ?)", (key, value))
            return value

    # -- records --------------------------------------------------------------
    def insert(self, meta: RecordMeta, leaf_hash: bytes) -> bool:
        """Insert a pending record; False if the record id already exists."""
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO records(record_id, patient_id, record_type, author, created_at, "
                    "policy, size, content_sha256, leaf_hash) VALUES(?,?,?,?,?,?,?,?,?)",
                    (
                        meta.record_id,
                        meta.patient_id,
                        meta.record_type,
                        meta.author,
                        meta.created_at.isoformat(),
                        meta.policy,
                        meta.size,
                        meta.content_sha256,
                        leaf_hash,
                    ),
                )
            except sqlite3.IntegrityError:
                return False
            return True

    def commit_group(self, rows: list[tuple[RecordMeta, bytes, SegmentRow | None]]) -> list[bool]:
        """Insert pending records (and their segment rows) durably; for each row True
        if new, False if its record id existed. Callers arriving while a commit runs
        are committed together by the next one: one transaction and one fsync for
        all of them. Returns once the rows are durable (synchronous=FULL)."""
        ticket = _Ticket(rows)
        with self._group:
            self._group_queue.append(ticket)
            while not ticket.done:
                if not self._group_leader:
                    self._group_leader = True
                    batch, self._group_queue = self._group_queue, []
                    break
                self._group.wait()
            else:
                return self._result(ticket)
        try:
            self._commit_tickets(batch)
        finally:
            with self._group:
                self._group_leader = False
                for t in batch:
                    t.done = True
                self._group.notify_all()
        return self._result(ticket)

    @staticmethod
    def _result(ticket: _Ticket) -> list[bool]:
        if ticket.error is not None:
            raise ticket.error
        return ticket.inserted

    def _commit_tickets(self, batch: list[_Ticket]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for t in batch:
                    t.inserted = [self._insert_row(m, leaf, seg) for m, leaf, seg in t.rows]
                self._db.execute("COMMIT")
                self.group_commits += 1
            except BaseException as exc:
                self._db.execute("ROLLBACK")
                for t in batch:
                    t.error, t.inserted = exc, []

    def _insert_row(self, meta: RecordMeta, leaf_hash: bytes, seg: SegmentRow | None) -> bool:
        cur = self._db.execute(
            "INSERT OR IGNORE INTO records(record_id, patient_id, record_type, author, created_at, "
            "policy, size, content_sha256, leaf_hash) VALUES(?,?,?,?,?,?,?,?,?)",
            (
                meta.record_id,
                meta.patient_id,
                meta.record_type,
                meta.author,
                meta.created_at.isoformat(),
                meta.policy,
                meta.size,
                meta.content_sha256,
                leaf_hash,
            ),
        )
        if cur.rowcount == 0:
            return False
        if seg is not None:
            self._db.execute(
                "INSERT OR IGNORE INTO segments(record_id, patient_id, device_id, window_record_id, "
                "first_seq, last_seq, first_time_ms, last_time_ms) VALUES(?,?,?,?,?,?,?,?)",
                (
                    seg.record_id,
                    seg.patient_id,
                    seg.device_id,
                    seg.window_record_id,
                    seg.first_seq,
                    seg.last_seq,
                    seg.first_time_ms,
                    seg.last_time_ms,
                ),
            )
        return True

    def segments(
        self, patient_id: str, since_ms: int, until_ms: int, limit: int
    ) -> list[SegmentRow]:
        """A patient's segments overlapping [since_ms, until_ms], in time order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT record_id, patient_id, device_id, window_record_id, first_seq, last_seq, "
                "first_time_ms, last_time_ms FROM segments WHERE patient_id=? AND last_time_ms>=? "
                "AND first_time_ms<=? ORDER BY first_time_ms, device_id, first_seq LIMIT ?",
                (patient_id, since_ms, until_ms, limit),
            ).fetchall()
        return [
            SegmentRow(str(r[0]), str(r[1]), str(r[2]), str(r[3]), *(int(x) for x in r[4:]))
            for r in rows
        ]

    def get(self, record_id: str) -> IndexedRecord | None:
        with self._reader_lock:
            row = self._reader.execute(
                f"SELECT {_RECORD_COLS} FROM records WHERE record_id=?", (record_id,)
            ).fetchone()
        return _record(row) if row else None

    def by_patient(self, patient_id: str, after_seq: int, limit: int) -> list[IndexedRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_RECORD_COLS} FROM records WHERE patient_id=? AND seq>? "
                "ORDER BY seq LIMIT ?",
                (patient_id, after_seq, limit),
            ).fetchall()
        return [_record(r) for r in rows]

    def scan(
        self,
        *,
        patient_id: str | None = None,
        batch_id: str | None = None,
        chunk: int = 10_000,
    ) -> Iterator[list[IndexedRecord]]:
        """All matching records in seq order, in chunks (memory stays flat)."""
        after = 0
        where, args = "seq>?", []
        if patient_id is not None:
            where += " AND patient_id=?"
            args.append(patient_id)
        if batch_id is not None:
            where += " AND batch_id=?"
            args.append(batch_id)
        while True:
            with self._lock:
                rows = self._db.execute(
                    f"SELECT {_RECORD_COLS} FROM records WHERE {where} ORDER BY seq LIMIT ?",
                    (after, *args, chunk),
                ).fetchall()
            if not rows:
                return
            records = [_record(r) for r in rows]
            after = records[-1].seq
            yield records

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    # -- batches ----------------------------------------------------------------
    def pending(self, limit: int) -> list[IndexedRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_RECORD_COLS} FROM records WHERE batch_id IS NULL ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [_record(r) for r in rows]

    def pending_count_and_oldest(self) -> tuple[int, datetime | None]:
        with self._lock:
            n, oldest = self._db.execute(
                "SELECT COUNT(*), MIN(created_at) FROM records WHERE batch_id IS NULL"
            ).fetchone()
        return int(n), (datetime.fromisoformat(oldest) if oldest else None)

    def close_batch(
        self, batch_id: str, records: list[IndexedRecord], root: bytes, closed_at: datetime
    ) -> None:
        """Atomically assign leaves to a batch before it goes to the ledger, so a crash
        in between re-anchors the very same batch (same id, same root) on restart."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO batches(batch_id, merkle_root, tree_size, closed_at) "
                    "VALUES(?,?,?,?)",
                    (batch_id, root, len(records), closed_at.isoformat()),
                )
                self._db.executemany(
                    "UPDATE records SET batch_id=?, leaf_index=? WHERE seq=? AND batch_id IS NULL",
                    [(batch_id, i, r.seq) for i, r in enumerate(records)],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def mark_anchored(self, batch_id: str, tx_id: str, block: int, at: datetime) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE batches SET tx_id=?, block=?, anchored_at=? WHERE batch_id=?",
                (tx_id, block, at.isoformat(), batch_id),
            )

    def unanchored_batches(self) -> list[BatchRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT batch_id, merkle_root, tree_size, closed_at, tx_id, block FROM batches "
                "WHERE tx_id IS NULL ORDER BY closed_at"
            ).fetchall()
        return [_batch(r) for r in rows]

    def batch(self, batch_id: str) -> BatchRow | None:
        with self._lock:
            row = self._db.execute(
                "SELECT batch_id, merkle_root, tree_size, closed_at, tx_id, block FROM batches "
                "WHERE batch_id=?",
                (batch_id,),
            ).fetchone()
        return _batch(row) if row else None

    def batch_leaf_hashes(self, batch_id: str) -> list[bytes]:
        with self._lock:
            rows = self._db.execute(
                "SELECT leaf_hash FROM records WHERE batch_id=? ORDER BY leaf_index", (batch_id,)
            ).fetchall()
        return [bytes(r[0]) for r in rows]

    # -- access audit queue ---------------------------------------------------
    def queue_access(self, record_id: str, patient_id: str, subject: str, at: datetime) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO access_queue(record_id, patient_id, subject, at) VALUES(?,?,?,?)",
                (record_id, patient_id, subject, at.isoformat()),
            )

    def queued_accesses(self, limit: int) -> list[AccessEvent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, record_id, patient_id, subject, at FROM access_queue "
                "ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            AccessEvent(int(s), str(r), str(p), str(u), datetime.fromisoformat(str(a)))
            for s, r, p, u, a in rows
        ]

    def drop_accesses(self, up_to_seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM access_queue WHERE seq<=?", (up_to_seq,))
