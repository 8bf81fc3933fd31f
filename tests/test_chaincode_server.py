"""`python -m chaincode` as a real CCaaS server with mutual TLS. The test plays the
peer's side of the chaincode stream (Register, Ready, Transaction, state requests),
which is the protocol the peer speaks to a chaincode-as-a-service."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Queue
from typing import Any

import grpc
import pytest
from certs import certificate, key_pem, new_key
from conftest import free_port
from cryptography import x509
from cryptography.x509.oid import NameOID
from fabric_protos.peer import (
    chaincode_pb2,
    chaincode_shim_pb2,
    chaincode_shim_pb2_grpc,
    proposal_response_pb2,
)

from storage_service.fabric_gateway.signing import SigningIdentity, build_proposal

Msg = chaincode_shim_pb2.ChaincodeMessage


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    d = tmp_path_factory.mktemp("cc")
    ca_key = new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tls-ca")])
    ca = certificate("tls-ca", ca_key, ca=True)
    srv_key, cli_key = new_key(), new_key()
    (d / "ca.pem").write_bytes(ca)
    (d / "srv.pem").write_bytes(
        certificate("cc", srv_key, (ca_name, ca_key), sans=("localhost", "127.0.0.1"))
    )
    (d / "srv.key").write_bytes(key_pem(srv_key))
    port = free_port()
    env = {
        **os.environ,
        "CHAINCODE_ID": "ehr:abc",
        "CHAINCODE_SERVER_ADDRESS": f"127.0.0.1:{port}",
        "EHR_CC_TLS_KEY": str(d / "srv.key"),
        "EHR_CC_TLS_CERT": str(d / "srv.pem"),
        "EHR_CC_TLS_CLIENT_CA": str(d / "ca.pem"),
    }
    log = (d / "cc.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "chaincode"], env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    info = {
        "port": port,
        "ca": ca,
        "client_cert": certificate("peer0", cli_key, (ca_name, ca_key)),
        "client_key": key_pem(cli_key),
        "log": d / "cc.log",
    }
    yield info
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def _channel(info: dict[str, Any], *, with_cert: bool = True) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        info["ca"],
        info["client_key"] if with_cert else None,
        info["client_cert"] if with_cert else None,
    )
    return grpc.secure_channel(
        f"127.0.0.1:{info['port']}", creds, options=[("grpc.ssl_target_name_override", "localhost")]
    )


def test_peer_stream_runs_a_transaction(server: dict[str, Any]) -> None:
    state: dict[str, bytes] = {}
    outbox: Queue[Any] = Queue()
    channel = _channel(server)
    stream = chaincode_shim_pb2_grpc.ChaincodeStub(channel).Connect(
        iter(outbox.get, None), timeout=60
    )
    first = next(stream)
    assert first.type == Msg.REGISTER
    assert chaincode_pb2.ChaincodeID.FromString(first.payload).name == "ehr:abc"
    outbox.put(Msg(type=Msg.REGISTERED))
    outbox.put(Msg(type=Msg.READY))

    key = new_key()
    pem = certificate("svc", key, attrs={"ehr.subject": "storage-service", "ehr.roles": "anchorer"})
    ident = SigningIdentity("Hosp1MSP", pem, key)
    args = ["b-1", "ab" * 32, "1", "1", "{}"]
    proposal = build_proposal(ident, "ehr", "ehr", "AnchorBatch", args)
    cc_input = chaincode_pb2.ChaincodeInput(args=[a.encode() for a in ["AnchorBatch", *args]])
    tx = proposal.tx_id
    outbox.put(
        Msg(
            type=Msg.TRANSACTION,
            payload=cc_input.SerializeToString(),
            txid=tx,
            channel_id="ehr",
            proposal=proposal.signed,
        )
    )
    completed = None
    for msg in stream:
        if msg.type == Msg.GET_STATE:
            key_name = chaincode_shim_pb2.GetState.FromString(msg.payload).key
            reply = state.get(key_name, b"")
            outbox.put(Msg(type=Msg.RESPONSE, payload=reply, txid=tx, channel_id="ehr"))
        elif msg.type == Msg.PUT_STATE:
            put = chaincode_shim_pb2.PutState.FromString(msg.payload)
            state[put.key] = put.value
            outbox.put(Msg(type=Msg.RESPONSE, txid=tx, channel_id="ehr"))
        elif msg.type == Msg.COMPLETED:
            completed = proposal_response_pb2.Response.FromString(msg.payload)
            break
    outbox.put(None)
    channel.close()
    assert completed is not None and completed.status == 200, completed
    assert json.loads(completed.payload)["by_subject"] == "storage-service"
    assert set(state) == {"anchor/b-1"}
    # the values written went to the peer, not to the chaincode's log
    time.sleep(0.3)
    assert b"ab" * 32 not in server["log"].read_bytes()


def test_many_transactions_in_flight_on_one_stream(server: dict[str, Any]) -> None:
    """The peer multiplexes transactions on one stream; under load the library's
    handler used to write concurrently and grpc.aio refused (TOO_MANY_OPERATIONS)."""
    outbox: Queue[Any] = Queue()
    channel = _channel(server)
    stream = chaincode_shim_pb2_grpc.ChaincodeStub(channel).Connect(
        iter(outbox.get, None), timeout=120
    )
    assert next(stream).type == Msg.REGISTER
    outbox.put(Msg(type=Msg.REGISTERED))
    outbox.put(Msg(type=Msg.READY))
    key = new_key()
    pem = certificate("svc", key, attrs={"ehr.subject": "storage-service", "ehr.roles": "anchorer"})
    ident = SigningIdentity("Hosp1MSP", pem, key)
    n = 60
    for i in range(n):
        args = [f"b-{i}", "ab" * 32, "1", "1", "{}"]
        proposal = build_proposal(ident, "ehr", "ehr", "AnchorBatch", args)
        cc_input = chaincode_pb2.ChaincodeInput(args=[a.encode() for a in ["AnchorBatch", *args]])
        outbox.put(
            Msg(
                type=Msg.TRANSACTION,
                payload=cc_input.SerializeToString(),
                txid=proposal.tx_id,
                channel_id="ehr",
                proposal=proposal.signed,
            )
        )
    statuses: dict[str, int] = {}
    for msg in stream:
        if msg.type in (Msg.GET_STATE, Msg.PUT_STATE):
            outbox.put(Msg(type=Msg.RESPONSE, payload=b"", txid=msg.txid, channel_id="ehr"))
        elif msg.type == Msg.COMPLETED:
            statuses[msg.txid] = proposal_response_pb2.Response.FromString(msg.payload).status
            if len(statuses) == n:
                break
        elif msg.type == Msg.ERROR:
            pytest.fail(f"chaincode stream error: {msg.payload[:200]!r}")
    outbox.put(None)
    channel.close()
    assert sorted(statuses.values()) == [200] * n


def test_mutual_tls_refuses_clients_without_a_certificate(server: dict[str, Any]) -> None:
    channel = _channel(server, with_cert=False)
    with pytest.raises(grpc.FutureTimeoutError):
        grpc.channel_ready_future(channel).result(timeout=5)
    channel.close()
    plain = grpc.insecure_channel(f"127.0.0.1:{server['port']}")
    with pytest.raises(grpc.FutureTimeoutError):
        grpc.channel_ready_future(plain).result(timeout=5)
    plain.close()


def test_server_log_is_quiet(server: dict[str, Any]) -> None:
    text = Path(server["log"]).read_text(errors="replace")
    assert "serving at" in text
    assert "DEBUG" not in text
