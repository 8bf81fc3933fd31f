"""The real two-hospital Fabric network (needs Fabric 3.1.5 binaries: see DEVELOPERS.md).

Without Fabric these tests skip with the reason, or fail under EHR_ABE_REQUIRE_FABRIC=1.
`test_status_*` looks at the network `ehr-abe infra up` started when it runs; the
tests that stop and restart things use a private network of their own (state in a
temporary directory, every port of the shared network's settings +
EHR_ABE_TEST_FABRIC_PORT_OFFSET, default 300), so
they never disturb a network other tests or developers are using.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REQUIRE_FABRIC, infra_dir, unavailable

from ehr_abe.infra import process
from ehr_abe.infra.fabric import FabricNetwork, FabricSettings, fabric_installed

pytestmark = pytest.mark.fabric


def _require_fabric(settings: FabricSettings) -> None:
    ok, why = fabric_installed(settings)
    if not ok:
        unavailable("Fabric", REQUIRE_FABRIC, why)


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


@pytest.fixture(scope="module")
def private_net(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[FabricNetwork, Recorder]]:
    # above whatever ports the shared network uses (EHR_ABE_FABRIC_* may move those)
    offset = int(os.environ.get("EHR_ABE_TEST_FABRIC_PORT_OFFSET", "300"))
    settings = FabricSettings.from_env().shifted(offset)
    _require_fabric(settings)
    progress = Recorder()
    net = FabricNetwork(settings, tmp_path_factory.mktemp("fabric-state"), progress)
    try:
        net.up()
        yield net, progress
    finally:
        net.down()  # stop what we started


@pytest.fixture(scope="module")
def shared_or_private_net(private_net: tuple[FabricNetwork, Recorder]) -> FabricNetwork:
    """The network `ehr-abe infra up` runs, if it runs; else the private one."""
    shared = FabricNetwork(FabricSettings.from_env(), infra_dir())
    if all(s.state == "running" for s in shared.status()):
        return shared
    return private_net[0]


def test_status_reports_every_component_running(shared_or_private_net: FabricNetwork) -> None:
    statuses = {s.name: s for s in shared_or_private_net.status()}
    assert set(statuses) == {
        "fabric-orderer",
        "fabric-peer-hosp1",
        "fabric-peer-hosp2",
        "fabric-chaincode-hosp1",
        "fabric-chaincode-hosp2",
    }
    for s in statuses.values():
        assert s.state == "running", f"{s.name}: {s.state} {s.detail} (log: {s.log})"
        assert s.pid is not None and s.log is not None and s.log.is_file()


def test_connection_file_names_what_clients_need(
    private_net: tuple[FabricNetwork, Recorder],
) -> None:
    import json

    net, _ = private_net
    doc = json.loads(net.layout.connection_file.read_text())
    assert (doc["channel"], doc["chaincode"]) == ("ehr", "ehr")
    assert {o["msp_id"] for o in doc["organizations"].values()} == {"Hosp1MSP", "Hosp2MSP"}
    for org in doc["organizations"].values():
        for path in (
            org["gateway"]["tls_ca"],
            *org["admin"].values(),
            *org["client"].values(),
            *org["ca"].values(),
        ):
            assert Path(path).is_file(), path
        host, port = org["gateway"]["endpoint"].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5):
            pass


def test_second_up_starts_nothing_and_changes_no_definition(
    private_net: tuple[FabricNetwork, Recorder],
) -> None:
    net, progress = private_net
    progress.lines.clear()
    net.up()
    assert progress.lines == [], progress.lines


def _tls_hello(net: FabricNetwork, server_org: str, client_org: str) -> bytes:
    """Connect to server_org's chaincode server presenting client_org's peer TLS cert;
    the bytes the server sends first (HTTP/2 settings if accepted)."""
    s = net.settings.org(server_org)
    client_tls = net.layout.peer_node(net.settings.org(client_org)) / "tls"
    ctx = ssl.create_default_context(cafile=str(net.layout.org_tls_ca(s)))
    ctx.load_cert_chain(str(client_tls / "server.crt"), str(client_tls / "server.key"))
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((net.settings.host, s.cc_server_port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=net.settings.host) as tls,
    ):
        tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        return tls.recv(64)


def test_chaincode_server_accepts_only_its_own_orgs_peer(
    private_net: tuple[FabricNetwork, Recorder],
) -> None:
    net, _ = private_net
    assert _tls_hello(net, "hosp1", "hosp1")  # an HTTP/2 frame: accepted
    with pytest.raises((ssl.SSLError, ConnectionError)):
        if not _tls_hello(net, "hosp1", "hosp2"):
            raise ConnectionError("closed without a byte")


def test_one_hospital_down_still_commits_and_up_restarts_only_it(
    private_net: tuple[FabricNetwork, Recorder],
) -> None:
    net, progress = private_net
    before = net.ledger_height("hosp1")
    peer2 = net.layout.run / "peer-hosp2.pid"
    assert process.stop(peer2, str(net.settings.bin / "peer"))
    assert {s.name: s.state for s in net.status()}["fabric-peer-hosp2"] == "stopped"
    net.probe_write(["hosp1"])  # endorsed by Hosp1MSP alone
    assert net.ledger_height("hosp1") == before + 1
    progress.lines.clear()
    net.up()
    assert progress.lines == ["starting peer-hosp2"]
    assert all(s.state == "running" for s in net.status())


def test_restart_keeps_channel_chaincode_and_ledger(
    private_net: tuple[FabricNetwork, Recorder],
) -> None:
    net, progress = private_net
    height = net.ledger_height("hosp1")
    net.down()
    assert all(s.state == "stopped" for s in net.status())
    progress.lines.clear()
    net.up()  # returns only after a committed transaction on each org
    # nothing recreated: only processes started
    started = [line for line in progress.lines if not line.startswith("waiting for")]
    assert all(line.startswith("starting ") for line in started), progress.lines
    assert len(started) == 5
    after = net.ledger_height("hosp1")
    assert after == height + len(net.settings.orgs)  # the old blocks plus one probe per org
    assert net.ledger_height("hosp2") == after


def test_up_refuses_settings_the_channel_cannot_follow(
    private_net: tuple[FabricNetwork, Recorder],
) -> None:
    from dataclasses import replace

    from ehr_abe.infra.component import InfraError

    net, _ = private_net
    for changed, name in (
        (net.settings.shifted(1), "orderer_port"),
        (replace(net.settings, raft_tick="500ms"), "raft_tick"),
    ):
        other = FabricNetwork(changed, net.layout.root.parent)
        with pytest.raises(InfraError, match=name):
            other.up()
    assert all(s.state == "running" for s in net.status())
