"""StorageService end to end, on three pairs of real backends.

The same scenarios run on the embedded pair (filesystem store, SQLite ledger)
always; on MinIO with the embedded ledger whenever MinIO is up (every CI run:
`@pytest.mark.minio`); and on MinIO + Fabric when both are up.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from abe_service.authority import KeyAuthority
from abe_service.client import AbeKeyring, LocalEncryptor
from ehr_common.errors import (
    AccessDenied,
    AlreadyExists,
    IntegrityError,
    InvalidArgument,
    NotFound,
    PolicyError,
    PolicyNotSatisfied,
    Unavailable,
)
from storage_service.anchoring import AnchorPolicy
from storage_service.index import RecordIndex
from storage_service.integrity import merkle
from storage_service.keys import ServiceKeys
from storage_service.ledger.base import Caller, Ledger, TxResult
from storage_service.ledger.client import LedgerClient
from storage_service.ledger.embedded import EmbeddedLedger
from storage_service.objectstore.fs import FilesystemStore
from storage_service.records import envelope_key, record_context
from storage_service.service import StorageCore
from storage_service.wiring import SERVICE_ROLES, SERVICE_SUBJECT
from tests.polling import wait_until

POLICY = "(role:doctor and dept:cardiology) or patient:p-17"
DEVICE = Caller("ecg-7", "Hosp1MSP", frozenset({"device"}))
DOCTOR = Caller("dr-heart", "Hosp1MSP", frozenset({"doctor"}))
OTHER = Caller("dr-other", "Hosp2MSP", frozenset({"doctor"}))
AUDITOR = Caller("auditor-1", "Hosp1MSP", frozenset({"auditor"}))
NURSE = Caller("nurse-1", "Hosp1MSP", frozenset({"nurse"}))
SERVICE = Caller(SERVICE_SUBJECT, "Hosp1MSP", SERVICE_ROLES)
KEYS = ServiceKeys.derive(b"storage secret for the tests")
MANUAL = AnchorPolicy(max_records=1000, max_age_s=3600, retry_s=0.2)  # anchor only on flush


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> KeyAuthority:
    return KeyAuthority.setup(tmp_path_factory.mktemp("auth"), passphrase=b"test passphrase 123")


@dataclass
class Backends:
    name: str
    make_store: Any
    make_ledger: Any
    patient: str
    tamper: Any  # (core, record_id) -> None


class FlakyLedger:
    """The embedded ledger behind a switch that makes it unreachable (fault injection)."""

    def __init__(self, inner: Ledger):
        self.inner = inner
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise Unavailable("ledger unreachable (test switch)")

    def submit(self, caller: Caller, function: str, args: list[str]) -> TxResult:
        self._check()
        return self.inner.submit(caller, function, args)

    def evaluate(self, caller: Caller, function: str, args: list[str]) -> bytes:
        self._check()
        return self.inner.evaluate(caller, function, args)

    def close(self) -> None:
        self.inner.close()


def _tamper_fs(core: StorageCore, record_id: str) -> None:
    store = core.store
    assert isinstance(store, FilesystemStore)
    path = store.root / envelope_key(record_id)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    os.chmod(path, 0o600)
    path.write_bytes(bytes(data))


def _tamper_minio(core: StorageCore, record_id: str) -> None:
    """Someone with MinIO credentials writes a new version around our conditional put."""
    import io

    store: Any = core.store
    data = bytearray(store.get(envelope_key(record_id)))
    data[len(data) // 2] ^= 0x01
    store.client.put_object(
        store.bucket, envelope_key(record_id), io.BytesIO(bytes(data)), len(data)
    )


def _flip_byte(store: Any, key: str, at: int) -> None:
    """Someone with the disk (or MinIO's credentials) changes one byte of an object."""
    import io

    data = bytearray(store.get(key))
    data[at] ^= 0x01
    if isinstance(store, FilesystemStore):
        path = store.root / key
        os.chmod(path, 0o600)
        path.write_bytes(bytes(data))
    else:  # a newer version, around the conditional put
        store.client.put_object(store.bucket, key, io.BytesIO(bytes(data)), len(data))


def _embedded(tmp: Path) -> Backends:
    return Backends(
        "embedded",
        lambda: FilesystemStore(tmp / "objects"),
        lambda: FlakyLedger(EmbeddedLedger(tmp / "ledger.sqlite")),
        "p-17",
        _tamper_fs,
    )


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("minio+embedded", marks=pytest.mark.minio),
        pytest.param("minio+fabric", marks=[pytest.mark.minio, pytest.mark.fabric]),
    ]
)
def backends(request: pytest.FixtureRequest, tmp_path: Path) -> Backends:
    if request.param == "embedded":
        return _embedded(tmp_path)
    minio = request.getfixturevalue("minio_connection")
    from storage_service.objectstore.minio_store import MinioStore

    if request.param == "minio+embedded":
        return Backends(
            "minio+embedded",
            lambda: MinioStore.from_connection_file(minio),
            lambda: FlakyLedger(EmbeddedLedger(tmp_path / "ledger.sqlite")),
            "p-17",
            _tamper_minio,
        )
    fabric = request.getfixturevalue("fabric_connection")
    from storage_service.ledger.fabric import FabricLedger

    return Backends(
        "minio+fabric",
        lambda: MinioStore.from_connection_file(minio),
        lambda: FabricLedger.from_connection_file(fabric),
        # a fresh patient per test: the Fabric ledger outlives the test
        "p-17",
        _tamper_minio,
    )


