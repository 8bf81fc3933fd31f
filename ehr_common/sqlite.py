"""One SQLite write transaction, for every store that keeps state in SQLite (the
edge's spool, the record index, the embedded ledger)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def write_transaction(
    db: sqlite3.Connection, lock: threading.Lock | threading.RLock | None
) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT under `lock` (None: the caller holds the connection's
    lock already), rolled back on any error (the connection is in autocommit mode,
    isolation_level=None). Durable on return when the database runs synchronous=FULL."""
    with lock if lock is not None else contextlib.nullcontext():
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
