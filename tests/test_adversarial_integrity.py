"""Adversarial integrity suite: someone with write access to the storage host's disk
(objects, index, the embedded ledger's file) but not to the Fabric ledger or the
service's secret. Every case is tried against GetRecord (never served: DATA_LOSS,
logged on the ledger) and VerifyRecords (listed, and verification goes on).

Runs on the embedded pair always, and on MinIO + Fabric when they are up (one
service per backend pair for the whole module, to keep Fabric's runtime modest).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import sqlite3
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from adversary import AUDITOR, KEYS, MANUAL, WRITER, World, integrity_logged, policy
from conftest import minio_root_client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abe_service.authority import KeyAuthority
from ehr_common.errors import IntegrityError, NotFound
from storage_service.index import RecordIndex
from storage_service.integrity import merkle
from storage_service.keys import ServiceKeys
from storage_service.ledger.embedded import EmbeddedLedger
from storage_service.objectstore.fs import FilesystemStore
from storage_service.receipts import PendingPromise, verify_anchored_receipt, verify_pending_receipt
from storage_service.records import RecordMeta, envelope_key, leaf_bytes

ENGINES = [pytest.mark.minio, pytest.mark.fabric]


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> KeyAuthority:
    return KeyAuthority.setup(tmp_path_factory.mktemp("auth"), passphrase=b"adversarial 12345")


@pytest.fixture(scope="module", params=["embedded", pytest.param("minio+fabric", marks=ENGINES)])
def world(
    request: pytest.FixtureRequest,
    authority: KeyAuthority,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp(f"world-{request.param.replace('+', '-')}")
    if request.param == "embedded":
        w = World(
            "embedded",
            tmp,
            authority,
            lambda: FilesystemStore(tmp / "objects"),
            lambda: EmbeddedLedger(tmp / "ledger.sqlite"),
        )
    else:
        minio = request.getfixturevalue("minio_connection")
        fabric = request.getfixturevalue("fabric_connection")
        from storage_service.ledger.fabric import FabricLedger
        from storage_service.objectstore.minio_store import MinioStore

        w = World(
            "minio+fabric",
            tmp,
            authority,
            lambda: MinioStore.from_connection_file(minio),
            lambda: FabricLedger.from_connection_file(fabric),
        )
        w.attacker_minio = minio_root_client(minio)
    yield w
    w.close()


def assert_caught(world: World, record_id: str, patient: str) -> None:
    """Never served, logged on the ledger, and listed by VerifyRecords."""
    with pytest.raises(IntegrityError):
        world.get(record_id)
    assert integrity_logged(world, record_id)
    report = world.verify(patient)
    assert record_id in report.failed_record_ids, report
    assert not report.ok


def assert_sound(world: World, record_id: str) -> None:
    envelope, meta, _receipt = world.get(record_id)
    assert meta.record_id == record_id and envelope


# -- a control: untouched records pass -----------------------------------------------------
def test_untouched_records_verify_clean(world: World) -> None:
    patient, _me = world.patient()
    anchored = world.anchored(patient, 3)
    pending = world.put(patient, 1)
    for rid in anchored + pending:
        assert_sound(world, rid)
    report = world.verify(patient)
    assert report.ok, report
    assert report.checked == 4 and report.pending == 1


# -- object tampering ------------------------------------------------------------------------
OBJECT_MOVES = ["flip", "truncate", "append", "swap", "delete", "replace-valid", "replay-version"]


@pytest.mark.parametrize("state", ["anchored", "pending"])
@pytest.mark.parametrize("move", OBJECT_MOVES)
def test_object_tampering(world: World, move: str, state: str) -> None:
    patient, _ = world.patient()
    rids = world.anchored(patient, 3) if state == "anchored" else world.put(patient, 3)
    victim, other = rids[0], rids[1]
    data = world.object_bytes(victim)
    if move == "flip":
        b = bytearray(data)
        b[len(b) // 2] ^= 0x40
        world.overwrite_object(victim, bytes(b))
    elif move == "truncate":
        world.overwrite_object(victim, data[: len(data) - 7])
    elif move == "append":
        world.overwrite_object(victim, data + b"\x00")
    elif move == "swap":
        world.overwrite_object(victim, world.object_bytes(other))
        world.overwrite_object(other, data)
    elif move == "delete":
        world.delete_object(victim)
    elif move == "replace-valid":  # another valid envelope of the same patient
        world.overwrite_object(victim, world.object_bytes(rids[2]))
    else:
        world.replay_older_version(victim, other)
    assert_caught(world, victim, patient)
    if move == "swap":
        assert_caught(world, other, patient)
    else:
        assert_sound(world, rids[2])


@pytest.mark.parametrize("move", ["symlink", "fifo", "directory", "unreadable-link"])
def test_object_replaced_by_a_non_file(world: World, move: str) -> None:
    """Filesystem store: what sits at an object's path is not a regular file. Caught,
    and neither a read that blocks (FIFO) nor one that follows a link."""
    import os

    if world.name != "embedded":
        pytest.skip("MinIO objects are not files on the storage host's filesystem")
    patient, _ = world.patient()
    victim, other, _ = world.anchored(patient, 3)
    store = world.core.store
    assert isinstance(store, FilesystemStore)
    path = store.root / envelope_key(victim)
    path.unlink()
    if move == "symlink":  # to another record's (valid) envelope
        path.symlink_to(store.root / envelope_key(other))
    elif move == "fifo":
        os.mkfifo(path)
    elif move == "directory":
        path.mkdir()
    else:
        path.symlink_to(path)  # a link loop
    assert_caught(world, victim, patient)
    assert_sound(world, other)


# -- index tampering, record rows ---------------------------------------------------------------
def _other_hash() -> bytes:
    return hashlib.sha256(b"someone else's envelope").digest()


ROW_EDITS: dict[str, tuple[str, object]] = {
    "patient_id": ("patient_id", "p-intruder"),
    "record_type": ("record_type", "note"),
    "author": ("author", "dr-forger"),
    "created_at-shifted": ("created_at", "2020-01-01T00:00:00+00:00"),
    "created_at-garbage": ("created_at", "not a time"),
    "created_at-naive": ("created_at", "2020-01-01T00:00:00"),
    "policy": ("policy", "role:anyone"),
    "size": ("size", 1),
    "size-text": ("size", "many"),
    "size-huge": ("size", 2**62),
    "content_sha256": ("content_sha256", _other_hash()),
    "content_sha256-short": ("content_sha256", _other_hash()[:31]),
    "content_sha256-text": ("content_sha256", "ab" * 32),
    "leaf_hash": ("leaf_hash", _other_hash()),
    "leaf_hash-short": ("leaf_hash", _other_hash()[:31]),
    "mac-flipped": ("mac", b"\x00" * 32),
    "mac-null": ("mac", None),
    "batch_id-other": ("batch_id", "s0-000000000001-deadbeef"),
    "batch_id-null": ("batch_id", None),
    "batch_id-number": ("batch_id", 7),
    "leaf_index-out-of-range": ("leaf_index", 10**9),
    "leaf_index-negative": ("leaf_index", -1),
    "leaf_index-text": ("leaf_index", "x"),
    "leaf_index-null": ("leaf_index", None),
}


class Pool:
    """Records of one patient each, anchored in one batch up front: each row-edit case
    takes its own victim, so the Fabric variant pays for one batch, not one per case."""

    def __init__(self, world: World, n: int, anchored: bool):
        self.world = world
        self.rids: list[str] = []
        world.core.flush()
        for _ in range(n):
            patient, _ = world.patient()
            self.rids += world.put(patient, 1)
        patient, _ = world.patient()
        self.bystander = world.put(patient, 1)[0]
        if anchored:
            world.core.flush()

    def take(self) -> tuple[str, str]:
        rid = self.rids.pop()
        return rid, self.world.owners[rid].subject


@pytest.fixture(scope="module")
def anchored_pool(world: World) -> Pool:
    return Pool(world, len(ROW_EDITS) + 2, anchored=True)


@pytest.mark.parametrize("edit", sorted(ROW_EDITS))
def test_index_row_tampering_anchored(world: World, anchored_pool: Pool, edit: str) -> None:
    column, value = ROW_EDITS[edit]
    victim, patient = anchored_pool.take()
    world.sql(f"UPDATE records SET {column}=? WHERE record_id=?", (value, victim))
    if column == "patient_id":
        # the row now claims another patient: it is caught wherever it is looked at
        with pytest.raises(IntegrityError):
            world.get(victim)
        assert victim in world.verify().failed_record_ids
    else:
        assert_caught(world, victim, patient)
    assert_sound(world, anchored_pool.bystander)  # its batch still proves


PENDING_EDITS = [e for e in ROW_EDITS if not e.startswith(("batch_id", "leaf_index"))]


@pytest.mark.parametrize("edit", PENDING_EDITS)
def test_index_row_tampering_pending_is_never_anchored(world: World, edit: str) -> None:
    column, value = ROW_EDITS[edit]
    pool = Pool(world, 1, anchored=False)
    victim, patient = pool.take()
    world.sql(f"UPDATE records SET {column}=? WHERE record_id=?", (value, victim))
    world.core.flush()
    seq = world.query("SELECT seq FROM records WHERE record_id=?", (victim,))[0][0]
    assert world.core.book.covering(seq) is None  # the ledger never anchored it
    if column != "patient_id":
        assert_caught(world, victim, patient)
    assert world.get(pool.bystander)[2].anchored  # the good ones flow on


def test_record_id_rewritten(world: World) -> None:
    patient, _ = world.patient()
    victim, _ = world.anchored(patient, 2)
    world.sql("UPDATE records SET record_id=? WHERE record_id=?", ("r-renamed", victim))
    with pytest.raises(IntegrityError):  # stored, but the index lost it
        world.get(victim)
    with pytest.raises(IntegrityError):
        world.get("r-renamed")
    assert "r-renamed" in world.verify().failed_record_ids


def test_null_batch_is_not_pending(world: World) -> None:
    """A record the ledger covers is never treated as pending: with its batch nulled and
    its object replaced, it is caught, and the anchorer does not anchor it again."""
    patient, _ = world.patient()
    victim, other = world.anchored(patient, 2)
    world.sql("UPDATE records SET batch_id=NULL, leaf_index=NULL WHERE record_id=?", (victim,))
    world.overwrite_object(victim, world.object_bytes(other))
    world.core.book.refresh()
    head = world.core.book.head()
    world.core.flush()
    world.core.book.refresh()
    assert world.core.book.head() == head  # nothing re-anchored
    assert_caught(world, victim, patient)


def test_null_batch_heals_from_the_ledger(world: World) -> None:
    """An index that lost a record's placement (a restored backup) takes the ledger's."""
    patient, _ = world.patient()
    victim, _ = world.anchored(patient, 2)
    world.sql("UPDATE records SET batch_id=NULL, leaf_index=NULL WHERE record_id=?", (victim,))
    with pytest.raises(IntegrityError):
        world.get(victim)
    world.core.flush()
    assert_sound(world, victim)


def test_swapped_rows(world: World) -> None:
    patient, _ = world.patient()
    a, b = world.anchored(patient, 2)
    sa, sb = (world.row(x).seq for x in (a, b))
    world.sql("UPDATE records SET seq=-1 WHERE seq=?", (sa,))
    world.sql("UPDATE records SET seq=? WHERE seq=?", (sa, sb))
    world.sql("UPDATE records SET seq=? WHERE seq=-1", (sb,))
    assert_caught(world, a, patient)
    assert_caught(world, b, patient)


def test_deleted_rows(world: World) -> None:
    patient, _ = world.patient()
    victim, bystander = world.anchored(patient, 2)
    batch = world.row(victim).batch_id
    seq = world.row(victim).seq
    world.sql("DELETE FROM records WHERE record_id=?", (victim,))
    with pytest.raises(IntegrityError):
        world.get(victim)
    assert integrity_logged(world, victim)
    report = world.verify(patient)
    assert not report.ok
    assert batch in report.lost_anchors
    assert f"{batch}:{seq}" in report.missing_in_index
    with pytest.raises(IntegrityError):  # its batch no longer hashes to the anchor
        world.get(bystander)


def test_deleted_batch(world: World) -> None:
    """A whole batch deleted from the index: the chart no longer lists it, but the ledger
    says it existed, and verification (any scope) says so."""
    patient, _me = world.patient()
    rids = world.anchored(patient, 3)
    batch = world.row(rids[0]).batch_id
    world.sql("DELETE FROM records WHERE batch_id=?", (batch,))
    world.sql("DELETE FROM batches WHERE batch_id=?", (batch,))
    for rid in rids:
        with pytest.raises(IntegrityError):
            world.get(rid)
    for report in (world.verify(patient), world.verify()):
        assert batch in report.lost_anchors and not report.ok
        assert len([m for m in report.missing_in_index if m.startswith(batch)]) == 3


BATCH_EDITS: dict[str, tuple[str, object]] = {
    "merkle_root": ("merkle_root", b"\x11" * 32),
    "merkle_root-short": ("merkle_root", b"\x11" * 3),
    "tx_id-null": ("tx_id", None),
    "tx_id-forged": ("tx_id", "f" * 64),
    "tree_size": ("tree_size", 99),
    "first_seq": ("first_seq", "x"),
    "closed_at": ("closed_at", "garbage"),
}


@pytest.mark.parametrize("edit", sorted(BATCH_EDITS))
def test_index_batch_tampering(world: World, edit: str) -> None:
    """Batch rows are the index's memory, never the truth: receipts come from the
    ledger's anchor, and verification lists the difference."""
    column, value = BATCH_EDITS[edit]
    patient, _ = world.patient()
    victim, _ = world.anchored(patient, 2)
    batch = world.row(victim).batch_id
    assert batch is not None
    anchor = world.core.ledger.get_anchor(batch)
    world.sql(f"UPDATE batches SET {column}=? WHERE batch_id=?", (value, batch))
    receipt = world.receipt(victim)
    assert (receipt.merkle_root, receipt.tx_id, receipt.tree_size) == (
        anchor.merkle_root,
        anchor.tx_id,
        anchor.tree_size,
    )
    report = world.verify(patient)
    assert not report.ok
    assert any(p[1] == batch for p in report.problems), report.problems


