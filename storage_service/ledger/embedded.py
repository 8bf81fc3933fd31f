"""The embedded ledger: `chaincode.core` run in-process over SQLite.

An append-only transaction log where every entry carries the hash of the one
before it (a hash chain, checked by `verify_chain`), and a world state derived
from it. Same semantics as the Fabric ledger: the same contract code decides,
a failed call writes nothing, a contract function does not see its own writes
(as in Fabric, reads come from the committed state), and the transaction
timestamp is fixed before the contract runs.

Durability: WAL journal, synchronous=FULL, one SQLite transaction per ledger
transaction. Thread-safe: one connection behind a lock (SQLite serialises
writers anyway; a ledger transaction takes well under a millisecond).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from chaincode import core
from ehr_common.errors import IntegrityError, NotFound, Unavailable
from ehr_common.sqlite import write_transaction
from storage_service.ledger.base import Caller, TxResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS txlog (
  seq INTEGER PRIMARY KEY,
  tx_id TEXT NOT NULL UNIQUE,
  at TEXT NOT NULL,
  msp_id TEXT NOT NULL,
  subject TEXT NOT NULL,
  function TEXT NOT NULL,
  args TEXT NOT NULL,
  writes TEXT NOT NULL,
  prev_hash BLOB NOT NULL,
  hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS state (
  key TEXT PRIMARY KEY,
  value BLOB NOT NULL,
  seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS txlog_no_update BEFORE UPDATE ON txlog
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS txlog_no_delete BEFORE DELETE ON txlog
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
"""

GENESIS = b"\x00" * 32


def entry_hash(
    prev_hash: bytes,
    seq: int,
    tx_id: str,
    at: str,
    msp_id: str,
    subject: str,
    function: str,
    args: str,
    writes: str,
) -> bytes:
    """SHA-256 over the previous hash and a canonical encoding of the entry."""
    body = json.dumps(
        [seq, tx_id, at, msp_id, subject, function, args, writes],
        separators=(",", ":"),
        ensure_ascii=True,
    ).encode()
    return hashlib.sha256(prev_hash + body).digest()


def _blob(value: object) -> bytes:
    # a value edited by hand may have become TEXT; compare it as its bytes
    return value if isinstance(value, bytes) else str(value).encode()


