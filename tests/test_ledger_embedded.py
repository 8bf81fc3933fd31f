"""The embedded ledger: hash chain, append-only, durability across reopen, threads."""

from __future__ import annotations

import json
import sqlite3
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaincode import core
from ehr_common.errors import AlreadyExists, EhrAbeError, IntegrityError, InvalidArgument
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


CALLERS = [
    SERVICE,
    Caller("p-1", "Hosp1MSP"),
    Caller("dr-1", "Hosp2MSP", frozenset({"doctor"})),
    Caller("adm", "Hosp2MSP", frozenset({"consent-admin"})),
]
OPS = st.lists(
    st.tuples(
        st.sampled_from(["AnchorBatch", "GrantConsent", "RevokeConsent", "GetAnchor"]),
        st.integers(0, len(CALLERS) - 1),
        st.sampled_from(["b-1", "b-2", "Hosp1MSP/p-1", "Hosp1MSP/p-2", "bad/id/x"]),
    ),
    max_size=15,
)


def _args(function: str, target: str) -> list[str]:
    if function == "AnchorBatch":
        return [target, "ab" * 32, "1", "1", "{}"]
    if function == "GetAnchor":
        return [target]
    if function == "GrantConsent":
        return [target, "Hosp2MSP/dr-1", ""]
    return [target, "Hosp2MSP/dr-1"]


@settings(max_examples=40, deadline=None)
@given(ops=OPS)
def test_embedded_ledger_decides_like_the_contract_core(ops: list[tuple[str, int, str]]) -> None:
    """Same operations, same callers: the embedded ledger and the bare contract over a
    dict agree on every outcome and on the consent that results."""
    with tempfile.TemporaryDirectory() as d:
        led = EmbeddedLedger(Path(d) / "l.sqlite")
        state = core.DictState()
        for n, (function, who, target) in enumerate(ops):
            caller = CALLERS[who]
            args = _args(function, target)
            ident = core.Identity(caller.subject, caller.msp_id, caller.roles)
            ctx = core.TxContext(f"tx{n}", datetime.now(UTC))
            try:
                core.run_sync(core.invoke(state, ident, ctx, function, args))
                expected = "ok"
            except EhrAbeError as exc:
                expected = type(exc).__name__
            try:
                if function == "GetAnchor":
                    led.evaluate(caller, function, args)
                else:
                    led.submit(caller, function, args)
                got = "ok"
            except EhrAbeError as exc:
                got = type(exc).__name__
            assert got == expected, (function, caller.subject, target)
        client = LedgerClient(led, SERVICE)
        for patient in ("Hosp1MSP/p-1", "Hosp1MSP/p-2"):
            raw = core.run_sync(
                core.consent_allows(
                    state, core.Identity("svc", "M", frozenset({"anchorer"})),
                    core.TxContext("q", datetime.now(UTC)), patient, "Hosp2MSP/dr-1", "",
                )
            )  # fmt: skip
            assert (
                client.consent_allows(patient, "Hosp2MSP/dr-1", datetime.now(UTC))
                == json.loads(raw)["allowed"]
            )
        assert led.verify_chain() == led.height()
        led.close()