def test_deleted_batch_row_only(world: World) -> None:
    patient, _ = world.patient()
    victim, _ = world.anchored(patient, 2)
    batch = world.row(victim).batch_id
    world.sql("DELETE FROM batches WHERE batch_id=?", (batch,))
    assert world.receipt(victim).anchored  # the ledger still says so
    report = world.verify(patient)
    assert batch in report.lost_anchors and not report.ok


def test_rolled_back_index(world: World) -> None:
    """An older copy of the index put back: the ledger knows what it lost, and new
    records never collide with what the ledger already covers."""
    patient, _ = world.patient()
    kept = world.anchored(patient, 2)
    pending_at_backup = world.put(patient, 1)
    restored = world.tmp / f"restored-{time.monotonic_ns()}.sqlite"
    world.backup_index(restored)
    world.core.flush()
    lost = world.anchored(patient, 2)
    lost_batch = world.row(lost[0]).batch_id
    core = world.open_core(restored)
    core.start()
    try:
        for rid in lost:
            with pytest.raises(IntegrityError):
                world.get(rid, core=core)
        report = world.verify(core=core)
        assert lost_batch in report.lost_anchors and not report.ok
        # what the backup already held checks out; what was pending then is adopted
        for rid in kept:
            world.get(rid, core=core)
        core.flush()
        world.get(pending_at_backup[0], core=core)
        # anchoring goes on after the restore: no collision with what the ledger covers
        fresh = world.put(patient, 2, core=core)
        before = set(core.anchorer.set_aside())
        result = core.flush()
        assert result.records == 2 and set(result.set_aside) == before
        for rid in fresh:
            assert world.get(rid, core=core)[2].anchored
    finally:
        core.anchorer.stop()


