"""The fabric-chaincode-python layer without a peer: the library's real ChaincodeStub
decodes a real signed proposal (built by our Gateway client), and the shim's state
calls are answered from a dict, as the peer would over the chaincode stream."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from certs import certificate as build_certificate
from certs import new_key
from cryptography.hazmat.primitives.asymmetric import ec
from fabric_chaincode_python.fabric_shim.stub import ChaincodeStub
from fabric_protos.ledger.queryresult import kv_query_result_pb2
from fabric_protos.peer import chaincode_pb2, chaincode_shim_pb2

from chaincode import core
from chaincode.contract import EhrChaincode, identity_from_creator
from ehr_common.errors import Unauthenticated
from storage_service.fabric_gateway.signing import SigningIdentity, build_proposal


def certificate(cn: str, attrs: dict[str, str] | None) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = new_key()
    return build_certificate(cn, key, attrs=attrs), key


def test_identity_from_fabric_ca_attributes() -> None:
    pem, _ = certificate("enroll-7", {"ehr.subject": "dr-who", "ehr.roles": "doctor, anchorer"})
    ident = identity_from_creator("Hosp2MSP", pem)
    assert ident == core.Identity("dr-who", "Hosp2MSP", frozenset({"doctor", "anchorer"}))


def test_identity_falls_back_to_common_name() -> None:
    pem, _ = certificate("p-17", None)
    assert identity_from_creator("Hosp1MSP", pem) == core.Identity("p-17", "Hosp1MSP")
    pem, _ = certificate("p-18", {"hf.EnrollmentID": "p-18"})  # attrs, but none of ours
    assert identity_from_creator("Hosp1MSP", pem).subject == "p-18"


def test_identity_refusals() -> None:
    pem, _ = certificate("x", None)
    with pytest.raises(Unauthenticated):
        identity_from_creator("", pem)
    with pytest.raises(Unauthenticated):
        identity_from_creator("Hosp1MSP", b"not a certificate")


class DictPeer:
    """Answers the shim's state requests from a dict (what the peer does over the stream)."""

    def __init__(self) -> None:
        self.state: dict[str, bytes] = {}
        self.closed: list[str] = []

    async def handle_get_state(self, collection: str, key: str, ch: str, tx: str) -> bytes:
        return self.state.get(key, b"")

    async def handle_put_state(
        self, collection: str, key: str, value: bytes, ch: str, tx: str
    ) -> None:
        self.state[key] = value

    async def handle_get_state_by_range(
        self, collection: str, start: str, end: str, ch: str, tx: str, metadata: Any = None
    ) -> Any:
        keys = sorted(k for k in self.state if start <= k < end)
        resp = chaincode_shim_pb2.QueryResponse(has_more=False, id="q1")
        for k in keys:
            kv = kv_query_result_pb2.KV(key=k, value=self.state[k])
            resp.results.add(resultBytes=kv.SerializeToString())
        return chaincode_shim_pb2.ChaincodeMessage(payload=resp.SerializeToString())

    async def handle_query_state_close(self, query_id: str, ch: str, tx: str) -> None:
        self.closed.append(query_id)


def call(peer: DictPeer, who: SigningIdentity, function: str, *args: str) -> Any:
    proposal = build_proposal(who, "ehr", "ehrcc", function, list(args))
    cc_input = chaincode_pb2.ChaincodeInput(args=[a.encode() for a in (function, *args)])
    stub = ChaincodeStub(peer, "ehr", proposal.tx_id, cc_input, proposal.signed)
    return asyncio.run(EhrChaincode().invoke(stub))


def identity(cn: str, attrs: dict[str, str] | None, msp: str = "Hosp1MSP") -> SigningIdentity:
    pem, key = certificate(cn, attrs)
    return SigningIdentity(msp, pem, key)


def test_invoke_runs_the_core_with_the_creator_identity() -> None:
    peer = DictPeer()
    service = identity("svc", {"ehr.subject": "storage-service", "ehr.roles": "anchorer,auditor"})
    resp = call(peer, service, "AnchorBatch", "b-1", "ab" * 32, "1", "1", "{}")
    assert resp.status == 200, resp.message
    anchor = json.loads(resp.payload)
    assert (anchor["by_subject"], anchor["by_msp"]) == ("storage-service", "Hosp1MSP")
    assert abs(core.parse_time("at", anchor["at"]) - datetime.now(UTC)) < timedelta(minutes=1)
    assert "anchor/b-1" in peer.state
    again = call(peer, service, "AnchorBatch", "b-1", "cd" * 32, "1", "1", "{}")
    assert again.status == 500
    assert core.parse_wire_error(again.message) is not None
    assert again.message.startswith("[ehr:ALREADY_EXISTS]")
    listed = call(peer, service, "ListAnchors", "", "", "10", "")
    assert [a["batch_id"] for a in json.loads(listed.payload)["anchors"]] == ["b-1"]


def test_invoke_refuses_consent_change_by_other_subject() -> None:
    peer = DictPeer()
    doctor = identity("dr", {"ehr.subject": "dr-who", "ehr.roles": "doctor"}, "Hosp2MSP")
    resp = call(peer, doctor, "GrantConsent", "p-17", "dr-who", "")
    assert resp.status == 500 and resp.message.startswith("[ehr:PERMISSION_DENIED]")
    assert peer.state == {}
    patient = identity("p-17", None)
    assert call(peer, patient, "GrantConsent", "p-17", "dr-who", "").status == 200


def test_invoke_reports_bad_input_and_unknown_functions() -> None:
    peer = DictPeer()
    who = identity("p-17", None)
    assert call(peer, who, "Nope").message.startswith("[ehr:INVALID_ARGUMENT]")
    assert call(peer, who, "GetAnchor", "a/b").message.startswith("[ehr:INVALID_ARGUMENT]")
    assert call(peer, who, "GetAnchor", "b-9").message.startswith("[ehr:NOT_FOUND]")


def test_main_requires_its_environment() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "chaincode"], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2 and "CHAINCODE_ID" in out.stderr


def test_library_logging_is_reset() -> None:
    """After the reset, the shim's own put_state logging prints nothing."""
    script = """
import asyncio, logging
from chaincode.__main__ import _quiet_library_logging
from fabric_chaincode_python.fabric_shim.stub import ChaincodeStub
_quiet_library_logging()

class Peer:
    async def handle_put_state(self, *args):
        return None

stub = ChaincodeStub(Peer(), "ehr", "tx1", None, None)
asyncio.run(stub.put_state("consent/p-17/dr", b"SECRET-HEALTH-VALUE"))
logging.getLogger("ehr.chaincode").info("ours still shows")
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "SECRET-HEALTH-VALUE" not in out.stderr + out.stdout
    assert "ours still shows" in out.stderr
