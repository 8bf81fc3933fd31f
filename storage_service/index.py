"""The storage service's durable local index (SQLite).

It holds what the service must not lose between a PutRecord answered OK and
the moment the record's batch is anchored: record metadata, pending leaves,
closed-but-unanchored batches, and the queue of access events waiting for the
ledger. It is an index, not the source of truth: which records are anchored,
and under which root, is read from the ledger (`AnchorsByInstance`).

Someone who can write this file must not be able to slip a record in: every
row carries an HMAC (`storage_service.keys.row_mac`) under a key derived from
the service's secret, which is not stored here. A row that is malformed or
whose MAC fails is returned as a `BadRow`, never as a record: it is never
served and never anchored. Reading never raises on bad content.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ehr_common.errors import IntegrityError
from ehr_common.sqlite import write_transaction
from storage_service.integrity import merkle
from storage_service.keys import row_mac
from storage_service.records import PackRef, RecordMeta, leaf_bytes

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
  leaf_index INTEGER,
  mac BLOB
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
  anchored_at TEXT,
  first_seq INTEGER,
  last_seq INTEGER,
  set_aside TEXT
);
-- every anchoring pass asks for these: without it, a scan of every batch ever closed
CREATE INDEX IF NOT EXISTS batches_unanchored ON batches(first_seq, batch_id)
  WHERE tx_id IS NULL AND set_aside IS NULL;
-- and every status call for these
CREATE INDEX IF NOT EXISTS batches_set_aside ON batches(first_seq, batch_id)
  WHERE set_aside IS NOT NULL;
CREATE TABLE IF NOT EXISTS access_queue(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  record_id TEXT NOT NULL,
  patient_id TEXT NOT NULL,
  subject TEXT NOT NULL,
  at TEXT NOT NULL,
  event_id TEXT
);
CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency(
  record_id TEXT PRIMARY KEY,
  fingerprint BLOB NOT NULL
) WITHOUT ROWID;
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
-- records stored inside a pack object (segments, PutRecords that arrived together);
-- any other record is its own object
CREATE TABLE IF NOT EXISTS packed(
  record_id TEXT PRIMARY KEY,
  pack_key TEXT NOT NULL,
  pack_offset INTEGER NOT NULL
) WITHOUT ROWID;
"""


#: the highest record seq the chaincode anchors (its integers stay exact in JSON)
MAX_SEQ = 2**53

#: columns added after the first release: (table, column, type)
_MIGRATIONS = (
    ("records", "mac", "BLOB"),
    ("batches", "first_seq", "INTEGER"),
    ("batches", "last_seq", "INTEGER"),
    ("batches", "set_aside", "TEXT"),
    ("access_queue", "event_id", "TEXT"),
)


@dataclass(frozen=True)
class IndexedRecord:
    """A row whose MAC and leaf check out: its metadata is what the service stored."""

    seq: int
    meta: RecordMeta
    leaf_hash: bytes
    batch_id: str | None
    leaf_index: int | None


@dataclass(frozen=True)
class BadRow:
    """A row that is malformed or fails its MAC: an integrity failure, never a record."""

    seq: int
    record_id: str  # as the row says ("" if unreadable): for reports only, not trusted
    detail: str
    batch_id: str | None = None
    #: the leaf its metadata hashes to, when the MAC holds and only the leaf column lies
    true_leaf: bytes | None = None


Row = IndexedRecord | BadRow


@dataclass(frozen=True)
class BatchRow:
    batch_id: str
    merkle_root: bytes
    tree_size: int
    closed_at: datetime
    tx_id: str | None
    block: int | None
    first_seq: int
    last_seq: int
    set_aside: str | None  # why it was set aside ('' / None: it was not)


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
    rows: list[tuple[RecordMeta, bytes, SegmentRow | None, PackRef | None]]
    inserted: list[int | None] = field(default_factory=list)
    error: BaseException | None = None
    done: bool = False


@dataclass(frozen=True)
class AccessEvent:
    seq: int
    record_id: str
    patient_id: str
    subject: str
    at: datetime
    event_id: str