def test_instance_id_rewritten(world: World) -> None:
    copy = world.tmp / f"copy-{time.monotonic_ns()}.sqlite"
    world.backup_index(copy)
    world.sql("UPDATE settings SET value='s-someone-else' WHERE key='instance_id'", path=copy)
    with pytest.raises(IntegrityError):
        RecordIndex(copy, mac_key=KEYS.mac_key)


# -- forgery in the pending window ---------------------------------------------------------------
def _forged_meta(world: World, patient: str, envelope: bytes) -> RecordMeta:
    template = world.row(world.put(patient, 1)[0]).meta
    return dataclasses.replace(
        template,
        record_id=f"r-forged{time.monotonic_ns()}",
        content_sha256=hashlib.sha256(envelope).digest(),
        size=len(envelope),
    )


@pytest.mark.parametrize("mac", ["none", "zeros", "another-rows", "wrong-key"])
def test_forged_pending_row(world: World, mac: str) -> None:
    """A record slipped into the index and the store: never served, never anchored."""
    patient, _ = world.patient()
    world.core.flush()
    real = world.put(patient, 1)[0]
    envelope = world.object_bytes(real)
    meta = _forged_meta(world, patient, envelope)
    leaf = merkle.leaf_hash(leaf_bytes(meta))
    tag = {
        "none": None,
        "zeros": b"\x00" * 32,
        "another-rows": world.query("SELECT mac FROM records WHERE record_id=?", (real,))[0][0],
        "wrong-key": ServiceKeys.derive(b"a guess at the secret!!").row_mac(
            world.core.instance_id, leaf_bytes(meta)
        ),
    }[mac]
    world.core.store.put(envelope_key(meta.record_id), envelope)
    world.sql(
        "INSERT INTO records(record_id, patient_id, record_type, author, created_at, policy, "
        "size, content_sha256, leaf_hash, mac) VALUES(?,?,?,?,?,?,?,?,?,?)",
        (
            meta.record_id,
            meta.patient_id,
            meta.record_type,
            meta.author,
            meta.created_at.isoformat(),
            meta.policy,
            meta.size,
            meta.content_sha256,
            leaf,
            tag,
        ),
    )
    seq = world.query("SELECT seq FROM records WHERE record_id=?", (meta.record_id,))[0][0]
    world.core.flush()
    assert world.core.book.covering(seq) is None
    assert_caught(world, meta.record_id, patient)
    assert world.get(real)[2].anchored  # the good ones flow on


