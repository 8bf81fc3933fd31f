"""The Fabric network's pure parts: settings, generated configuration, identities.

No Fabric binaries needed; `test_infra_fabric_network.py` runs the real network."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from certs import certificate, key_pem, new_key, self_signed_ca
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from ehr_abe.infra.fabric import FabricNetwork, FabricSettings, configs, fabric_installed
from ehr_abe.infra.fabric.identities import (
    issue_identity,
    mint_client_identity,
    mint_tls_server_cert,
)
from ehr_abe.infra.fabric.layout import layout_for
from ehr_common.errors import ConfigError, InvalidArgument
from ehr_common.fabric_ca import FABRIC_ATTRS_OID

# -- a stand-in CA (what cryptogen makes: a self-signed P-256 CA with an SKI) -----------------
CA_CERT, CA_KEY = self_signed_ca("ca.hosp1.ehr.local")


def verify_signed_by(cert: x509.Certificate, ca_pem: bytes) -> None:
    ca = x509.load_pem_x509_certificate(ca_pem)
    cert.verify_directly_issued_by(ca)  # raises if not


# -- settings ---------------------------------------------------------------------------------
def test_settings_defaults_name_the_channel_chaincode_and_both_hospitals() -> None:
    s = FabricSettings.from_env(env={})
    assert (s.channel, s.chaincode) == ("ehr", "ehr")
    assert [o.msp_id for o in s.orgs] == ["Hosp1MSP", "Hosp2MSP"]
    assert s.fabric_home.name == "fabric-3.1.5"
    assert s.endorsement_policy == "OR('Hosp1MSP.peer','Hosp2MSP.peer')"


def test_settings_fabric_home_from_env_and_overrides_are_typed(tmp_path: Path) -> None:
    s = FabricSettings.from_env(
        {"orderer_port": "7150", "batch_timeout": "100ms"}, {"FABRIC_HOME": str(tmp_path)}
    )
    assert s.fabric_home == tmp_path
    assert s.orderer_port == 7150
    assert s.batch_timeout == "100ms"


def test_environment_overrides_the_config_file() -> None:
    s = FabricSettings.from_env(
        {"orderer_port": 1, "batch_timeout": "1s"},
        {"EHR_ABE_FABRIC_BATCH_TIMEOUT": "150ms", "EHR_ABE_FABRIC_PORT_OFFSET": "10"},
    )
    assert s.batch_timeout == "150ms"
    assert s.orderer_port == 11
    assert s.orgs[0].peer_port == 7061


def test_settings_reject_unknown_and_mistyped_keys() -> None:
    with pytest.raises(ConfigError, match="unknown Fabric setting"):
        FabricSettings.from_env({"ordrer_port": 1}, {})
    with pytest.raises(ConfigError, match="not of type int"):
        FabricSettings.from_env({"orderer_port": "seven"}, {})


def test_port_offset_moves_every_port_and_nothing_else() -> None:
    base = FabricSettings.from_env(env={})
    moved = FabricSettings.from_env({"port_offset": 100}, {})
    assert moved.orderer_port == base.orderer_port + 100
    assert moved.orderer_admin_port == base.orderer_admin_port + 100
    for a, b in zip(base.orgs, moved.orgs, strict=True):
        assert (b.peer_port, b.chaincode_port, b.operations_port, b.cc_server_port) == (
            a.peer_port + 100,
            a.chaincode_port + 100,
            a.operations_port + 100,
            a.cc_server_port + 100,
        )
        assert b.msp_id == a.msp_id
    ports = [moved.orderer_port, moved.orderer_admin_port, moved.orderer_operations_port]
    ports += [
        p
        for o in moved.orgs
        for p in (o.peer_port, o.chaincode_port, o.operations_port, o.cc_server_port)
    ]
    assert len(set(ports)) == len(ports), "two components would share a port"


# -- installation check -----------------------------------------------------------------------
def fake_install(home: Path, version: str) -> None:
    for d in ("bin", "config", "builders/ccaas/bin"):
        (home / d).mkdir(parents=True, exist_ok=True)
    for b in ("peer", "orderer", "configtxgen", "osnadmin", "cryptogen"):
        f = home / "bin" / b
        f.write_text(f"#!/bin/sh\necho 'peer:'\necho ' Version: {version}'\n")
        f.chmod(0o755)
    for b in ("detect", "build", "release"):
        f = home / "builders/ccaas/bin" / b
        f.write_text("#!/bin/sh\n")
        f.chmod(0o755)
    for c in ("core.yaml", "orderer.yaml"):
        (home / "config" / c).write_text("")


def test_fabric_missing_says_what_to_install_and_where(tmp_path: Path) -> None:
    ok, why = fabric_installed(FabricSettings(fabric_home=tmp_path / "nowhere"))
    assert not ok
    assert "hyperledger-fabric-linux-amd64-3.1.5" in why
    assert str(tmp_path / "nowhere") in why
    assert "nothing of it is there" in why


def test_fabric_partly_installed_names_what_is_missing(tmp_path: Path) -> None:
    fake_install(tmp_path, "3.1.5")
    (tmp_path / "bin" / "osnadmin").unlink()
    ok, why = fabric_installed(FabricSettings(fabric_home=tmp_path))
    assert not ok and "bin/osnadmin missing" in why


def test_fabric_of_another_release_is_refused(tmp_path: Path) -> None:
    fake_install(tmp_path, "2.5.9")
    ok, why = fabric_installed(FabricSettings(fabric_home=tmp_path))
    assert not ok and "2.5.9" in why and "3.1.5" in why
    fake_install(tmp_path, "3.1.5")
    assert fabric_installed(FabricSettings(fabric_home=tmp_path))[0]


def test_up_without_fabric_raises_infra_error_naming_fabric(tmp_path: Path) -> None:
    from ehr_abe.infra.component import InfraError

    net = FabricNetwork(FabricSettings(fabric_home=tmp_path / "none"), tmp_path / "state")
    with pytest.raises(InfraError, match=r"^fabric: .*release archive"):
        net.up()


# -- generated configuration ------------------------------------------------------------------
def test_cryptogen_config_has_node_ous_and_loopback_sans() -> None:
    doc = configs.cryptogen_config(FabricSettings())
    orgs = doc["OrdererOrgs"] + doc["PeerOrgs"]
    assert all(o["EnableNodeOUs"] for o in orgs)
    assert doc["OrdererOrgs"][0]["Specs"][0]["SANS"] == ["localhost", "127.0.0.1"]
    assert [o["Domain"] for o in doc["PeerOrgs"]] == ["hosp1.ehr.local", "hosp2.ehr.local"]
    assert all(o["Template"]["SANS"] == ["localhost", "127.0.0.1"] for o in doc["PeerOrgs"])


def test_configtx_sets_anchor_peers_raft_tick_and_batch_timeout(tmp_path: Path) -> None:
    s = FabricSettings(raft_tick="100ms", batch_timeout="200ms").shifted(10)
    doc = configs.configtx(s, layout_for(s, tmp_path))
    profile = doc["Profiles"][configs.PROFILE]
    orderer, app = profile["Orderer"], profile["Application"]
    assert orderer["OrdererType"] == "etcdraft"
    assert orderer["EtcdRaft"]["Options"]["TickInterval"] == "100ms"
    assert orderer["BatchTimeout"] == "200ms"
    assert orderer["EtcdRaft"]["Consenters"][0]["Port"] == s.orderer_port
    anchors = {o["ID"]: o["AnchorPeers"] for o in app["Organizations"]}
    assert anchors == {o.msp_id: [{"Host": "127.0.0.1", "Port": o.peer_port}] for o in s.orgs}
    assert profile["Capabilities"] == {"V3_0": True}
    # JSON is what we write; configtxgen reads it as YAML
    json.loads(json.dumps(doc))


def test_core_yaml_gets_the_ccaas_builder_and_no_docker(tmp_path: Path) -> None:
    stock = (
        "vm:\n  endpoint: unix:///var/run/docker.sock\nchaincode:\n  externalBuilders:\n"
        "    - name: ccaas_builder\n      path: /opt/hyperledger/ccaas_builder\n"
    )
    s = FabricSettings(fabric_home=tmp_path)
    out = configs.peer_core_yaml(stock, s)
    assert f"path: {tmp_path}/builders/ccaas" in out
    assert 'endpoint: ""' in out and "docker.sock" not in out
    with pytest.raises(ValueError):
        configs.peer_core_yaml("vm:\n  endpoint: x\n", s)


def test_ccaas_package_is_reproducible_and_its_id_is_label_and_sha256() -> None:
    a, b = configs.ccaas_package("ehr_1.0"), configs.ccaas_package("ehr_1.0")
    assert a == b
    assert configs.package_id("ehr_1.0", a) == "ehr_1.0:" + hashlib.sha256(a).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(a)) as outer:
        meta = json.loads(outer.extractfile("metadata.json").read())  # type: ignore[union-attr]
        code = outer.extractfile("code.tar.gz").read()  # type: ignore[union-attr]
    assert meta == {"type": "ccaas", "label": "ehr_1.0"}
    with tarfile.open(fileobj=io.BytesIO(code)) as inner:
        conn = json.loads(inner.extractfile("connection.json").read())  # type: ignore[union-attr]
    assert conn["tls_required"] and conn["client_auth_required"]
    assert conn["address"] == "{{.address}}"  # filled per peer by the ccaas builder


# -- identities -------------------------------------------------------------------------------
def test_client_identity_is_a_nodeou_client_with_fabric_ca_attributes() -> None:
    cert_pem, key_pem = mint_client_identity(CA_CERT, CA_KEY, "dr-alice", ["doctor", "cardiology"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    verify_signed_by(cert, CA_CERT)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dr-alice"
    assert (
        cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "client"
    )
    ext = cert.extensions.get_extension_for_oid(FABRIC_ATTRS_OID).value
    assert isinstance(ext, x509.UnrecognizedExtension)
    assert json.loads(ext.value) == {
        "attrs": {"ehr.subject": "dr-alice", "ehr.roles": "doctor,cardiology"}
    }
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]


def test_a_leaf_never_starts_before_or_ends_after_its_ca() -> None:
    """Fabric validates an identity's chain at the identity's notBefore: a leaf
    backdated (clock skew) before a CA made moments ago, as a fresh network's
    cryptogen CA is, was 'not yet valid' there ("creator org unknown", a flaky
    first transaction after `infra up`)."""
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    key = new_key()
    ca_pem = certificate(
        "ca.fresh.local",
        key,
        ca=True,
        # younger than a leaf's clock-skew backdating, and ending before its usual validity
        valid=(now - timedelta(seconds=10), now + timedelta(days=30)),
    )
    ca = x509.load_pem_x509_certificate(ca_pem)
    ca_key_pem = key_pem(key)
    for minted, _ in (
        mint_client_identity(ca_pem, ca_key_pem, "storage-service", ["storage"]),
        mint_tls_server_cert(ca_pem, ca_key_pem, "localhost", ["127.0.0.1"]),
    ):
        leaf = x509.load_pem_x509_certificate(minted)
        assert ca.not_valid_before_utc <= leaf.not_valid_before_utc < now
        assert leaf.not_valid_after_utc <= ca.not_valid_after_utc


role = st.text(
    st.characters(codec="utf-8", exclude_characters=",", exclude_categories=("C", "Z")),
    min_size=1,
    max_size=12,
)


@settings(max_examples=25, deadline=None)
@given(
    subject=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,40}", fullmatch=True),
    roles=st.lists(role, max_size=5),
)
def test_attributes_round_trip_any_subject_and_roles(subject: str, roles: list[str]) -> None:
    cert_pem, _ = mint_client_identity(CA_CERT, CA_KEY, subject, roles)
    ext = (
        x509.load_pem_x509_certificate(cert_pem)
        .extensions.get_extension_for_oid(FABRIC_ATTRS_OID)
        .value
    )
    attrs = json.loads(ext.value)["attrs"]  # type: ignore[attr-defined]
    assert attrs["ehr.subject"] == subject
    assert [r for r in attrs["ehr.roles"].split(",") if r] == list(dict.fromkeys(roles))


@pytest.mark.parametrize("subject", ["", " x", "a\nb", "x" * 65])
def test_bad_subjects_are_invalid_arguments(subject: str) -> None:
    with pytest.raises(InvalidArgument):
        mint_client_identity(CA_CERT, CA_KEY, subject, ["doctor"])


@pytest.mark.parametrize("roles", [["doc,tor"], [""], "doctor"])
def test_bad_roles_are_invalid_arguments(roles: list[str]) -> None:
    with pytest.raises(InvalidArgument):
        mint_client_identity(CA_CERT, CA_KEY, "dr-alice", roles)


def test_tls_server_cert_names_loopback() -> None:
    cert_pem, _ = mint_tls_server_cert(
        CA_CERT, CA_KEY, "chaincode.hosp1", ["localhost", "127.0.0.1"]
    )
    cert = x509.load_pem_x509_certificate(cert_pem)
    verify_signed_by(cert, CA_CERT)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_issue_identity_finds_the_org_ca_through_connection_json(tmp_path: Path) -> None:
    fabric = tmp_path / "fabric"
    fabric.mkdir()
    (fabric / "ca.pem").write_bytes(CA_CERT)
    (fabric / "ca.key").write_bytes(CA_KEY)
    doc = {
        "organizations": {
            "hosp1": {
                "msp_id": "Hosp1MSP",
                "ca": {"cert": str(fabric / "ca.pem"), "key": str(fabric / "ca.key")},
            }
        }
    }
    (fabric / "connection.json").write_text(json.dumps(doc))
    for where, org in ((tmp_path, "hosp1"), (fabric, "Hosp1MSP")):
        cert_pem, _ = issue_identity(where, org, "p-17", ["patient"])
        verify_signed_by(x509.load_pem_x509_certificate(cert_pem), CA_CERT)
    with pytest.raises(InvalidArgument, match="hosp3"):
        issue_identity(tmp_path, "hosp3", "p-17", ["patient"])
    with pytest.raises(ConfigError, match="infra up"):
        issue_identity(tmp_path / "empty", "hosp1", "p-17", [])


# -- down stops only what it started ----------------------------------------------------------
def test_down_never_signals_a_process_it_did_not_start(tmp_path: Path) -> None:
    s = FabricSettings(fabric_home=tmp_path / "home")
    net = FabricNetwork(s, tmp_path)
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        run = layout_for(s, tmp_path).run
        run.mkdir(parents=True)
        for name in ("orderer", "peer-hosp1", "chaincode-hosp2"):
            (run / f"{name}.pid").write_text(str(stranger.pid))  # a recycled pid
        net.down()
        time.sleep(0.2)
        assert stranger.poll() is None, "down killed a process that is not ours"
        assert all(st.state == "stopped" for st in net.status())
    finally:
        os.kill(stranger.pid, signal.SIGKILL)
        stranger.wait()