@pytest.fixture
def make_core(backends: Backends, authority: KeyAuthority, tmp_path: Path) -> Iterator[Any]:
    cores: list[StorageCore] = []

    def make(
        policy: AnchorPolicy = MANUAL, ledger: Any = None, assignment_facts_ttl_s: float = 30.0
    ) -> StorageCore:
        led = ledger if ledger is not None else backends.make_ledger()
        core = StorageCore(
            assignment_facts_ttl_s=assignment_facts_ttl_s,
            store=backends.make_store(),
            index=RecordIndex(tmp_path / "index.sqlite", mac_key=KEYS.mac_key),
            keys=KEYS,
            ledger=LedgerClient(led, SERVICE),
            encryptor=LocalEncryptor(authority.public_params),
            service_caller=SERVICE,
            anchor_policy=policy,
        )
        cores.append(core)
        return core

    yield make
    for c in cores:
        with contextlib.suppress(Exception):
            c.close()


def _key(authority: KeyAuthority, subject: str, attrs: list[str]) -> AbeKeyring:
    return AbeKeyring.from_bytes(authority.issue_key(subject, attrs).user_key)


def _patient(backends: Backends, core: StorageCore) -> tuple[str, Caller]:
    """A patient (qualified id, caller), with DEVICE assigned to it by a nurse."""
    pid = backends.patient if backends.name == "embedded" else f"p-{secrets.token_hex(4)}"
    me = Caller(pid, "Hosp1MSP", frozenset({"patient"}))
    core.assign_device(
        NURSE, me.principal, DEVICE.principal, datetime.now(UTC) + timedelta(hours=1)
    )
    return me.principal, me


def test_put_anchor_get_decrypt(
    make_core: Any, authority: KeyAuthority, backends: Backends
) -> None:
    core = make_core()
    patient, me = _patient(backends, core)
    policy = f"(role:doctor and dept:cardiology) or patient:{me.subject}"
    put = core.put_record(
        DEVICE, patient_id=patient, record_type="ecg", payload=b"hr=72", policy=policy
    )
    assert not put.receipt.anchored and not put.duplicate
    flushed = core.flush()
    assert flushed.records >= 1
    envelope, meta, receipt = core.get_record(me, put.meta.record_id)
    assert receipt.anchored and receipt.tx_id and meta.patient_id == patient
    # the receipt's proof checks against the root anchored on the ledger
    anchored_root = core.ledger.get_anchor(receipt.batch_id).merkle_root
    assert anchored_root == receipt.merkle_root
    assert merkle.verify_inclusion(
        receipt.leaf_hash,
        receipt.leaf_index,
        receipt.tree_size,
        receipt.inclusion_proof,
        anchored_root,
    )
    assert (
        _key(authority, me.subject, [f"patient:{me.subject}"]).decrypt(
            envelope, record_context(patient)
        )
        == b"hr=72"
    )
    with pytest.raises(PolicyNotSatisfied):
        _key(authority, "nurse", ["role:nurse", "dept:cardiology"]).decrypt(
            envelope, record_context(patient)
        )