def test_deleted_pending_row_leaves_evidence(world: World) -> None:
    """A pending record removed from the index: the writer's signed receipt proves the
    service promised to anchor it by a deadline; the service answers DATA_LOSS."""
    patient, _ = world.patient()
    put = world.core.put_record(
        WRITER,
        patient_id=patient,
        record_type="ecg",
        payload=b"hr=1",
        policy=f"patient:{patient}",
    )
    world.sql("DELETE FROM records WHERE record_id=?", (put.meta.record_id,))
    with pytest.raises(IntegrityError):
        world.get(put.meta.record_id)
    r = put.receipt
    assert r.accepted_at is not None and r.anchor_deadline is not None
    public, key_id, _ = world.core.service_key()
    verify_pending_receipt(
        public,
        PendingPromise(
            r.record_id, r.leaf_hash, r.accepted_at, r.anchor_deadline, r.instance_id, key_id
        ),
        r.signature,
    )


def test_fresh_put_receipt_is_the_indexed_records(world: World) -> None:
    """PutRecord builds a new record's receipt from what it just committed, without
    reading the row back: it must be the receipt the index's row gives."""
    patient, _ = world.patient()
    world.core.flush()
    put = world.core.put_record(
        WRITER, patient_id=patient, record_type="ecg", payload=b"hr=2", policy=f"patient:{patient}"
    )
    assert not put.duplicate and not put.receipt.anchored
    world.owners[put.meta.record_id] = world.patients[patient]
    assert put.receipt == world.receipt(put.meta.record_id)
    assert put.meta == world.core.index.get(put.meta.record_id).meta  # type: ignore[union-attr]


