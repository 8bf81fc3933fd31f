"""The Fabric ledger on the real network (`ehr-abe infra up fabric`).

The behavioural suite (test_ledger_behaviour.py) runs over Fabric too; these are
the network-only properties: every organisation's peers agree, data survives a
full restart, and one organisation's peer being down does not stop anchoring.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import REQUIRE_FABRIC, unavailable

from chaincode.core import format_time as core_time
from ehr_common.errors import AccessDenied, AlreadyExists, EhrAbeError
from storage_service.ledger.base import Caller
from storage_service.ledger.client import LedgerClient

pytestmark = pytest.mark.fabric

SERVICE = Caller("storage-service", "Hosp1MSP", frozenset({"anchorer", "auditor"}))


@pytest.fixture
def ledger(fabric_connection: Path) -> Iterator[Any]:
    from storage_service.ledger.fabric import FabricLedger

    led = FabricLedger.from_connection_file(fabric_connection)
    yield led
    led.close()


def network(connection: Path) -> Any:
    """The running network that wrote `connection`, through the infra manager
    (`ehr_abe.infra.fabric.FabricNetwork`); skip unless it is that network and it runs,
    so that a test never starts a second network elsewhere."""
    from ehr_abe.infra.config import InfraConfig
    from ehr_abe.infra.manager import fabric_component

    cfg = InfraConfig()
    net, why = fabric_component(cfg)
    if net is None:
        unavailable("Fabric", REQUIRE_FABRIC, f"cannot control the Fabric network: {why}")
    managed = cfg.state_dir / "fabric" / "connection.json"
    if managed.resolve() != connection.resolve():
        unavailable(
            "Fabric",
            REQUIRE_FABRIC,
            f"{connection} was not written by the managed network ({managed})",
        )
    if not any(s.state == "running" for s in net.status()):
        unavailable("Fabric", REQUIRE_FABRIC, "the managed Fabric network is not running")
    return net


def retry(fn: Any, seconds: float = 60.0) -> Any:
    """After a restart Raft needs a moment to elect a leader."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return fn()
        except EhrAbeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def test_anchor_is_read_back_from_each_organisation(ledger: Any) -> None:
    batch = f"net-{uuid.uuid4().hex[:10]}"
    client = LedgerClient(ledger, SERVICE)
    receipt = client.anchor_batch(batch, b"\x42" * 32, 3)
    for org in ledger.connection.orgs:
        # the commit event comes from one peer; the other may lag by a block
        raw = retry(lambda o=org: ledger.evaluate_at(o.org, SERVICE, "GetAnchor", [batch]), 10)
        anchor = json.loads(raw)
        assert anchor["merkle_root"] == "42" * 32 and anchor["tx_id"] == receipt.tx_id
    assert client.get_anchor(batch).block == receipt.block
    with pytest.raises(AlreadyExists):
        client.anchor_batch(batch, b"\x43" * 32, 3)


def test_a_committed_revocation_is_read_at_once_on_every_organisation(ledger: Any) -> None:
    """Read your writes across organisations: consent revoked through Hosp2's gateway
    must not still be granted by Hosp1's peer a moment later (submit waits until
    every reachable peer holds the block). No retry here, on purpose."""
    client = LedgerClient(ledger, SERVICE)
    admin = Caller("consent-admin-sync", "Hosp2MSP", frozenset({"consent-admin"}))
    patient = f"p-{uuid.uuid4().hex[:8]}"
    for i in range(8):
        grantee = f"dr-sync-{i}"
        client.grant_consent(admin, patient, grantee, None)
        client.revoke_consent(admin, patient, grantee)
        at = core_time(datetime.now(UTC))
        for org in ledger.connection.orgs:
            raw = ledger.evaluate_at(org.org, SERVICE, "ConsentAllows", [patient, grantee, at])
            assert json.loads(raw)["allowed"] is False, f"{org.org} still grants after revoke"


def test_consent_change_by_another_subject_is_refused_by_the_chaincode(ledger: Any) -> None:
    client = LedgerClient(ledger, SERVICE)
    patient = f"p-{uuid.uuid4().hex[:8]}"
    with pytest.raises(AccessDenied, match="only the patient"):
        client.grant_consent(
            Caller("dr-mallory", "Hosp2MSP", frozenset({"doctor"})), patient, "dr-mallory", None
        )
    client.grant_consent(Caller(patient, "Hosp1MSP"), patient, "dr-who", None)
    assert client.consent_allows(patient, "dr-who", datetime.now(UTC))


@pytest.mark.slow
def test_data_survives_a_full_restart(fabric_connection: Path) -> None:
    from storage_service.ledger.fabric import FabricLedger

    net = network(fabric_connection)
    batch, patient = f"rs-{uuid.uuid4().hex[:10]}", f"p-{uuid.uuid4().hex[:8]}"
    led = FabricLedger.from_connection_file(fabric_connection)
    client = LedgerClient(led, SERVICE)
    client.anchor_batch(batch, b"\x07" * 32, 1)
    client.grant_consent(Caller(patient, "Hosp1MSP"), patient, "dr-who", None)
    led.close()
    net.down()
    net.up()
    led = FabricLedger.from_connection_file(fabric_connection)
    client = LedgerClient(led, SERVICE)
    try:
        assert retry(lambda: client.get_anchor(batch)).merkle_root == b"\x07" * 32
        assert retry(lambda: client.consent_allows(patient, "dr-who", datetime.now(UTC)))
        retry(lambda: client.anchor_batch(f"{batch}-after", b"\x08" * 32, 1))
    finally:
        led.close()


@pytest.mark.slow
def test_anchoring_continues_with_one_organisations_peer_down(
    ledger: Any, fabric_connection: Path
) -> None:
    net = network(fabric_connection)
    statuses = [s for s in net.status() if s.pid and "peer" in s.name]
    org2 = ledger.connection.orgs[1]
    victims = [s for s in statuses if org2.org.lower() in s.name.lower()]
    if not victims:
        unavailable(
            "Fabric",
            REQUIRE_FABRIC,
            f"no running peer of {org2.org} in {[s.name for s in statuses]}",
        )
    os.kill(victims[0].pid, signal.SIGTERM)  # the peer process the network started
    try:
        time.sleep(2)
        client = LedgerClient(ledger, SERVICE)
        receipt = retry(
            lambda: client.anchor_batch(f"one-{uuid.uuid4().hex[:10]}", b"\x09" * 32, 1), 30
        )
        assert receipt.block > 0
    finally:
        net.up()  # idempotent: restarts what is down
