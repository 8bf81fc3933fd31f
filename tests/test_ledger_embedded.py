"""The embedded ledger: hash chain, append-only, durability across reopen, threads."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from ehr_abe.errors import AlreadyExists, IntegrityError, InvalidArgument
from storage_service.ledger.base import Caller, Ledger
from storage_service.ledger.client import LedgerClient
from storage_service.ledger.embedded import EmbeddedLedger

SERVICE = Caller("storage-service", "Hosp1MSP", frozenset({"anchorer", "auditor"}))


def anchor(ledger: EmbeddedLedger, batch: str, root: bytes = b"\x11" * 32) -> None:
    LedgerClient(ledger, SERVICE).anchor_batch(batch, root, 1)


def test_is_a_ledger(tmp_path: Path) -> None:
    assert isinstance(EmbeddedLedger(tmp_path / "l.sqlite"), Ledger)


def test_chain_verifies_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    led = EmbeddedLedger(path)
    for i in range(5):
        anchor(led, f"b-{i}")
    assert led.verify_chain() == 5
    led.close()
    again = EmbeddedLedger(path)
    assert again.verify_chain() == 5
    with pytest.raises(AlreadyExists):
        anchor(again, "b-3")
    assert again.height() == 5  # a refused call appends nothing
    assert LedgerClient(again, SERVICE).get_anchor("b-3").block == 4


def test_log_is_append_only(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    led = EmbeddedLedger(path)
    anchor(led, "b-1")
    db = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE txlog SET function='x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM txlog")
    db.close()


def test_tampering_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    led = EmbeddedLedger(path)
    anchor(led, "b-1")
    anchor(led, "b-2")
    assert led.verify_chain() == 2
    db = sqlite3.connect(path, isolation_level=None)
    # Editing the state behind the log's back (e.g. swapping a Merkle root)
    db.execute("UPDATE state SET value=replace(value, '1111', '2222') WHERE key='anchor/b-1'")
    with pytest.raises(IntegrityError, match="world state"):
        led.verify_chain()
    # Rewriting history past the triggers
    db.execute("UPDATE state SET value=replace(value, '2222', '1111') WHERE key='anchor/b-1'")
    assert led.verify_chain() == 2
    db.execute("DROP TRIGGER txlog_no_update")
    db.execute("UPDATE txlog SET subject='mallory' WHERE seq=1")
    with pytest.raises(IntegrityError, match="entry 1 was altered"):
        led.verify_chain()
    db.close()


def test_unknown_function_is_refused_without_writing(tmp_path: Path) -> None:
    led = EmbeddedLedger(tmp_path / "l.sqlite")
    with pytest.raises(InvalidArgument):
        led.submit(SERVICE, "Nope", [])
    assert led.height() == 0


def test_threads_anchor_distinct_batches_once(tmp_path: Path) -> None:
    led = EmbeddedLedger(tmp_path / "l.sqlite")
    client = LedgerClient(led, SERVICE)
    wins: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(20):
            batch = f"b-{i % 10}"  # every batch raced by several threads
            try:
                client.anchor_batch(batch, bytes([n]) * 32, 1)
                with lock:
                    wins.append(batch)
            except AlreadyExists:
                with lock:
                    refused.append(batch)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [f"b-{i}" for i in range(10)]
    assert len(refused) == 6 * 20 - 10
    assert led.verify_chain() == 10