def test_unanchored_past_its_deadline(world: World) -> None:
    patient, _ = world.patient()
    world.core.flush()
    rid = world.put(patient, 1)[0]
    late = dataclasses.replace(MANUAL, max_age_s=0.0, grace_s=0.0)
    time.sleep(0.01)
    with policy(world.core, late):
        assert_caught(world, rid, patient)
        assert rid in world.verify(patient).missing_on_ledger
    world.core.flush()
    assert_sound(world, rid)  # anchored late: sound again


# -- receipt forgery -------------------------------------------------------------------------------
def test_pending_receipt_forgery(world: World) -> None:
    patient, _ = world.patient()
    world.core.flush()
    rid = world.put(patient, 1)[0]
    r = world.receipt(rid)
    assert not r.anchored and r.accepted_at and r.anchor_deadline
    public, key_id, instance = world.core.service_key()
    genuine = PendingPromise(
        r.record_id, r.leaf_hash, r.accepted_at, r.anchor_deadline, instance, key_id
    )
    verify_pending_receipt(public, genuine, r.signature)
    forgeries = [
        dataclasses.replace(genuine, record_id="r-other"),
        dataclasses.replace(genuine, leaf_hash=_other_hash()),
        dataclasses.replace(genuine, anchor_deadline=r.anchor_deadline + timedelta(days=9)),
        dataclasses.replace(genuine, accepted_at=r.accepted_at - timedelta(seconds=1)),
        dataclasses.replace(genuine, instance_id="s-other"),
    ]
    for forged in forgeries:
        with pytest.raises(IntegrityError):
            verify_pending_receipt(public, forged, r.signature)
    impostor = ServiceKeys.derive(b"not the service's secret")
    from storage_service.receipts import sign_promise

    with pytest.raises(IntegrityError):
        verify_pending_receipt(public, genuine, sign_promise(impostor.signing_key, genuine))
    with pytest.raises(IntegrityError):
        verify_pending_receipt(public, genuine, r.signature[:-1] + bytes([r.signature[-1] ^ 1]))