def test_reads_are_gated_by_consent_on_the_ledger(
    make_core: Any, authority: KeyAuthority, backends: Backends
) -> None:
    core = make_core()
    patient, me = _patient(backends, core)
    rid = core.put_record(
        DEVICE, patient_id=patient, record_type="ecg", payload=b"x", policy=POLICY
    ).meta.record_id
    core.flush()
    # without consent the record is "not found", exactly like a missing one
    with pytest.raises(NotFound, match=f"^no record {rid}$"):
        core.get_record(DOCTOR, rid)
    with pytest.raises(AccessDenied):
        core.grant_consent(OTHER, patient, OTHER.principal, None)  # not the patient
    core.grant_consent(me, patient, DOCTOR.subject, None)  # bare: of the patient's organisation
    core.get_record(DOCTOR, rid)
    core.revoke_consent(me, patient, DOCTOR.subject)
    with pytest.raises(NotFound):
        core.get_record(DOCTOR, rid)
    # an expired grant does not count
    core.grant_consent(me, patient, OTHER.principal, datetime.now(UTC) + timedelta(seconds=2))
    core.get_record(OTHER, rid)
    time.sleep(2.2)
    with pytest.raises(NotFound):
        core.get_record(OTHER, rid)
    # the access was audited on the ledger
    core.flush()
    trail = core.audit_trail(AUDITOR, record_id=rid)
    kinds = [e.kind for e in trail]
    assert "access" in kinds and "consent-grant" in kinds and "consent-revoke" in kinds


def test_retried_put_is_not_duplicated(make_core: Any, backends: Backends) -> None:
    core = make_core()
    patient, me = _patient(backends, core)
    key = f"dev-7/{secrets.token_hex(4)}"
    a = core.put_record(
        DEVICE,
        patient_id=patient,
        record_type="ecg",
        payload=b"1",
        policy=POLICY,
        idempotency_key=key,
    )
    b = core.put_record(
        DEVICE,
        patient_id=patient,
        record_type="ecg",
        payload=b"1",
        policy=POLICY,
        idempotency_key=key,
    )
    assert a.meta.record_id == b.meta.record_id and b.duplicate and not a.duplicate
    records, _ = core.list_records(me, patient, 100, "")
    assert [r.record_id for r in records].count(a.meta.record_id) == 1


def test_tampered_object_is_never_served(make_core: Any, backends: Backends) -> None:
    core = make_core()
    patient, me = _patient(backends, core)
    rids = [
        core.put_record(
            DEVICE, patient_id=patient, record_type="ecg", payload=b"v%d" % i, policy=POLICY
        ).meta.record_id
        for i in range(3)
    ]
    core.flush()
    backends.tamper(core, rids[1])
    with pytest.raises(IntegrityError, match=rids[1]):
        core.get_record(me, rids[1])
    core.get_record(me, rids[0])  # the others are fine
    report = core.verify_records(me, patient_id=patient)
    assert report.failed_record_ids == (rids[1],) and report.checked == 3 and report.passed == 2
    # the failure is on the ledger
    assert any(e.kind == "integrity-failure" for e in core.audit_trail(AUDITOR, record_id=rids[1]))


def test_bad_input_is_refused_and_leaves_data_intact(make_core: Any, backends: Backends) -> None:
    core = make_core()
    patient, me = _patient(backends, core)
    rid = core.put_record(
        DEVICE, patient_id=patient, record_type="ecg", payload=b"ok", policy=POLICY
    ).meta.record_id
    with pytest.raises(PolicyError):
        core.put_record(
            DEVICE, patient_id=patient, record_type="ecg", payload=b"x", policy="role:doctor and"
        )
    with pytest.raises(InvalidArgument):
        core.put_record(DEVICE, patient_id="../etc", record_type="ecg", payload=b"x", policy=POLICY)
    with pytest.raises(InvalidArgument):
        core.put_record(DEVICE, patient_id=patient, record_type="ecg", envelope=b"not an envelope")
    with pytest.raises(AccessDenied):
        core.put_record(
            OTHER.__class__("random", "Hosp1MSP", frozenset()),
            patient_id=patient,
            record_type="ecg",
            payload=b"x",
            policy=POLICY,
        )
    with pytest.raises(NotFound):
        core.get_record(me, "r-doesnotexist")
    records, _ = core.list_records(me, patient, 100, "")
    assert [r.record_id for r in records] == [rid]
    core.flush()
    assert core.verify_records(me, patient_id=patient).failed_record_ids == ()


