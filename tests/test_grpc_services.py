"""Both services over real gRPC: status codes, health, reflection, deadlines, mutual TLS."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from certs import self_signed_ca
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from abe_service.authority import KeyAuthority
from abe_service.client import AbeKeyring
from ehr_abe.server import RunningServer, start_server
from ehr_common.api.v1 import abe_pb2, abe_pb2_grpc, storage_pb2, storage_pb2_grpc
from ehr_common.certificates import mint_client_identity, mint_tls_server_cert
from ehr_common.config import load_config
from ehr_common.errors import DeadlineExceeded, IntegrityError
from ehr_common.identity import Caller
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


def _timestamp(at: datetime) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


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

    # envelopes are bound to the organisation-qualified patient id
    env = AbeEncryptor.from_public_params(pp.public_params).encrypt(
        POLICY, b"bp=120/80", record_context("Hosp1MSP/p-9")
    )
    until = datetime.now(UTC) + timedelta(hours=1)
    st.AssignDevice(
        storage_pb2.AssignDeviceRequest(
            patient_id="p-9", device_id="monitor-1", expires_at=_timestamp(until)
        ),
        metadata=md("nurse-1", "nurse"),
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
    assert ring.decrypt(got.envelope, record_context("Hosp1MSP/p-9")) == b"bp=120/80"
    # without consent: NOT_FOUND, as for a record that does not exist
    assert (
        code_of(
            lambda: st.GetRecord(
                storage_pb2.GetRecordRequest(record_id=put.record_id), metadata=md("dr-x", "doctor")
            )
        )
        == grpc.StatusCode.NOT_FOUND
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


class SlowStore:
    """The real filesystem store, with each batched fetch slowed down and counted:
    lets a test see how far the server got before it stopped."""

    def __init__(self, inner: Any, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.fetches = 0

    def get_many(self, keys: Any) -> Any:
        self.fetches += 1
        time.sleep(self.delay_s)
        return self.inner.get_many(keys)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_deadline_that_expires_mid_work_stops_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request reaches the server; its deadline passes while VerifyRecords is
    working; the server notices (its own check raises) and fetches no more."""
    import storage_service.service as service_module

    cfg = load_config(env={})
    cfg.home = str(tmp_path / "home")
    cfg.server.listen = "127.0.0.1:0"
    KeyAuthority.setup(cfg.authority_dir, passphrase=PASS)
    running = start_server(cfg, passphrase=PASS)
    try:
        core: Any = running.closers[0]
        core.assign_device(
            Caller("nurse-1", "Hosp1MSP", frozenset({"nurse"})),
            "p-9",
            "monitor-1",
            datetime.now(UTC) + timedelta(hours=1),
        )
        for i in range(12):
            core.put_record(
                Caller("monitor-1", "Hosp1MSP", frozenset({"device"})),
                patient_id="p-9",
                record_type="ecg",
                payload=b"%d" % i,
                policy=POLICY,
            )
        core.flush()
        slow = SlowStore(core.store, delay_s=0.4)
        monkeypatch.setattr(core, "store", slow)
        # two records per chunk: six chunks, 2.4 s of fetching if the server never stopped
        real_stream = service_module.verify_instance
        monkeypatch.setattr(
            service_module,
            "verify_instance",
            lambda *a, **kw: real_stream(*a, **{**kw, "chunk_records": 2}),
        )
        outcome: list[BaseException | None] = []
        real_verify = core.verify_records

        def observed(*a: Any, **kw: Any) -> Any:
            try:
                report = real_verify(*a, **kw)
            except BaseException as exc:
                outcome.append(exc)
                raise
            outcome.append(None)
            return report

        monkeypatch.setattr(core, "verify_records", observed)
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            st = storage_pb2_grpc.StorageServiceStub(ch)
            # the channel is connected first, so the deadline is spent on the server
            st.ListRecords(
                storage_pb2.ListRecordsRequest(patient_id="p-9", page_size=1), metadata=md("p-9")
            )
            code = code_of(
                lambda: st.VerifyRecords(
                    storage_pb2.VerifyRecordsRequest(all=True),
                    metadata=md("aud", "auditor"),
                    timeout=0.6,
                )
            )
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        deadline = time.monotonic() + 10
        while not outcome:
            assert time.monotonic() < deadline, "the server never finished the call"
            time.sleep(0.05)
        assert isinstance(outcome[0], DeadlineExceeded), outcome  # the server's own check
        assert 1 <= slow.fetches < 6  # it started, and stopped before the end
    finally:
        running.stop()