def test_anchored_receipt_checked_against_the_ledger(world: World) -> None:
    patient, _ = world.patient()
    rid = world.anchored(patient, 3)[1]
    r = world.receipt(rid)
    anchor = world.core.ledger.get_anchor(r.batch_id)
    assert (r.merkle_root, r.tx_id, r.tree_size) == (
        anchor.merkle_root,
        anchor.tx_id,
        anchor.tree_size,
    )
    if anchor.block >= 0:
        assert r.block == anchor.block
    args = (r.leaf_hash, r.leaf_index, r.tree_size, r.inclusion_proof)
    verify_anchored_receipt(*args, anchor.merkle_root, anchor.tree_size)
    with pytest.raises(IntegrityError):  # a receipt claiming another tree size
        verify_anchored_receipt(
            r.leaf_hash,
            r.leaf_index,
            r.tree_size + 1,
            r.inclusion_proof,
            anchor.merkle_root,
            anchor.tree_size,
        )
    with pytest.raises(IntegrityError):  # a forged root
        verify_anchored_receipt(*args, b"\x22" * 32, anchor.tree_size)
    # a forged root in the index is not what receipts carry
    world.sql(
        "UPDATE batches SET merkle_root=?, tx_id=? WHERE batch_id=?",
        (b"\x33" * 32, "forged", r.batch_id),
    )
    again = world.receipt(rid)
    assert (again.merkle_root, again.tx_id) == (anchor.merkle_root, anchor.tx_id)


# -- anchoring survives a bad batch ------------------------------------------------------------------
def test_a_batch_the_ledger_refuses_is_set_aside(world: World) -> None:
    """A closed batch whose range the ledger already covers (as after restoring a backup)
    is set aside and reported; later batches and access events keep flowing."""
    patient, _ = world.patient()
    victim, _other = world.anchored(patient, 2)
    row = world.row(victim)
    first = row.seq
    bad = f"{world.core.instance_id}-{first:012d}-0badbad0"
    world.sql(
        "INSERT INTO batches(batch_id, merkle_root, tree_size, closed_at, first_seq, last_seq) "
        "VALUES(?,?,?,?,?,?)",
        (bad, b"\x00" * 32, 2, "2026-01-01T00:00:00+00:00", first, first + 1),
    )
    world.sql("UPDATE records SET batch_id=? WHERE seq IN (?,?)", (bad, first, first + 1))
    result = world.core.flush()
    assert bad in result.set_aside
    later = world.put(patient, 2)
    assert world.core.flush().records == 2
    for rid in later:
        assert world.get(rid)[2].anchored
    world.core.flush()  # the accesses above reach the ledger
    events = world.core.ledger.access_log(record_id=later[0], caller=AUDITOR)
    assert any(e.kind == "access" for e in events)
    report = world.verify(patient)
    assert bad in report.set_aside_batches and not report.ok
    assert bad in world.core.anchoring_status()[3]