def test_paging(make_core: Any, backends: Backends) -> None:
    core = make_core()
    patient, me = _patient(backends, core)
    ids = [
        core.put_record(
            DEVICE, patient_id=patient, record_type="vitals", payload=b"%d" % i, policy=POLICY
        ).meta.record_id
        for i in range(7)
    ]
    seen, token = [], ""
    while True:
        page, token = core.list_records(me, patient, 3, token)
        seen += [r.record_id for r in page]
        if not token:
            break
    assert seen == ids
    with pytest.raises(InvalidArgument):
        core.list_records(me, patient, 3, "garbage!")


def test_pending_leaves_survive_a_restart(make_core: Any, backends: Backends) -> None:
    first = make_core()
    patient, me = _patient(backends, first)
    rid = first.put_record(
        DEVICE, patient_id=patient, record_type="ecg", payload=b"p", policy=POLICY
    ).meta.record_id
    first.close()  # the service stops before anchoring
    second = make_core(AnchorPolicy(max_records=1000, max_age_s=0.1, retry_s=0.2))
    second.start()  # the background anchorer picks the leaf up
    deadline = time.monotonic() + 30
    while not second.get_receipt(me, rid).anchored:
        assert time.monotonic() < deadline, "pending leaf was not anchored after restart"
        time.sleep(0.2)


def test_nothing_is_lost_while_the_ledger_is_down(make_core: Any, backends: Backends) -> None:
    """Writes answered while the ledger is unreachable are durable and get anchored
    once it returns. Embedded ledger: a fault switch; Fabric: the whole network is stopped."""
    if backends.name != "minio+fabric":
        ledger = backends.make_ledger()
        go_down = lambda: setattr(ledger, "down", True)  # noqa: E731
        come_back = lambda: setattr(ledger, "down", False)  # noqa: E731
    else:
        from ehr_abe.infra.config import InfraConfig
        from ehr_abe.infra.manager import fabric_component

        net, why = fabric_component(InfraConfig())
        assert net is not None, why
        ledger = backends.make_ledger()
        go_down, come_back = net.down, net.up
    core = make_core(AnchorPolicy(max_records=1000, max_age_s=0.1, retry_s=0.2), ledger=ledger)
    patient, me = _patient(backends, core)
    go_down()
    try:
        core.start()
        rids = [
            core.put_record(
                DEVICE, patient_id=patient, record_type="ecg", payload=b"%d" % i, policy=POLICY
            ).meta.record_id
            for i in range(5)
        ]
        time.sleep(0.5)
        # nothing reached the ledger: no batch of the index holds a transaction
        assert all(not isinstance(b, str) and b.tx_id is None for b in core.index.batches())
    finally:
        come_back()
    deadline = time.monotonic() + 60
    while True:
        try:  # a receipt reads the ledger: UNAVAILABLE until the peers answer again
            if all(core.get_receipt(me, r).anchored for r in rids):
                break
        except Unavailable:
            pass
        assert time.monotonic() < deadline, "records written during the outage were not anchored"
        time.sleep(0.2)


class CountingLedger(FlakyLedger):
    """The fault switch, counting the AnchorsByInstance queries (one per ledger refresh)."""

    def __init__(self, inner: Ledger):
        super().__init__(inner)
        self.anchor_queries = 0

    def evaluate(self, caller: Caller, function: str, args: list[str]) -> bytes:
        if function == "AnchorsByInstance":
            self.anchor_queries += 1
        return super().evaluate(caller, function, args)


@pytest.mark.parametrize("backends", ["embedded"], indirect=True)  # counts its queries
def test_an_idle_anchorer_asks_the_ledger_once_per_batch_age(
    make_core: Any, backends: Backends, tmp_path: Path
) -> None:
    """Background passes run every max_age_s / 4; with nothing to anchor only one per
    max_age_s reads the ledger, yet records are anchored as before and an outage of
    an idle service still shows in its health."""
    ledger = CountingLedger(EmbeddedLedger(tmp_path / "counted-ledger.sqlite"))
    core = make_core(AnchorPolicy(max_records=1000, max_age_s=0.4, retry_s=0.1), ledger=ledger)
    patient, me = _patient(backends, core)
    core.start()
    rid = core.put_record(
        DEVICE, patient_id=patient, record_type="ecg", payload=b"1", policy=POLICY
    ).meta.record_id
    wait_until(lambda: core.get_receipt(me, rid).anchored, 30, "the record to be anchored")
    before = ledger.anchor_queries
    time.sleep(4.0)  # 40 background passes; 10 max_age_s periods
    idle = ledger.anchor_queries - before
    assert 1 <= idle <= 20, f"{idle} AnchorsByInstance queries in 4 s idle (every pass: about 40)"
    ledger.down = True
    try:
        wait_until(
            lambda: not core.anchorer.ledger_healthy, 10, "an idle service to see the outage"
        )
    finally:
        ledger.down = False
    wait_until(lambda: core.anchorer.ledger_healthy, 10, "the ledger's return to be seen")


