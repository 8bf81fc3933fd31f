"""Both services over real gRPC: status codes, health, reflection, deadlines, mutual TLS."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from abe_service.authority import KeyAuthority
from abe_service.client import AbeKeyring
from ehr_abe.infra.fabric.identities import mint_client_identity as mint_identity
from ehr_abe.server import RunningServer, start_server
from ehr_common.api.v1 import abe_pb2, abe_pb2_grpc, storage_pb2, storage_pb2_grpc
from ehr_common.config import load_config
from ehr_common.errors import IntegrityError
from storage_service.records import envelope_key, record_context

PASS = b"grpc test passphrase"
POLICY = "(role:doctor and dept:cardiology) or patient:p-9"


def md(subject: str, roles: str = "") -> tuple[tuple[str, str], ...]:
    return (("x-ehr-subject", subject), ("x-ehr-roles", roles))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    home = tmp_path_factory.mktemp("home")
    cfg = load_config(env={})
    cfg.home = str(home)
    cfg.server.listen = "127.0.0.1:0"
    KeyAuthority.setup(cfg.authority_dir, passphrase=PASS)
    running = start_server(cfg, passphrase=PASS)
    yield running, cfg.storage_dir
    running.stop()


@pytest.fixture
def channel(server: tuple[RunningServer, Path]) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server[0].port}") as ch:
        yield ch


def code_of(fn: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as exc:
        fn()
    return exc.value.code()  # type: ignore[no-any-return]


def test_health_and_reflection(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "ehr_abe.api.v1.AbeService", "ehr_abe.api.v1.StorageService"):
        assert (
            health.Check(health_pb2.HealthCheckRequest(service=name)).status
            == health_pb2.HealthCheckResponse.SERVING
        )
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    resp = next(
        refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    )
    names = {s.name for s in resp.list_services_response.service}
    assert {"ehr_abe.api.v1.AbeService", "ehr_abe.api.v1.StorageService"} <= names


def test_abe_service_policy_calls_and_errors(channel: grpc.Channel) -> None:
    abe = abe_pb2_grpc.AbeServiceStub(channel)
    who = md("dr-x", "doctor")
    chk = abe.CheckPolicy(abe_pb2.CheckPolicyRequest(policy=POLICY), metadata=who)
    assert chk.normal_form == "(dept:cardiology and role:doctor) or patient:p-9"
    assert list(chk.attributes) == ["dept:cardiology", "patient:p-9", "role:doctor"]
    ev = abe.EvaluatePolicy(
        abe_pb2.EvaluatePolicyRequest(policy=POLICY, attributes=["patient:p-9"]), metadata=who
    )
    assert ev.satisfied
    with pytest.raises(grpc.RpcError) as exc:
        abe.CheckPolicy(abe_pb2.CheckPolicyRequest(policy="role:doctor and"), metadata=who)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "position 15" in exc.value.details()
    assert (
        code_of(
            lambda: abe.IssueUserKey(
                abe_pb2.IssueUserKeyRequest(subject_id="x", attributes=["a"]),
                metadata=md("mallory", "doctor"),
            )
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        code_of(
            lambda: abe.IssueUserKey(abe_pb2.IssueUserKeyRequest(subject_id="x", attributes=["a"]))
        )
        == grpc.StatusCode.UNAUTHENTICATED
    )
    assert (
        code_of(
            lambda: abe.IssueUserKey(
                abe_pb2.IssueUserKeyRequest(subject_id="x", attributes=["bad attr"]),
                metadata=md("ka", "authority"),
            )
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )


def test_storage_round_trip_tamper_and_status_codes(
    server: tuple[RunningServer, Path], channel: grpc.Channel
) -> None:
    abe = abe_pb2_grpc.AbeServiceStub(channel)
    st = storage_pb2_grpc.StorageServiceStub(channel)
    key = abe.IssueUserKey(
        abe_pb2.IssueUserKeyRequest(subject_id="p-9", attributes=["patient:p-9"]),
        metadata=md("ka", "authority"),
    )
    ring = AbeKeyring.from_bytes(key.user_key)
    # the caller encrypts client-side, the service stores the envelope as is
    pp = abe.GetPublicParams(abe_pb2.GetPublicParamsRequest())
    from abe_service.envelope import AbeEncryptor

    env = AbeEncryptor.from_public_params(pp.public_params).encrypt(
        POLICY, b"bp=120/80", record_context("p-9")
    )
    put = st.PutRecord(
        storage_pb2.PutRecordRequest(patient_id="p-9", record_type="vitals", envelope=env),
        metadata=md("monitor-1", "device"),
    )
    assert put.receipt.status == storage_pb2.ANCHOR_STATUS_PENDING
    st.FlushAnchors(storage_pb2.FlushAnchorsRequest(), metadata=md("monitor-1", "device"))
    got = st.GetRecord(
        storage_pb2.GetRecordRequest(record_id=put.record_id), metadata=md("p-9", "patient")
    )
    assert got.receipt.status == storage_pb2.ANCHOR_STATUS_ANCHORED
    assert ring.decrypt(got.envelope, record_context("p-9")) == b"bp=120/80"
    assert (
        code_of(
            lambda: st.GetRecord(
                storage_pb2.GetRecordRequest(record_id=put.record_id), metadata=md("dr-x", "doctor")
            )
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        code_of(
            lambda: st.GetRecord(
                storage_pb2.GetRecordRequest(record_id="r-nope"), metadata=md("p-9")
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )
    assert (
        code_of(
            lambda: st.PutRecord(
                storage_pb2.PutRecordRequest(
                    patient_id="p-9", record_type="vitals", envelope=b"junk"
                ),
                metadata=md("monitor-1", "device"),
            )
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    # tamper on disk: DATA_LOSS naming the record
    path = server[1] / "objects" / envelope_key(put.record_id)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.chmod(0o600)
    path.write_bytes(bytes(data))
    with pytest.raises(grpc.RpcError) as exc:
        st.GetRecord(storage_pb2.GetRecordRequest(record_id=put.record_id), metadata=md("p-9"))
    assert exc.value.code() == grpc.StatusCode.DATA_LOSS and put.record_id in exc.value.details()


def test_deadlines_are_honoured(channel: grpc.Channel) -> None:
    st = storage_pb2_grpc.StorageServiceStub(channel)
    code = code_of(
        lambda: st.VerifyRecords(
            storage_pb2.VerifyRecordsRequest(all=True),
            metadata=md("aud", "auditor"),
            timeout=0.000001,
        )
    )
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED


def _ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert, key, pem, key_pem


def test_mutual_tls_identifies_callers_from_certificates(tmp_path: Path) -> None:
    ca, ca_key, ca_pem, ca_key_pem = _ca()
    skey = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    scert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.subject)
        .public_key(skey.public_key())
        .serial_number(2)
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    for name, data in {
        "ca.pem": ca_pem,
        "server.pem": scert.public_bytes(serialization.Encoding.PEM),
        "server.key": skey.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    }.items():
        (tmp_path / name).write_bytes(data)
    cfg = load_config(env={})
    cfg.home = str(tmp_path / "home")
    cfg.server.listen = "127.0.0.1:0"
    cfg.server.tls_cert, cfg.server.tls_key, cfg.server.client_ca = (
        str(tmp_path / n) for n in ("server.pem", "server.key", "ca.pem")
    )
    KeyAuthority.setup(cfg.authority_dir, passphrase=PASS)
    running = start_server(cfg, passphrase=PASS)
    try:
        target = f"localhost:{running.port}"
        authority_cert, authority_key = mint_identity(
            ca_pem, ca_key_pem, "key-authority", ["authority"]
        )
        doctor_cert, doctor_key = mint_identity(ca_pem, ca_key_pem, "dr-a", ["doctor"])
        for cert, key, expected in (
            (authority_cert, authority_key, None),
            (doctor_cert, doctor_key, grpc.StatusCode.PERMISSION_DENIED),
        ):
            creds = grpc.ssl_channel_credentials(
                root_certificates=ca_pem, private_key=key, certificate_chain=cert
            )
            with grpc.secure_channel(target, creds) as ch:
                abe = abe_pb2_grpc.AbeServiceStub(ch)

                def call(abe: Any = abe) -> Any:
                    return abe.IssueUserKey(
                        abe_pb2.IssueUserKeyRequest(subject_id="s", attributes=["role:x"]),
                        metadata=md("key-authority", "authority"),
                    )

                if expected is None:
                    assert call().key_id  # the certificate, not the header, grants the role
                else:
                    assert code_of(call) == expected  # headers are ignored under TLS
        # no client certificate: the handshake is refused
        with grpc.secure_channel(
            target, grpc.ssl_channel_credentials(root_certificates=ca_pem)
        ) as ch:
            code = code_of(
                lambda: abe_pb2_grpc.AbeServiceStub(ch).GetPublicParams(
                    abe_pb2.GetPublicParamsRequest(), timeout=5
                )
            )
            assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)
    finally:
        running.stop()


def test_signed_pending_receipt_and_data_loss_over_grpc(
    channel: grpc.Channel, server: tuple[RunningServer, Path]
) -> None:
    from storage_service.receipts import verify_pending_receipt_pb

    storage = storage_pb2_grpc.StorageServiceStub(channel)
    put = storage.PutRecord(
        storage_pb2.PutRecordRequest(
            patient_id="p-sig",
            record_type="ecg",
            plain=storage_pb2.PlainContent(payload=b"hr=70", policy="patient:p-sig"),
        ),
        metadata=md("ecg-9", "device"),
    )
    r = put.receipt
    assert r.status == storage_pb2.ANCHOR_STATUS_PENDING and len(r.signature) == 64
    assert r.anchor_deadline.ToDatetime() > r.accepted_at.ToDatetime()
    key = storage.GetServiceKey(storage_pb2.GetServiceKeyRequest(), metadata=md("anyone"))
    verify_pending_receipt_pb(r, key)
    forged = storage_pb2.Receipt()
    forged.CopyFrom(r)
    forged.anchor_deadline.seconds += 86400
    with pytest.raises(IntegrityError):
        verify_pending_receipt_pb(forged, key)

    path = server[1] / "objects" / envelope_key(put.record_id)
    path.chmod(0o600)
    path.write_bytes(path.read_bytes()[:-1])
    assert (
        code_of(
            lambda: storage.GetRecord(
                storage_pb2.GetRecordRequest(record_id=put.record_id), metadata=md("p-sig")
            )
        )
        == grpc.StatusCode.DATA_LOSS
    )
    status = storage.GetAnchoringStatus(
        storage_pb2.GetAnchoringStatusRequest(), metadata=md("anyone")
    )
    assert status.instance_id == key.instance_id and status.pending_records >= 1
    report = storage.VerifyRecords(
        storage_pb2.VerifyRecordsRequest(patient_id="p-sig"), metadata=md("p-sig")
    )
    assert list(report.failed_record_ids) == [put.record_id]
    assert report.problems[0].record_id == put.record_id and report.problems[0].detail
