"""Adversarial tests of IoMT ingestion, by attack class: device payloads and topics,
the edge across restarts and configuration changes, and WriteSegments / FetchSegments
callers sending the most expensive or inconsistent input.

The edge runs in-process here (no broker: `Gateway.submit` is what its MQTT callback
calls) against a real StorageCore (filesystem store, embedded ledger); the gRPC
limits run against a real server. Broker behaviour (ACLs, redelivery, outages) is
covered with real Mosquitto and MinIO in tests/test_iomt_mqtt.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from abe_service.authority import KeyAuthority
from abe_service.envelope import AbeEncryptor
from abe_service.segments import SegmentHeader, new_window_key, seal_segment, window_context
from edge.config import Device, EdgeConfig
from edge.fhir import observations, reading_belongs, to_ndjson, validate
from edge.gateway import Gateway, _retryable
from edge.readings import (
    DEVICE_TYPES,
    ECG_MAX_SAMPLES,
    ECG_SAMPLE_LIMIT_UV,
    MAX_AGE_MS,
    MAX_READING_BYTES,
    MAX_SEQ,
    MAX_SKEW_MS,
    Reason,
    Rejected,
    check_sequence,
    parse_reading,
)
from edge.spool import OutboxItem
from ehr_abe.server import RPC_THREADS
from ehr_common.api.v1 import storage_pb2 as pb
from ehr_common.errors import (
    AccessDenied,
    AlreadyExists,
    DeadlineExceeded,
    EhrAbeError,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from ehr_common.identity import qualify
from storage_service.anchoring import AnchorPolicy
from storage_service.index import RecordIndex
from storage_service.keys import ServiceKeys
from storage_service.ledger.base import Caller
from storage_service.ledger.client import LedgerClient
from storage_service.ledger.embedded import EmbeddedLedger
from storage_service.objectstore.fs import FilesystemStore
from storage_service.service import SegmentItem, StorageCore, WindowItem
from storage_service.stream_slots import StreamSlots
from storage_service.wiring import SERVICE_ROLES, SERVICE_SUBJECT
from tests.iomt_helpers import Storage, md

NOW = 1_780_000_000_000
KEYS = ServiceKeys.derive(b"red team edge storage secret")
EDGE = Caller("edge-gateway", "Hosp1MSP", frozenset({"edge-gateway"}))
HR = {"seq": 1, "t": NOW, "hr": 64}


def _hr(**over: object) -> bytes:
    return json.dumps({**HR, **over}).encode()


def _refused(payload: bytes, device_type: str = "heart-rate") -> Reason:
    with pytest.raises(Rejected) as exc:
        parse_reading("hr-1", device_type, payload, NOW)
    return exc.value.reason


# -- device payloads (pure) ----------------------------------------------------------------
@pytest.mark.parametrize(
    "payload",
    [
        b"[" * (MAX_READING_BYTES - 1),  # nesting: was a RecursionError that stopped the edge
        b'{"a":' * 3000 + b"1" + b"}" * 3000,
        b'{"seq":1,"t":1780000000000,"hr":' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"seq":1,"t":1780000000000,"hr":64,"hr":250}',  # duplicate keys: which one counts?
        b'{"seq":1,"seq":1,"t":1780000000000,"hr":64}',
        b'{"seq":1,"t":1780000000000,"hr":NaN}',
        b'{"seq":1,"t":1780000000000,"hr":Infinity}',
        b'{"seq":1,"t":1780000000000,"hr":-Infinity}',
        b'{"seq":1,"t":1780000000000,"hr":' + b"9" * 5000 + b"}",  # over int's digit limit
        b'{"seq":1,"t":1780000000000,"hr":64}\xff',  # not UTF-8
        b"\xfe\xff\x00{",
        b"",
        b"null",
        b'"64"',
        b"[1,2,3]",
        _hr()[:-1] + b" " * (MAX_READING_BYTES + 1 - len(_hr())) + b"}",  # one byte over
    ],
)
def test_json_bombs_are_malformed_not_crashes(payload: bytes) -> None:
    assert _refused(payload) == Reason.MALFORMED


def test_a_reading_just_under_the_size_bound_is_fine() -> None:
    padded = _hr()[:-1] + b" " * (MAX_READING_BYTES - len(_hr())) + b"}"
    assert len(padded) == MAX_READING_BYTES
    assert parse_reading("hr-1", "heart-rate", padded, NOW).values == {"hr": 64.0}


def test_huge_floats_are_out_of_range() -> None:
    assert _refused(_hr(hr=1e308)) == Reason.OUT_OF_RANGE
    assert _refused(b'{"seq":1,"t":1780000000000,"hr":1e999}') == Reason.OUT_OF_RANGE


@pytest.mark.parametrize(
    ("seq", "reason"),
    [
        (-1, Reason.MALFORMED),
        (MAX_SEQ, Reason.MALFORMED),
        (2**64, Reason.MALFORMED),
        (1.0, Reason.MALFORMED),
        (True, Reason.MALFORMED),
        ("1", Reason.MALFORMED),
        (None, Reason.MALFORMED),
    ],
)
def test_sequence_numbers_out_of_their_domain(seq: object, reason: Reason) -> None:
    assert _refused(_hr(seq=seq)) == reason


def test_sequence_wrap_and_reboot_are_replays() -> None:
    """A device that wraps or restarts its counter is refused (counted as replayed):
    the edge cannot tell a reboot from a replay. A design limit: see the README."""
    parse_reading("hr-1", "heart-rate", _hr(seq=MAX_SEQ - 1), NOW)
    check_sequence(MAX_SEQ - 2, MAX_SEQ - 1)
    for last, seq in ((MAX_SEQ - 1, 0), (1000, 1), (5, 5)):
        with pytest.raises(Rejected) as exc:
            check_sequence(last, seq)
        assert exc.value.reason == Reason.REPLAYED


@pytest.mark.parametrize(
    ("t", "ok"),
    [
        (NOW + MAX_SKEW_MS, True),
        (NOW + MAX_SKEW_MS + 1, False),
        (NOW - MAX_AGE_MS, True),
        (NOW - MAX_AGE_MS - 1, False),
        (0, False),
        (-1, False),
        (2**63, False),
        (10**30, False),
    ],
)
def test_timestamps_at_and_past_the_bounds(t: int, ok: bool) -> None:
    if ok:
        parse_reading("hr-1", "heart-rate", _hr(t=t), NOW)
    else:
        assert _refused(_hr(t=t)) == Reason.OUT_OF_RANGE


def test_wrong_device_type_claims() -> None:
    assert _refused(_hr(type="ecg")) == Reason.WRONG_TYPE
    assert _refused(_hr(type=["heart-rate"])) == Reason.WRONG_TYPE
    assert _refused(_hr(), device_type="infusion-pump") == Reason.WRONG_TYPE
    # an ECG block from a heart-rate monitor, a heart rate from an ECG
    assert _refused(_hr(samples=[1, 2])) == Reason.MALFORMED
    assert _refused(_hr(), device_type="ecg") == Reason.MALFORMED


# -- FHIR at the bounds (pure) ---------------------------------------------------------------
def _bound_readings() -> Iterator[tuple[str, dict[str, object]]]:
    for device_type, fields in DEVICE_TYPES.items():
        for pick in ("low", "high"):
            body: dict[str, object] = {f.name: getattr(f, pick) for f in fields}
            if device_type == "bp-cuff":  # systolic must exceed diastolic
                body.update(sys=300 if pick == "high" else 41, dia=20 if pick == "low" else 200)
            if device_type == "ecg":
                body["fs"] = int(body["fs"])  # type: ignore[call-overload]
                body["samples"] = [ECG_SAMPLE_LIMIT_UV, -ECG_SAMPLE_LIMIT_UV, 0]
            yield device_type, body


@pytest.mark.parametrize(("device_type", "body"), list(_bound_readings()))
def test_values_at_the_physiological_bounds_are_valid_fhir(
    device_type: str, body: dict[str, object]
) -> None:
    r = parse_reading("d-1", device_type, json.dumps({"seq": 1, "t": NOW, **body}).encode(), NOW)
    for obs in observations(r, "p-1"):
        validate(obs)
        for q in [obs.get("valueQuantity")] + [
            c["valueQuantity"] for c in obs.get("component", [])
        ]:
            if q is not None:  # UCUM units with a code, values exactly as measured
                assert q["system"] == "http://unitsofmeasure.org" and q["code"]
                assert float(q["value"]) in {
                    float(v) for v in body.values() if not isinstance(v, list)
                }


@pytest.mark.parametrize(
    ("n", "ok"), [(0, False), (1, True), (ECG_MAX_SAMPLES, True), (ECG_MAX_SAMPLES + 1, False)]
)
def test_ecg_sample_counts(n: int, ok: bool) -> None:
    payload = json.dumps({"seq": 1, "t": NOW, "fs": 2000, "samples": [7] * n}).encode()
    if not ok:
        assert _refused(payload, "ecg") == Reason.MALFORMED
        return
    r = parse_reading("e-1", "ecg", payload, NOW)
    (obs,) = observations(r, "p-1")
    validate(obs)
    data = obs["valueSampledData"]
    assert len(data["data"].split()) == n and data["dimensions"] == 1
    assert data["period"] == 0.5 and data["origin"]["code"] == "uV"


def test_a_spooled_body_knows_its_patient_and_type() -> None:
    r = parse_reading("hr-1", "heart-rate", _hr(), NOW)
    body = to_ndjson(r, "p-1")
    assert reading_belongs(body, "heart-rate", "p-1")
    assert not reading_belongs(body, "heart-rate", "p-2")
    assert not reading_belongs(body, "ecg", "p-1")
    assert not reading_belongs(b"\xff garbage", "heart-rate", "p-1")


# -- the edge, in-process against a real StorageCore -------------------------------------------
@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> KeyAuthority:
    return KeyAuthority.setup(tmp_path_factory.mktemp("auth"), passphrase=b"red team edge pass")


@pytest.fixture
def core(tmp_path: Path, authority: KeyAuthority) -> Iterator[StorageCore]:
    from abe_service.client import LocalEncryptor

    service = Caller(SERVICE_SUBJECT, "Hosp1MSP", SERVICE_ROLES)
    c = StorageCore(
        store=FilesystemStore(tmp_path / "objects"),
        index=RecordIndex(tmp_path / "index.sqlite", mac_key=KEYS.mac_key),
        ledger=LedgerClient(EmbeddedLedger(tmp_path / "ledger.sqlite"), service),
        encryptor=LocalEncryptor(authority.public_params),
        service_caller=service,
        keys=KEYS,
        anchor_policy=AnchorPolicy(max_records=1000, max_age_s=3600),
    )
    # the edge relays only for devices a clinician of the patient's organisation assigned
    nurse = Caller("nurse-1", "Hosp1MSP", frozenset({"nurse"}))
    until = datetime.now(UTC) + timedelta(hours=1)
    for device, patient in (("hr-1", "p-1"), ("hr-1", "p-2"), ("hr-2", "p-1"), ("hr-2", "p-2")):
        c.assign_device(nurse, patient, device, until)
    yield c
    c.close()


class CoreSink:
    """The edge's SegmentSink straight into a StorageCore (what GrpcSegmentSink sends);
    `fail` makes the next calls raise, as a service or network fault would."""

    def __init__(self, core: StorageCore):
        self.core = core
        self.fail: list[EhrAbeError] = []
        self.calls = 0

    def write(self, items: list[OutboxItem]) -> list[bool]:
        self.calls += 1
        if self.fail:
            raise self.fail.pop(0)
        msgs: list[WindowItem | SegmentItem] = [
            WindowItem(i.key, i.patient_id, i.device_id, i.payload)
            if i.kind == "window"
            else SegmentItem(i.key, i.record_type, i.payload)
            for i in items
        ]
        return [r.duplicate for r in self.core.write_segments(EDGE, msgs)]


def _cfg(tmp: Path, authority: KeyAuthority, devices: dict[str, Device], **kw: Any) -> EdgeConfig:
    params = tmp / "public_params.bin"
    params.write_bytes(authority.public_params)
    cfg = EdgeConfig(spool_dir=tmp / "spool", public_params=params, devices=devices)
    cfg.segment_max_age_s = 0.2
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def _clock() -> int:
    return NOW


def _gateway(cfg: EdgeConfig, sink: CoreSink) -> Gateway:
    gw = Gateway(cfg, sink, clock_ms=_clock)
    gw.start_workers()
    return gw


def _send(gw: Gateway, device: str, seqs: range | list[int], mid: int = 0) -> None:
    for i, s in enumerate(seqs):
        gw.submit(mid + i, 1, f"devices/{device}/readings", _hr(seq=s))


def _stored_seqs(core: StorageCore, patient: str) -> list[int]:
    """Every sequence number stored for the patient, once per segment that holds it."""
    out: list[int] = []
    for row in core.index.segments(qualify(patient, "Hosp1MSP", "patient"), 0, 2**62, 100_000):
        out.extend(range(row.first_seq, row.last_seq + 1))
    return sorted(out)


def test_poison_messages_and_bad_topics_never_stop_the_edge(
    tmp_path: Path, authority: KeyAuthority, core: StorageCore
) -> None:
    cfg = _cfg(tmp_path, authority, {"hr-1": Device("heart-rate", "p-1")})
    gw = _gateway(cfg, CoreSink(core))
    try:
        hostile = [
            ("devices/hr-1/readings", b"[" * 16000),
            ("devices/hr-1/readings", b'{"seq":1,"t":1780000000000,"hr":64,"hr":250}'),
            ("devices/hr-2/readings", _hr(seq=1)),  # not configured
            ("devices/edge-gateway/readings", _hr(seq=1)),  # the edge's own name
            ("devices/hr-1/readings/extra", _hr(seq=1)),
            ("devices/hr-1", _hr(seq=1)),
            ("devices/+/readings", _hr(seq=1)),
            ("devices/#", _hr(seq=1)),
            ("devices/hr-1\u202e/readings", _hr(seq=1)),
            ("devices/" + "x" * 65_000 + "/readings", _hr(seq=1)),
            ("", b""),
        ]
        for mid, (topic, payload) in enumerate(hostile):
            gw.submit(mid, 1, topic, payload)
        _send(gw, "hr-1", [1, 2], mid=100)
        assert gw.drain(10), gw.snapshot()
        snap = gw.snapshot()
        assert not gw.fatal
        assert snap["acked"] == len(hostile) + 2  # refusals are acknowledged, not redelivered
        assert snap["accepted"] == 2 and sum(snap["rejected"].values()) == len(hostile)
        assert _stored_seqs(core, "p-1") == [1, 2]
    finally:
        gw.stop()


def test_an_unexpected_error_on_one_message_is_counted_not_fatal(
    tmp_path: Path,
    authority: KeyAuthority,
    core: StorageCore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import edge.gateway as gateway

    real = gateway.parse_reading

    def flaky(device_id: str, device_type: str, payload: bytes, now_ms: int) -> Any:
        if b"boom" in payload:
            raise MemoryError("a parser bug")
        return real(device_id, device_type, payload, now_ms)

    monkeypatch.setattr(gateway, "parse_reading", flaky)
    gw = _gateway(_cfg(tmp_path, authority, {"hr-1": Device("heart-rate", "p-1")}), CoreSink(core))
    try:
        gw.submit(0, 1, "devices/hr-1/readings", b"boom")
        _send(gw, "hr-1", [1], mid=1)
        assert gw.drain(10)
        assert not gw.fatal and gw.snapshot()["rejected"] == {"malformed": 1}
        assert _stored_seqs(core, "p-1") == [1]
    finally:
        gw.stop()


def test_replays_and_redeliveries_across_a_restart_land_once(
    tmp_path: Path, authority: KeyAuthority, core: StorageCore
) -> None:
    cfg = _cfg(tmp_path, authority, {"hr-1": Device("heart-rate", "p-1")})
    gw = _gateway(cfg, CoreSink(core))
    _send(gw, "hr-1", range(1, 6))
    _send(gw, "hr-1", [3, 5, 2])  # replays in the same run
    assert gw.drain(10)
    gw.stop()
    gw = _gateway(cfg, CoreSink(core))  # a restart: the broker redelivers what it had
    try:
        _send(gw, "hr-1", [*range(1, 6), 0, 6, 6, 7])
        assert gw.drain(10)
        assert gw.snapshot()["rejected"] == {"replayed": 7}
        assert _stored_seqs(core, "p-1") == list(range(1, 8))
    finally:
        gw.stop()


def test_a_silent_device_still_gets_its_segment_closed_by_age(
    tmp_path: Path, authority: KeyAuthority, core: StorageCore
) -> None:
    devices = {"hr-1": Device("heart-rate", "p-1"), "hr-2": Device("heart-rate", "p-2")}
    gw = _gateway(_cfg(tmp_path, authority, devices, segment_max_age_s=0.3), CoreSink(core))
    try:
        _send(gw, "hr-2", [1])  # then silence
        # meanwhile another device floods
        deadline = time.monotonic() + 5
        seq = 0
        while not _stored_seqs(core, "p-2") and time.monotonic() < deadline:
            seq += 1
            _send(gw, "hr-1", range(seq * 50, seq * 50 + 50), mid=seq * 50)
            time.sleep(0.02)
        assert _stored_seqs(core, "p-2") == [1]
    finally:
        gw.stop()


def test_segments_close_by_age_count_and_size_without_scanning_every_device(
    tmp_path: Path, authority: KeyAuthority, core: StorageCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer finds due segments from its age queue and the devices it just fed:
    under a fake clock and random traffic over 40 devices, no open segment outlives
    segment_max_age_s past a seal, none reaches the count, and every accepted reading
    ends in exactly one segment."""
    import random

    import edge.gateway as gateway_module

    now = [1000.0]
    monkeypatch.setattr(gateway_module.time, "monotonic", lambda: now[0])
    devices = {f"hr-{i}": Device("heart-rate", f"p-{i % 7}") for i in range(40)}
    cfg = _cfg(tmp_path, authority, devices, segment_max_age_s=1.0, segment_max_readings=6)
    gw = Gateway(cfg, CoreSink(core), clock_ms=_clock)  # no threads: driven by hand
    rng = random.Random(7)
    seqs = dict.fromkeys(devices, 0)
    accepted: dict[str, list[int]] = {d: [] for d in devices}
    try:
        for step in range(300):
            batch = []
            for d in rng.sample(sorted(devices), rng.randint(0, 4)):
                for _ in range(rng.randint(1, 4)):
                    seqs[d] += 1
                    accepted[d].append(seqs[d])
                    batch.append((step, 1, f"devices/{d}/readings", _hr(seq=seqs[d])))
            if batch:
                gw._write_batch(batch)
            now[0] += rng.choice([0.0, 0.05, 0.3, 0.9, 1.5])
            gw._seal_due(force=False)
            for o in gw._open.values():
                assert now[0] - o.since < cfg.segment_max_age_s
                assert 0 < len(o.readings) < cfg.segment_max_readings
        gw._seal_due(force=True)
        assert not gw._open
        sealed: dict[str, list[int]] = {d: [] for d in devices}
        for item in gw.spool.outbox(100_000, 1 << 40):
            if item.kind == "segment":
                device, _, span = item.key.rpartition("/")
                first, last = (int(x) for x in span.split("-"))
                assert last - first + 1 == item.readings <= cfg.segment_max_readings
                sealed[device].extend(range(first, last + 1))
        assert sealed == accepted
    finally:
        gw.spool.close()