@pytest.mark.parametrize(
    ("n", "offset_s", "due"),
    [
        (0, -100.0, False),  # nothing pending
        (3, -0.1, False),  # younger than a batch's age
        (3, -0.4, True),  # as old as a batch's age
        (1000, -0.1, True),  # a full batch
        (3, 0.3, False),  # a little ahead: clock jitter
        (3, 3600.0, True),  # far in the future: altered, read it and check it
    ],
)
def test_when_a_batch_is_due(n: int, offset_s: float, due: bool) -> None:
    from storage_service.anchoring import batch_due

    now = datetime.now(UTC)
    policy = AnchorPolicy(max_records=1000, max_age_s=0.4)
    assert batch_due(n, now + timedelta(seconds=offset_s), now, policy) is due


@pytest.mark.parametrize("backends", ["embedded"], indirect=True)  # edits the index file
def test_a_pending_row_dated_in_the_future_is_caught_not_held_back(
    make_core: Any, backends: Backends, tmp_path: Path
) -> None:
    """A storage host that moves every pending record's time into the future would
    stop batches closing by age and make `records anchoring` see no age at all: the
    background anchorer reads such rows at once, sets them aside as bad (their MAC
    covers the time) and anchors the rest."""
    import sqlite3

    core = make_core(AnchorPolicy(max_records=1000, max_age_s=0.4, retry_s=0.1))
    patient, me = _patient(backends, core)

    def put(i: int) -> str:
        return str(
            core.put_record(
                DEVICE, patient_id=patient, record_type="ecg", payload=b"%d" % i, policy=POLICY
            ).meta.record_id
        )

    def batch_of(rid: str) -> object:
        with contextlib.closing(sqlite3.connect(tmp_path / "index.sqlite")) as db:
            return db.execute("SELECT batch_id FROM records WHERE record_id=?", (rid,)).fetchone()[
                0
            ]

    victim = put(0)  # the only pending record: its time is every pending time
    future = (datetime.now(UTC) + timedelta(days=365)).isoformat()
    with contextlib.closing(sqlite3.connect(tmp_path / "index.sqlite")) as db, db:
        db.execute("UPDATE records SET created_at=? WHERE record_id=?", (future, victim))
    core.start()
    wait_until(lambda: batch_of(victim) == "!rejected", 30, "the altered row to be read")
    with pytest.raises(IntegrityError):
        core.get_record(me, victim)
    good = put(1)
    wait_until(lambda: core.get_receipt(me, good).anchored, 30, "the records after it to anchor")


# -- authorised writes, idempotency, no oracle --------------------------------------------


def test_devices_write_only_for_patients_they_are_assigned_to(
    make_core: Any, backends: Backends
) -> None:
    core = make_core()
    patient, me = _patient(backends, core)  # DEVICE is assigned to this patient
    pump = Caller(f"pump-{secrets.token_hex(3)}", "Hosp1MSP", frozenset({"device"}))

    def write(who: Caller) -> str:
        return core.put_record(
            who, patient_id=patient, record_type="vitals", payload=b"x", policy=POLICY
        ).meta.record_id

    with pytest.raises(AccessDenied, match="not currently assigned"):
        write(pump)
    core.assign_device(NURSE, patient, pump.principal, datetime.now(UTC) + timedelta(seconds=3))
    rid = write(pump)
    assert core.get_record(me, rid)[1].author == pump.principal
    time.sleep(3.2)  # the assignment expired: refused again, whatever was cached
    with pytest.raises(AccessDenied, match="not currently assigned"):
        write(pump)
    # unassigning takes effect at once on this service
    write(DEVICE)
    core.unassign_device(NURSE, patient, DEVICE.principal)
    with pytest.raises(AccessDenied, match="not currently assigned"):
        write(DEVICE)
    history = core.assignment_history(NURSE, patient)
    assert [(c.device_id, c.assigned) for c in history][-3:] == [
        (DEVICE.principal, True),
        (pump.principal, True),
        (DEVICE.principal, False),
    ]
    # a device assigned to one patient does not write for another
    other = f"Hosp1MSP/p-{secrets.token_hex(3)}"
    core.assign_device(NURSE, patient, DEVICE.principal, datetime.now(UTC) + timedelta(hours=1))
    with pytest.raises(AccessDenied):
        core.put_record(DEVICE, patient_id=other, record_type="ecg", payload=b"x", policy=POLICY)


