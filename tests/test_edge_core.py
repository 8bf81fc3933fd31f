"""The edge's pure core and the storage side of segment streams, without engines:
reading validation, FHIR mapping, sealed segments, the spool, WriteSegments rules
and group commit."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abe_service.authority import KeyAuthority
from abe_service.client import AbeKeyring
from abe_service.envelope import AbeEncryptor
from abe_service.segments import (
    SegmentHeader,
    new_window_key,
    open_segment,
    parse_segment,
    seal_segment,
    window_context,
)
from edge.fhir import observations, to_ndjson, validate
from edge.readings import (
    DEVICE_TYPES,
    Reading,
    Reason,
    Rejected,
    check_sequence,
    parse_reading,
)
from edge.spool import OutboxItem, Spool, SpooledReading
from ehr_common.errors import (
    AccessDenied,
    AlreadyExists,
    DecodeError,
    FailedPrecondition,
    IntegrityError,
    InvalidArgument,
)
from storage_service.anchoring import AnchorPolicy
from storage_service.authorization import FACT_ASSIGNMENT
from storage_service.index import RecordIndex
from storage_service.keys import ServiceKeys
from storage_service.ledger.base import Caller
from storage_service.ledger.client import LedgerClient
from storage_service.ledger.embedded import EmbeddedLedger
from storage_service.objectstore.fs import FilesystemStore
from storage_service.service import SegmentItem, StorageCore, WindowItem
from storage_service.wiring import SERVICE_ROLES, SERVICE_SUBJECT

NOW = 1_780_000_000_000
GOOD = {
    "pulse-oximeter": {"spo2": 97, "hr": 72},
    "bp-cuff": {"sys": 120, "dia": 80, "hr": 70},
    "thermometer": {"temp_c": 37.2},
    "heart-rate": {"hr": 64},
    "ecg": {"fs": 250, "samples": [0, 120, -80, 1500]},
}
LOINC = {
    "pulse-oximeter": {"59408-5", "2708-6", "8867-4"},
    "bp-cuff": {"85354-9", "8480-6", "8462-4", "8867-4"},
    "thermometer": {"8310-5"},
    "heart-rate": {"8867-4"},
    "ecg": {"131328"},
}


def _payload(device_type: str, **over: object) -> bytes:
    return json.dumps({"seq": 5, "t": NOW, **GOOD[device_type], **over}).encode()


# -- readings ----------------------------------------------------------------------------
@pytest.mark.parametrize("device_type", sorted(GOOD))
def test_each_device_type_maps_to_valid_fhir_with_its_codes(device_type: str) -> None:
    r = parse_reading("d-1", device_type, _payload(device_type), NOW)
    obs = observations(r, "p-17")
    codes = set()
    for o in obs:
        validate(o)
        codes |= {c["code"] for c in o["code"]["coding"]}
        codes |= {c["code"] for comp in o.get("component", []) for c in comp["code"]["coding"]}
        assert o["subject"] == {"reference": "Patient/p-17"}
    assert codes == LOINC[device_type]
    lines = to_ndjson(r, "p-17").decode().splitlines()
    assert len(lines) == len(obs)


@pytest.mark.parametrize(
    ("device_type", "over", "reason"),
    [
        ("pulse-oximeter", {"spo2": 101}, Reason.OUT_OF_RANGE),
        ("pulse-oximeter", {"hr": float("nan")}, Reason.MALFORMED),  # NaN is not JSON
        ("pulse-oximeter", {"hr": "72"}, Reason.MALFORMED),
        ("pulse-oximeter", {"extra": 1}, Reason.MALFORMED),
        ("bp-cuff", {"sys": 80, "dia": 90}, Reason.OUT_OF_RANGE),
        ("thermometer", {"temp_c": 50}, Reason.OUT_OF_RANGE),
        ("ecg", {"samples": []}, Reason.MALFORMED),
        ("ecg", {"samples": [30_000]}, Reason.OUT_OF_RANGE),
        ("ecg", {"fs": 250.5}, Reason.MALFORMED),
        ("thermometer", {"t": NOW + 3_600_000}, Reason.OUT_OF_RANGE),
        ("thermometer", {"seq": -1}, Reason.MALFORMED),
        ("thermometer", {"type": "ecg"}, Reason.WRONG_TYPE),
    ],
)
def test_bad_readings_are_refused_with_their_reason(
    device_type: str, over: dict[str, object], reason: Reason
) -> None:
    try:
        payload = _payload(device_type, **over)
    except ValueError:
        payload = b"{bad"
    with pytest.raises(Rejected) as exc:
        parse_reading("d-1", device_type, payload.replace(b"NaN", b"nan"), NOW)
    assert exc.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(DEVICE_TYPES)),
    st.binary(max_size=300) | st.text(max_size=200).map(str.encode),
)
def test_any_payload_is_a_reading_or_a_counted_refusal(device_type: str, payload: bytes) -> None:
    try:
        r = parse_reading("d-1", device_type, payload, NOW)
    except Rejected:
        return
    for o in observations(r, "p-1"):
        validate(o)


def test_sequence_numbers_must_increase() -> None:
    check_sequence(None, 0)
    check_sequence(4, 5)
    for seq in (4, 3):
        with pytest.raises(Rejected) as exc:
            check_sequence(4, seq)
        assert exc.value.reason == Reason.REPLAYED


# -- sealed segments -----------------------------------------------------------------------
HEADER = SegmentHeader("w-1", "p-17", "ox-1", "pulse-oximeter", 10, 19, NOW, NOW + 900, 10)


def test_segment_round_trip_and_every_byte_is_authenticated() -> None:
    key = new_window_key()
    sealed = seal_segment(key, HEADER, b"readings")
    assert open_segment(key, sealed) == (HEADER, b"readings")
    with pytest.raises(IntegrityError):
        open_segment(new_window_key(), sealed)
    for i in range(len(sealed)):
        bad = bytearray(sealed)
        bad[i] ^= 0x01
        with pytest.raises((IntegrityError, DecodeError)):
            open_segment(key, bytes(bad))


def test_a_segment_cannot_be_moved_to_another_patient() -> None:
    from ehr_common.api.v1 import formats_pb2 as fpb

    key = new_window_key()
    msg = fpb.SegmentEnvelope()
    msg.ParseFromString(seal_segment(key, HEADER, b"x"))
    msg.patient_id = "p-99"
    with pytest.raises(IntegrityError):
        open_segment(key, msg.SerializeToString())


@pytest.mark.parametrize(
    "header",
    [
        SegmentHeader("w", "p", "d", "t", 5, 4, 0, 0, 1),
        SegmentHeader("w", "p", "d", "t", 0, 4, 0, 0, 6),
        SegmentHeader("w", "p", "d", "t", 0, 4, 5, 4, 1),
        SegmentHeader("", "p", "d", "t", 0, 0, 0, 0, 1),
    ],
)
def test_malformed_segment_headers_are_refused(header: SegmentHeader) -> None:
    with pytest.raises(InvalidArgument):
        seal_segment(new_window_key(), header, b"x")


def test_garbage_is_not_a_segment() -> None:
    for data in (b"", b"\x00" * 40, b"\xff" * 10):
        with pytest.raises(DecodeError):
            parse_segment(data)


# -- the spool ---------------------------------------------------------------------------------
def test_spool_survives_a_reopen_and_moves_readings_atomically(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, max_bytes=10_000)
    spool.accept([SpooledReading("d", s, NOW + s, b"r%d" % s) for s in range(5)])
    spool.close()
    spool = Spool(path, max_bytes=10_000)
    assert spool.last_seqs() == {"d": 4}
    assert [r.seq for r in spool.pending_readings()] == [0, 1, 2, 3, 4]
    item = OutboxItem(0, "segment", "d/0-2", "segment.x", "p", "d", b"sealed", 3, NOW)
    spool.add_outbox([item], [("d", 0, 2)])
    assert [r.seq for r in spool.pending_readings()] == [3, 4]
    out = spool.outbox(10, 1 << 20)
    assert [o.key for o in out] == ["d/0-2"]
    spool.delivered(out)
    assert spool.counts()["outbox_items"] == 0
    assert spool.has_room(10_000 - spool.used_bytes) and not spool.has_room(10_001)


# -- the storage side: WriteSegments ---------------------------------------------------------
EDGE = Caller("edge-gateway", "Hosp1MSP", frozenset({"edge-gateway"}))
DEVICE = Caller("ox-1", "Hosp1MSP", frozenset({"device"}))
NURSE = Caller("nurse-1", "Hosp1MSP", frozenset({"nurse"}))


KEYS = ServiceKeys.derive(b"edge core test storage secret")


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> KeyAuthority:
    return KeyAuthority.setup(tmp_path_factory.mktemp("auth"), passphrase=b"edge core test pass")


@pytest.fixture
def core(tmp_path: Path, authority: KeyAuthority) -> StorageCore:
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
    # a nurse assigns the oximeter to the patient: the edge relays only for it
    c.assign_device(NURSE, "p-17", "ox-1", datetime.now(UTC) + timedelta(hours=1))
    yield c
    c.close()


def _window(authority: KeyAuthority, window_id: str = "ox-1.w1") -> tuple[WindowItem, bytes]:
    key = new_window_key()
    env = AbeEncryptor.from_public_params(authority.public_params).encrypt(
        "role:nurse or patient:p-17", key, window_context("p-17", "ox-1", window_id)
    )
    return WindowItem(window_id, "p-17", "ox-1", env), key


def _segment(
    key: bytes, first: int, window_id: str = "ox-1.w1", payload: bytes = b"obs"
) -> SegmentItem:
    h = SegmentHeader(window_id, "p-17", "ox-1", "pulse-oximeter", first, first + 1, NOW, NOW, 2)
    return SegmentItem(
        f"ox-1/{first}-{first + 1}", "segment.pulse-oximeter", seal_segment(key, h, payload)
    )


def test_segments_are_stored_once_and_read_back(core: StorageCore, authority: KeyAuthority) -> None:
    window, key = _window(authority)
    items = [window, _segment(key, 0), _segment(key, 2)]
    first = core.write_segments(EDGE, items)
    assert [r.duplicate for r in first] == [False, False, False]
    again = core.write_segments(EDGE, items)  # a resend after a lost answer
    assert [r.duplicate for r in again] == [True, True, True]
    assert [r.record_id for r in again] == [r.record_id for r in first]
    core.flush()
    core.grant_consent(Caller("p-17", "Hosp1MSP", frozenset({"patient"})), "p-17", "nurse-1", None)
    fetched = list(core.fetch_segments(NURSE, "p-17", 0, 2**62, 0))
    assert [m.record_type for _, m, _, _ in fetched] == [
        "window-key",
        *["segment.pulse-oximeter"] * 2,
    ]
    assert all(r.anchored for _, _, r, _ in fetched)
    kr = AbeKeyring.from_bytes(authority.issue_key("nurse-1", ["role:nurse"]).user_key)
    wkey = kr.decrypt(fetched[0][0], window_context("p-17", "ox-1", "ox-1.w1"))
    assert open_segment(wkey, fetched[1][0])[1] == b"obs"


def test_a_stream_call_shares_one_pack_and_each_record_is_read_and_checked_alone(
    core: StorageCore, authority: KeyAuthority, tmp_path: Path
) -> None:
    import sqlite3

    window, key = _window(authority)
    items = [window, *(_segment(key, 2 * i, payload=bytes([65 + i]) * 50) for i in range(5))]
    ids = [r.record_id for r in core.write_segments(EDGE, items)]
    stored = list(core.store.list_keys("records/"))
    assert len(stored) == 1 and stored[0].startswith("records/pack-")  # one PUT, not six
    core.flush()
    core.grant_consent(Caller("p-17", "Hosp1MSP", frozenset({"patient"})), "p-17", "nurse-1", None)
    kr = AbeKeyring.from_bytes(authority.issue_key("nurse-1", ["role:nurse"]).user_key)
    fetched = list(core.fetch_segments(NURSE, "p-17", 0, 2**62, 0))
    wkey = kr.decrypt(fetched[0][0], window_context("p-17", "ox-1", "ox-1.w1"))
    assert [open_segment(wkey, d)[1] for d, *_ in fetched[1:]] == [
        bytes([65 + i]) * 50 for i in range(5)
    ]
    envelope, meta, _ = core.get_record(NURSE, ids[3])  # one record: a ranged read
    assert meta.record_id == ids[3] and open_segment(wkey, envelope)[1] == b"C" * 50
    assert core.verify_records(NURSE, patient_id="p-17").failed_record_ids == ()

    # a byte changed on disk inside one record's range fails that record alone
    ref = core.index.pack_refs([ids[3]])[ids[3]]
    path = tmp_path / "objects" / Path(*ref.key.split("/"))
    data = bytearray(path.read_bytes())
    data[ref.offset + 20] ^= 1
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    report = core.verify_records(NURSE, patient_id="p-17")
    assert report.failed_record_ids == (ids[3],)
    with pytest.raises(IntegrityError, match="does not match"):
        core.get_record(NURSE, ids[3])
    assert core.get_record(NURSE, ids[4])[1].record_id == ids[4]

    # a location altered in the index, to a key no store takes or past the object's
    # end: that record is missing or altered, never an error of another kind
    db = sqlite3.connect(tmp_path / "index.sqlite")
    with db:
        db.execute("UPDATE packed SET pack_key='../../etc/passwd' WHERE record_id=?", (ids[4],))
        db.execute("UPDATE packed SET pack_offset=1000000 WHERE record_id=?", (ids[5],))
        db.execute("UPDATE packed SET pack_offset=-5 WHERE record_id=?", (ids[2],))
    db.close()
    report = core.verify_records(NURSE, patient_id="p-17")
    assert sorted(report.failed_record_ids) == sorted([ids[2], ids[3], ids[4], ids[5]])
    for rid, why in ((ids[4], "missing"), (ids[5], "does not match"), (ids[2], "missing")):
        with pytest.raises(IntegrityError, match=why):
            core.get_record(NURSE, rid)


class _AnchorsWhileReading:
    """The store, with the anchorer anchoring everything pending while a read fetches
    objects: rows read before the fetch are then older than the ledger's anchors."""

    def __init__(self, core: StorageCore) -> None:
        self.inner, self.core = core.store, core

    def get_ranges(self, refs: Any) -> Any:
        refs = list(refs)
        self.core.flush()
        return self.inner.get_ranges(refs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_records_anchored_while_a_read_fetches_them_are_not_integrity_failures(
    core: StorageCore, authority: KeyAuthority
) -> None:
    window, key = _window(authority)
    ids = [r.record_id for r in core.write_segments(EDGE, [window, _segment(key, 0)])]
    core.grant_consent(Caller("p-17", "Hosp1MSP", frozenset({"patient"})), "p-17", "nurse-1", None)
    core.store = _AnchorsWhileReading(core)  # type: ignore[assignment]
    fetched = list(core.fetch_segments(NURSE, "p-17", 0, 2**62, 0))
    assert [m.record_id for _, m, _, _ in fetched] == ids
    assert all(r.anchored for _, _, r, _ in fetched)  # judged on the rows as they are now
    (later,) = core.write_segments(EDGE, [_window(authority, "ox-1.w2")[0]])
    assert core.get_record(NURSE, later.record_id)[2].anchored  # one record alike


def test_batches_anchored_while_verification_lists_the_ledger_are_not_failures(
    core: StorageCore,
    authority: KeyAuthority,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Verification lists the ledger's anchors, then reads the index: a batch anchored
    in between is one the index calls anchored and the first listing lacks. That is
    the anchorer at work, not tampering: it must not be reported, nor logged on the
    ledger as an integrity failure."""
    window, key = _window(authority)
    core.write_segments(EDGE, [window, _segment(key, 0), _segment(key, 1)])
    core.grant_consent(Caller("p-17", "Hosp1MSP", frozenset({"patient"})), "p-17", "nurse-1", None)
    listed = core.book.fresh

    def listing_then_anchoring() -> list[Any]:
        anchors = listed()
        monkeypatch.setattr(core.book, "fresh", listed)  # once
        core.flush()
        return anchors

    for scope in ({"patient_id": "p-17"}, {}):
        monkeypatch.setattr(core.book, "fresh", listing_then_anchoring)
        who = NURSE if scope else core.service_caller
        report = core.verify_records(who, **scope)  # type: ignore[arg-type]
        assert report.ok, report
        assert report.pending == 0 and report.passed == report.checked > 0
        core.write_segments(EDGE, [_window(authority, f"ox-1.w{len(scope)}x")[0]])

    # the index read between the ledger's commit and the anchorer noting it there
    core.flush()
    rows = core.index.batches()
    monkeypatch.setattr(
        core.index,
        "batches",
        lambda: [replace(b, tx_id=None) if b is rows[-1] else b for b in rows],  # type: ignore[type-var]
    )
    assert core.verify_records(core.service_caller).ok
    assert "integrity failure" not in caplog.text  # nothing logged on the ledger


def test_stream_rules(core: StorageCore, authority: KeyAuthority) -> None:
    window, key = _window(authority)
    with pytest.raises(FailedPrecondition):  # a segment whose window was never written
        core.write_segments(EDGE, [_segment(key, 0)])
    with pytest.raises(AccessDenied):  # another device may not write for ox-1
        core.write_segments(Caller("bp-9", "Hosp1MSP", frozenset({"device"})), [window])
    core.write_segments(DEVICE, [window, _segment(key, 0)])  # the device itself may
    with pytest.raises(AlreadyExists):  # same key, other content: never silently dropped
        core.write_segments(DEVICE, [_segment(key, 0, payload=b"other")])
    with pytest.raises(InvalidArgument):
        core.write_segments(DEVICE, [SegmentItem("k", "segment.ecg", b"junk")])
    with pytest.raises(InvalidArgument):  # a segment moved to another device's record type
        core.write_segments(DEVICE, [replace(_segment(key, 40), record_type="segment.ecg")])


def test_the_edge_relays_only_for_assigned_devices(
    core: StorageCore, authority: KeyAuthority
) -> None:
    window, key = _window(authority)
    core.unassign_device(NURSE, "p-17", "ox-1")
    for who in (EDGE, DEVICE):
        with pytest.raises(AccessDenied, match="not currently assigned"):
            core.write_segments(who, [window])
    core.assign_device(NURSE, "p-17", "ox-1", datetime.now(UTC) + timedelta(hours=1))
    core.write_segments(EDGE, [window, _segment(key, 0)])
    core.unassign_device(NURSE, "p-17", "ox-1")
    with pytest.raises(AccessDenied, match="not currently assigned"):
        core.write_segments(EDGE, [_segment(key, 2)])
    # an edge gateway of another organisation relays nothing for Hosp1's devices
    foreign = Caller("edge-gateway", "Hosp2MSP", frozenset({"edge-gateway"}))
    with pytest.raises(AccessDenied, match="gateway"):
        core.write_segments(foreign, [replace(window, patient_id="Hosp1MSP/p-17",
                                               device_id="Hosp1MSP/ox-1")])  # fmt: skip


def test_a_run_of_window_keys_is_authorised_with_one_ledger_query(
    core: StorageCore, authority: KeyAuthority
) -> None:
    """An edge starting with many devices sends a window key for each first: their
    assignments are confirmed in bulk (one AssignmentsAllow for the run) instead of
    one query per device, and a device among them that is not assigned is still
    refused, by its own check."""
    until = datetime.now(UTC) + timedelta(hours=1)
    enc = AbeEncryptor.from_public_params(authority.public_params)
    devices = [f"ox-{i}" for i in range(2, 42)]
    for d in devices:  # on the ledger, as another service of the organisation would
        core.ledger.assign_device(NURSE, "Hosp1MSP/p-17", f"Hosp1MSP/{d}", until)

    def window(device: str) -> WindowItem:
        env = enc.encrypt("role:nurse", new_window_key(), window_context("p-17", device, "w"))
        return WindowItem(f"{device}.w", "p-17", device, env)

    windows = [window(d) for d in devices]
    calls = {"one": 0, "bulk": 0}
    one, bulk = core.ledger.assignment_expiry, core.ledger.assignment_expiries

    def count_one(*a: Any, **k: Any) -> Any:
        calls["one"] += 1
        return one(*a, **k)

    def count_bulk(*a: Any, **k: Any) -> Any:
        calls["bulk"] += 1
        return bulk(*a, **k)

    core.ledger.assignment_expiry = count_one  # type: ignore[method-assign]
    core.ledger.assignment_expiries = count_bulk  # type: ignore[method-assign]
    results = core.write_segments(EDGE, windows)
    assert len(results) == len(devices) and not any(r.duplicate for r in results)
    assert calls == {"one": 0, "bulk": 1}
    # later, the facts gone cold (another service assigned them; this one forgot),
    # the first segments of every device arrive together: again one query
    for d in devices:
        core._facts.drop((FACT_ASSIGNMENT, "Hosp1MSP/p-17", f"Hosp1MSP/{d}"))
    segments = []
    for d in devices:
        h = SegmentHeader(f"{d}.w", "p-17", d, "pulse-oximeter", 0, 1, NOW, NOW, 2)
        sealed = seal_segment(new_window_key(), h, b"obs")  # the key is not checked here
        segments.append(SegmentItem(f"{d}/0-1", "segment.pulse-oximeter", sealed))
    assert len(core.write_segments(EDGE, segments)) == len(devices)
    assert calls == {"one": 0, "bulk": 2}
    # a caller who may not relay for these devices is refused without a ledger query
    # (or anyone with a certificate could spend 256-device queries per call)
    for d in devices:
        core._facts.drop((FACT_ASSIGNMENT, "Hosp1MSP/p-17", f"Hosp1MSP/{d}"))
    for stranger in (DEVICE, Caller("p-17", "Hosp1MSP", frozenset({"patient"}))):
        with pytest.raises(AccessDenied, match="may not write for device"):
            core.write_segments(stranger, windows[1:])
    assert calls == {"one": 0, "bulk": 2}
    with pytest.raises(AccessDenied, match="not currently assigned"):
        core.write_segments(EDGE, [window("ox-1000"), window("ox-1001")])


def test_one_stream_call_is_bounded(
    core: StorageCore, authority: KeyAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    import storage_service.service as service

    window, key = _window(authority)
    s0, s2 = _segment(key, 0), _segment(key, 2)
    monkeypatch.setattr(service, "MAX_STREAM_ITEMS", 2)
    with pytest.raises(InvalidArgument, match="items"):
        core.write_segments(EDGE, [window, s0, s2])
    monkeypatch.setattr(service, "MAX_STREAM_ITEMS", 100)
    monkeypatch.setattr(service, "MAX_STREAM_BYTES", len(window.envelope) + 10)
    with pytest.raises(InvalidArgument, match="bytes"):
        core.write_segments(EDGE, [window, s0])
    monkeypatch.setattr(service, "MAX_STREAM_BYTES", 1 << 20)
    # the refused calls left objects but no records: the resend of the same bytes lands
    assert [r.duplicate for r in core.write_segments(EDGE, [window, s0, s2])] == [False] * 3
    monkeypatch.setattr(service, "MAX_STREAM_ITEMS", 1)
    with pytest.raises(InvalidArgument):  # refused before its pack was written: no record
        core.write_segments(EDGE, [_segment(key, 6), _segment(key, 8)])
    monkeypatch.setattr(service, "MAX_STREAM_ITEMS", 100)
    # nothing of the refused call was acknowledged: a resend with other bytes (a fresh
    # nonce) lands; once it has, other bytes under that key are refused
    assert [r.duplicate for r in core.write_segments(EDGE, [_segment(key, 6)])] == [False]
    with pytest.raises(AlreadyExists, match="other content"):
        core.write_segments(EDGE, [_segment(key, 6)])


def test_concurrent_streams_all_land(core: StorageCore, authority: KeyAuthority) -> None:
    window, key = _window(authority)
    core.write_segments(EDGE, [window])
    before = core.index.group_commits
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for j in range(10):
                core.write_segments(EDGE, [_segment(key, 1000 * n + 2 * j)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and time.perf_counter() - started < 60
    assert core.index.count() == 81
    assert 1 <= core.index.group_commits - before <= 80


def test_group_commit_commits_waiting_writers_together(tmp_path: Path) -> None:
    from storage_service.records import RecordMeta, utc_now

    index = RecordIndex(tmp_path / "index.sqlite", mac_key=KEYS.mac_key)
    meta = [
        RecordMeta(f"r-{i}", "p-1", "segment.x", "d", utc_now(), "role:x", 1, bytes(32))
        for i in range(8)
    ]
    results: dict[int, list[int | None]] = {}
    with index._lock:  # a commit in progress: every writer that arrives now must wait
        threads = [
            threading.Thread(
                target=lambda i=i: results.update(
                    {i: index.commit_group([(meta[i], bytes(32), None, None)])}
                )
            )
            for i in range(8)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(index._group_queue) < 7 and time.monotonic() < deadline:
            time.sleep(0.01)
    for t in threads:
        t.join()
    # each new row gets its own seq; the first writer alone, then the seven that waited
    assert sorted(seq for r in results.values() for seq in r) == list(range(1, 9))
    assert index.group_commits == 2
    assert index.commit_group([(meta[0], bytes(32), None, None)]) == [None]
    index.close()


def _reading_at(device_type: str, seq: int, t: int, x: float, samples: list[int]) -> Reading | None:
    """A reading of `device_type` whose values sit at fraction `x` of their bounds (None
    when the edge would refuse it: a cuff's systolic not above its diastolic)."""
    lo_hi = {f.name: (f.low, f.high, f.integer) for f in DEVICE_TYPES[device_type]}
    body: dict[str, object] = {"seq": seq, "t": t}
    for name, (lo, hi, integer) in lo_hi.items():
        v = lo + (hi - lo) * x
        body[name] = round(v) if integer else v
    if device_type == "bp-cuff":
        body["dia"] = 20 + (float(body["sys"]) - 40) * 0.5  # type: ignore[arg-type]
        if float(body["sys"]) <= float(body["dia"]):  # type: ignore[arg-type]
            return None
    if device_type == "ecg":
        body["samples"] = samples
    return parse_reading("dev-1", device_type, json.dumps(body).encode(), NOW)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(sorted(GOOD)),
    st.integers(0, 2**53 - 1),
    st.integers(NOW - 86_000_000, NOW + 290_000),
    st.floats(0, 1),
    st.lists(st.integers(-20_000, 20_000), min_size=1, max_size=60),
    st.one_of(st.floats(0, 1), st.sampled_from([0.0, 0.5, 1.0])),
)
def test_shape_validation_agrees_with_validating_every_observation(
    device_type: str, seq: int, t: int, x: float, samples: list[int], x2: float
) -> None:
    """The cached per-shape validation is sound: any reading the edge accepts yields
    Observations the library validates in full; and two readings with one
    `structure_key` (the validator's fast path) have Observations of one shape."""
    from edge.fhir import ObservationValidator, _shape, structure_key

    r = _reading_at(device_type, seq, t, x, samples)
    other = _reading_at(device_type, seq // 2, t, x2, samples[::-1])
    if r is None:
        return
    shape = ObservationValidator("shape")
    shape(observations(parse_reading("dev-0", device_type, _payload(device_type), NOW), "p-0")[0])
    for o in observations(r, "p-17"):
        shape(o)
        validate(o)  # the library, in full
    if other is not None and structure_key(other) == structure_key(r):
        assert [_shape(o) for o in observations(other, "p-9")] == [
            _shape(o) for o in observations(r, "p-17")
        ]


def test_structure_key_fast_path_still_validates_a_new_structure() -> None:
    """check_reading skips the library only for a structure key it validated before:
    a reading whose value changes int/float representation is a new key, checked."""
    from edge.fhir import ObservationValidator, structure_key

    v = ObservationValidator("shape")
    a = parse_reading("dev-1", "thermometer", b'{"seq":1,"t":%d,"temp_c":37}' % NOW, NOW)
    b = parse_reading("dev-1", "thermometer", b'{"seq":2,"t":%d,"temp_c":37.25}' % NOW, NOW)
    assert structure_key(a) != structure_key(b)
    v.check_reading(a, observations(a, "p-1"))
    assert len(v._shapes) == 1 and len(v._keys) == 1
    v.check_reading(a, observations(a, "p-1"))
    assert len(v._shapes) == 1
    v.check_reading(b, observations(b, "p-1"))
    assert len(v._shapes) == 2 and len(v._keys) == 2


@given(
    devices=st.lists(st.sampled_from(["ecg-1", "spo2-2", "bp-3", "ecg-4", "t-5"]), max_size=60),
    sizes=st.lists(st.integers(1, 900), min_size=60, max_size=60),
    lanes=st.integers(1, 6),
    max_items=st.integers(1, 8),
)
def test_split_lanes_keeps_each_device_in_one_lane_in_order(
    devices: list[str], sizes: list[int], lanes: int, max_items: int
) -> None:
    from edge.gateway import split_lanes

    items = [
        OutboxItem(i, "segment", f"{d}/{i}", "segment.ecg", "p", d, b"x" * sizes[i], 1, 0)
        for i, d in enumerate(devices)
    ]
    out = split_lanes(items, lanes, max_items, 1024)
    assert len(out) <= lanes
    flat = [item for calls in out for call in calls for item in call]
    assert sorted(i.id for i in flat) == [i.id for i in items]  # each item exactly once
    lane_of: dict[str, int] = {}
    for n, calls in enumerate(out):
        seen = [item.id for call in calls for item in call]
        assert seen == sorted(seen)  # oldest first within a lane
        for call in calls:
            assert 1 <= len(call) <= max_items
            assert len(call) == 1 or sum(len(i.payload) for i in call) <= 1024
            for item in call:
                assert lane_of.setdefault(item.device_id, n) == n  # one lane per device


@given(
    sizes=st.lists(st.integers(0, 3000), max_size=80),
    max_items=st.integers(1, 10),
    max_bytes=st.integers(1, 4096),
)
def test_chunks_keep_items_in_order_within_the_bounds(
    sizes: list[int], max_items: int, max_bytes: int
) -> None:
    from edge.gateway import chunks

    items = [
        OutboxItem(i, "segment", f"d/{i}", "segment.ecg", "p", "d", b"x" * n, 1, 0)
        for i, n in enumerate(sizes)
    ]
    groups = list(chunks(items, max_items, max_bytes))
    assert [i.id for g in groups for i in g] == [i.id for i in items]  # all, in order
    for n, g in enumerate(groups):
        assert 1 <= len(g) <= max_items
        size = sum(len(i.payload) for i in g)
        assert len(g) == 1 or size <= max_bytes  # only a lone item may be larger
        if n + 1 < len(groups):  # a group closes only when the next item would not fit
            nxt = groups[n + 1][0]
            assert len(g) == max_items or size + len(nxt.payload) > max_bytes
