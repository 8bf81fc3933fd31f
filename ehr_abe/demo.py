"""`ehr-abe demo`: the end-to-end scenario, step by step, over real gRPC.

Runs against an in-process server on embedded backends (default, in a fresh
temporary home) or against a running server (`--target host:port`, which must
be in development mode: the demo plays several people through identity headers).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from abe_service.client import AbeKeyring
from ehr_common.api.v1 import abe_pb2, abe_pb2_grpc, storage_pb2, storage_pb2_grpc
from ehr_common.config import Config, load_config
from ehr_common.errors import EhrAbeError
from ehr_common.grpc_errors import error_from_rpc
from ehr_common.identity import DEV_ROLES_HEADER, DEV_SUBJECT_HEADER
from storage_service.records import envelope_key, record_context

POLICY = "(role:doctor and dept:cardiology) or patient:p-17"
PATIENT = "p-17"
#: A joint study: needs an attribute from each medical centre's own authority.
JOINT_POLICY = "role:cardiologist@hosp1 and study:heart-2027@hosp2"
CENTRES = ("hosp1", "hosp2")


@dataclass(frozen=True)
class Actor:
    subject: str
    roles: tuple[str, ...]
    attributes: tuple[str, ...]
    label: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((DEV_SUBJECT_HEADER, self.subject), (DEV_ROLES_HEADER, ",".join(self.roles)))


AUTHORITY = Actor("key-authority", ("authority",), (), "the key authority")
CARDIOLOGIST = Actor(
    "dr-heart",
    ("doctor",),
    ("role:doctor", "dept:cardiology", "clearance=3"),
    "Dr Heart, cardiologist",
)
NURSE = Actor("nurse-joy", ("nurse",), ("role:nurse", "dept:cardiology"), "Nurse Joy, cardiology")
OTHER_DOCTOR = Actor(
    "dr-other", ("doctor",), ("role:doctor", "dept:cardiology"), "Dr Other, no consent"
)
PATIENT_ACTOR = Actor(PATIENT, ("patient",), (f"patient:{PATIENT}",), "patient p-17")
DEVICE = Actor("ecg-monitor-7", ("device",), (), "ECG monitor #7 (IoMT device)")
AUDITOR = Actor("auditor-1", ("auditor",), (), "hospital auditor")
JOINT_DOCTOR = Actor("dr-joint", ("doctor",), (), "Dr Joint (hosp1 cardiologist, hosp2 study)")
HOSP1_ONLY = Actor("dr-solo", ("doctor",), (), "Dr Solo (hosp1 cardiologist only)")


class Demo:
    def __init__(
        self,
        channel: grpc.Channel,
        console: Console,
        data_dir: Path | None,
        endpoint: str = "",
        centres: dict[str, Any] | None = None,
    ):
        self.endpoint = endpoint
        self.centres = centres or {}  # org -> MaAuthority with its secret key (local demo)
        self.abe = abe_pb2_grpc.AbeServiceStub(channel)
        self.storage = storage_pb2_grpc.StorageServiceStub(channel)
        self.console = console
        self.data_dir = data_dir
        self.step_no = 0
        self.keys: dict[str, AbeKeyring] = {}

    def receipts(self, record_ids: list[str]) -> list[Any]:
        return [
            self.call(
                PATIENT_ACTOR,
                self.storage.GetReceipt,
                storage_pb2.GetReceiptRequest(record_id=rid),
            )
            for rid in record_ids
        ]

    def step(self, title: str) -> None:
        self.step_no += 1
        self.console.rule(f"[bold cyan]{self.step_no}. {title}")

    def ok(self, text: str) -> None:
        self.console.print(f"  [green]✔[/] {text}")

    def refused(self, text: str) -> None:
        self.console.print(f"  [yellow]✘[/] {text}")

    def call(self, actor: Actor, method: Any, request: Any) -> Any:
        try:
            return method(request, metadata=actor.metadata, timeout=30)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    def expect_refusal(self, what: str, fn: object) -> EhrAbeError:
        try:
            fn()  # type: ignore[operator]
        except EhrAbeError as exc:
            self.refused(f"{what}: [bold]{type(exc).__name__}[/] — {exc}")
            return exc
        raise AssertionError(f"{what} was expected to be refused but succeeded")

    def run(self) -> None:
        c = self.console
        self.step("Key authority: public parameters")
        pp = self.call(AUTHORITY, self.abe.GetPublicParams, abe_pb2.GetPublicParamsRequest())
        self.ok(
            f"scheme {pp.scheme}, authority {pp.authority_id[:16]}…, {len(pp.public_params)} bytes"
        )

        self.step("Issue attribute keys")
        for actor in (CARDIOLOGIST, NURSE, OTHER_DOCTOR, PATIENT_ACTOR):
            resp = self.call(
                AUTHORITY,
                self.abe.IssueUserKey,
                abe_pb2.IssueUserKeyRequest(subject_id=actor.subject, attributes=actor.attributes),
            )
            self.keys[actor.subject] = AbeKeyring.from_bytes(resp.user_key)
            self.ok(f"{actor.label}: key {resp.key_id[:12]}… for {', '.join(actor.attributes)}")

        self.step("Check the policy a security team wrote")
        chk = self.call(AUTHORITY, self.abe.CheckPolicy, abe_pb2.CheckPolicyRequest(policy=POLICY))
        self.ok(f"normal form: {chk.normal_form}")
        self.ok(
            f"attributes: {', '.join(chk.attributes)}; span program {chk.span_program_rows} x {chk.span_program_columns}"
        )

        self.step(f"{DEVICE.label} streams readings, encrypted under the policy")
        record_ids = []
        started = time.perf_counter()
        for i in range(12):
            reading = {"seq": i, "hr_bpm": 60 + (i * 7) % 40, "st_mv": round(0.05 * (i % 5), 2)}
            resp = self.call(
                DEVICE,
                self.storage.PutRecord,
                storage_pb2.PutRecordRequest(
                    patient_id=PATIENT,
                    record_type="ecg",
                    plain=storage_pb2.PlainContent(
                        payload=json.dumps(reading).encode(), policy=POLICY
                    ),
                    idempotency_key=f"ecg-monitor-7/{i}",
                ),
            )
            record_ids.append(resp.record_id)
        ms = (time.perf_counter() - started) * 1000
        self.ok(
            f"{len(record_ids)} records stored in {ms:.0f} ms; receipts say PENDING until anchored"
        )
        again = self.call(
            DEVICE,
            self.storage.PutRecord,
            storage_pb2.PutRecordRequest(
                patient_id=PATIENT,
                record_type="ecg",
                plain=storage_pb2.PlainContent(payload=b"{}", policy=POLICY),
                idempotency_key="ecg-monitor-7/0",
            ),
        )
        self.ok(
            f"a retried upload (same idempotency key) returns {again.record_id} again: duplicate={again.duplicate}"
        )

        self.step("Anchor the pending records on the ledger (one transaction per batch)")
        before = self.receipts(record_ids)
        already = {r.record_id for r in before if r.status == storage_pb2.ANCHOR_STATUS_ANCHORED}
        fl = self.call(DEVICE, self.storage.FlushAnchors, storage_pb2.FlushAnchorsRequest())
        after = self.receipts(record_ids)
        batches = {
            r.batch_id: r.tx_id for r in after if r.status == storage_pb2.ANCHOR_STATUS_ANCHORED
        }
        if already:
            self.ok(
                f"{len(already)} of the {len(record_ids)} records were already anchored "
                "by the service's background anchorer"
            )
        self.ok(
            f"this flush anchored {fl.records} records in {fl.batches} batch(es), "
            f"one ledger transaction each"
        )
        self.ok(
            f"the {len(record_ids)} records now sit in {len(batches)} batch(es) "
            f"({len(set(batches.values()))} transaction(s))"
        )
        rec = after[3]
        self.ok(
            f"record {rec.record_id}: batch {rec.batch_id}, leaf {rec.leaf_index} of {rec.tree_size}, "
            f"root {rec.merkle_root.hex()[:16]}…, {len(rec.inclusion_proof)}-hash inclusion proof, "
            f"tx {rec.tx_id[:16]}…"
        )

        self.step("The patient grants consent to the cardiologist and the nurse")
        for actor in (CARDIOLOGIST, NURSE):
            tx = self.call(
                PATIENT_ACTOR,
                self.storage.GrantConsent,
                storage_pb2.GrantConsentRequest(patient_id=PATIENT, subject_id=actor.subject),
            )
            self.ok(f"consent for {actor.label} on the ledger (tx {tx.tx_id[:16]}…)")
        self.expect_refusal(
            "Dr Other tries to grant himself consent",
            lambda: self.call(
                OTHER_DOCTOR,
                self.storage.GrantConsent,
                storage_pb2.GrantConsentRequest(
                    patient_id=PATIENT, subject_id=OTHER_DOCTOR.subject
                ),
            ),
        )

        self.step("The cardiologist reads a reading (consent ✔, policy ✔, integrity ✔)")
        got = self.call(
            CARDIOLOGIST,
            self.storage.GetRecord,
            storage_pb2.GetRecordRequest(record_id=record_ids[3]),
        )
        plain = self.keys[CARDIOLOGIST.subject].decrypt(got.envelope, record_context(PATIENT))
        self.ok(f"verified against anchored root, decrypted: {plain.decode()}")

        self.step("The nurse: consent ✔ but the ABE policy refuses")
        got = self.call(
            NURSE, self.storage.GetRecord, storage_pb2.GetRecordRequest(record_id=record_ids[3])
        )
        self.expect_refusal(
            "nurse decrypts",
            lambda: self.keys[NURSE.subject].decrypt(got.envelope, record_context(PATIENT)),
        )

        self.step("Another doctor: the right attributes, but no consent on the ledger")
        self.expect_refusal(
            "Dr Other fetches",
            lambda: self.call(
                OTHER_DOCTOR,
                self.storage.GetRecord,
                storage_pb2.GetRecordRequest(record_id=record_ids[3]),
            ),
        )

        self.step("The patient reads their own record and revokes the cardiologist's consent")
        got = self.call(
            PATIENT_ACTOR,
            self.storage.GetRecord,
            storage_pb2.GetRecordRequest(record_id=record_ids[5]),
        )
        self.ok(
            f"patient decrypts: {self.keys[PATIENT].decrypt(got.envelope, record_context(PATIENT)).decode()}"
        )
        self.call(
            PATIENT_ACTOR,
            self.storage.RevokeConsent,
            storage_pb2.RevokeConsentRequest(patient_id=PATIENT, subject_id=CARDIOLOGIST.subject),
        )
        self.ok("consent revoked on the ledger")
        self.expect_refusal(
            "the cardiologist fetches again",
            lambda: self.call(
                CARDIOLOGIST,
                self.storage.GetRecord,
                storage_pb2.GetRecordRequest(record_id=record_ids[3]),
            ),
        )

        self.step("Someone with disk access tampers with a stored object")
        victim = record_ids[7]
        if self.data_dir is not None:
            path = self.data_dir / "objects" / envelope_key(victim)
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0x01
            os.chmod(path, 0o600)
            path.write_bytes(bytes(data))
            self.ok(f"flipped one bit of {path.name} on disk")
            self.expect_refusal(
                "the patient fetches the tampered record",
                lambda: self.call(
                    PATIENT_ACTOR,
                    self.storage.GetRecord,
                    storage_pb2.GetRecordRequest(record_id=victim),
                ),
            )
        else:
            c.print("  (skipped: the target server's storage is not on this machine)")
        report = self.call(
            AUDITOR, self.storage.VerifyRecords, storage_pb2.VerifyRecordsRequest(all=True)
        )
        self.ok(
            f"auditor verifies everything: {report.checked} checked, {report.passed} passed, "
            f"failed: {', '.join(report.failed_record_ids) or 'none'} ({report.seconds * 1000:.0f} ms)"
        )

        self.run_multi_authority()

        self.step("Audit trail on the ledger")
        self.call(DEVICE, self.storage.FlushAnchors, storage_pb2.FlushAnchorsRequest())
        trail = self.call(
            AUDITOR,
            self.storage.GetAuditTrail,
            storage_pb2.GetAuditTrailRequest(record_id=record_ids[3]),
        )
        table = Table("when", "event", "subject", "record", "detail")
        for e in trail.events:
            table.add_row(
                e.at.ToDatetime().strftime("%H:%M:%S.%f")[:-3],
                e.kind,
                e.subject_id,
                e.record_id,
                e.detail,
            )
        c.print(table)

        self.step("IoMT ward: ECG, pulse oximeter and BP cuff through MQTT and the edge gateway")
        from ehr_abe.demo_iomt import run_iomt

        work = Path(tempfile.mkdtemp(prefix="ehr-abe-demo-iomt-"))
        try:
            run_iomt(
                c,
                endpoint=self.endpoint,
                public_params=pp.public_params,
                work=work,
                patient=PATIENT,
                reader=NURSE.label,
                reader_key=self.keys[NURSE.subject],
                storage=self.storage,
                reader_md=NURSE.metadata,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        c.print(
            Panel.fit(
                "[bold green]demo complete[/]: every refusal above came from the policy, the ledger or the integrity check"
            )
        )

    def run_multi_authority(self) -> None:
        """Two medical centres, two authorities: a record that needs both."""
        self.step("Two medical centres, two authorities: a record needs attributes of both")
        if not self.centres:
            self.console.print("  (skipped: the centres' authority keys are not on this machine)")
            return
        from abe_service.ma.envelope import MaKeyring
        from abe_service.ma.scheme import UserKey, merge_keys
        from abe_service.ma.validity import day_number

        today = day_number(datetime.now(UTC))
        for org, auth in self.centres.items():
            self.ok(f"authority {org}: key {auth.fingerprint.hex()[:16]}… registered on the ledger")
        h1, h2 = self.centres["hosp1"], self.centres["hosp2"]

        def issue(org: Any, gid: str, attrs: list[str], until: int) -> bytes:
            return bytes(
                org.issue_key(gid, attrs, valid_from=today - 1, valid_until=until).user_key
            )

        joint = MaKeyring.from_user_keys(
            [
                issue(h1, JOINT_DOCTOR.subject, ["role:cardiologist@hosp1"], today + 365),
                issue(h2, JOINT_DOCTOR.subject, ["study:heart-2027@hosp2"], today + 90),
            ]
        )
        solo = MaKeyring.from_user_keys(
            [issue(h1, HOSP1_ONLY.subject, ["role:cardiologist@hosp1"], today + 365)]
        )
        self.ok(
            f"{JOINT_DOCTOR.label}: one key from each centre, bound to GID {JOINT_DOCTOR.subject}"
        )
        self.ok(f"{HOSP1_ONLY.label}: hosp1's key only")
        resp = self.call(
            DEVICE,
            self.storage.PutRecord,
            storage_pb2.PutRecordRequest(
                patient_id=PATIENT,
                record_type="ecg-study",
                plain=storage_pb2.PlainContent(
                    payload=b'{"study": "heart-2027", "hr_bpm": 71}', policy=JOINT_POLICY
                ),
                idempotency_key="ecg-monitor-7/study-0",
            ),
        )
        self.ok(f"record {resp.record_id} under [cyan]{JOINT_POLICY}[/]")
        for actor in (JOINT_DOCTOR, HOSP1_ONLY):
            self.call(
                PATIENT_ACTOR,
                self.storage.GrantConsent,
                storage_pb2.GrantConsentRequest(patient_id=PATIENT, subject_id=actor.subject),
            )
        got = self.call(
            JOINT_DOCTOR,
            self.storage.GetRecord,
            storage_pb2.GetRecordRequest(record_id=resp.record_id),
        )
        self.ok(f"stored policy (validity added by the storage service): {got.metadata.policy}")
        plain = joint.decrypt(got.envelope, record_context(PATIENT))
        self.ok(f"Dr Joint's keyring (both centres) decrypts: {plain.decode()}")
        got = self.call(
            HOSP1_ONLY,
            self.storage.GetRecord,
            storage_pb2.GetRecordRequest(record_id=resp.record_id),
        )
        self.expect_refusal(
            "Dr Solo, hosp1's key alone",
            lambda: solo.decrypt(got.envelope, record_context(PATIENT)),
        )
        self.expect_refusal(
            "Dr Solo adds Dr Joint's hosp2 key to his keyring",
            lambda: merge_keys([solo.key, joint.keys[1].key]),
        )
        # and the mathematics agrees: the pooled parts, forced into one key, give a wrong
        # session key (H(GID) differs), which the key commitment refuses
        pooled = MaKeyring(solo.ma, solo.keys)
        pooled.key = UserKey(solo.gid, {**solo.key.parts, **joint.keys[1].key.parts})
        self.expect_refusal(
            "the two keys forced together decrypt (collusion)",
            lambda: pooled.decrypt(got.envelope, record_context(PATIENT)),
        )
        expired = MaKeyring.from_user_keys(
            [
                issue(h1, "dr-late", ["role:cardiologist@hosp1"], today - 1),
                issue(h2, "dr-late", ["study:heart-2027@hosp2"], today - 1),
            ]
        )
        self.expect_refusal(
            "a key that expired yesterday opens today's record",
            lambda: expired.decrypt(got.envelope, record_context(PATIENT)),
        )


@contextmanager
def _local_server(home: Path) -> Iterator[tuple[grpc.Channel, Path, str, bytes]]:
    from abe_service.authority import KeyAuthority
    from ehr_abe.server import start_server

    passphrase = secrets.token_urlsafe(24).encode()
    cfg: Config = load_config(env={})
    cfg.home = str(home)
    cfg.server.listen = "127.0.0.1:0"
    # Anchoring waits for the demo's anchoring step (FlushAnchors), so the step
    # shows the whole batch; a running service anchors on its own (every 2 s).
    cfg.storage.batch_max_age_s = 3600.0
    KeyAuthority.setup(cfg.authority_dir, passphrase=passphrase)
    _setup_centres(cfg, passphrase)
    running = start_server(cfg, passphrase=passphrase)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield channel, cfg.storage_dir, f"127.0.0.1:{running.port}", passphrase
    finally:
        channel.close()
        running.stop()


def _setup_centres(cfg: Config, passphrase: bytes) -> None:
    """Each centre's multi-authority key, registered on the (embedded) ledger by its own
    organisation, before the server opens the ledger."""
    from abe_service.ma.authority import MaAuthority
    from abe_service.ma.scheme import SCHEME_ID
    from ehr_abe.cli.ma import msp_of
    from storage_service.ledger.base import Caller
    from storage_service.ledger.client import LedgerClient
    from storage_service.wiring import SERVICE_ROLES, SERVICE_SUBJECT, build_ledger

    ledger = LedgerClient(build_ledger(cfg), Caller(SERVICE_SUBJECT, "Hosp1MSP", SERVICE_ROLES))
    try:
        for org in CENTRES:
            auth = MaAuthority.setup(cfg.ma_authority_dir(org), org, passphrase=passphrase)
            caller = Caller(f"authority-{org}", msp_of(org), frozenset({"authority"}))
            ledger.register_authority(caller, org, SCHEME_ID, auth.public_key, auth.fingerprint)
    finally:
        ledger.close()


def _open_centres(home: Path, passphrase: bytes) -> dict[str, Any]:
    from abe_service.ma.authority import MaAuthority

    cfg: Config = load_config(env={})
    cfg.home = str(home)
    return {
        org: MaAuthority.open(cfg.ma_authority_dir(org), passphrase=passphrase) for org in CENTRES
    }


def run_demo(target: str | None, keep: bool, console: Console) -> None:
    console.print(
        Panel.fit(
            "[bold]ehr-abe demo[/]: CP-ABE (FAME, BLS12-381) + object storage + ledger anchoring\n"
            f"policy on every reading: [cyan]{POLICY}[/]"
        )
    )
    if target:
        with grpc.insecure_channel(target) as channel:
            Demo(channel, console, None, target).run()
        return
    home = Path(tempfile.mkdtemp(prefix="ehr-abe-demo-"))
    try:
        console.print(f"embedded backends in {home} (filesystem object store, SQLite ledger)")
        with _local_server(home) as (channel, storage_dir, endpoint, passphrase):
            Demo(channel, console, storage_dir, endpoint, _open_centres(home, passphrase)).run()
    finally:
        if keep:
            console.print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