def test_access_events_are_logged_once(world: World) -> None:
    """A crash between the ledger write and the dequeue resends the events: logged once."""
    patient, _ = world.patient()
    rid = world.anchored(patient, 1)[0]
    world.get(rid)
    queued = [e for e in world.core.index.queued_accesses(1000) if not isinstance(e, int)]
    mine = [e for e in queued if e.record_id == rid]
    assert len(mine) == 1 and mine[0].event_id
    # the "crash": the events reach the ledger, the queue is not emptied
    world.core.ledger.log_accesses(
        [(e.record_id, e.patient_id, e.subject, e.at, e.event_id) for e in mine]
    )
    world.core.flush()
    events = world.core.ledger.access_log(record_id=rid, caller=AUDITOR)
    assert len([e for e in events if e.kind == "access"]) == 1


def test_a_malformed_access_event_does_not_block_the_rest(world: World) -> None:
    patient, _ = world.patient()
    a, b = world.anchored(patient, 2)
    world.get(a)
    world.sql("UPDATE access_queue SET at='garbage' WHERE record_id=?", (a,))
    world.get(b)
    world.sql("UPDATE access_queue SET subject='not qualified' WHERE record_id=?", (b,))
    world.get(b)
    world.core.flush()
    assert not world.core.index.queued_accesses(10)
    events = world.core.ledger.access_log(record_id=b, caller=AUDITOR)
    assert len([e for e in events if e.kind == "access"]) == 1


# -- the embedded ledger's own file ---------------------------------------------------------------
@pytest.mark.parametrize("which", ["both", "by-id", "by-instance"])
def test_anchor_deleted_from_the_embedded_ledger(world: World, which: str) -> None:
    if world.name != "embedded":
        pytest.skip("Fabric: no storage host holds the ledger's state to delete from")
    patient, _ = world.patient()
    victim, _ = world.anchored(patient, 2)
    batch = world.row(victim).batch_id
    first = world.row(victim).seq
    ledger_file = world.tmp / "ledger.sqlite"
    keys = {
        "both": (f"anchor/{batch}", f"anchor-inst/{world.core.instance_id}/{first:016d}"),
        "by-id": (f"anchor/{batch}", ""),
        "by-instance": (f"anchor-inst/{world.core.instance_id}/{first:016d}", ""),
    }[which]
    world.sql("DELETE FROM state WHERE key IN (?, ?)", keys, path=ledger_file)
    if which != "by-instance":  # (the running service still holds the listed anchor)
        with pytest.raises(IntegrityError):
            world.get(victim)
    report = world.verify(patient)
    assert report.ledger_chain  # the state no longer replays from the log
    assert victim in report.failed_record_ids and batch in report.missing_on_ledger
    with pytest.raises(IntegrityError):  # at start-up, the ledger refuses to serve
        EmbeddedLedger(ledger_file, verify_chain=True)
    if which != "by-instance":
        with pytest.raises(NotFound):
            world.core.ledger.get_anchor(batch)


def test_no_records_yet(tmp_path: Path, authority: KeyAuthority) -> None:
    """A fresh service verifies clean (and `checked 0` is then the truth)."""
    w = World(
        "embedded",
        tmp_path,
        authority,
        lambda: FilesystemStore(tmp_path / "objects"),
        lambda: EmbeddedLedger(tmp_path / "ledger.sqlite"),
    )
    try:
        report = w.verify()
        assert report.ok and report.checked == 0
    finally:
        w.close()


# -- any edit of any cell: never a different record, never a crash (property) ---------------------
_COLUMNS = [
    "record_id",
    "patient_id",
    "record_type",
    "author",
    "created_at",
    "policy",
    "size",
    "content_sha256",
    "leaf_hash",
    "batch_id",
    "leaf_index",
    "mac",
    "seq",
]
_VALUES = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.floats(allow_nan=False),
)


