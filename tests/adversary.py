"""Shared helpers for the adversarial integrity suite: a storage service on a real
backend pair, and the moves of someone with write access to the storage host's
disk (objects, index) but not to the ledger or the service's secret.

The embedded pair: filesystem store + SQLite ledger. The deployed pair: MinIO
(versioned, object-locked bucket; the attacker holds its credentials) + Fabric.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abe_service.authority import KeyAuthority
from abe_service.client import LocalEncryptor
from storage_service.anchoring import AnchorPolicy
from storage_service.index import IndexedRecord, RecordIndex
from storage_service.keys import ServiceKeys
from storage_service.ledger.base import Caller
from storage_service.ledger.client import LedgerClient
from storage_service.objectstore.fs import FilesystemStore
from storage_service.records import envelope_key
from storage_service.service import StorageCore, VerifyReport
from storage_service.wiring import SERVICE_ROLES, SERVICE_SUBJECT

DEVICE = Caller("ecg-7", "Hosp1MSP", frozenset({"device"}))
AUDITOR = Caller("auditor-1", "Hosp1MSP", frozenset({"auditor"}))
SERVICE = Caller(SERVICE_SUBJECT, "Hosp1MSP", SERVICE_ROLES)
KEYS = ServiceKeys.derive(b"adversarial suite storage secret")
#: anchoring only when a test flushes; deadlines far away unless a test says otherwise
MANUAL = AnchorPolicy(max_records=1000, max_age_s=3600, retry_s=0.2)


@dataclass
class World:
    """One storage service on one backend pair, shared by a test module."""

    name: str
    tmp: Path
    authority: KeyAuthority
    make_store: Callable[[], Any]
    make_ledger: Callable[[], Any]
    core: StorageCore = field(init=False)
    cores: list[StorageCore] = field(default_factory=list)
    patients: dict[str, Caller] = field(default_factory=dict)
    owners: dict[str, Caller] = field(default_factory=dict)  # record id -> its patient

    def __post_init__(self) -> None:
        self.core = self.open_core(self.tmp / "index.sqlite")

    @property
    def index_path(self) -> Path:
        return self.tmp / "index.sqlite"

    def open_core(self, index_path: Path, policy: AnchorPolicy = MANUAL) -> StorageCore:
        core = StorageCore(
            store=self.make_store(),
            index=RecordIndex(index_path, mac_key=KEYS.mac_key),
            ledger=LedgerClient(self.make_ledger(), SERVICE),
            encryptor=LocalEncryptor(self.authority.public_params),
            service_caller=SERVICE,
            keys=KEYS,
            anchor_policy=policy,
        )
        self.cores.append(core)
        return core

    def close(self) -> None:
        for c in self.cores:
            with contextlib.suppress(Exception):
                c.close()

    # -- writing --------------------------------------------------------------------
    def patient(self) -> tuple[str, Caller]:
        """A fresh patient (who reads and verifies their own records: no consent needed,
        which keeps the Fabric variant to the transactions the test is about)."""
        pid = f"p-{secrets.token_hex(4)}"
        me = Caller(pid, "Hosp1MSP", frozenset({"patient"}))
        self.patients[pid] = me
        return pid, me

    def put(self, patient: str, n: int = 1, core: StorageCore | None = None) -> list[str]:
        c = core or self.core
        rids = [
            c.put_record(
                DEVICE,
                patient_id=patient,
                record_type="ecg",
                payload=b"hr=%d" % (60 + i),
                policy=f"patient:{patient}",
            ).meta.record_id
            for i in range(n)
        ]
        for rid in rids:
            self.owners[rid] = self.patients[patient]
        return rids

    def get(self, record_id: str, core: StorageCore | None = None) -> Any:
        """GetRecord as the record's patient: (envelope, metadata, receipt)."""
        return (core or self.core).get_record(self.owners.get(record_id, AUDITOR), record_id)

    def receipt(self, record_id: str) -> Any:
        return self.core.get_receipt(self.owners.get(record_id, AUDITOR), record_id)

    def anchored(self, patient: str, n: int = 2) -> list[str]:
        """n records of `patient`, anchored together in a batch of their own."""
        self.core.flush()  # leftovers of earlier tests go into a batch of their own
        rids = self.put(patient, n)
        self.core.flush()
        return rids

    def row(self, record_id: str) -> IndexedRecord:
        r = self.core.index.get(record_id)
        assert isinstance(r, IndexedRecord), r
        return r

    def verify(self, patient: str | None = None, core: StorageCore | None = None) -> VerifyReport:
        """VerifyRecords for one patient (as that patient) or the whole store (auditor)."""
        caller = self.patients[patient] if patient is not None else AUDITOR
        return (core or self.core).verify_records(caller, patient_id=patient)

    # -- the index, as the attacker edits it -------------------------------------------
    def sql(self, statement: str, args: tuple[Any, ...] = (), path: Path | None = None) -> None:
        db = sqlite3.connect(str(path or self.index_path), isolation_level=None)
        try:
            db.execute(statement, args)
        finally:
            db.close()

    def query(self, statement: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(str(self.index_path), isolation_level=None)
        try:
            return db.execute(statement, args).fetchall()
        finally:
            db.close()

    def backup_index(self, to: Path) -> None:
        src = sqlite3.connect(str(self.index_path))
        dst = sqlite3.connect(str(to))
        try:
            src.backup(dst)
        finally:
            src.close()
            dst.close()

    # -- the object store, as the attacker edits it ------------------------------------
    def object_bytes(self, record_id: str) -> bytes:
        return bytes(self.core.store.get(envelope_key(record_id)))

    def overwrite_object(self, record_id: str, data: bytes) -> None:
        key = envelope_key(record_id)
        store: Any = self.core.store
        if isinstance(store, FilesystemStore):
            path = store.root / key
            os.chmod(path, 0o600)
            path.write_bytes(data)
        else:  # MinIO: a new version, around the service's conditional write
            store.client.put_object(store.bucket, key, io.BytesIO(data), len(data))

    def delete_object(self, record_id: str) -> None:
        key = envelope_key(record_id)
        store: Any = self.core.store
        if isinstance(store, FilesystemStore):
            (store.root / key).unlink()
        else:  # MinIO: a delete marker (object lock keeps the version itself)
            store.client.remove_object(store.bucket, key)

    def replay_older_version(self, record_id: str, other_id: str) -> None:
        """MinIO: make an older version of another record's object the latest version
        of this one (server-side copy by version id). Filesystem: the same bytes."""
        store: Any = self.core.store
        if isinstance(store, FilesystemStore):
            self.overwrite_object(record_id, self.object_bytes(other_id))
            return
        from minio.commonconfig import CopySource

        versions = list(
            store.client.list_objects(
                store.bucket, prefix=envelope_key(other_id), include_version=True
            )
        )
        oldest = min(versions, key=lambda v: v.last_modified)
        store.client.copy_object(
            store.bucket,
            envelope_key(record_id),
            CopySource(store.bucket, envelope_key(other_id), version_id=oldest.version_id),
        )


def integrity_logged(world: World, record_id: str) -> bool:
    """Did the service log an integrity failure for this record on the ledger?"""
    events = world.core.ledger.access_log(record_id=record_id, caller=AUDITOR)
    return any(e.kind == "integrity-failure" for e in events)


@contextlib.contextmanager
def policy(core: StorageCore, p: AnchorPolicy) -> Iterator[None]:
    """Run with another anchoring policy (deadlines) for receipts and verification."""
    old = core.policy
    core.policy = p
    try:
        yield
    finally:
        core.policy = old
