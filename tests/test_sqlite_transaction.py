"""ehr_common.sqlite.write_transaction: the one write transaction of the spool, the
record index and the embedded ledger."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from ehr_common.sqlite import write_transaction


def _db(tmp_path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(tmp_path / "t.sqlite"), isolation_level=None)
    db.execute("CREATE TABLE t(x INTEGER PRIMARY KEY)")
    return db


def test_commits_on_success_and_rolls_back_everything_on_any_error(tmp_path: Path) -> None:
    db, lock = _db(tmp_path), threading.Lock()
    with write_transaction(db, lock) as tx:
        tx.execute("INSERT INTO t VALUES(1)")
    with pytest.raises(sqlite3.IntegrityError), write_transaction(db, lock) as tx:
        tx.execute("INSERT INTO t VALUES(2)")
        tx.execute("INSERT INTO t VALUES(1)")  # the second statement fails...
    with pytest.raises(KeyboardInterrupt), write_transaction(db, lock) as tx:
        tx.execute("INSERT INTO t VALUES(3)")
        raise KeyboardInterrupt  # ...or something that is not an Exception at all
    assert db.execute("SELECT x FROM t").fetchall() == [(1,)]  # neither left a row
    assert not db.in_transaction and not lock.locked()


def test_holds_the_lock_unless_the_caller_does(tmp_path: Path) -> None:
    db, lock = _db(tmp_path), threading.Lock()
    with write_transaction(db, lock):
        assert lock.locked()
    with lock, write_transaction(db, None) as tx:  # the caller's lock: not taken twice
        tx.execute("INSERT INTO t VALUES(5)")
    assert db.execute("SELECT x FROM t").fetchall() == [(5,)]