def test_readings_restored_after_a_restart_are_sealed_by_count_at_once(
    tmp_path: Path, authority: KeyAuthority, core: StorageCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readings spooled before a restart re-enter the scheduler as just fed: a device
    whose restored readings already fill segments has them sealed on the first pass,
    not after segment_max_age_s."""
    import edge.gateway as gateway_module

    monkeypatch.setattr(gateway_module.time, "monotonic", lambda: 1000.0)  # no ageing
    devices = {"hr-1": Device("heart-rate", "p-1")}
    before = Gateway(
        _cfg(tmp_path, authority, devices, segment_max_age_s=60.0, segment_max_readings=100),
        CoreSink(core),
        clock_ms=_clock,
    )
    before._write_batch([(i, 1, "devices/hr-1/readings", _hr(seq=i)) for i in range(1, 11)])
    before.spool.close()
    cfg = _cfg(tmp_path, authority, devices, segment_max_age_s=60.0, segment_max_readings=4)
    after = Gateway(cfg, CoreSink(core), clock_ms=_clock)
    try:
        after._seal_due(force=False)
        assert [len(o.readings) for o in after._open.values()] == [2]  # 4 + 4 sealed
        keys = [i.key for i in after.spool.outbox(100, 1 << 30) if i.kind == "segment"]
        assert keys == ["hr-1/1-4", "hr-1/5-8"]
    finally:
        after.spool.close()


def test_windows_opened_ahead_keep_encapsulation_off_the_reading_path(
    tmp_path: Path, authority: KeyAuthority, core: StorageCore
) -> None:
    """Windows are opened before the first reading and renewed ahead of their end;
    the writer encapsulates only when none is ready (or it no longer fits)."""
    devices = {"hr-1": Device("heart-rate", "p-1"), "hr-2": Device("heart-rate", "p-2")}
    cfg = _cfg(tmp_path, authority, devices, window_s=3.0)
    gw = Gateway(cfg, CoreSink(core), clock_ms=_clock)
    encapsulations: list[str] = []
    real = gw.encryptor

    class Counting:
        def encrypt(self, policy: str, plaintext: bytes, context: bytes) -> bytes:
            encapsulations.append(threading.current_thread().name)
            return real.encrypt(policy, plaintext, context)

    gw.encryptor = Counting()  # type: ignore[assignment]
    assert gw.open_windows_ahead() == 2 and gw.open_windows_ahead() == 0
    # their window records are queued at once, before any reading
    assert [i.kind for i in gw.spool.outbox(10, 10**6)] == ["window", "window"]
    gw.start_workers()
    try:
        _send(gw, "hr-1", [1, 2])
        _send(gw, "hr-2", [1], mid=10)
        deadline = time.monotonic() + 10
        while (not _stored_seqs(core, "p-1") or not _stored_seqs(core, "p-2")) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert _stored_seqs(core, "p-1") == [1, 2] and _stored_seqs(core, "p-2") == [1]
        assert "edge-writer" not in encapsulations and len(encapsulations) == 2
        # near the window's end the next one is opened ahead (lead: a tenth, at least 1 s)
        time.sleep(2.1)
        assert gw.open_windows_ahead() == 2
        time.sleep(1.0)  # the first windows have ended: the ready ones take over
        _send(gw, "hr-1", [3], mid=20)
        deadline = time.monotonic() + 10
        while _stored_seqs(core, "p-1") != [1, 2, 3] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _stored_seqs(core, "p-1") == [1, 2, 3]
        assert "edge-writer" not in encapsulations and len(encapsulations) == 4
        assert gw.stats.windows_opened == 3  # hr-1 twice, hr-2 once
        # a window made for another patient is never used: the writer makes a fresh one
        gw.cfg.devices["hr-2"] = Device("heart-rate", "p-1")
        gw._ready["hr-2"] = gw._new_window("hr-2", Device("heart-rate", "p-2"))
        gw._windows.pop("hr-2")
        _send(gw, "hr-2", [2], mid=30)
        deadline = time.monotonic() + 10
        while len(_stored_seqs(core, "p-1")) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _stored_seqs(core, "p-1") == [1, 2, 2, 3]  # hr-1's 1-3 and hr-2's 2
        assert encapsulations.count("edge-writer") == 1
    finally:
        gw.stop()


def test_spooled_readings_of_a_reconfigured_device_are_kept_not_misfiled(
    tmp_path: Path, authority: KeyAuthority, core: StorageCore
) -> None:
    """Readings spooled for p-1, then the device is moved to p-2 (or removed) before they
    were sealed: before, the restart sealed them under p-2 (another patient's policy) or
    crashed on a removed device; now they wait in the spool, counted, until the
    configuration says what it said when they were accepted."""
    cfg = _cfg(tmp_path, authority, {"hr-1": Device("heart-rate", "p-1")}, segment_max_age_s=3600)
    gw = _gateway(cfg, CoreSink(core))
    _send(gw, "hr-1", [1, 2])
    deadline = time.monotonic() + 5
    while gw.snapshot()["spooled_readings"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    gw._stop.set()  # a crash before the segment closed: nothing sealed, both spooled
    gw.stop()
    for devices in ({"hr-1": Device("heart-rate", "p-2")}, {}, {"hr-1": Device("ecg", "p-1")}):
        moved = _cfg(tmp_path, authority, devices, segment_max_age_s=0.1)
        gw = _gateway(moved, CoreSink(core))
        try:
            time.sleep(0.3)
            snap = gw.snapshot()
            assert not gw.fatal and snap["orphaned_readings"] == 2
            assert snap["spooled_readings"] == 2 and snap["outbox_items"] == 0
        finally:
            gw.stop()
        assert _stored_seqs(core, "p-2") == [] == _stored_seqs(core, "p-1")
    cfg.segment_max_age_s = 0.1  # the configuration restored: they go out
    gw = _gateway(cfg, CoreSink(core))
    try:
        assert gw.drain(10)
        assert _stored_seqs(core, "p-1") == [1, 2]
    finally:
        gw.stop()


@pytest.mark.parametrize(
    "fault",
    [
        Unavailable("down"),
        DeadlineExceeded("slow"),
        EhrAbeError("CANCELLED"),  # a server restart cancels calls in flight
        EhrAbeError("internal error in WriteSegments; see server log"),
        Unauthenticated("certificate expired"),
        ResourceExhausted("edge-gateway already has 4 streams open"),
    ],
)
def test_faults_that_say_nothing_of_the_items_are_retried_not_buried(
    tmp_path: Path, authority: KeyAuthority, core: StorageCore, fault: EhrAbeError
) -> None:
    sink = CoreSink(core)
    sink.fail = [fault] * 3
    gw = _gateway(_cfg(tmp_path, authority, {"hr-1": Device("heart-rate", "p-1")}), sink)
    try:
        _send(gw, "hr-1", range(1, 4))
        assert gw.drain(20)
        snap = gw.snapshot()
        assert snap["dead_items"] == 0 and snap["delivered_readings"] == 3
        assert _stored_seqs(core, "p-1") == [1, 2, 3]
    finally:
        gw.stop()


def test_a_busy_service_is_not_reported_as_down(
    tmp_path: Path,
    authority: KeyAuthority,
    core: StorageCore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At its stream cap the service refuses a stream at once: retried, but neither
    logged nor counted as an outage (operators and `--stats` would chase one)."""
    sink = CoreSink(core)
    sink.fail = [ResourceExhausted("edge-gateway already has 4 streams open")] * 3
    gw = _gateway(_cfg(tmp_path, authority, {"hr-1": Device("heart-rate", "p-1")}), sink)
    seen_down: list[bool] = []
    try:
        with caplog.at_level("WARNING", logger="edge.gateway"):
            _send(gw, "hr-1", range(1, 4))
            deadline = time.monotonic() + 20
            while gw.snapshot()["delivered_readings"] < 3:
                seen_down.append(not gw.snapshot()["storage_up"])
                assert time.monotonic() < deadline
                time.sleep(0.01)
        assert not any(seen_down)
        assert "StorageService busy" in caplog.text and "unavailable" not in caplog.text
        assert _stored_seqs(core, "p-1") == [1, 2, 3]
    finally:
        gw.stop()


def test_which_errors_bury() -> None:
    for refusal in (InvalidArgument("x"), AlreadyExists("x"), FailedPrecondition("x")):
        assert not _retryable(refusal)
    assert not _retryable(AccessDenied("x"))


# -- WriteSegments / FetchSegments callers --------------------------------------------------------
def _window(
    authority: KeyAuthority, wid: str, patient: str, device: str
) -> tuple[WindowItem, bytes]:
    key = new_window_key()
    env = AbeEncryptor.from_public_params(authority.public_params).encrypt(
        "role:nurse", key, window_context(patient, device, wid)
    )
    return WindowItem(wid, patient, device, env), key


def _seg(key: bytes, wid: str, patient: str, device: str, first: int, t: int = NOW) -> SegmentItem:
    h = SegmentHeader(wid, patient, device, "heart-rate", first, first, t, t, 1)
    return SegmentItem(
        f"{device}/{first}-{first}", "segment.heart-rate", seal_segment(key, h, b"x")
    )


def test_window_id_reused_with_another_key_is_refused(
    core: StorageCore, authority: KeyAuthority
) -> None:
    w, _ = _window(authority, "hr-1.w", "p-1", "hr-1")
    core.write_segments(EDGE, [w])
    assert core.write_segments(EDGE, [w])[0].duplicate
    other, _ = _window(authority, "hr-1.w", "p-1", "hr-1")
    with pytest.raises(AlreadyExists):  # before: "duplicate", the new key silently dropped
        core.write_segments(EDGE, [other])
    with pytest.raises(InvalidArgument):  # the same window id claimed for another device
        core.write_segments(EDGE, [WindowItem("hr-1.w", "p-1", "hr-2", w.envelope)])


def test_segments_naming_another_devices_or_a_missing_window(
    core: StorageCore, authority: KeyAuthority
) -> None:
    w1, k1 = _window(authority, "hr-1.w", "p-1", "hr-1")
    core.write_segments(EDGE, [w1, _seg(k1, "hr-1.w", "p-1", "hr-1", 1)])
    with pytest.raises(InvalidArgument):  # hr-2's segment pointing at hr-1's window
        core.write_segments(EDGE, [_seg(k1, "hr-1.w", "p-1", "hr-2", 1)])
    with pytest.raises((InvalidArgument, AccessDenied)):  # another patient under hr-1's window
        core.write_segments(EDGE, [_seg(k1, "hr-1.w", "p-9", "hr-1", 2)])
    with pytest.raises(FailedPrecondition):
        core.write_segments(EDGE, [_seg(k1, "nowhere", "p-1", "hr-1", 3)])
    # a device may not write for another device, even through its own window
    dev = Caller("hr-2", "Hosp1MSP", frozenset({"device"}))
    with pytest.raises(AccessDenied):
        core.write_segments(dev, [_seg(k1, "hr-1.w", "p-1", "hr-1", 4)])
    # window records live in the caller's own namespace: another edge cannot use hr-1.w
    other_edge = Caller("edge-2", "Hosp1MSP", frozenset({"edge-gateway"}))
    with pytest.raises(FailedPrecondition):
        core.write_segments(other_edge, [_seg(k1, "hr-1.w", "p-1", "hr-1", 5)])


def test_segments_stamped_far_ahead_or_spanning_years_are_refused(
    core: StorageCore, authority: KeyAuthority
) -> None:
    w, k = _window(authority, "hr-1.w", "p-1", "hr-1")
    now = int(time.time() * 1000)
    ahead = _seg(k, "hr-1.w", "p-1", "hr-1", 1, now + 2 * 24 * 3600 * 1000)
    with pytest.raises(InvalidArgument, match="future"):
        core.write_segments(EDGE, [w, ahead])
    h = SegmentHeader("hr-1.w", "p-1", "hr-1", "heart-rate", 2, 3, 0, now, 2)
    wide = SegmentItem("hr-1/2-3", "segment.heart-rate", seal_segment(k, h, b"x"))
    with pytest.raises(InvalidArgument, match="spans"):
        core.write_segments(EDGE, [w, wide])
    # a day old, a minute ahead: fine
    old = _seg(k, "hr-1.w", "p-1", "hr-1", 4, now - 24 * 3600 * 1000)
    core.write_segments(EDGE, [w, old, _seg(k, "hr-1.w", "p-1", "hr-1", 5, now + 60_000)])


@pytest.mark.parametrize("payload", [b"[" * 100_000, b"\xff\xfe", b"{not json}\n"])
def test_a_well_sealed_payload_that_is_not_ndjson_is_a_clear_error_for_the_reader(
    core: StorageCore, authority: KeyAuthority, payload: bytes
) -> None:
    """A device may write its own segments: sealed correctly, but garbage inside. The
    reader gets a DecodeError, not a RecursionError or UnicodeDecodeError."""
    from abe_service.client import AbeKeyring
    from ehr_abe.records import open_items
    from ehr_common.errors import DecodeError
    from storage_service.servicer import meta_to_pb, receipt_to_pb

    device = Caller("hr-1", "Hosp1MSP", frozenset({"device"}))
    w, k = _window(authority, "hr-1.w", "p-1", "hr-1")
    h = SegmentHeader("hr-1.w", "p-1", "hr-1", "heart-rate", 1, 1, NOW, NOW, 1)
    bad = SegmentItem("hr-1/1-1", "segment.heart-rate", seal_segment(k, h, payload))
    core.write_segments(device, [w, bad])
    patient = Caller("p-1", "Hosp1MSP", frozenset({"patient"}))
    items = (
        pb.FetchedItem(
            envelope=env,
            metadata=meta_to_pb(meta),
            receipt=receipt_to_pb(receipt),
            window_record_id=wrid,
        )
        for env, meta, receipt, wrid in core.fetch_segments(patient, "p-1", 0, 2**62, 0)
    )
    keyring = AbeKeyring.from_bytes(authority.issue_key("p-1", ["role:nurse"]).user_key)
    with pytest.raises(DecodeError, match="NDJSON"):
        list(open_items(items, keyring, "p-1"))


def test_one_key_twice_in_one_stream_with_other_content(
    core: StorageCore, authority: KeyAuthority
) -> None:
    """Two segments under one idempotency key in the same call, different bytes: the
    call is refused, never "stored" for both with one silently dropped; afterwards
    exactly one of the two contents can ever be stored under that key."""
    w, k = _window(authority, "hr-1.w", "p-1", "hr-1")
    core.write_segments(EDGE, [w])
    for first in range(1, 9):  # the two object writes race: every order must refuse
        a = _seg(k, "hr-1.w", "p-1", "hr-1", first)
        b = _seg(k, "hr-1.w", "p-1", "hr-1", first)  # same header and key, fresh nonce
        assert a.sealed != b.sealed
        with pytest.raises(AlreadyExists):
            core.write_segments(EDGE, [a, b])
        landed = 0
        for item in (a, b):
            try:
                core.write_segments(EDGE, [item])
                landed += 1
            except AlreadyExists:
                pass
        assert landed == 1


def test_a_concurrent_call_with_other_content_under_one_key_is_refused_not_dropped(
    core: StorageCore, authority: KeyAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two calls race with one key and different bytes: both pass the "stored before?"
    check, the commit decides, and the loser is told, never answered "stored"."""
    w, k = _window(authority, "hr-1.w", "p-1", "hr-1")
    core.write_segments(EDGE, [w])
    a = _seg(k, "hr-1.w", "p-1", "hr-1", 1)
    b = _seg(k, "hr-1.w", "p-1", "hr-1", 1)  # same key, other bytes
    (stored,) = core.write_segments(EDGE, [a])
    real_get, raced = core.index.get, []

    def get(record_id: str) -> Any:
        if record_id == stored.record_id and not raced:
            raced.append(record_id)
            return None  # b's check ran before a's commit
        return real_get(record_id)

    monkeypatch.setattr(core.index, "get", get)
    with pytest.raises(AlreadyExists, match="concurrent call"):
        core.write_segments(EDGE, [b])
    assert raced
    row = real_get(stored.record_id)
    assert row is not None and row.meta.content_sha256 == hashlib.sha256(a.sealed).digest()


def test_put_record_cannot_take_a_stream_record_id(
    core: StorageCore, authority: KeyAuthority
) -> None:
    w, _ = _window(authority, "hr-1.w", "p-1", "hr-1")
    for key in ("window/hr-1.w", "segment/hr-1/1-1"):
        with pytest.raises(InvalidArgument, match="reserved"):
            core.put_record(
                EDGE,
                patient_id="p-1",
                record_type="window-key",
                envelope=w.envelope,
                idempotency_key=key,
            )


def test_fetch_time_ranges(core: StorageCore, authority: KeyAuthority) -> None:
    w, k = _window(authority, "hr-1.w", "p-1", "hr-1")
    core.write_segments(
        EDGE,
        [w, _seg(k, "hr-1.w", "p-1", "hr-1", 1), _seg(k, "hr-1.w", "p-1", "hr-1", 2, NOW + 10)],
    )
    core.flush()
    patient = Caller("p-1", "Hosp1MSP", frozenset({"patient"}))

    def fetch(since: int, until: int, limit: int = 0) -> int:
        return sum(1 for _ in core.fetch_segments(patient, "p-1", since, until, limit)) - 1

    assert fetch(0, 2**62) == 2
    assert fetch(0, 2**200) == 2  # "no end": before, an OverflowError from SQLite
    assert fetch(NOW + 1, NOW + 5) == -1  # nothing in between (no window either)
    assert fetch(0, 2**62, limit=1) == 1
    for since, until in ((NOW + 1, NOW), (-1, NOW), (2**70, 2**71)):
        with pytest.raises(InvalidArgument):
            fetch(since, until)
    with pytest.raises(InvalidArgument):
        fetch(0, 2**62, limit=10**6)


def test_write_segments_over_grpc_bounds_a_stream_that_never_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import storage_service.servicer as servicer

    monkeypatch.setattr(servicer, "MAX_STREAM_SECONDS", 0.5)
    storage = Storage.create(tmp_path / "svc", None)
    try:
        stub = storage.stub()
        hold = threading.Event()

        def forever() -> Iterator[pb.SegmentWrite]:
            hold.wait(30)  # a client that opens the stream and sends nothing
            yield from ()

        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as exc:
            stub.WriteSegments(forever(), timeout=20, metadata=md("edge-gateway", "edge-gateway"))
        hold.set()
        assert time.monotonic() - started < 10
        assert exc.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)

        # empty messages count for nothing against the item bound: refused outright
        empties = (pb.SegmentWrite() for _ in range(3))
        with pytest.raises(grpc.RpcError) as exc:
            stub.WriteSegments(empties, timeout=10, metadata=md("edge-gateway", "edge-gateway"))
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        # the service still answers; a normal call is not cut off
        resp = stub.WriteSegments(iter(()), timeout=10, metadata=md("edge-gateway", "edge-gateway"))
        assert list(resp.receipts) == []
        bad = pb.FetchSegmentsRequest(patient_id="p-1")
        bad.since.FromMilliseconds(NOW + 1)
        bad.until.FromMilliseconds(NOW)
        with pytest.raises(grpc.RpcError) as exc:
            list(stub.FetchSegments(bad, timeout=10, metadata=md("p-1", "patient")))
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        storage.stop()


def test_one_caller_cannot_hold_the_servers_rpc_threads_with_open_streams(
    tmp_path: Path,
) -> None:
    """Streams that stay open (an upload that never ends, a reader that never reads)
    each hold an RPC thread: one caller gets a few, all callers half the threads,
    and unary calls always find one."""
    import storage_service.servicer as servicer

    storage = Storage.create(tmp_path / "svc", None)
    release = threading.Event()
    calls: list[Any] = []
    try:
        stub = storage.stub()

        def held() -> Iterator[pb.SegmentWrite]:
            release.wait(60)
            yield from ()

        def open_stream(subject: str) -> Any:
            call = stub.WriteSegments.future(
                held(), timeout=60, metadata=md(subject, "edge-gateway")
            )
            calls.append(call)
            return call

        per_caller = servicer.MAX_STREAMS_PER_CALLER
        greedy = [open_stream("greedy-edge") for _ in range(per_caller)]
        ended: list[str] = []  # held calls that ended early, and how (for the report)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the server takes the slots as calls arrive
            for i, call in enumerate(greedy):
                if call.done():  # a held call must not end; if one did, say so, hold again
                    ended.append(f"{call.code()}: {call.details()}")
                    greedy[i] = open_stream("greedy-edge")
            if refused := _empty_stream(stub, "greedy-edge"):
                assert f"at most {per_caller} per caller" in refused
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"a fifth open stream of one caller was accepted; ended: {ended}")
        if ended:
            warnings.warn(f"held WriteSegments calls ended early: {ended}", stacklevel=1)
        # one share for both streaming calls: a fetch is refused alike
        with pytest.raises(grpc.RpcError) as exc:
            list(
                stub.FetchSegments(
                    pb.FetchSegmentsRequest(patient_id="p-1"),
                    timeout=10,
                    metadata=md("greedy-edge", "edge-gateway"),
                )
            )
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # another caller is not refused for the first one's streams...
        assert _empty_stream(stub, "edge-2") == ""
        # ...until all callers together hold half the server's threads
        total = RPC_THREADS // 2
        for i in range(2, total // per_caller + 1):  # the greedy edge is the first
            for _ in range(per_caller):
                open_stream(f"edge-{i}")
        deadline = time.monotonic() + 10
        while "its limit" not in (refused_details := _empty_stream(stub, "edge-late")):
            assert time.monotonic() < deadline, refused_details
            time.sleep(0.05)
        # unary calls still find a thread
        with pytest.raises(grpc.RpcError) as exc:
            stub.GetRecord(
                pb.GetRecordRequest(record_id="r-none"), timeout=10, metadata=md("p-1", "patient")
            )
        assert exc.value.code() != grpc.StatusCode.RESOURCE_EXHAUSTED
        # streams that end give their slots back: the greedy caller may open its
        # full share again
        release.set()
        for call in calls:
            with contextlib.suppress(grpc.RpcError):
                call.result(timeout=30)
        release.clear()
        calls.clear()
        for _ in range(per_caller - 1):
            open_stream("greedy-edge")
        assert _empty_stream(stub, "greedy-edge") == ""
    finally:
        release.set()
        storage.stop()


def _empty_stream(stub: Any, subject: str) -> str:
    """An empty WriteSegments as `subject`: "" when taken (no receipts), else the
    RESOURCE_EXHAUSTED refusal's details."""
    try:
        resp = stub.WriteSegments(iter(()), timeout=10, metadata=md(subject, "edge-gateway"))
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
        return exc.details() or "RESOURCE_EXHAUSTED"
    assert list(resp.receipts) == []
    return ""


def test_stream_slots_count_per_caller_and_in_total() -> None:
    slots = StreamSlots(per_caller=2, total=3)
    with contextlib.ExitStack() as stack:
        stack.enter_context(slots.hold("a", "X"))
        stack.enter_context(slots.hold("a", "X"))
        with pytest.raises(ResourceExhausted, match="at most 2 per caller"):
            stack.enter_context(slots.hold("a", "X"))
        assert slots.held("a") == 2  # a refusal takes nothing
        stack.enter_context(slots.hold("b", "X"))
        with pytest.raises(ResourceExhausted, match="its limit"):
            stack.enter_context(slots.hold("c", "X"))
        assert slots.held("c") == 0
    assert (slots.held("a"), slots.held("b")) == (0, 0)
    with pytest.raises(RuntimeError), slots.hold("a", "X"):
        raise RuntimeError("the stream failed")
    assert slots.held("a") == 0  # given back on failure too
    with pytest.raises(InvalidArgument):
        StreamSlots(per_caller=3, total=2)


def test_a_full_spool_holds_acknowledgements_and_loses_nothing(
    tmp_path: Path, authority: KeyAuthority, core: StorageCore
) -> None:
    """StorageService down until the 1 MiB spool is full: the edge stops acknowledging
    (the broker keeps the rest), says so, and once the service is back every reading
    lands exactly once and every message is acknowledged, in order."""
    sink = CoreSink(core)
    sink.fail = [Unavailable("down")] * 10**6
    cfg = _cfg(tmp_path, authority, {"hr-1": Device("heart-rate", "p-1")}, spool_max_mb=1)
    gw = _gateway(cfg, sink)
    acked: list[int] = []
    gw.ack = lambda mid, qos: acked.append(mid)
    n = 4000  # ~2.4 MB of Observations: more than twice the spool, in batches of 2000
    try:
        _send(gw, "hr-1", range(1, n + 1))
        deadline = time.monotonic() + 10
        while not gw.stats.spool_full and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gw.stats.spool_full and len(acked) < n
        # the bound is on accepted readings; sealing while held adds its small overhead
        # (a window envelope, each segment's header and tag)
        assert gw.spool.used_bytes <= cfg.spool_max_mb * 1024 * 1024 + 16 * 1024
        sink.fail = []
        assert gw.drain(60), gw.snapshot()
        assert acked == list(range(n)) and not gw.stats.spool_full
        assert _stored_seqs(core, "p-1") == list(range(1, n + 1))
    finally:
        gw.stop()


def test_edge_config_refuses_a_spool_of_nothing_and_a_device_named_as_the_edge(
    tmp_path: Path, authority: KeyAuthority
) -> None:
    import storage_service.servicer as servicer
    from ehr_common.errors import ConfigError

    with pytest.raises(ConfigError, match="spool_max_mb"):
        _cfg(tmp_path, authority, {}, spool_max_mb=0).check()
    with pytest.raises(ConfigError, match="own subject"):
        _cfg(tmp_path, authority, {"edge-gateway": Device("heart-rate", "p-1")}).check()
    # more streams than the StorageService lets one caller hold would be refused
    with pytest.raises(ConfigError, match="send_streams"):
        _cfg(tmp_path, authority, {}, send_streams=servicer.MAX_STREAMS_PER_CALLER + 1).check()
    _cfg(tmp_path, authority, {}, send_streams=servicer.MAX_STREAMS_PER_CALLER).check()


# -- through the real broker --------------------------------------------------------------------
@pytest.mark.mqtt
def test_oversized_and_misaddressed_publishes_through_mosquitto(
    tmp_path: Path, authority: KeyAuthority, core: StorageCore, mqtt_connection: Path
) -> None:
    """Just under the broker's packet limit: delivered, refused by the edge (16 KiB);
    over it: the broker drops the device's connection, nothing reaches the edge; topics
    outside the device's own and very long levels: refused by the ACL or never
    subscribed. The edge goes on, and the device's next readings land once."""
    from tests.iomt_helpers import mqtt_device, tag, with_mqtt, write_identity

    t = tag()
    dev_id, patient = f"hr-{t}", f"p-{t}"
    core.assign_device(
        Caller("nurse-1", "Hosp1MSP", frozenset({"nurse"})),
        patient,
        dev_id,
        datetime.now(UTC) + timedelta(hours=1),
    )
    cfg = with_mqtt(
        _cfg(tmp_path, authority, {dev_id: Device("heart-rate", patient)}),
        mqtt_connection,
        tmp_path / "certs",
    )
    gw = Gateway(cfg, CoreSink(core))  # the broker's own clock: real time
    gw.start()
    cert, key = write_identity(mqtt_connection, dev_id, ["device"], tmp_path / "certs")
    topic = f"devices/{dev_id}/readings"

    def reading(seq: int) -> bytes:
        return _hr(seq=seq, t=int(time.time() * 1000))

    dev = mqtt_device(mqtt_connection, cert.read_bytes(), key.read_bytes(), dev_id)
    try:
        assert dev.publish(topic, reading(1)) == 0
        conf = (mqtt_connection.parent / "mosquitto.conf").read_text().split()
        limit = int(conf[conf.index("max_packet_size") + 1])  # the running broker's own
        under = reading(2)[:-1] + b" " * (limit - 1024) + b"}"
        assert dev.publish(topic, under) == 0  # the broker takes it; the edge refuses it
        # allowed by the ACL, subscribed by nobody (16: no matching subscribers)
        assert dev.publish(f"devices/{dev_id}/readings/" + "x" * 60_000, reading(3)) in (0, 16)
        assert dev.publish("$SYS/broker/uptime", reading(3)) == 135
        assert dev.publish(f"devices/{dev_id}x/readings", reading(3)) == 135
        assert dev.publish(f"devices/{dev_id}/../{dev_id}x/readings", reading(3)) in (0, 16)
        over = reading(3)[:-1] + b" " * (limit + 1024) + b"}"
        info = dev.client.publish(topic, over, qos=1)
        deadline = time.monotonic() + 5  # refused by paho, or the broker disconnects
        while info.rc == 0 and dev.client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        dev.close()
    dev = mqtt_device(mqtt_connection, cert.read_bytes(), key.read_bytes(), dev_id)
    try:
        assert dev.publish(topic, reading(4)) == 0
        deadline = time.monotonic() + 15
        while _stored_seqs(core, patient) != [1, 4] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _stored_seqs(core, patient) == [1, 4]
        assert not gw.fatal and gw.stats.rejected.get("malformed", 0) >= 1
    finally:
        dev.close()
        gw.stop()


@pytest.mark.parametrize(
    "body",
    [
        '[edge]\nspool_dir = "s"\npublic_params = "p"\nwindow_s = "abc"\n',
        '[edge]\nspool_dir = "s"\npublic_params = "p"\nwindow_s = nan\n',
        '[edge]\nspool_dir = "s"\npublic_params = "p"\nsegment_max_age_s = inf\n',
        '[edge]\nspool_dir = "s"\npublic_params = "p"\n[mqtt]\nport = "x"\n',
        '[edge]\nspool_dir = "s"\npublic_params = "p"\n[mqtt]\nconnection = "nowhere.json"\n',
        '[edge]\nspool_dir = "s"\npublic_params = "p"\n[devices]\nd1 = "str"\n',
        "edge = 1\n",
    ],
)
def test_a_bad_edge_toml_is_a_config_error(tmp_path: Path, body: str) -> None:
    """Before: ValueError, TypeError, FileNotFoundError ("internal error") from the CLI,
    and window_s = nan accepted (a new CP-ABE window for every segment)."""
    from edge.config import load_edge_config
    from ehr_common.errors import ConfigError

    (tmp_path / "edge.toml").write_text(body)
    with pytest.raises(ConfigError):
        load_edge_config(tmp_path / "edge.toml")


def test_missing_public_parameters_are_a_config_error(tmp_path: Path, core: StorageCore) -> None:
    from ehr_common.errors import ConfigError

    cfg = EdgeConfig(spool_dir=tmp_path / "spool", public_params=tmp_path / "nope.bin")
    with pytest.raises(ConfigError, match="public parameters"):
        Gateway(cfg, CoreSink(core))


def test_the_write_segments_parser_never_expands_a_large_batch() -> None:
    """Over BATCH_MESSAGE_MAX_BYTES a message is parsed as one item; a batch (or
    anything else) riding along is refused without being turned into objects."""
    from storage_service.servicer import (
        BATCH_MESSAGE_MAX_BYTES,
        OversizedBatch,
        parse_segment_write,
    )

    seg = pb.Segment(idempotency_key="k", record_type="segment.ecg", sealed=b"s" * 100)
    small = pb.SegmentWrite(segment=seg, items=[pb.SegmentItem(segment=seg)] * 3)
    parsed = parse_segment_write(small.SerializeToString())
    assert isinstance(parsed, pb.SegmentWrite) and len(parsed.items) == 3

    big = pb.Segment(idempotency_key="k", record_type="segment.ecg", sealed=b"s" * 3_000_000)
    alone = pb.SegmentWrite(segment=big).SerializeToString()
    assert len(alone) > BATCH_MESSAGE_MAX_BYTES
    one = parse_segment_write(alone)
    assert isinstance(one, pb.SegmentItem) and one.segment == big
    window = pb.SegmentWrite(window=pb.WindowKey(window_id="w", envelope=b"e" * 3_000_000))
    assert isinstance(parse_segment_write(window.SerializeToString()), pb.SegmentItem)

    for extra in (
        pb.SegmentWrite(items=[pb.SegmentItem()]).SerializeToString(),  # a batch
        b"\x1a\x00" * 10,  # ten empty items
        b"\x48\x01",  # field 9, unknown to both
    ):
        assert parse_segment_write(alone + extra) == OversizedBatch(len(alone) + len(extra))
    # a large message of empty items only; at the bound itself, still a batch (which the
    # servicer then refuses by its item count)
    assert isinstance(parse_segment_write(b"\x1a\x00" * (BATCH_MESSAGE_MAX_BYTES)), OversizedBatch)
    at_bound = parse_segment_write(b"\x1a\x00" * (BATCH_MESSAGE_MAX_BYTES // 2))
    assert isinstance(at_bound, pb.SegmentWrite) and len(at_bound.items) == 1 << 20
    assert isinstance(
        parse_segment_write(b"\x1a\x00" * (BATCH_MESSAGE_MAX_BYTES // 2) + b"\x48\x01"),
        OversizedBatch,
    )


def test_the_edge_sends_a_large_segment_alone_and_small_ones_batched(tmp_path: Path) -> None:
    """The edge's sink packs items into messages of at most 64 items and 1 MiB, and
    a segment larger than that goes as its message's own item (a batch that large
    would be refused): all of them stored, in order, over real gRPC."""
    from edge.gateway import GrpcSegmentSink
    from tests.iomt_helpers import assign_devices

    storage = Storage.create(tmp_path / "svc", None)
    try:
        assign_devices(storage, {"hr-7": Device("heart-rate", "p-7")})
        key = new_window_key()
        params = storage.public_params.read_bytes()
        envelope = AbeEncryptor.from_public_params(params).encrypt(
            "patient:p-7", key, window_context("p-7", "hr-7", "hr-7.w")
        )
        items = [OutboxItem(0, "window", "hr-7.w", "window-key", "p-7", "hr-7", envelope, 0, 0)]
        sizes = [100] * 70 + [3 << 20] + [100] * 5
        for seq, size in enumerate(sizes):
            h = SegmentHeader("hr-7.w", "p-7", "hr-7", "heart-rate", seq, seq, NOW, NOW, 1)
            sealed = seal_segment(key, h, b'{"n":"' + b"x" * size + b'"}\n')
            items.append(
                OutboxItem(
                    0, "segment", f"hr-7/{seq}", "segment.heart-rate", "p-7", "hr-7", sealed, 1, 0
                )
            )
        sink = GrpcSegmentSink(storage.endpoint, subject="edge-7")
        try:
            assert sink.write(items) == [False] * len(items)
            assert sink.write(items[70:73]) == [True] * 3  # a resend: duplicates
        finally:
            sink.close()
    finally:
        storage.stop()