@given(column=st.sampled_from(_COLUMNS), value=_VALUES, anchored=st.booleans())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_cell_edit_is_caught_or_harmless(
    cell_world: World, column: str, value: object, anchored: bool
) -> None:
    """Whatever one index cell becomes, GetRecord answers the record as it was stored or
    DATA_LOSS (NOT_FOUND only if its id itself changed), and VerifyRecords answers."""
    world = cell_world
    patient, _ = world.patient()
    world.core.flush()
    rid = world.put(patient, 1)[0]
    if anchored:
        world.core.flush()
    before = world.get(rid)
    with contextlib.suppress(sqlite3.IntegrityError):  # (a seq or id already taken)
        world.sql(f"UPDATE records SET {column}=? WHERE record_id=?", (value, rid))
    try:
        try:
            after = world.get(rid)
        except IntegrityError:
            pass
        except NotFound:
            assert column == "record_id"
        else:
            assert after[0] == before[0] and after[1] == before[1]
        report = world.verify(patient)
        assert report.checked >= 0
    finally:
        # a seq pushed out of range would starve the next examples' records (a denial
        # of service, not what this property is about): take it out again
        world.sql("DELETE FROM records WHERE seq > ? OR seq < 1", (2**53,))
        world.sql("UPDATE sqlite_sequence SET seq=(SELECT MAX(seq) FROM records)")


_TABLE_COLUMNS = [
    ("batches", "batch_id"),
    ("batches", "merkle_root"),
    ("batches", "tree_size"),
    ("batches", "closed_at"),
    ("batches", "tx_id"),
    ("batches", "block"),
    ("batches", "first_seq"),
    ("batches", "last_seq"),
    ("batches", "set_aside"),
    ("access_queue", "record_id"),
    ("access_queue", "patient_id"),
    ("access_queue", "subject"),
    ("access_queue", "at"),
    ("access_queue", "event_id"),
]


@given(target=st.sampled_from(_TABLE_COLUMNS), value=_VALUES, closed_only=st.booleans())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_batch_or_queue_edit_leaves_anchoring_flowing(
    embedded_world: World, target: tuple[str, str], value: object, closed_only: bool
) -> None:
    """Whatever one cell of a batch (closed, or anchored) or of a queued access event
    becomes, the next pass does not fail, later records get anchored and later reads
    reach the ledger's access log."""
    world = embedded_world
    table, column = target
    patient, _ = world.patient()
    world.core.flush()
    rid = world.put(patient, 1)[0]
    if closed_only:  # closed but not anchored: what an interrupted pass leaves
        world.core.anchorer._close_due_batches(force=True, head=world.core.book.head())
    else:
        world.core.flush()
        world.get(rid)  # an access event waits in the queue
    batch = world.query("SELECT batch_id FROM records WHERE record_id=?", (rid,))[0][0]
    where = ("batch_id=?", batch) if table == "batches" else ("record_id=?", rid)
    with contextlib.suppress(sqlite3.IntegrityError):
        world.sql(f"UPDATE {table} SET {column}=? WHERE {where[0]}", (value, where[1]))
    world.core.flush()
    later = world.put(patient, 1)[0]
    world.core.flush()
    assert world.get(later)[2].anchored
    world.core.flush()
    events = world.core.ledger.access_log(record_id=later, caller=AUDITOR)
    assert any(e.kind == "access" for e in events)
    world.verify(patient)  # answers, whatever it finds


def _embedded_world(authority: KeyAuthority, tmp: Path) -> World:
    return World(
        "embedded",
        tmp,
        authority,
        lambda: FilesystemStore(tmp / "objects"),
        lambda: EmbeddedLedger(tmp / "ledger.sqlite"),
    )


@pytest.fixture(scope="module")
def embedded_world(
    authority: KeyAuthority, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    w = _embedded_world(authority, tmp_path_factory.mktemp("world-property"))
    yield w
    w.close()


@pytest.fixture(scope="module")
def cell_world(
    authority: KeyAuthority, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """Its own world: cell edits may push seqs out of range (a denial of service the
    disk's owner can always cause), which the other property must not inherit."""
    w = _embedded_world(authority, tmp_path_factory.mktemp("world-cells"))
    yield w
    w.close()