def test_which_clinicians_write_for_which_patients(make_core: Any, backends: Backends) -> None:
    core = make_core()
    patient, me = _patient(backends, core)
    put = lambda who: core.put_record(  # noqa: E731
        who, patient_id=patient, record_type="note", payload=b"n", policy=POLICY
    )
    put(DOCTOR)  # a doctor of the patient's organisation
    put(NURSE)
    put(me)  # the patient
    with pytest.raises(AccessDenied, match="another organisation"):
        put(OTHER)  # a doctor of another organisation, without consent
    core.grant_consent(me, patient, OTHER.principal, None)
    assert put(OTHER).meta.author == OTHER.principal
    core.revoke_consent(me, patient, OTHER.principal)  # applies at once on this service
    with pytest.raises(AccessDenied, match="another organisation"):
        put(OTHER)
    for nobody in (
        Caller("random", "Hosp1MSP", frozenset()),
        Caller(me.subject, "Hosp2MSP", frozenset({"patient"})),  # same name, other org
        Caller("aud", "Hosp1MSP", frozenset({"auditor"})),
    ):
        with pytest.raises(AccessDenied):
            put(nobody)


def test_the_author_is_the_caller(make_core: Any, backends: Backends) -> None:
    core = make_core()
    patient, _ = _patient(backends, core)
    for given in ("", DEVICE.subject, DEVICE.principal):
        meta = core.put_record(
            DEVICE, patient_id=patient, record_type="ecg", author=given, payload=b"a", policy=POLICY
        ).meta
        assert meta.author == DEVICE.principal
    with pytest.raises(AccessDenied, match="author"):
        core.put_record(
            DEVICE, patient_id=patient, record_type="ecg", author="dr-heart", payload=b"a",
            policy=POLICY,
        )  # fmt: skip


def test_an_idempotency_key_is_bound_to_its_request(make_core: Any, backends: Backends) -> None:
    core = make_core()
    patient, me = _patient(backends, core)
    key = f"ecg-7/{secrets.token_hex(4)}"

    def put(**over: Any) -> Any:
        args: dict[str, Any] = dict(
            patient_id=patient, record_type="ecg", payload=b"hr=72", policy=POLICY
        )
        args.update(over)
        return core.put_record(DEVICE, idempotency_key=key, **args)

    first = put()
    assert put().duplicate and put().meta.record_id == first.meta.record_id
    other_patient = f"Hosp1MSP/p-{secrets.token_hex(3)}"
    core.assign_device(
        NURSE, other_patient, DEVICE.principal, datetime.now(UTC) + timedelta(hours=1)
    )
    for change in (
        {"payload": b"hr=190"},
        {"policy": "role:nurse"},
        {"record_type": "vitals"},
        {"patient_id": other_patient},
    ):
        with pytest.raises(AlreadyExists, match="different request"):
            put(**change)
    # what was stored is the first request's, untouched
    records, _ = core.list_records(me, patient, 100, "")
    assert [r.record_id for r in records].count(first.meta.record_id) == 1
    # the same key from another writer is another record
    core.assign_device(NURSE, patient, "Hosp1MSP/ecg-8", datetime.now(UTC) + timedelta(hours=1))
    ecg8 = Caller("ecg-8", "Hosp1MSP", frozenset({"device"}))
    again = core.put_record(
        ecg8, patient_id=patient, record_type="ecg", payload=b"hr=72", policy=POLICY,
        idempotency_key=key,
    )  # fmt: skip
    assert again.meta.record_id != first.meta.record_id and not again.duplicate


