"""One behavioural suite for LedgerClient, run over every ledger: the embedded one
always, the Fabric one when a network is up (`@pytest.mark.fabric`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ehr_common.errors import AccessDenied, AlreadyExists, InvalidArgument, NotFound
from storage_service.ledger.base import Caller, Ledger
from storage_service.ledger.client import LedgerClient

SERVICE = Caller("storage-service", "Hosp1MSP", frozenset({"anchorer", "auditor"}))
AUTHORITY = Caller("ka-1", "Hosp1MSP", frozenset({"authority"}))
ADMIN = Caller("consent-admin-1", "Hosp1MSP", frozenset({"consent-admin"}))
OTHER_ADMIN = Caller("consent-admin-2", "Hosp2MSP", frozenset({"consent-admin"}))


def open_ledger(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Ledger:
    if kind == "embedded":
        from storage_service.ledger.embedded import EmbeddedLedger

        return EmbeddedLedger(tmp_path / "ledger.sqlite")
    path: Path = request.getfixturevalue("fabric_connection")  # skips without a network
    from storage_service.ledger.fabric import FabricLedger

    return FabricLedger.from_connection_file(path)


@pytest.fixture(params=["embedded", pytest.param("fabric", marks=pytest.mark.fabric)])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerClient]:
    c = LedgerClient(open_ledger(request.param, request, tmp_path), SERVICE)
    yield c
    c.close()


@pytest.fixture
def uid() -> str:
    """Fresh ids per test: a Fabric ledger keeps its state between runs."""
    return uuid.uuid4().hex[:10]


def test_anchor_round_trip_and_no_rewrite(client: LedgerClient, uid: str) -> None:
    root = bytes(range(32))
    receipt = client.anchor_batch(f"b-{uid}", root, 7, {"instance": "t"}, record_count=5)
    assert len(receipt.tx_id) == 64 and receipt.block >= 1
    a = client.get_anchor(f"b-{uid}")
    assert (a.merkle_root, a.tree_size, a.record_count) == (root, 7, 5)
    assert a.tx_id == receipt.tx_id and a.block == receipt.block
    assert a.msp_id == SERVICE.msp_id and a.subject == SERVICE.subject
    assert abs(a.anchored_at - datetime.now(UTC)) < timedelta(minutes=5)
    with pytest.raises(AlreadyExists):
        client.anchor_batch(f"b-{uid}", bytes(32), 1)
    assert client.get_anchor(f"b-{uid}").merkle_root == root
    with pytest.raises(NotFound):
        client.get_anchor(f"missing-{uid}")


def test_list_anchors_in_range(client: LedgerClient, uid: str) -> None:
    for i in range(5):
        client.anchor_batch(f"l-{uid}-{i}", bytes([i]) * 32, 1)
    page, token = client.list_anchors(f"l-{uid}-", f"l-{uid}.", page_size=3)
    assert [a.batch_id for a in page] == [f"l-{uid}-{i}" for i in range(3)] and token
    rest, token = client.list_anchors(f"l-{uid}-", f"l-{uid}.", page_size=3, page_token=token)
    assert [a.batch_id for a in rest] == [f"l-{uid}-3", f"l-{uid}-4"] and token == ""


def test_anchoring_needs_the_anchorer_role(client: LedgerClient, uid: str) -> None:
    intruder = LedgerClient(client.ledger, Caller("mallory", "Hosp2MSP", frozenset({"doctor"})))
    with pytest.raises(AccessDenied):
        intruder.anchor_batch(f"x-{uid}", bytes(32), 1)


def test_consent_by_patient_only(client: LedgerClient, uid: str) -> None:
    patient = Caller(f"p-{uid}", "Hosp1MSP")
    me = patient.principal
    doctor = f"Hosp2MSP/dr-{uid}"
    now = datetime.now(UTC)
    assert not client.consent_allows(me, doctor, now)
    refused = [
        Caller(f"dr-{uid}", "Hosp2MSP", frozenset({"doctor"})),
        Caller(patient.subject, "Hosp2MSP", frozenset({"patient"})),  # same subject, other org
        OTHER_ADMIN,  # another organisation's consent-admin
    ]
    for who in refused:
        with pytest.raises(AccessDenied):
            client.grant_consent(who, me, doctor, None)
    client.grant_consent(patient, me, doctor, now + timedelta(days=1))
    assert client.consent_allows(me, doctor, now + timedelta(hours=1))
    assert not client.consent_allows(me, doctor, now + timedelta(days=2))
    client.revoke_consent(ADMIN, me, doctor)
    assert not client.consent_allows(me, doctor, now + timedelta(hours=1))
    history = client.consent_history(me, doctor)
    assert [(c.granted, c.by_subject, c.by_msp) for c in history] == [
        (True, patient.subject, "Hosp1MSP"),
        (False, ADMIN.subject, "Hosp1MSP"),
    ]
    with pytest.raises(InvalidArgument):
        client.grant_consent(patient, me, "bad/id/x", None)
    with pytest.raises(InvalidArgument):
        client.grant_consent(patient, me, f"dr-{uid}", None)  # not organisation-qualified


def test_device_assignments(client: LedgerClient, uid: str) -> None:
    patient = f"Hosp1MSP/p-{uid}"
    device = f"Hosp1MSP/ecg-{uid}"
    nurse = Caller(f"nurse-{uid}", "Hosp1MSP", frozenset({"nurse"}))
    now = datetime.now(UTC)
    assert client.assignment_expiry(patient, device, now) is None
    with pytest.raises(AccessDenied):
        client.assign_device(
            Caller(f"dr-{uid}", "Hosp2MSP", frozenset({"doctor"})),
            patient,
            device,
            now + timedelta(hours=1),
        )
    client.assign_device(nurse, patient, device, now + timedelta(hours=1))
    expiry = client.assignment_expiry(patient, device, now)
    assert expiry is not None and expiry > now
    assert client.assignment_expiry(patient, device, now + timedelta(hours=2)) is None
    other = f"Hosp1MSP/spo2-{uid}"
    assert client.assignment_expiries([(patient, device), (patient, other)], now) == [expiry, None]
    with pytest.raises(InvalidArgument):
        client.assignment_expiries([(patient, "not qualified")], now)
    client.unassign_device(ADMIN, patient, device)
    assert client.assignment_expiry(patient, device, datetime.now(UTC)) is None
    assert client.assignment_expiries([(patient, device)], datetime.now(UTC)) == [None]
    history = client.assignment_history(patient)
    assert [(c.assigned, c.device_id, c.by_subject) for c in history] == [
        (True, device, nurse.subject),
        (False, device, ADMIN.subject),
    ]


def test_key_issue_audit(client: LedgerClient, uid: str) -> None:
    client.record_key_issue(AUTHORITY, f"s-{uid}", b"\x01" * 32, "ka-1", f"k-{uid}")
    with pytest.raises(AlreadyExists):
        client.record_key_issue(AUTHORITY, f"s-{uid}", b"\x01" * 32, "ka-1", f"k-{uid}")
    with pytest.raises(AccessDenied):
        client.record_key_issue(SERVICE, f"s-{uid}", b"\x01" * 32, "ka-1", f"k2-{uid}")
    issues = client.key_issues(f"s-{uid}")
    assert [(k.key_id, k.attributes_hash) for k in issues] == [(f"k-{uid}", b"\x01" * 32)]


def test_access_and_integrity_log(client: LedgerClient, uid: str) -> None:
    t = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    dr, nurse, p1 = f"Hosp2MSP/dr-{uid}", f"Hosp1MSP/nurse-{uid}", "Hosp1MSP/p-1"
    client.log_accesses([(f"r1-{uid}", p1, dr, t), (f"r2-{uid}", p1, dr, t)])
    client.log_access(f"r1-{uid}", p1, nurse, t + timedelta(seconds=1))
    client.log_integrity_failure(f"r1-{uid}", "b-1", "hash mismatch")
    by_record = client.access_log(record_id=f"r1-{uid}")
    assert [(e.kind, e.subject_id) for e in by_record] == [
        ("access", dr),
        ("access", nurse),
        ("integrity-failure", SERVICE.subject),
    ]
    by_subject = client.access_log(subject_id=dr)
    assert sorted(e.record_id for e in by_subject) == [f"r1-{uid}", f"r2-{uid}"]
    assert all(e.at == t for e in by_subject)


def test_racing_anchors_of_one_batch_one_wins(client: LedgerClient, uid: str) -> None:
    """Concurrent writers of the same batch id: exactly one commits, every other one is
    told AlreadyExists (on Fabric: after its MVCC conflict is retried)."""
    from concurrent.futures import ThreadPoolExecutor

    def attempt(n: int) -> str:
        try:
            client.anchor_batch(f"race-{uid}", bytes([n]) * 32, 1)
            return "won"
        except AlreadyExists:
            return "exists"

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(attempt, range(6)))
    assert sorted(outcomes) == ["exists"] * 5 + ["won"]
    winner = client.get_anchor(f"race-{uid}").merkle_root
    assert winner in {bytes([n]) * 32 for n in range(6)}


# -- multi-authority registry --------------------------------------------------------------
HOSP2_AUTHORITY = Caller("ka-2", "Hosp2MSP", frozenset({"authority"}))


def _ma_key(uid: str) -> tuple[bytes, bytes]:
    from abe_service.ma.serialization import fingerprint

    key = f"not-a-real-key-{uid}".encode()  # the registry checks the fingerprint only
    return key, fingerprint(key)


def test_authority_registry(client: LedgerClient, uid: str) -> None:
    """Register (or, on a Fabric ledger that kept hosp1 from an earlier run, rotate),
    rotate, revoke, query; only hosp1's own organisation may change hosp1's entry."""
    key, fp = _ma_key(uid)
    try:
        before = client.get_authority("hosp1").version
        client.rotate_authority(AUTHORITY, "hosp1", key, fp)
    except NotFound:
        before = 0
        client.register_authority(AUTHORITY, "hosp1", "ma-rw15-bls12381-v1", key, fp)
        with pytest.raises(AlreadyExists):
            client.register_authority(AUTHORITY, "hosp1", "ma-rw15-bls12381-v1", key, fp)
    entry = client.get_authority("hosp1")
    assert (entry.public_key, entry.fingerprint, entry.version) == (key, fp, before + 1)
    assert entry.active and entry.owner_msp == "Hosp1MSP"
    key2, fp2 = _ma_key(uid + "-2")
    for intruder in (HOSP2_AUTHORITY, SERVICE):
        with pytest.raises(AccessDenied):
            client.rotate_authority(intruder, "hosp1", key2, fp2)
        with pytest.raises(AccessDenied):
            client.revoke_authority(intruder, "hosp1", "hostile")
    with pytest.raises(InvalidArgument, match="fingerprint"):
        client.rotate_authority(AUTHORITY, "hosp1", key2, fp)
    with pytest.raises(AlreadyExists):  # an old key never comes back
        client.rotate_authority(AUTHORITY, "hosp1", key, fp)
    client.revoke_authority(AUTHORITY, "hosp1", "key compromised")
    revoked = client.get_authority("hosp1")
    assert not revoked.active and revoked.reason == "key compromised"
    client.rotate_authority(AUTHORITY, "hosp1", key2, fp2)
    assert client.get_authority("hosp1").active
    history = client.authority_history("hosp1")
    assert [h.fingerprint for h in history[-2:]] == [fp, fp2]
    assert "hosp1" in {a.authority_id for a in client.list_authorities()}
    # key issues of a registered authority: its own organisation only, listed per authority
    client.record_key_issue(AUTHORITY, f"s-{uid}", b"\x02" * 32, "hosp1", f"km-{uid}")
    with pytest.raises(AccessDenied):
        client.record_key_issue(HOSP2_AUTHORITY, f"s-{uid}", b"\x02" * 32, "hosp1", f"kx-{uid}")
    assert f"km-{uid}" in {k.key_id for k in client.key_issues_by_authority("hosp1")}
