"""The edge's durable spool (SQLite, WAL, synchronous=FULL): nothing is acknowledged
to the broker before it is here, and nothing leaves here before the StorageService
said it is durable.

Tables: `readings` (accepted, not yet in a segment), `devices` (last accepted
sequence number per device: duplicates and replays survive a restart),
`outbox` (window keys and sealed segments waiting for the StorageService, in
the order they were made) and `dead` (items the StorageService refused for
good, kept for an operator). Sealing a segment moves its readings from
`readings` to `outbox` in one transaction, so a reading is in exactly one place.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from ehr_common.sqlite import write_transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings(
  device_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  t_ms INTEGER NOT NULL,
  body BLOB NOT NULL,
  PRIMARY KEY(device_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices(device_id TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL,
  key TEXT NOT NULL UNIQUE,
  record_type TEXT NOT NULL,
  patient_id TEXT NOT NULL,
  device_id TEXT NOT NULL,
  payload BLOB NOT NULL,
  readings INTEGER NOT NULL,
  made_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead(
  key TEXT PRIMARY KEY, kind TEXT NOT NULL, payload BLOB NOT NULL, error TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class SpooledReading:
    device_id: str
    seq: int
    t_ms: int
    body: bytes


@dataclass(frozen=True)
class OutboxItem:
    id: int
    kind: str  # "window" or "segment"
    key: str  # window id or segment idempotency key
    record_type: str
    patient_id: str
    device_id: str
    payload: bytes
    readings: int
    made_ms: int


class Spool:
    def __init__(self, path: Path, max_bytes: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._bytes = self._count_bytes()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _count_bytes(self) -> int:
        a = self._db.execute("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM readings").fetchone()[0]
        b = self._db.execute("SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM outbox").fetchone()[0]
        return int(a) + int(b)

    @property
    def used_bytes(self) -> int:
        return self._bytes

    def has_room(self, more: int) -> bool:
        return self._bytes + more <= self.max_bytes

    # -- accepting -------------------------------------------------------------
    def last_seqs(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT device_id, last_seq FROM devices").fetchall()
        return {str(d): int(s) for d, s in rows}

    def accept(self, readings: list[SpooledReading]) -> None:
        """Store accepted readings durably (one transaction, one fsync)."""
        if not readings:
            return
        last: dict[str, int] = {}
        for r in readings:
            last[r.device_id] = max(last.get(r.device_id, -1), r.seq)
        with write_transaction(self._db, self._lock) as db:
            db.executemany(
                "INSERT OR IGNORE INTO readings(device_id, seq, t_ms, body) VALUES(?,?,?,?)",
                [(r.device_id, r.seq, r.t_ms, r.body) for r in readings],
            )
            db.executemany(
                "INSERT INTO devices(device_id, last_seq) VALUES(?, ?) ON CONFLICT(device_id) "
                "DO UPDATE SET last_seq=MAX(last_seq, excluded.last_seq)",
                list(last.items()),
            )
        self._bytes += sum(len(r.body) for r in readings)

    def pending_readings(self) -> list[SpooledReading]:
        """Readings not yet in a segment (after a restart), in device and sequence order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT device_id, seq, t_ms, body FROM readings ORDER BY device_id, seq"
            ).fetchall()
        return [SpooledReading(str(d), int(s), int(t), bytes(b)) for d, s, t, b in rows]

    # -- sealing ----------------------------------------------------------------
    def add_outbox(self, items: list[OutboxItem], consumed: list[tuple[str, int, int]]) -> None:
        """Queue windows/segments and drop the readings they consumed, atomically.
        `consumed`: (device, first seq, last seq) ranges now inside a segment."""
        freed = 0
        with write_transaction(self._db, self._lock) as db:
            db.executemany(
                "INSERT INTO outbox(kind, key, record_type, patient_id, device_id, payload, "
                "readings, made_ms) VALUES(?,?,?,?,?,?,?,?)",
                [
                    (
                        i.kind,
                        i.key,
                        i.record_type,
                        i.patient_id,
                        i.device_id,
                        i.payload,
                        i.readings,
                        i.made_ms,
                    )
                    for i in items
                ],
            )
            for device, first, last in consumed:
                freed += int(
                    db.execute(
                        "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM readings "
                        "WHERE device_id=? AND seq BETWEEN ? AND ?",
                        (device, first, last),
                    ).fetchone()[0]
                )
                db.execute(
                    "DELETE FROM readings WHERE device_id=? AND seq BETWEEN ? AND ?",
                    (device, first, last),
                )
        self._bytes += sum(len(i.payload) for i in items) - freed

    # -- sending ------------------------------------------------------------------
    def outbox(self, limit: int, max_bytes: int) -> list[OutboxItem]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, key, record_type, patient_id, device_id, payload, readings, "
                "made_ms FROM outbox ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        out: list[OutboxItem] = []
        size = 0
        for r in rows:
            item = OutboxItem(
                int(r[0]),
                str(r[1]),
                str(r[2]),
                str(r[3]),
                str(r[4]),
                str(r[5]),
                bytes(r[6]),
                int(r[7]),
                int(r[8]),
            )
            if out and size + len(item.payload) > max_bytes:
                break
            out.append(item)
            size += len(item.payload)
        return out

    def delivered(self, items: list[OutboxItem]) -> None:
        if not items:
            return
        with write_transaction(self._db, self._lock) as db:  # one commit (one fsync)
            db.executemany("DELETE FROM outbox WHERE id=?", [(i.id,) for i in items])
        self._bytes -= sum(len(i.payload) for i in items)

    def bury(self, item: OutboxItem, error: str) -> None:
        """An item the StorageService refuses for good: kept aside, out of the way."""
        with write_transaction(self._db, self._lock) as db:
            db.execute(
                "INSERT OR REPLACE INTO dead(key, kind, payload, error) VALUES(?,?,?,?)",
                (item.key, item.kind, item.payload, error[:500]),
            )
            db.execute("DELETE FROM outbox WHERE id=?", (item.id,))
        self._bytes -= len(item.payload)

    def counts(self) -> dict[str, int]:
        with self._lock:
            q = self._db.execute
            return {
                "spooled_readings": int(q("SELECT COUNT(*) FROM readings").fetchone()[0]),
                "outbox_items": int(q("SELECT COUNT(*) FROM outbox").fetchone()[0]),
                "outbox_readings": int(
                    q("SELECT COALESCE(SUM(readings), 0) FROM outbox").fetchone()[0]
                ),
                "dead_items": int(q("SELECT COUNT(*) FROM dead").fetchone()[0]),
                "spool_bytes": self._bytes,
            }