def test_every_storage_rpc_over_grpc(channel: grpc.Channel) -> None:
    abe = abe_pb2_grpc.AbeServiceStub(channel)
    st = storage_pb2_grpc.StorageServiceStub(channel)
    patient, device = "p-31", md("monitor-2", "device")
    me, doctor, auditor = md(patient, "patient"), md("dr-31", "doctor"), md("aud-1", "auditor")
    doctor_of_other_org = (*md("dr-x", "doctor"), ("x-ehr-msp", "Hosp2MSP"))
    policy = f"role:doctor or patient:{patient}"
    # AssignDevice / ListAssignments: a nurse of the patient's organisation assigns
    # the device, with an expiry; the device writes only while it is assigned
    nurse = md("nurse-31", "nurse")
    assign = storage_pb2.AssignDeviceRequest(
        patient_id=patient,
        device_id="monitor-2",
        expires_at=_timestamp(datetime.now(UTC) + timedelta(hours=1)),
    )
    foreign = storage_pb2.AssignDeviceRequest()
    foreign.CopyFrom(assign)
    foreign.patient_id = f"Hosp1MSP/{patient}"  # a bare id would be the doctor's own org's
    assert code_of(lambda: st.AssignDevice(foreign, metadata=doctor_of_other_org)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert st.AssignDevice(assign, metadata=nurse).tx_id
    ids = [
        st.PutRecord(
            storage_pb2.PutRecordRequest(
                patient_id=patient,
                record_type="ecg",
                plain=storage_pb2.PlainContent(payload=b"hr=%d" % i, policy=policy),
            ),
            metadata=device,
        ).record_id
        for i in range(3)
    ]
    # ListRecords: paged, in write order; a stranger may not list
    page = st.ListRecords(
        storage_pb2.ListRecordsRequest(patient_id=patient, page_size=2), metadata=me
    )
    assert [r.record_id for r in page.records] == ids[:2] and page.next_page_token
    rest = st.ListRecords(
        storage_pb2.ListRecordsRequest(
            patient_id=patient, page_size=2, page_token=page.next_page_token
        ),
        metadata=me,
    )
    assert [r.record_id for r in rest.records] == ids[2:] and not rest.next_page_token
    assert (
        code_of(
            lambda: st.ListRecords(
                storage_pb2.ListRecordsRequest(patient_id=patient), metadata=doctor
            )
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )
    # GetReceipt: pending, then anchored with a proof after FlushAnchors
    receipt = st.GetReceipt(storage_pb2.GetReceiptRequest(record_id=ids[0]), metadata=me)
    assert receipt.status == storage_pb2.ANCHOR_STATUS_PENDING
    flushed = st.FlushAnchors(storage_pb2.FlushAnchorsRequest(), metadata=device)
    assert flushed.records >= 3 and flushed.batches >= 1
    receipt = st.GetReceipt(storage_pb2.GetReceiptRequest(record_id=ids[0]), metadata=me)
    assert receipt.status == storage_pb2.ANCHOR_STATUS_ANCHORED and receipt.tx_id
    assert (
        code_of(
            lambda: st.GetReceipt(storage_pb2.GetReceiptRequest(record_id="r-none"), metadata=me)
        )
        == grpc.StatusCode.NOT_FOUND
    )
    # GrantConsent / RevokeConsent: only the patient; they gate the doctor's read
    read = storage_pb2.GetRecordRequest(record_id=ids[1])
    # a record the caller may not read is NOT_FOUND, like one that does not exist
    assert code_of(lambda: st.GetRecord(read, metadata=doctor)) == grpc.StatusCode.NOT_FOUND
    assert (
        code_of(
            lambda: st.GrantConsent(
                storage_pb2.GrantConsentRequest(patient_id=patient, subject_id="dr-31"),
                metadata=doctor,
            )
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )
    granted = st.GrantConsent(
        storage_pb2.GrantConsentRequest(patient_id=patient, subject_id="dr-31"), metadata=me
    )
    assert granted.tx_id
    assert st.GetRecord(read, metadata=doctor).metadata.record_id == ids[1]
    revoked = st.RevokeConsent(
        storage_pb2.RevokeConsentRequest(patient_id=patient, subject_id="dr-31"), metadata=me
    )
    assert revoked.tx_id and revoked.tx_id != granted.tx_id
    assert code_of(lambda: st.GetRecord(read, metadata=doctor)) == grpc.StatusCode.NOT_FOUND
    # GetAuditTrail: the consent changes and the doctor's access, for auditors only
    st.FlushAnchors(storage_pb2.FlushAnchorsRequest(), metadata=device)  # access events too
    trail = st.GetAuditTrail(storage_pb2.GetAuditTrailRequest(record_id=ids[1]), metadata=auditor)
    kinds = {(e.kind, e.subject_id) for e in trail.events}
    dr = "Hosp1MSP/dr-31"  # ids come back organisation-qualified
    assert {("consent-grant", dr), ("consent-revoke", dr), ("access", dr)} <= kinds
    assert (
        code_of(
            lambda: st.GetAuditTrail(
                storage_pb2.GetAuditTrailRequest(record_id=ids[1]), metadata=doctor
            )
        )
        == grpc.StatusCode.NOT_FOUND
    )
    assert (
        code_of(lambda: st.GetAuditTrail(storage_pb2.GetAuditTrailRequest(), metadata=auditor))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    # VerifyRecords: the patient's records pass; the whole store needs an auditor
    report = st.VerifyRecords(storage_pb2.VerifyRecordsRequest(patient_id=patient), metadata=me)
    assert (report.checked, report.passed, list(report.failed_record_ids)) == (3, 3, [])
    assert (
        code_of(lambda: st.VerifyRecords(storage_pb2.VerifyRecordsRequest(all=True), metadata=me))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    # ListAssignments / UnassignDevice: the history, then the device is refused
    changes = st.ListAssignments(
        storage_pb2.ListAssignmentsRequest(patient_id=patient), metadata=nurse
    ).changes
    assert [(c.device_id, c.assigned, c.by) for c in changes] == [
        ("Hosp1MSP/monitor-2", True, "Hosp1MSP/nurse-31")
    ]
    assert st.UnassignDevice(
        storage_pb2.UnassignDeviceRequest(patient_id=patient, device_id="monitor-2"),
        metadata=nurse,
    ).tx_id
    assert (
        code_of(
            lambda: st.PutRecord(
                storage_pb2.PutRecordRequest(
                    patient_id=patient,
                    record_type="ecg",
                    plain=storage_pb2.PlainContent(payload=b"late", policy=policy),
                ),
                metadata=device,
            )
        )
        == grpc.StatusCode.PERMISSION_DENIED
    )
    # Encrypt (AbeService): a new policy per call; the envelope opens for a matching key
    key = abe.IssueUserKey(
        abe_pb2.IssueUserKeyRequest(subject_id=patient, attributes=[f"patient:{patient}"]),
        metadata=md("ka", "authority"),
    )
    ring = AbeKeyring.from_bytes(key.user_key)
    enc = abe.Encrypt(
        abe_pb2.EncryptRequest(
            policy=f"patient:{patient} OR role:ward-7", plaintext=b"note", context=b"c-1"
        ),
        metadata=device,
    )
    assert enc.policy_normal_form == f"patient:{patient} or role:ward-7"
    assert ring.decrypt(enc.envelope, b"c-1") == b"note"
    assert (
        code_of(
            lambda: abe.Encrypt(
                abe_pb2.EncryptRequest(policy="a and", plaintext=b"x"), metadata=device
            )
        )
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (  # AbeService answers authenticated callers only
        code_of(lambda: abe.Encrypt(abe_pb2.EncryptRequest(policy="a", plaintext=b"x")))
        == grpc.StatusCode.UNAUTHENTICATED
    )


#: every RPC and the test(s) above that call it over gRPC
COVERED = {
    "ehr_abe.api.v1.AbeService": {
        "GetPublicParams",
        "IssueUserKey",
        "Encrypt",
        "CheckPolicy",
        "EvaluatePolicy",
    },
    "ehr_abe.api.v1.StorageService": {
        "PutRecord",
        "GetRecord",
        "ListRecords",
        "GetReceipt",
        "VerifyRecords",
        "GrantConsent",
        "RevokeConsent",
        "GetAuditTrail",
        "FlushAnchors",
        "AssignDevice",
        "UnassignDevice",
        "ListAssignments",
        "GetServiceKey",  # test_signed_pending_receipt_and_data_loss_over_grpc
        "GetAnchoringStatus",  # (same)
        "WriteSegments",
        "FetchSegments",
    },
}


def test_segment_stream_rpcs_over_grpc(channel: grpc.Channel) -> None:
    """WriteSegments (client stream) and FetchSegments (server stream), errors mapped."""
    from abe_service.envelope import AbeEncryptor
    from abe_service.segments import SegmentHeader, new_window_key, seal_segment, window_context
    from ehr_abe.records import fetch_request, open_items

    abe = abe_pb2_grpc.AbeServiceStub(channel)
    st = storage_pb2_grpc.StorageServiceStub(channel)
    patient, edge = "p-41", md("edge-1", "edge-gateway")
    # the edge relays only for a device assigned to the patient
    st.AssignDevice(
        storage_pb2.AssignDeviceRequest(
            patient_id=patient,
            device_id="hr-1",
            expires_at=_timestamp(datetime.now(UTC) + timedelta(hours=1)),
        ),
        metadata=md("nurse-41", "nurse"),
    )
    pp = abe.GetPublicParams(abe_pb2.GetPublicParamsRequest()).public_params
    key = new_window_key()
    envelope = AbeEncryptor.from_public_params(pp).encrypt(
        f"patient:{patient}", key, window_context(patient, "hr-1", "hr-1.w")
    )
    window = storage_pb2.SegmentWrite(
        window=storage_pb2.WindowKey(
            window_id="hr-1.w", patient_id=patient, device_id="hr-1", envelope=envelope
        )
    )

    @functools.cache  # sealing draws a fresh nonce: a resend must carry the same bytes
    def segment(first: int) -> storage_pb2.SegmentWrite:
        h = SegmentHeader("hr-1.w", patient, "hr-1", "heart-rate", first, first, 5, 5, 1)
        return storage_pb2.SegmentWrite(
            segment=storage_pb2.Segment(
                idempotency_key=f"hr-1/{first}",
                record_type="segment.heart-rate",
                sealed=seal_segment(key, h, b'{"resourceType":"Observation"}\n'),
            )
        )

    resp = st.WriteSegments(iter([window, segment(0), segment(1)]), metadata=edge)
    assert [r.key for r in resp.receipts] == ["hr-1.w", "hr-1/0", "hr-1/1"]
    assert not any(r.duplicate for r in resp.receipts)

    def batch(*firsts: int, own: int | None = None) -> storage_pb2.SegmentWrite:
        msg = storage_pb2.SegmentWrite(
            items=[storage_pb2.SegmentItem(segment=segment(f).segment) for f in firsts]
        )
        if own is not None:
            msg.segment.CopyFrom(segment(own).segment)
        return msg

    # many items per message (what the edge sends): a message's own item, then its
    # batch, then the next message, answered in that order; a resend is a duplicate
    resp = st.WriteSegments(iter([batch(3, 4, 1, own=2), segment(5)]), metadata=edge)
    assert [(r.key, r.duplicate) for r in resp.receipts] == [
        ("hr-1/2", False),
        ("hr-1/3", False),
        ("hr-1/4", False),
        ("hr-1/1", True),
        ("hr-1/5", False),
    ]
    # an empty item inside a batch refuses the call: nothing of it is stored
    hollow = batch(6)
    hollow.items.add()
    assert (
        code_of(lambda: st.WriteSegments(iter([hollow]), metadata=edge))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    # the item bound counts items, however they are packed into messages
    from storage_service.service import MAX_STREAM_ITEMS

    crowd = storage_pb2.SegmentWrite(items=[batch(6).items[0]] * (MAX_STREAM_ITEMS + 1))
    assert (
        code_of(lambda: st.WriteSegments(iter([crowd]), metadata=edge))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    # a batch over 2 MiB is refused unparsed (a million 2-byte empty items would be a
    # million objects); one large item in a message of its own is taken
    from storage_service.servicer import BATCH_MESSAGE_MAX_BYTES

    empties = storage_pb2.SegmentWrite(
        items=[storage_pb2.SegmentItem()] * (BATCH_MESSAGE_MAX_BYTES // 2 + 1)
    )
    assert empties.ByteSize() > BATCH_MESSAGE_MAX_BYTES
    with pytest.raises(grpc.RpcError) as refused:
        st.WriteSegments(iter([empties]), metadata=edge)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "more than one item" in (refused.value.details() or "")
    h = SegmentHeader("hr-1.w", patient, "hr-1", "heart-rate", 9, 9, 5, 5, 1)
    body = b'{"resourceType":"Observation","note":"' + b"x" * (3 << 20) + b'"}\n'
    large = storage_pb2.SegmentWrite(
        segment=storage_pb2.Segment(
            idempotency_key="hr-1/9",
            record_type="segment.heart-rate",
            sealed=seal_segment(key, h, body),
        )
    )
    assert large.ByteSize() > BATCH_MESSAGE_MAX_BYTES
    resp = st.WriteSegments(iter([large]), metadata=edge)
    assert [(r.key, r.duplicate) for r in resp.receipts] == [("hr-1/9", False)]
    for bad, code in (
        (
            [
                storage_pb2.SegmentWrite(
                    segment=storage_pb2.Segment(
                        idempotency_key="x", record_type="segment.x", sealed=b"junk"
                    )
                )
            ],
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        ([segment(7)], grpc.StatusCode.PERMISSION_DENIED),  # hr-2 sends hr-1's segment
        ([window], grpc.StatusCode.PERMISSION_DENIED),  # a device writing for another device
    ):
        caller = edge if code == grpc.StatusCode.INVALID_ARGUMENT else md("hr-2", "device")
        assert code_of(lambda b=bad, c=caller: st.WriteSegments(iter(b), metadata=c)) == code
    me = md(patient, "patient")
    ring = AbeKeyring.from_bytes(
        abe.IssueUserKey(
            abe_pb2.IssueUserKeyRequest(subject_id=patient, attributes=[f"patient:{patient}"]),
            metadata=md("ka", "authority"),
        ).user_key
    )
    segs = list(
        open_items(st.FetchSegments(fetch_request(patient, None, None), metadata=me), ring, patient)
    )
    assert [s.first_seq for s in segs] == [0, 1, 2, 3, 4, 5, 9]  # not hr-1/6 (refused)
    assert [s.observations for s in segs[:6]] == [[{"resourceType": "Observation"}]] * 6
    assert len(segs[6].observations[0]["note"]) == 3 << 20
    stranger = st.FetchSegments(fetch_request(patient, None, None), metadata=md("dr-x", "doctor"))
    assert code_of(lambda: list(stranger)) == grpc.StatusCode.PERMISSION_DENIED


def test_reflection_lists_and_describes_every_service_and_method(channel: grpc.Channel) -> None:
    """A reflection client (what grpcurl does) finds both services and every method,
    and the API has no RPC that the tests in this file do not call."""
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)

    def ask(**kw: Any) -> Any:
        return next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**kw)])))

    listed = {s.name for s in ask(list_services="").list_services_response.service}
    assert set(COVERED) | {"grpc.health.v1.Health"} <= listed
    for service in listed:
        resp = ask(file_containing_symbol=service)
        assert not resp.HasField("error_response"), (service, resp.error_response)
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in resp.file_descriptor_response.file_descriptor_proto
        ]
        methods = {
            f"{f.package}.{svc.name}": {m.name: m for m in svc.method}
            for f in files
            for svc in f.service
        }
        assert methods.get(service), f"{service} not described"
        if service in COVERED:
            assert set(methods[service]) == COVERED[service], service
            for name, method in methods[service].items():
                # describing a method means resolving its request and response types
                for type_name in (method.input_type, method.output_type):
                    found = ask(file_containing_symbol=type_name.lstrip("."))
                    assert not found.HasField("error_response"), (service, name, type_name)
    # the generated descriptors agree with what the server advertises
    for module in (abe_pb2, storage_pb2):
        for svc in module.DESCRIPTOR.services_by_name.values():
            assert {m.name for m in svc.methods} == COVERED[svc.full_name]


def test_mutual_tls_identifies_callers_from_certificates(tmp_path: Path) -> None:
    ca_pem, ca_key_pem = self_signed_ca()
    server_pem, server_key = mint_tls_server_cert(
        ca_pem, ca_key_pem, "localhost", ["localhost", "127.0.0.1"]
    )
    for name, data in {
        "ca.pem": ca_pem,
        "server.pem": server_pem,
        "server.key": server_key,
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
        authority_cert, authority_key = mint_client_identity(
            ca_pem, ca_key_pem, "key-authority", ["authority"]
        )
        doctor_cert, doctor_key = mint_client_identity(ca_pem, ca_key_pem, "dr-a", ["doctor"])
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
        metadata=md("nurse-9", "nurse"),
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