def test_an_unreadable_record_is_indistinguishable_from_a_missing_one(
    make_core: Any, backends: Backends
) -> None:
    core = make_core()
    patient, me = _patient(backends, core)
    rid = core.put_record(
        DEVICE, patient_id=patient, record_type="ecg", payload=b"x", policy=POLICY
    ).meta.record_id
    core.flush()
    missing = "r-" + "a" * 26
    for read in (
        lambda r: core.get_record(DOCTOR, r),
        lambda r: core.get_receipt(DOCTOR, r),
        lambda r: core.audit_trail(DOCTOR, record_id=r),
    ):
        errors = []
        for r in (rid, missing):
            with pytest.raises(NotFound) as exc:
                read(r)
            errors.append(str(exc.value).replace(r, "<id>"))
        assert errors[0] == errors[1] == "no record <id>"
        assert patient not in errors[0] and me.subject not in errors[0]
    # listing a patient's records without consent names nobody
    with pytest.raises(AccessDenied) as refused:
        core.list_records(DOCTOR, patient, 10, "")
    assert me.subject not in str(refused.value)


def test_streaming_devices_are_reconfirmed_in_bulk_off_the_write_path(
    make_core: Any, backends: Backends
) -> None:
    """A device that keeps writing is re-confirmed by the refresher (one bulk ledger
    query), never by a ledger query on its write; an unassignment made elsewhere
    in the consortium stops it at the next refresh."""
    ttl = 1.0
    core = make_core(assignment_facts_ttl_s=ttl)
    patient, _ = _patient(backends, core)
    asked: list[tuple[str, str]] = []
    real_ask = core.ledger.assignment_expiry

    def counting_ask(patient_id: str, device_id: str, at: datetime) -> datetime | None:
        asked.append((patient_id, device_id))
        return real_ask(patient_id, device_id, at)

    core.ledger.assignment_expiry = counting_ask

    def write() -> None:
        core.put_record(
            DEVICE, patient_id=patient, record_type="vitals", payload=b"x", policy=POLICY
        )

    write()
    assert core.refresh_write_facts() == 0  # just confirmed: nothing due yet
    time.sleep(ttl * 0.7)
    assert core.refresh_write_facts() == 1  # due: re-confirmed in one bulk query
    time.sleep(ttl * 0.6)  # past the TTL of the first confirmation
    write()
    assert asked == []  # the write path never asked the ledger
    # another service of the consortium unassigns the device on the ledger
    core.ledger.unassign_device(NURSE, patient, DEVICE.principal)
    time.sleep(ttl * 0.7)
    assert core.refresh_write_facts() == 1
    with pytest.raises(AccessDenied, match="not currently assigned"):
        write()
    assert asked == [(patient, DEVICE.principal)]  # refused on a fresh answer
    # the background refresher does the same once the core runs
    core.assign_device(NURSE, patient, DEVICE.principal, datetime.now(UTC) + timedelta(hours=1))
    core.start()
    deadline = time.monotonic() + ttl * 3
    while time.monotonic() < deadline:
        write()
        time.sleep(ttl / 5)
    assert len(asked) == 1


def test_an_edge_gateway_relays_only_for_assigned_devices(
    make_core: Any, backends: Backends
) -> None:
    """The check every write path shares (PutRecord and streamed device readings)."""
    core = make_core()
    patient, _ = _patient(backends, core)  # DEVICE is assigned to this patient
    edge = Caller("gw-ward-3", "Hosp1MSP", frozenset({"edge-gateway"}))
    assert core.authorize_write(edge, patient, device_id=DEVICE.subject) == patient
    assert core.authorize_write(DEVICE, patient, device_id=DEVICE.principal) == patient
    with pytest.raises(AccessDenied, match="not currently assigned"):
        core.authorize_write(edge, patient, device_id="Hosp1MSP/pump-unassigned")
    foreign_edge = Caller("gw-9", "Hosp2MSP", frozenset({"edge-gateway"}))
    with pytest.raises(AccessDenied, match="gateway"):
        core.authorize_write(foreign_edge, patient, device_id=DEVICE.principal)
    with pytest.raises(AccessDenied, match="gateway"):
        core.authorize_write(DOCTOR, patient, device_id=DEVICE.principal)