_RECORD_COLS = (
    "seq, record_id, patient_id, record_type, author, created_at, policy, size, "
    "content_sha256, leaf_hash, batch_id, leaf_index, mac"
)
#: a closed batch still waiting for its anchor (the partial index batches_unanchored)
_UNANCHORED = "tx_id IS NULL AND set_aside IS NULL"
_BATCH_COLS = (
    "batch_id, merkle_root, tree_size, closed_at, tx_id, block, first_seq, last_seq, set_aside"
)


def _bytes(value: object, n: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != n:
        raise ValueError(f"{what} is not {n} bytes")
    return value


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{what} is not an integer")
    return value


def _aware(value: object, what: str) -> datetime:
    t = datetime.fromisoformat(str(value))
    if t.tzinfo is None:
        raise ValueError(f"{what} has no time zone")
    return t


def _record(row: tuple[object, ...], mac_key: bytes, instance: str) -> Row:
    seq_raw, rid = row[0], row[1]
    seq = seq_raw if isinstance(seq_raw, int) else -1
    record_id = rid if isinstance(rid, str) else ""
    batch = row[10] if isinstance(row[10], str) else None
    if not 1 <= seq <= MAX_SEQ:
        return BadRow(seq, record_id, "its seq is out of the range the ledger anchors", batch)
    (_, _, pid, rtype, author, created, policy, size, sha, leaf, batch_raw, idx, mac) = row
    try:
        texts = (("record id", rid), ("patient id", pid), ("type", rtype), ("author", author))
        for what, v in (*texts, ("policy", policy)):
            if not isinstance(v, str):
                raise ValueError(f"its {what} is not text")
        meta = RecordMeta(
            record_id=record_id,
            patient_id=str(pid),
            record_type=str(rtype),
            author=str(author),
            created_at=_aware(created, "its time"),
            policy=str(policy),
            size=_int(size, "its size"),
            content_sha256=_bytes(sha, 32, "its content hash"),
        )
        if not 0 <= meta.size < 2**63:
            raise ValueError("its size is out of range")
        canonical = leaf_bytes(meta)
    except (ValueError, TypeError, OverflowError) as exc:
        return BadRow(seq, record_id, f"malformed index row: {exc}", batch)
    if not isinstance(mac, bytes) or not hmac.compare_digest(
        mac, row_mac(mac_key, instance, canonical)
    ):
        return BadRow(seq, record_id, "its index row fails its MAC (altered or forged)", batch)
    # The metadata is the service's: from here on its leaf is known, whatever the row says.
    true_leaf = merkle.leaf_hash(canonical)
    if leaf != true_leaf:
        return BadRow(
            seq, record_id, "its index row's leaf hash is not its metadata's", batch, true_leaf
        )
    if batch_raw is not None and batch is None:
        return BadRow(
            seq, record_id, "malformed index row: its batch id is not text", None, true_leaf
        )
    if idx is not None and not (isinstance(idx, int) and not isinstance(idx, bool)):
        return BadRow(
            seq,
            record_id,
            "malformed index row: its leaf index is not an integer",
            batch,
            true_leaf,
        )
    return IndexedRecord(seq=seq, meta=meta, leaf_hash=true_leaf, batch_id=batch, leaf_index=idx)


def _batch(row: tuple[object, ...]) -> BatchRow:
    """Raises ValueError / TypeError on a malformed row."""
    bid, root, size, closed, tx, block, first, last, aside = row
    return BatchRow(
        batch_id=str(bid),
        merkle_root=_bytes(root, 32, "merkle root"),
        tree_size=_int(size, "tree size"),
        closed_at=_aware(closed, "closing time"),
        tx_id=None if tx is None else str(tx),
        block=None if block is None else _int(block, "block"),
        first_seq=_int(first, "first seq"),
        last_seq=_int(last, "last seq"),
        set_aside=None if aside is None else str(aside),
    )


def access_event_id(
    instance: str, record_id: str, patient_id: str, subject: str, at: datetime
) -> str:
    body = "\x00".join((instance, record_id, patient_id, subject, at.isoformat()))
    return "a-" + hashlib.sha256(b"ehr-abe/access-event/v1\x00" + body.encode()).hexdigest()[:32]


def _batch_row(
    batch_id: str, root: bytes, records: list[IndexedRecord], at: datetime
) -> tuple[str, bytes, int, str, int, int]:
    """(batch_id, merkle_root, tree_size, closed_at, first_seq, last_seq) of a batch
    over a contiguous run of records."""
    return (batch_id, root, len(records), at.isoformat(), records[0].seq, records[-1].seq)


def _placements(batch_id: str, records: list[IndexedRecord]) -> list[tuple[str, int, int]]:
    """(batch_id, leaf_index, seq) for each record of a batch, in leaf order."""
    return [(batch_id, i, r.seq) for i, r in enumerate(records)]


class RecordIndex:
    def __init__(self, path: Path, *, mac_key: bytes):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            for table, column, typ in _MIGRATIONS:
                cols = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
                if column not in cols:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {typ}")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise IntegrityError(f"the index {path} cannot be read: {exc}") from None
        # Point reads on a connection of their own: WAL lets them proceed while a
        # (group) commit holds the writer connection through its fsync.
        self._reader = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._reader_lock = threading.Lock()
        # Group commit: concurrent writers' rows share one transaction (one fsync).
        self._group = threading.Condition()
        self._group_queue: list[_Ticket] = []
        self._group_leader = False
        self.group_commits = 0  # how many transactions served commit_group (bench, tests)
        self._mac_key = mac_key
        self.instance_id = self._instance()

    def _instance(self) -> str:
        """This index's storage instance id, created once, authenticated by a MAC (an
        instance id changed on disk would point verification at another's anchors)."""
        tag = b"ehr-abe/instance/v1\x00"
        instance = self.setting("instance_id", lambda: "s" + secrets.token_hex(8))
        want = hmac.new(self._mac_key, tag + instance.encode(), "sha256").hexdigest()
        stored = self.setting("instance_mac", want)
        if not hmac.compare_digest(stored, want):
            raise IntegrityError(
                "the index's storage instance id fails its MAC: the index was altered, "
                "or this service runs with another secret"
            )
        return instance

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
    def claim_idempotency(self, record_id: str, fingerprint: bytes) -> bytes:
        """Bind a record id derived from an idempotency key to its request's
        fingerprint, once; returns the fingerprint bound (ours if we were first)."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO idempotency(record_id, fingerprint) VALUES (?, ?)",
                (record_id, fingerprint),
            )
            row = self._db.execute(
                "SELECT fingerprint FROM idempotency WHERE record_id=?", (record_id,)
            ).fetchone()
        return bytes(row[0])

    def row_mac(self, meta: RecordMeta) -> bytes:
        return row_mac(self._mac_key, self.instance_id, leaf_bytes(meta))

    def insert(self, meta: RecordMeta, leaf_hash: bytes) -> bool:
        """Insert a pending record; False if the record id already exists."""
        mac = self.row_mac(meta)
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO records(record_id, patient_id, record_type, author, created_at, "
                    "policy, size, content_sha256, leaf_hash, mac) VALUES(?,?,?,?,?,?,?,?,?,?)",
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
                        mac,
                    ),
                )
            except sqlite3.IntegrityError:
                return False
            return True

    def _rows(self, sql: str, args: tuple[object, ...]) -> list[Row]:
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_record(r, self._mac_key, self.instance_id) for r in rows]

    def commit_group(
        self, rows: list[tuple[RecordMeta, bytes, SegmentRow | None, PackRef | None]]
    ) -> list[int | None]:
        """Insert pending records (their segment rows, and where in a pack object their
        bytes are when they have no object of their own) durably; for each row its
        seq if new, None if its record id existed. Callers arriving while a commit runs
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
    def _result(ticket: _Ticket) -> list[int | None]:
        if ticket.error is not None:
            raise ticket.error
        return ticket.inserted

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on any
        error), under the writer lock. Commits are durable (synchronous=FULL)."""
        with write_transaction(self._db, self._lock):
            yield

    def _commit_tickets(self, batch: list[_Ticket]) -> None:
        try:
            with self._transaction():
                for t in batch:
                    t.inserted = [self._insert_row(*row) for row in t.rows]
            self.group_commits += 1
        except BaseException as exc:
            for t in batch:
                t.error, t.inserted = exc, []

    def _insert_row(
        self, meta: RecordMeta, leaf_hash: bytes, seg: SegmentRow | None, pack: PackRef | None
    ) -> int | None:
        cur = self._db.execute(
            "INSERT OR IGNORE INTO records(record_id, patient_id, record_type, author, created_at, "
            "policy, size, content_sha256, leaf_hash, mac) VALUES(?,?,?,?,?,?,?,?,?,?)",
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
                self.row_mac(meta),
            ),
        )
        if cur.rowcount == 0:
            return None
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
        if pack is not None:
            self._db.execute(
                "INSERT OR IGNORE INTO packed(record_id, pack_key, pack_offset) VALUES(?,?,?)",
                (meta.record_id, pack.key, pack.offset),
            )
        return cur.lastrowid

    def pack_refs(self, record_ids: Sequence[str]) -> dict[str, PackRef]:
        """The pack location of each of `record_ids` stored in a pack (others: absent).
        Not MACed: a location altered on disk reads other bytes, which fail the
        record's hash (anchored) like any altered object."""
        out: dict[str, PackRef] = {}
        ids = list(dict.fromkeys(record_ids))
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            with self._reader_lock:
                rows = self._reader.execute(
                    "SELECT record_id, pack_key, pack_offset FROM packed WHERE record_id IN "
                    f"({','.join('?' * len(part))})",
                    part,
                ).fetchall()
            for rid, key, offset in rows:
                if isinstance(key, str) and isinstance(offset, int) and offset >= 0:
                    out[str(rid)] = PackRef(key, offset)
        return out

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
            SegmentRow(
                str(r[0]),
                str(r[1]),
                str(r[2]),
                str(r[3]),
                int(r[4]),
                int(r[5]),
                int(r[6]),
                int(r[7]),
            )
            for r in rows
        ]

    def recent_segment_writers(self, limit: int = 20_000) -> list[tuple[str, str]]:
        """Distinct (patient, device) among the last `limit` segments stored: devices
        that were streaming before a restart (a hint of whom to re-confirm on the
        ledger; the ledger, not this table, decides)."""
        with self._reader_lock:
            rows = self._reader.execute(
                "SELECT DISTINCT patient_id, device_id FROM "
                "(SELECT patient_id, device_id FROM segments ORDER BY rowid DESC LIMIT ?)",
                (limit,),
            ).fetchall()
        return [(str(p), str(d)) for p, d in rows]

    def get(self, record_id: str) -> Row | None:
        with self._reader_lock:  # a point read, not blocked by a commit's fsync
            row = self._reader.execute(
                f"SELECT {_RECORD_COLS} FROM records WHERE record_id=?", (record_id,)
            ).fetchone()
        return _record(row, self._mac_key, self.instance_id) if row else None

    def by_patient(self, patient_id: str, after_seq: int, limit: int) -> list[Row]:
        return self._rows(
            f"SELECT {_RECORD_COLS} FROM records WHERE patient_id=? AND seq>? ORDER BY seq LIMIT ?",
            (patient_id, after_seq, limit),
        )

    def in_range(self, first_seq: int, last_seq: int) -> list[Row]:
        """The rows first_seq..last_seq that exist, in seq order."""
        return self._rows(
            f"SELECT {_RECORD_COLS} FROM records WHERE seq BETWEEN ? AND ? ORDER BY seq",
            (first_seq, last_seq),
        )

    def leaves_in_range(self, first_seq: int, last_seq: int) -> dict[int, bytes]:
        """seq -> stored leaf hash for the rows first_seq..last_seq (unauthenticated:
        callers check the leaves together against the root the ledger anchored)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, leaf_hash FROM records WHERE seq BETWEEN ? AND ?",
                (first_seq, last_seq),
            ).fetchall()
        return {int(s): bytes(h) if isinstance(h, bytes) else b"" for s, h in rows}

    def authenticated_leaves(self, first_seq: int, last_seq: int) -> dict[int, bytes]:
        """seq -> leaf for the rows first_seq..last_seq: recomputed from the metadata of
        rows whose MAC holds (whatever their leaf column says), the stored leaf otherwise
        (a row that fails its MAC is reported on its own; its neighbours still prove)."""
        stored = self.leaves_in_range(first_seq, last_seq)
        for r in self.in_range(first_seq, last_seq):
            if isinstance(r, IndexedRecord):
                stored[r.seq] = r.leaf_hash
            elif r.true_leaf is not None:
                stored[r.seq] = r.true_leaf
        return stored

    def scan(
        self,
        *,
        patient_id: str | None = None,
        first_seq: int = 1,
        last_seq: int | None = None,
        chunk: int = 10_000,
    ) -> Iterator[list[Row]]:
        """All matching rows in seq order, in chunks (memory stays flat)."""
        after = first_seq - 1
        where, args = "seq>?", []
        if patient_id is not None:
            where += " AND patient_id=?"
            args.append(patient_id)
        if last_seq is not None:
            where += " AND seq<=?"
            args.append(str(last_seq))
        while True:
            rows = self._rows(
                f"SELECT {_RECORD_COLS} FROM records WHERE {where} ORDER BY seq LIMIT ?",
                (after, *args, chunk),
            )
            if not rows:
                return
            after = max(after, max(r.seq for r in rows))
            yield rows

    def record_ids(self) -> set[str]:
        with self._lock:
            return {str(r[0]) for r in self._db.execute("SELECT record_id FROM records")}

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def count_in_range(self, first_seq: int, last_seq: int) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM records WHERE seq BETWEEN ? AND ?", (first_seq, last_seq)
            ).fetchone()
        return int(row[0])

    def max_seq(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()
        return int(row[0])

    def reserve_seqs_through(self, seq: int) -> None:
        """Make new records get seqs above `seq` (the ledger's anchored head), so an index
        restored from a backup never reuses a seq the ledger already covers."""
        with self._transaction():
            row = self._db.execute(
                "SELECT seq FROM sqlite_sequence WHERE name='records'"
            ).fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO sqlite_sequence(name, seq) VALUES('records', ?)", (seq,)
                )
            elif int(row[0]) < seq:
                self._db.execute("UPDATE sqlite_sequence SET seq=? WHERE name='records'", (seq,))

    # -- batches ----------------------------------------------------------------
    def pending(self, limit: int, after_seq: int = 0, through_seq: int = 2**62) -> list[Row]:
        """Rows not in a batch, with after_seq < seq <= through_seq, in seq order."""
        return self._rows(
            f"SELECT {_RECORD_COLS} FROM records WHERE batch_id IS NULL AND seq>? AND seq<=? "
            "ORDER BY seq LIMIT ?",
            (after_seq, through_seq, limit),
        )

    def pending_count_and_oldest(self, after_seq: int = 0) -> tuple[int, datetime | None]:
        with self._lock:
            n, oldest = self._db.execute(
                "SELECT COUNT(*), MIN(created_at) FROM records WHERE batch_id IS NULL AND seq>?",
                (after_seq,),
            ).fetchone()
        try:
            return int(n), (_aware(oldest, "time") if oldest else None)
        except (ValueError, TypeError):
            return int(n), None  # a malformed time: the pass will meet the bad row itself

    def close_batch(
        self, batch_id: str, records: list[IndexedRecord], root: bytes, closed_at: datetime
    ) -> None:
        """Atomically assign a contiguous run of leaves to a batch before it goes to the
        ledger, so a crash in between re-anchors the very same batch on restart."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO batches(batch_id, merkle_root, tree_size, closed_at, "
                "first_seq, last_seq) VALUES(?,?,?,?,?,?)",
                _batch_row(batch_id, root, records, closed_at),
            )
            self._db.executemany(
                "UPDATE records SET batch_id=?, leaf_index=? WHERE seq=? AND batch_id IS NULL",
                _placements(batch_id, records),
            )

    def adopt_anchor(
        self,
        batch_id: str,
        records: list[IndexedRecord],
        root: bytes,
        tx_id: str,
        at: datetime,
    ) -> None:
        """Record a batch the ledger anchored (checked by the caller) as the placement
        of `records` (its whole range, in seq order)."""
        with self._transaction():
            batch_id_, root_, size, closed, first, last = _batch_row(batch_id, root, records, at)
            self._db.execute(
                "INSERT OR REPLACE INTO batches(batch_id, merkle_root, tree_size, closed_at, "
                "tx_id, anchored_at, first_seq, last_seq) VALUES(?,?,?,?,?,?,?,?)",
                (batch_id_, root_, size, closed, tx_id, closed, first, last),
            )
            self._db.executemany(
                "UPDATE records SET batch_id=?, leaf_index=? WHERE seq=?",
                _placements(batch_id, records),
            )

    def set_aside_row(self, seq: int) -> None:
        """Take a bad pending row out of the anchoring queue (it stays for reports)."""
        with self._lock:
            self._db.execute(
                "UPDATE records SET batch_id='!rejected' WHERE seq=? AND batch_id IS NULL", (seq,)
            )

    def mark_anchored(self, batch_id: str, tx_id: str, block: int, at: datetime) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE batches SET tx_id=?, block=?, anchored_at=? WHERE batch_id=?",
                (tx_id, block, at.isoformat(), batch_id),
            )

    def mark_set_aside(self, batch_id: str, reason: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE batches SET set_aside=? WHERE batch_id=?", (reason[:500], batch_id)
            )

    def _batch_rows(self, where: str, args: tuple[object, ...]) -> list[BatchRow | str]:
        """Batch rows; the id (a str) for a row too malformed to read."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_BATCH_COLS} FROM batches {where} ORDER BY first_seq, batch_id", args
            ).fetchall()
        out: list[BatchRow | str] = []
        for r in rows:
            try:
                out.append(_batch(r))
            except (ValueError, TypeError, OverflowError):
                out.append(str(r[0]))
        return out

    def unanchored_batches(self) -> list[BatchRow | str]:
        return self._batch_rows(f"WHERE {_UNANCHORED}", ())

    def has_unanchored_batches(self) -> bool:
        with self._lock:
            return (
                self._db.execute(f"SELECT 1 FROM batches WHERE {_UNANCHORED} LIMIT 1").fetchone()
                is not None
            )

    def batches(self) -> list[BatchRow | str]:
        return self._batch_rows("", ())

    def set_aside_batches(self) -> list[BatchRow | str]:
        return self._batch_rows("WHERE set_aside IS NOT NULL", ())

    def batch(self, batch_id: str) -> BatchRow | None:
        rows = self._batch_rows("WHERE batch_id=?", (batch_id,))
        return rows[0] if rows and isinstance(rows[0], BatchRow) else None

    # -- access audit queue ---------------------------------------------------
    def queue_access(self, record_id: str, patient_id: str, subject: str, at: datetime) -> None:
        """Queue an access event under an id derived from the event itself (instance,
        record, patient, subject, time to the microsecond), so that every resend of it
        (after a crash between the ledger write and the dequeue) is the same event."""
        event_id = access_event_id(self.instance_id, record_id, patient_id, subject, at)
        with self._lock:
            self._db.execute(
                "INSERT INTO access_queue(record_id, patient_id, subject, at, event_id) "
                "VALUES(?,?,?,?,?)",
                (record_id, patient_id, subject, at.isoformat(), event_id),
            )

    def queued_accesses(self, limit: int) -> list[AccessEvent | int]:
        """Queued events in order; the seq (an int) of a row too malformed to send."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, record_id, patient_id, subject, at, event_id FROM access_queue "
                "ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        out: list[AccessEvent | int] = []
        for s, r, p, u, a, e in rows:
            try:
                out.append(
                    AccessEvent(int(s), str(r), str(p), str(u), _aware(a, "time"), str(e or ""))
                )
            except (ValueError, TypeError, OverflowError):
                out.append(int(s))
        return out

    def drop_accesses(self, up_to_seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM access_queue WHERE seq<=?", (up_to_seq,))

    def drop_access(self, seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM access_queue WHERE seq=?", (seq,))