class _SqliteView:
    """The committed state for reads; writes are buffered until commit."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.writes: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
        return _blob(row[0]) if row else None

    async def put(self, key: str, value: bytes) -> None:
        self.writes[key] = bytes(value)

    async def scan(self, start: str, end: str, limit: int) -> list[tuple[str, bytes]]:
        rows = self._db.execute(
            "SELECT key, value FROM state WHERE key>=? AND key<? ORDER BY key LIMIT ?",
            (start, end, limit),
        ).fetchall()
        return [(str(k), _blob(v)) for k, v in rows]


def _identity(caller: Caller) -> core.Identity:
    return core.Identity(caller.subject, caller.msp_id, frozenset(caller.roles))


def new_tx_id(caller: Caller) -> str:
    """Like Fabric: SHA-256(nonce || creator), hex."""
    creator = f"{caller.msp_id}\x00{caller.subject}".encode()
    return hashlib.sha256(os.urandom(24) + creator).hexdigest()


class EmbeddedLedger:
    def __init__(self, path: str | Path, *, verify_chain: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise Unavailable(f"embedded ledger {self.path} cannot be opened: {exc}") from None
        self._lock = threading.Lock()
        self._closed = False
        if verify_chain:
            try:
                self.verify_chain()
            except IntegrityError as exc:
                self.close()
                raise IntegrityError(
                    f"embedded ledger {self.path} fails its hash-chain check, refusing to use "
                    f"it: {exc}"
                ) from None

    # -- the Ledger protocol ---------------------------------------------------------------
    def submit(self, caller: Caller, function: str, args: list[str]) -> TxResult:
        core.lookup(function, args)  # unknown function / arity: InvalidArgument before any I/O
        tx_id = new_tx_id(caller)
        with self._lock:
            self._check_open()
            now = datetime.now(UTC)
            view = _SqliteView(self._db)
            with write_transaction(self._db, None):  # under self._lock already
                payload = core.run_sync(
                    core.invoke(view, _identity(caller), core.TxContext(tx_id, now), function, args)
                )
                seq = self._append(caller, tx_id, now, function, args, view.writes)
        return TxResult(tx_id=tx_id, block=seq, payload=payload)

    def evaluate(self, caller: Caller, function: str, args: list[str]) -> bytes:
        core.lookup(function, args)
        with self._lock:
            self._check_open()
            view = _SqliteView(self._db)
            ctx = core.TxContext(new_tx_id(caller), datetime.now(UTC))
            return core.run_sync(core.invoke(view, _identity(caller), ctx, function, args))

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    # -- extras ----------------------------------------------------------------------------
    def block_of(self, tx_id: str) -> int:
        """The block (here: log sequence number) that holds a transaction."""
        with self._lock:
            self._check_open()
            row = self._db.execute("SELECT seq FROM txlog WHERE tx_id=?", (tx_id,)).fetchone()
        if row is None:
            raise NotFound(f"no transaction {tx_id}")
        return int(row[0])

    def height(self) -> int:
        with self._lock:
            self._check_open()
            row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM txlog").fetchone()
        return int(row[0])

    def verify_chain(self) -> int:
        """Recompute the hash chain and replay every write; the state must be exactly the
        replay. Returns the number of entries; raises IntegrityError on the first break
        (also for a log too malformed to read)."""
        try:
            return self._verify_chain()
        except (ValueError, TypeError, KeyError, sqlite3.Error) as exc:
            raise IntegrityError(f"the ledger's transaction log is malformed: {exc}") from None

    def _verify_chain(self) -> int:
        with self._lock:
            self._check_open()
            replay: dict[str, tuple[bytes, int]] = {}
            prev = GENESIS
            count = 0
            rows = self._db.execute(
                "SELECT seq, tx_id, at, msp_id, subject, function, args, writes, prev_hash, hash "
                "FROM txlog ORDER BY seq"
            )
            for seq, tx_id, at, msp, subject, function, args, writes, prev_hash, h in rows:
                count += 1
                if seq != count:
                    raise IntegrityError(f"ledger entry {count} is missing (found {seq})")
                if bytes(prev_hash) != prev:
                    raise IntegrityError(f"ledger entry {seq} does not link to entry {seq - 1}")
                expect = entry_hash(prev, seq, tx_id, at, msp, subject, function, args, writes)
                if bytes(h) != expect:
                    raise IntegrityError(f"ledger entry {seq} was altered")
                for key, value_hex in json.loads(writes):
                    replay[key] = (bytes.fromhex(value_hex), seq)
                prev = expect
            state = {
                str(k): (_blob(v), int(s))
                for k, v, s in self._db.execute("SELECT key, value, seq FROM state")
            }
        if state != replay:
            differing = sorted(set(state.items()) ^ set(replay.items()))[:1]
            where = differing[0][0] if differing else "?"
            raise IntegrityError(f"the world state differs from the transaction log at {where!r}")
        return count

    # -- internals -----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the embedded ledger is closed")

    def _append(
        self,
        caller: Caller,
        tx_id: str,
        now: datetime,
        function: str,
        args: list[str],
        writes: dict[str, bytes],
    ) -> int:
        row = self._db.execute("SELECT seq, hash FROM txlog ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (int(row[0]) + 1, bytes(row[1])) if row else (1, GENESIS)
        at = core.format_time(now)
        args_json = json.dumps(args, separators=(",", ":"))
        writes_json = json.dumps(
            [[k, v.hex()] for k, v in sorted(writes.items())], separators=(",", ":")
        )
        h = entry_hash(
            prev, seq, tx_id, at, caller.msp_id, caller.subject, function, args_json, writes_json
        )
        self._db.execute(
            "INSERT INTO txlog(seq, tx_id, at, msp_id, subject, function, args, writes, "
            "prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                seq,
                tx_id,
                at,
                caller.msp_id,
                caller.subject,
                function,
                args_json,
                writes_json,
                prev,
                h,
            ),
        )
        self._db.executemany(
            "INSERT INTO state(key, value, seq) VALUES (?,?,?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value, seq=excluded.seq",
            [(k, v, seq) for k, v in writes.items()],
        )
        return seq
