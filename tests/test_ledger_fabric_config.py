"""FabricLedger without a network: connection file, identity sources, and what an
unreachable network looks like to callers (real gRPC to closed ports)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from certs import self_signed_ca
from conftest import free_port
from cryptography import x509
from cryptography.x509.oid import NameOID

from ehr_common.errors import ConfigError, Unavailable
from storage_service.fabric_gateway.client import Timeouts
from storage_service.ledger.base import Caller, Ledger
from storage_service.ledger.fabric import (
    DevIdentityIssuer,
    FabricConnection,
    FabricLedger,
    StaticIdentities,
    parse_connection,
)


def write_pair(d: Path, cn: str) -> tuple[Path, Path]:
    cert_pem, key_pem = self_signed_ca(cn)
    cp, kp = d / f"{cn}.crt", d / f"{cn}.key"
    cp.write_bytes(cert_pem)
    kp.write_bytes(key_pem)
    return cp, kp


def connection_doc(tmp_path: Path) -> dict[str, object]:
    ca, _ = write_pair(tmp_path, "tlsca")
    return {
        "channel": "ehr",
        "chaincode": "ehr",
        "organizations": {
            "hosp1": {
                "msp_id": "Hosp1MSP",
                "gateway": {"endpoint": f"127.0.0.1:{free_port()}", "tls_ca": str(ca)},
            },
            "hosp2": {
                "msp_id": "Hosp2MSP",
                "gateway": {"endpoint": f"127.0.0.1:{free_port()}", "tls_ca": ca.name},
            },
        },
    }


def test_connection_file_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "connection.json"
    path.write_text(json.dumps(connection_doc(tmp_path)))
    conn = FabricConnection.load(path)
    assert conn.channel == "ehr" and [o.msp_id for o in conn.orgs] == ["Hosp1MSP", "Hosp2MSP"]
    assert conn.orgs[1].tls_ca == tmp_path / "tlsca.crt"  # relative to the file
    with pytest.raises(ConfigError, match="no organizations"):
        parse_connection({"channel": "ehr"}, tmp_path)
    with pytest.raises(ConfigError, match="endpoint"):
        parse_connection({"organizations": [{"msp_id": "X"}]}, tmp_path)
    with pytest.raises(ConfigError):
        FabricConnection.load(tmp_path / "missing.json")


def test_dev_issuer_mints_once_per_caller_and_caches_on_disk(tmp_path: Path) -> None:
    conn = parse_connection(connection_doc(tmp_path), tmp_path)
    calls: list[tuple[str, str, list[str]]] = []

    def issue(state: Path, org: str, subject: str, roles: list[str]) -> tuple[bytes, bytes]:
        calls.append((org, subject, roles))
        cert, key = write_pair(tmp_path, f"{org}-{subject}-{len(calls)}")
        return cert.read_bytes(), key.read_bytes()

    issuer = DevIdentityIssuer(tmp_path, conn.orgs, issue)
    a = issuer.identity_for(Caller("svc", "Hosp1MSP", frozenset({"anchorer", "auditor"})))
    b = issuer.identity_for(Caller("svc", "Hosp1MSP", frozenset({"auditor", "anchorer"})))
    assert a is b and a.msp_id == "Hosp1MSP"
    assert calls == [("hosp1", "svc", ["anchorer", "auditor"])]
    issuer.identity_for(Caller("svc", "Hosp1MSP", frozenset({"anchorer"})))  # other roles
    assert len(calls) == 2
    # a restarted service finds its identities under the state dir: no new certificate
    again = DevIdentityIssuer(tmp_path, conn.orgs, issue)
    c = again.identity_for(Caller("svc", "Hosp1MSP", frozenset({"anchorer", "auditor"})))
    assert c.certificate_pem == a.certificate_pem and len(calls) == 2
    keys = list((tmp_path / "identities").rglob("key.pem"))
    assert len(keys) == 2 and all(k.stat().st_mode & 0o777 == 0o600 for k in keys)
    with pytest.raises(ConfigError, match="not an organization"):
        issuer.identity_for(Caller("svc", "EvilMSP"))


def test_static_identities_refuse_unknown_callers() -> None:
    with pytest.raises(ConfigError, match="no Fabric identity"):
        StaticIdentities({}).identity_for(Caller("x", "Hosp1MSP"))


def test_unreachable_network_is_unavailable_on_every_org(tmp_path: Path) -> None:
    conn = parse_connection(connection_doc(tmp_path), tmp_path)
    cert, key = write_pair(tmp_path, "client")
    from storage_service.fabric_gateway.signing import SigningIdentity

    ident = SigningIdentity.from_files("Hosp1MSP", cert, key)
    ledger = FabricLedger(
        conn,
        StaticIdentities({("Hosp1MSP", "svc"): ident}),
        timeouts=Timeouts(evaluate_s=5, endorse_s=5, submit_s=5, commit_s=5),
    )
    assert isinstance(ledger, Ledger)
    caller = Caller("svc", "Hosp1MSP", frozenset({"anchorer"}))
    with pytest.raises(Unavailable, match="no Fabric gateway"):
        ledger.submit(caller, "AnchorBatch", ["b", "ab" * 32, "1", "1", "{}"])
    with pytest.raises(Unavailable, match="no Fabric gateway"):
        ledger.evaluate(caller, "GetAnchor", ["b"])
    ledger.close()


def test_ca_key_issuer_mints_fabric_ca_style_identities(tmp_path: Path) -> None:
    from chaincode.contract import identity_from_creator
    from storage_service.ledger.fabric import CaKeyIssuer

    ca_cert, ca_key = write_pair(tmp_path, "ca")
    doc = connection_doc(tmp_path)
    orgs = doc["organizations"]
    assert isinstance(orgs, dict)
    orgs["hosp1"]["ca"] = {"cert": str(ca_cert), "key": str(ca_key)}
    conn = parse_connection(doc, tmp_path)
    caller = Caller("dr-who", "Hosp1MSP", frozenset({"doctor", "anchorer"}))
    ident = CaKeyIssuer(tmp_path / "ids", conn.orgs).identity_for(caller)
    seen = identity_from_creator(ident.msp_id, ident.certificate_pem)
    assert (seen.subject, seen.msp_id, seen.roles) == ("dr-who", "Hosp1MSP", caller.roles)
    cert = x509.load_pem_x509_certificate(ident.certificate_pem)
    assert cert.issuer == x509.load_pem_x509_certificate(ca_cert.read_bytes()).subject
    ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    assert [a.value for a in ou] == ["client"]  # Fabric NodeOUs: a client identity
    again = CaKeyIssuer(tmp_path / "ids", conn.orgs).identity_for(caller)
    assert again.certificate_pem == ident.certificate_pem
    write_pair(tmp_path, "ca")  # the network was re-created with a new CA
    fresh = CaKeyIssuer(tmp_path / "ids", conn.orgs).identity_for(caller)
    new_ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    assert fresh.certificate_pem != ident.certificate_pem
    fresh_cert = x509.load_pem_x509_certificate(fresh.certificate_pem)
    fresh_cert.verify_directly_issued_by(new_ca)
    with pytest.raises(ConfigError, match="no development CA"):
        CaKeyIssuer(tmp_path / "ids", conn.orgs).identity_for(Caller("x", "Hosp2MSP"))


class _RecordingGateway:
    """Stands in for one peer's Gateway to observe the client's coordination only:
    which gateways were asked to confirm a commit, in what order."""

    def __init__(self, name: str, log: list[str], *, endorses: bool, down: bool = False):
        self.endpoint, self._log, self._endorses, self._down = name, log, endorses, down

    def endorse_and_submit(self, *_: object) -> tuple[str, bytes]:
        self._log.append(f"submit@{self.endpoint}")
        return "tx-1", b"{}"

    def wait_for_commit(self, *_: object, timeout_s: float | None = None) -> int:
        self._log.append(f"commit@{self.endpoint}")
        if self._down:
            raise Unavailable(f"{self.endpoint} is down")
        return 7


def test_a_commit_waits_until_every_reachable_peer_holds_it(tmp_path: Path) -> None:
    """Read your writes across organisations: after submit returns, a read routed to
    another organisation's peer must not answer from before the commit (a revoked
    consent still granting). An unreachable peer does not fail the transaction."""
    conn = parse_connection(connection_doc(tmp_path), tmp_path)
    cert, key = write_pair(tmp_path, "client")
    from storage_service.fabric_gateway.signing import SigningIdentity

    ident = SigningIdentity.from_files("Hosp2MSP", cert, key)
    ledger = FabricLedger(conn, StaticIdentities({("Hosp2MSP", "admin"): ident}))
    caller = Caller("admin", "Hosp2MSP", frozenset({"consent-admin"}))
    for hosp1_down in (False, True):
        log: list[str] = []
        ledger._gateways = {  # type: ignore[assignment]
            "hosp1": _RecordingGateway("hosp1", log, endorses=False, down=hosp1_down),
            "hosp2": _RecordingGateway("hosp2", log, endorses=True),
        }
        result = ledger.submit(caller, "RevokeConsent", ["p-1", "dr-1"])
        assert result.block == 7
        assert log == ["submit@hosp2", "commit@hosp2", "commit@hosp1"]