def test_racing_retries_of_one_key_store_one_record(make_core: Any, backends: Backends) -> None:
    """Concurrent puts under one idempotency key, half of them with other content:
    one record; the same request is answered with it, any other is ALREADY_EXISTS."""
    from concurrent.futures import ThreadPoolExecutor

    core = make_core()
    patient, me = _patient(backends, core)
    key = f"race/{secrets.token_hex(4)}"

    def attempt(n: int) -> tuple[str, str]:
        payload = b"same" if n % 2 == 0 else b"other-%d" % n
        try:
            r = core.put_record(
                DEVICE, patient_id=patient, record_type="ecg", payload=payload, policy=POLICY,
                idempotency_key=key,
            )  # fmt: skip
            return ("ok", r.meta.record_id)
        except AlreadyExists:
            return ("exists", "")

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(attempt, range(6)))
    ids = {rid for kind, rid in outcomes if kind == "ok"}
    assert len(ids) == 1
    # the winner was one of the requests; every other one with the winner's content is "ok"
    records, _ = core.list_records(me, patient, 100, "")
    assert [r.record_id for r in records].count(ids.pop()) == 1
    assert sum(kind == "ok" for kind, _ in outcomes) in (1, 3)


class _HeldPuts:
    """The store, each object write held for a while: concurrent callers pile up
    behind the first, as they do behind a busy MinIO."""

    def __init__(self, inner: Any, hold_s: float, fail_packs: int = 0) -> None:
        self.inner, self.hold_s, self.fail_packs = inner, hold_s, fail_packs
        self.keys: list[str] = []

    def put(self, key: str, data: bytes, metadata: Any = None) -> None:
        time.sleep(self.hold_s)
        if key.startswith("records/pack-") and self.fail_packs:
            self.fail_packs -= 1
            raise Unavailable("MinIO is restarting")
        self.inner.put(key, data, metadata)
        self.keys.append(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _concurrent_puts(core: StorageCore, patient: str, n: int) -> list[Any]:
    from concurrent.futures import ThreadPoolExecutor

    start = threading.Barrier(n)

    def put(i: int) -> Any:
        start.wait()
        try:
            return core.put_record(
                DEVICE, patient_id=patient, record_type="ecg", payload=b"r%d" % i, policy=POLICY
            )
        except Unavailable as exc:
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(put, range(n)))


def test_concurrent_puts_share_an_object_and_each_record_stands_alone(
    make_core: Any, backends: Backends, authority: KeyAuthority
) -> None:
    """PutRecords that arrive while another's object is being written share the next
    object (one PUT, one index commit); each record keeps its own hash, leaf and
    receipt, reads and verifies alone, and damage to one is that record's alone."""
    core = make_core()
    patient, me = _patient(backends, core)
    held = _HeldPuts(core.store, hold_s=0.3)
    core.store = held  # type: ignore[assignment]
    results = _concurrent_puts(core, patient, 8)
    rids = [r.meta.record_id for r in results]
    packs = [k for k in held.keys if k.startswith("records/pack-")]
    assert len(held.keys) < 8 and packs, held.keys  # fewer object writes than records
    assert all(not r.duplicate and not r.receipt.anchored for r in results)
    kr = _key(authority, "dr-heart", ["role:doctor", "dept:cardiology"])
    for i, rid in enumerate(rids):
        envelope, meta, _ = core.get_record(me, rid)
        assert meta.record_id == rid
        assert kr.decrypt(envelope, record_context(patient)) == b"r%d" % i
    core.flush()
    assert core.verify_records(me, patient_id=patient).ok
    refs = core.index.pack_refs(rids)
    victim, neighbour = [rid for rid in rids if rid in refs and refs[rid].key == packs[0]][:2]
    _flip_byte(held.inner, refs[victim].key, refs[victim].offset + 30)
    with pytest.raises(IntegrityError):
        core.get_record(me, victim)
    assert core.get_record(me, neighbour)[1].record_id == neighbour
    assert core.verify_records(me, patient_id=patient).failed_record_ids == (victim,)


def test_a_shared_object_that_fails_fails_its_callers_and_records_nothing(
    make_core: Any, backends: Backends
) -> None:
    core = make_core()
    patient, me = _patient(backends, core)
    held = _HeldPuts(core.store, hold_s=0.3, fail_packs=1)
    core.store = held  # type: ignore[assignment]
    results = _concurrent_puts(core, patient, 6)
    failed = [r for r in results if isinstance(r, Unavailable)]
    stored = [r.meta.record_id for r in results if not isinstance(r, Unavailable)]
    assert failed and stored  # the lone first call stored; the group behind it failed
    listed, _ = core.list_records(me, patient, 100, "")
    assert sorted(m.record_id for m in listed) == sorted(stored)  # no row without its bytes
    again = _concurrent_puts(core, patient, 6)  # and the next calls are stored
    assert not [r for r in again if isinstance(r, Unavailable)]
    core.flush()
    assert core.verify_records(me, patient_id=patient).ok
