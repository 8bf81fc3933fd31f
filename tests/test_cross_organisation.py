"""Two organisations' CAs trusted by one service over mutual TLS: every attempt by
one organisation's certificates to act as another organisation's people is
refused, end to end (gRPC, service, embedded ledger running the chaincode)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from certs import OrgCA
from google.protobuf.timestamp_pb2 import Timestamp

from abe_service.authority import KeyAuthority
from ehr_abe.server import RunningServer, start_server
from ehr_common.api.v1 import storage_pb2 as pb
from ehr_common.api.v1 import storage_pb2_grpc
from ehr_common.config import load_config

PASS = b"cross-org test passphrase"
POLICY = "role:doctor or patient:p-17"


@pytest.fixture(scope="module")
def two_org_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningServer, OrgCA, OrgCA]]:
    tmp = tmp_path_factory.mktemp("two-orgs")
    hosp1, hosp2 = OrgCA.new("Hosp1 CA"), OrgCA.new("Hosp2 CA")
    cert, key = hosp1.server()
    cfg = load_config(env={})
    cfg.home = str(tmp / "home")
    cfg.server.listen = "127.0.0.1:0"
    cfg.server.tls_cert = _write(tmp / "server.pem", cert)
    cfg.server.tls_key = _write(tmp / "server.key", key)
    cfg.server.client_cas = {
        "Hosp1MSP": _write(tmp / "ca1.pem", hosp1.pem),
        "Hosp2MSP": _write(tmp / "ca2.pem", hosp2.pem),
    }
    cfg.server.org_roles = {
        "Hosp1MSP": ("consent-admin", "auditor", "device"),
        "Hosp2MSP": ("consent-admin", "device"),
    }
    KeyAuthority.setup(cfg.authority_dir, passphrase=PASS)
    running = start_server(cfg, passphrase=PASS)
    yield running, hosp1, hosp2
    running.stop()


Stub = Callable[..., Any]


@pytest.fixture
def as_(two_org_server: tuple[RunningServer, OrgCA, OrgCA]) -> Iterator[Stub]:
    running, _, _ = two_org_server
    channels: list[grpc.Channel] = []

    def stub(ca: OrgCA, subject: str, roles: list[str], extra: dict[str, str] | None = None) -> Any:
        cert, key = ca.client(subject, roles, extra)
        creds = grpc.ssl_channel_credentials(
            root_certificates=two_org_server[1].pem,  # the server's certificate is Hosp1's
            private_key=key,
            certificate_chain=cert,
        )
        ch = grpc.secure_channel(f"localhost:{running.port}", creds)
        channels.append(ch)
        return storage_pb2_grpc.StorageServiceStub(ch)

    yield stub
    for ch in channels:
        ch.close()


def code(fn: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as exc:
        fn()
    return exc.value.code(), exc.value.details()


def _in(hours: float) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(datetime.now(UTC) + timedelta(hours=hours))
    return ts


def test_no_cross_organisation_impersonation(
    two_org_server: tuple[RunningServer, OrgCA, OrgCA], as_: Stub
) -> None:
    _, hosp1, hosp2 = two_org_server
    patient = as_(hosp1, "p-17", ["patient"])
    nurse = as_(hosp1, "nurse-1", ["nurse"])
    device = as_(hosp1, "ecg-1", ["device"])
    nurse.AssignDevice(
        pb.AssignDeviceRequest(patient_id="p-17", device_id="ecg-1", expires_at=_in(1))
    )
    put = device.PutRecord(
        pb.PutRecordRequest(
            patient_id="p-17",
            record_type="ecg",
            plain=pb.PlainContent(payload=b"hr=72", policy=POLICY),
        )
    )
    rid = put.record_id
    got = patient.GetRecord(pb.GetRecordRequest(record_id=rid))
    assert got.metadata.patient_id == "Hosp1MSP/p-17"
    assert got.metadata.author == "Hosp1MSP/ecg-1"

    # The reproduced attack: Hosp2's CA issues "p-17" claiming ehr.msp=Hosp1MSP.
    mallory = as_(hosp2, "p-17", ["patient", "auditor"], {"ehr.msp": "Hosp1MSP"})
    status, _ = code(
        lambda: mallory.GrantConsent(
            pb.GrantConsentRequest(patient_id="Hosp1MSP/p-17", subject_id="Hosp2MSP/mallory")
        )
    )
    assert status == grpc.StatusCode.PERMISSION_DENIED
    status, _ = code(lambda: mallory.ListRecords(pb.ListRecordsRequest(patient_id="Hosp1MSP/p-17")))
    assert status == grpc.StatusCode.PERMISSION_DENIED
    # a bare "p-17" is Hosp2's own p-17, who has nothing here
    assert list(mallory.ListRecords(pb.ListRecordsRequest(patient_id="p-17")).records) == []
    missing = code(lambda: mallory.GetRecord(pb.GetRecordRequest(record_id="r-nosuchrecord")))
    status, details = code(lambda: mallory.GetRecord(pb.GetRecordRequest(record_id=rid)))
    assert (status, details) == (grpc.StatusCode.NOT_FOUND, f"no record {rid}")
    assert missing == (grpc.StatusCode.NOT_FOUND, "no record r-nosuchrecord")
    # Hosp2 does not grant "auditor": the role is dropped
    status, _ = code(lambda: mallory.VerifyRecords(pb.VerifyRecordsRequest(all=True)))
    assert status == grpc.StatusCode.PERMISSION_DENIED

    # Hosp2's consent-admin is no consent-admin for Hosp1's patients
    admin2 = as_(hosp2, "admin-2", ["consent-admin"])
    status, _ = code(
        lambda: admin2.GrantConsent(
            pb.GrantConsentRequest(patient_id="Hosp1MSP/p-17", subject_id="Hosp2MSP/admin-2")
        )
    )
    assert status == grpc.StatusCode.PERMISSION_DENIED

    # Hosp2's clinicians and devices neither assign nor write for Hosp1's patients
    doctor2 = as_(hosp2, "dr-2", ["doctor"])
    status, _ = code(
        lambda: doctor2.AssignDevice(
            pb.AssignDeviceRequest(
                patient_id="Hosp1MSP/p-17", device_id="Hosp2MSP/pump-2", expires_at=_in(1)
            )
        )
    )
    assert status == grpc.StatusCode.PERMISSION_DENIED
    device2 = as_(hosp2, "ecg-1", ["device"], {"ehr.msp": "Hosp1MSP"})  # same name as ours
    for writer in (doctor2, device2):
        status, _ = code(
            lambda writer=writer: writer.PutRecord(
                pb.PutRecordRequest(
                    patient_id="Hosp1MSP/p-17",
                    record_type="ecg",
                    plain=pb.PlainContent(payload=b"forged", policy=POLICY),
                )
            )
        )
        assert status == grpc.StatusCode.PERMISSION_DENIED

    # none of it changed what the patient sees
    records = patient.ListRecords(pb.ListRecordsRequest(patient_id="p-17")).records
    assert [r.record_id for r in records] == [rid]

    # with the patient's consent, Hosp2's doctor may read and write (cross-organisation care)
    patient.GrantConsent(pb.GrantConsentRequest(patient_id="p-17", subject_id="Hosp2MSP/dr-2"))
    doctor2.GetRecord(pb.GetRecordRequest(record_id=rid))
    note = doctor2.PutRecord(
        pb.PutRecordRequest(
            patient_id="Hosp1MSP/p-17",
            record_type="note",
            plain=pb.PlainContent(payload=b"seen in Hosp2 ER", policy=POLICY),
        )
    )
    assert note.record_id
    history = nurse.ListAssignments(pb.ListAssignmentsRequest(patient_id="p-17")).changes
    assert [(c.device_id, c.assigned, c.by) for c in history] == [
        ("Hosp1MSP/ecg-1", True, "Hosp1MSP/nurse-1")
    ]


def test_a_certificate_from_an_unknown_ca_is_refused(
    two_org_server: tuple[RunningServer, OrgCA, OrgCA],
) -> None:
    running, hosp1, _ = two_org_server
    stranger = OrgCA.new("Hosp1 CA")  # Hosp1's name, another key
    cert, key = stranger.client("p-17", ["patient"])
    creds = grpc.ssl_channel_credentials(
        root_certificates=hosp1.pem, private_key=key, certificate_chain=cert
    )
    with grpc.secure_channel(f"localhost:{running.port}", creds) as ch:
        stub = storage_pb2_grpc.StorageServiceStub(ch)
        status, _ = code(
            lambda: stub.ListRecords(pb.ListRecordsRequest(patient_id="p-17"), timeout=5)
        )
    assert status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)


def test_server_needs_a_ca_for_every_configured_role_grant(tmp_path: Path) -> None:
    from ehr_common.errors import ConfigError

    hosp1 = OrgCA.new("Hosp1 CA")
    cert, key = hosp1.server()
    cfg = load_config(env={})
    cfg.home = str(tmp_path / "home")
    cfg.server.listen = "127.0.0.1:0"
    cfg.server.tls_cert = _write(tmp_path / "s.pem", cert)
    cfg.server.tls_key = _write(tmp_path / "s.key", key)
    cfg.server.client_ca = _write(tmp_path / "ca.pem", hosp1.pem)
    cfg.server.org_roles = {"Hosp9MSP": ("auditor",)}
    KeyAuthority.setup(cfg.authority_dir, passphrase=PASS)
    with pytest.raises(ConfigError, match="Hosp9MSP"):
        start_server(cfg, passphrase=PASS)


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)
