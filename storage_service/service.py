"""StorageService application logic, independent of gRPC.

put: encrypt if needed, write the envelope and its metadata to the object
store (write-once), index the pending leaf durably, answer; anchoring happens
in batches (`anchoring.Anchorer`). get: consent check on the ledger, fetch,
verify against the anchored Merkle root, audit, answer; a record that fails
verification is never returned.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ehr_common.errors import (
    AccessDenied,
    AlreadyExists,
    DecodeError,
    FailedPrecondition,
    IntegrityError,
    InvalidArgument,
    NotFound,
)
from storage_service.anchoring import Anchorer, AnchorPolicy, FlushResult
from storage_service.index import IndexedRecord, RecordIndex, SegmentRow
from storage_service.integrity import merkle
from storage_service.ledger.base import Caller
from storage_service.ledger.client import LedgerClient
from storage_service.objectstore.base import ObjectStore
from storage_service.records import (
    MAX_POLICY_CHARS,
    RecordMeta,
    envelope_key,
    new_record_id,
    record_context,
    utc_now,
    validate_id,
    validate_record_type,
)
from storage_service.verification import verify_records_stream

log = logging.getLogger(__name__)

#: Roles allowed to write records for any patient (devices and clinical staff).
#: Role of an edge gateway: it writes segments for the devices it authenticated (MQTT).
EDGE_ROLE = "edge-gateway"
WRITER_ROLES = frozenset({"device", "clinician", "doctor", "nurse", "record-writer", EDGE_ROLE})
#: Record type of a stream window's key envelope (see abe_service.segments).
WINDOW_RECORD_TYPE = "window-key"
SEGMENT_TYPE_PREFIX = "segment."
#: Idempotency-key namespaces of WriteSegments' window and segment records.
_STREAM_KEY_PREFIXES = ("window/", "segment/")
#: Items (window keys and segments) and bytes in one WriteSegments call: the
#: work one call can ask for is bounded whatever its items are.
MAX_STREAM_ITEMS = 4096
MAX_STREAM_BYTES = 256 * 1024 * 1024
#: Segments returned by one FetchSegments call.
MAX_FETCH_SEGMENTS = 100_000
MAX_TIME_MS = 2**62 - 1
#: A segment's readings: at most this far ahead of the service's clock, and over at
#: most this span (the edge takes readings within 24 h and 5 min of its own clock).
MAX_SEGMENT_FUTURE_MS = 24 * 3600 * 1000
MAX_SEGMENT_SPAN_MS = 2 * 24 * 3600 * 1000
#: Roles allowed to verify the whole store and read audit trails.
AUDITOR_ROLES = frozenset({"auditor", "admin"})
MAX_ENVELOPE_BYTES = 64 * 1024 * 1024


class Encryptor(Protocol):
    """What the storage service needs from the CP-ABE side (in-process or AbeService)."""

    def encrypt(self, policy: str, plaintext: bytes, context: bytes) -> bytes: ...

    def envelope_policy(self, envelope: bytes) -> str:
        """Validate an envelope's structure and return its policy (normal form);
        DecodeError if it is not a well-formed envelope."""
        ...


@dataclass(frozen=True)
class Receipt:
    record_id: str
    anchored: bool
    leaf_hash: bytes
    batch_id: str = ""
    leaf_index: int = 0
    tree_size: int = 0
    inclusion_proof: tuple[bytes, ...] = ()
    merkle_root: bytes = b""
    tx_id: str = ""
    block: int = 0


@dataclass(frozen=True)
class AuditEntry:
    kind: str
    record_id: str
    patient_id: str
    subject_id: str
    at: datetime
    tx_id: str
    detail: str


@dataclass(frozen=True)
class PutResult:
    meta: RecordMeta
    receipt: Receipt
    duplicate: bool


@dataclass(frozen=True)
class WindowItem:
    window_id: str
    patient_id: str
    device_id: str
    envelope: bytes


@dataclass(frozen=True)
class SegmentItem:
    idempotency_key: str
    record_type: str
    sealed: bytes


@dataclass(frozen=True)
class WriteResult:
    key: str
    record_id: str
    duplicate: bool


@dataclass(frozen=True)
class _Window:
    record_id: str
    patient_id: str
    device_id: str
    policy: str


@dataclass(frozen=True)
class VerifyReport:
    checked: int
    passed: int
    pending: int
    failed_record_ids: tuple[str, ...]
    seconds: float


class StorageCore:
    def __init__(
        self,
        *,
        store: ObjectStore,
        index: RecordIndex,
        ledger: LedgerClient,
        encryptor: Encryptor,
        service_caller: Caller,
        anchor_policy: AnchorPolicy | None = None,
    ):
        self.store = store
        self.index = index
        self.ledger = ledger
        self.encryptor = encryptor
        self.service_caller = service_caller
        instance = index.setting("instance_id", lambda: "s" + _rand_id())
        self.anchorer = Anchorer(index, ledger, anchor_policy or AnchorPolicy(), instance)
        self._roots: dict[str, bytes] = {}  # anchored roots read from the ledger (immutable)
        self._roots_lock = threading.Lock()
        self._window_cache: dict[str, _Window] = {}  # window records are immutable
        # Object writes of the segment streams overlap (MinIO answers in parallel).
        self._writers = ThreadPoolExecutor(max_workers=48, thread_name_prefix="segment-put")

    def start(self) -> None:
        self.anchorer.start()
        # Compile the integrity kernels in the background so the first
        # VerifyRecords does not pay numba's compilation time.
        threading.Thread(target=_warm_up_integrity, name="numba-warmup", daemon=True).start()

    def close(self) -> None:
        self._writers.shutdown(wait=True)
        self.anchorer.stop()
        self.index.close()
        self.store.close()
        self.ledger.close()

    # -- writing --------------------------------------------------------------
    def put_record(
        self,
        caller: Caller,
        *,
        patient_id: str,
        record_type: str,
        author: str = "",
        envelope: bytes | None = None,
        payload: bytes | None = None,
        policy: str = "",
        idempotency_key: str = "",
    ) -> PutResult:
        validate_id("patient id", patient_id)
        validate_record_type(record_type)
        author = author or caller.subject
        validate_id("author", author)
        self._authorize_write(caller, patient_id)
        if (envelope is None) == (payload is None):
            raise InvalidArgument("give either an envelope or a payload with a policy")
        if idempotency_key.startswith(_STREAM_KEY_PREFIXES):
            # WriteSegments' record ids live there: a PutRecord must not pre-empt them.
            raise InvalidArgument(
                f"idempotency keys starting with {' or '.join(_STREAM_KEY_PREFIXES)} are "
                "reserved for WriteSegments"
            )
        record_id = new_record_id(caller.subject, idempotency_key)
        if idempotency_key:
            existing = self.index.get(record_id)
            if existing is not None:
                return PutResult(existing.meta, self._receipt(existing), duplicate=True)
        if payload is not None:
            if not policy.strip():
                raise InvalidArgument("a payload needs a policy")
            if len(policy) > MAX_POLICY_CHARS:
                raise InvalidArgument(f"policy longer than {MAX_POLICY_CHARS} characters")
            envelope = self.encryptor.encrypt(policy, payload, record_context(patient_id))
        assert envelope is not None
        if len(envelope) > MAX_ENVELOPE_BYTES:
            raise InvalidArgument(f"envelope larger than {MAX_ENVELOPE_BYTES} bytes")
        try:
            envelope_policy = self.encryptor.envelope_policy(envelope)
        except DecodeError as exc:
            raise InvalidArgument(f"not a valid ehr-abe envelope: {exc}") from None

        duplicate = False
        meta = self._meta(
            record_id, patient_id, record_type, author, utc_now(), envelope_policy, envelope
        )
        try:
            self._put_one_object(meta, envelope, adopt=False)
        except AlreadyExists:
            if not idempotency_key:
                raise
            # An earlier attempt with this idempotency key wrote the object and then
            # failed before its index commit: adopt what it stored, never a second version.
            envelope = self.store.get(envelope_key(record_id))
            meta = self._meta(
                record_id,
                patient_id,
                record_type,
                author,
                meta.created_at,
                self.encryptor.envelope_policy(envelope),
                envelope,
            )
            duplicate = True
        leaf = merkle.leaf_hash(meta.leaf_bytes())
        if not self.index.commit_group([(meta, leaf, None)])[0]:
            duplicate = True
        self.anchorer.notify()
        indexed = self.index.get(record_id)
        assert indexed is not None
        return PutResult(indexed.meta, self._receipt(indexed), duplicate)

    def _authorize_write(
        self, caller: Caller, patient_id: str, device_id: str | None = None
    ) -> None:
        """The one write check, for PutRecord and WriteSegments alike. `device_id`:
        the device a segment is from; only that device or an edge gateway (which
        authenticated the device over MQTT) may write it."""
        if caller.subject != patient_id and not (caller.roles & WRITER_ROLES):
            raise AccessDenied(
                f"{caller.subject} may not write records: needs one of the roles "
                f"{', '.join(sorted(WRITER_ROLES))}, or to be the patient"
            )
        if device_id is not None and device_id != caller.subject and EDGE_ROLE not in caller.roles:
            raise AccessDenied(
                f"{caller.subject} may not write for device {device_id}: only the device "
                f"itself or an {EDGE_ROLE} may"
            )

    # -- IoMT segment streams -------------------------------------------------------
    def write_segments(
        self, caller: Caller, items: Iterable[WindowItem | SegmentItem]
    ) -> list[WriteResult]:
        """Store a stream of window keys and sealed segments; returns once every one
        is durable (objects written, index rows group-committed).

        Each item is checked as it arrives and its object write starts at once, so
        reading the stream, writing objects and other streams' commits overlap. A
        segment must name a window written earlier in this stream or before."""
        from abe_service.segments import parse_segment

        windows: dict[str, _Window] = {}
        pending: list[
            tuple[Future[None] | None, WriteResult, RecordMeta | None, SegmentRow | None]
        ] = []
        now = utc_now()
        now_ms = int(now.timestamp() * 1000)
        received = 0
        try:
            for n, item in enumerate(items):
                if n >= MAX_STREAM_ITEMS:
                    raise InvalidArgument(
                        f"more than {MAX_STREAM_ITEMS} items in one WriteSegments call"
                    )
                received += len(item.envelope if isinstance(item, WindowItem) else item.sealed)
                if received > MAX_STREAM_BYTES:
                    raise InvalidArgument(
                        f"more than {MAX_STREAM_BYTES} bytes in one WriteSegments call"
                    )
                if isinstance(item, WindowItem):
                    validate_id("window id", item.window_id)
                    validate_id("patient id", item.patient_id)
                    validate_id("device id", item.device_id)
                    self._authorize_write(caller, item.patient_id, item.device_id)
                    record_id = new_record_id(caller.subject, "window/" + item.window_id)
                    existing = self.index.get(record_id)
                    if existing is not None:
                        w = self._window_of(existing, item.patient_id, item.device_id)
                        if existing.meta.content_sha256 != hashlib.sha256(item.envelope).digest():
                            raise AlreadyExists(
                                f"window {item.window_id} was stored before with another key"
                            )
                        windows[item.window_id] = w
                        pending.append(
                            (None, WriteResult(item.window_id, record_id, True), None, None)
                        )
                        continue
                    if len(item.envelope) > MAX_ENVELOPE_BYTES:
                        raise InvalidArgument("window envelope too large")
                    try:
                        policy = self.encryptor.envelope_policy(item.envelope)
                    except DecodeError as exc:
                        raise InvalidArgument(
                            f"window {item.window_id}: not a valid envelope: {exc}"
                        ) from None
                    meta = self._meta(
                        record_id,
                        item.patient_id,
                        WINDOW_RECORD_TYPE,
                        item.device_id,
                        now,
                        policy,
                        item.envelope,
                    )
                    windows[item.window_id] = _Window(
                        record_id, item.patient_id, item.device_id, policy
                    )
                    future = self._writers.submit(self._put_one_object, meta, item.envelope)
                    pending.append(
                        (future, WriteResult(item.window_id, record_id, False), meta, None)
                    )
                    continue
                try:
                    header, _, _ = parse_segment(item.sealed)
                except DecodeError as exc:
                    raise InvalidArgument(f"segment {item.idempotency_key!r}: {exc}") from None
                if not item.idempotency_key or len(item.idempotency_key) > 256:
                    raise InvalidArgument("a segment needs an idempotency key of 1-256 characters")
                validate_id("patient id", header.patient_id)
                validate_id("device id", header.device_id)
                # A segment stamped in the far future or spanning years would come back
                # in every FetchSegments of its patient.
                if header.last_time_ms > now_ms + MAX_SEGMENT_FUTURE_MS:
                    raise InvalidArgument(
                        f"segment {item.idempotency_key!r} ends more than a day in the future"
                    )
                if header.last_time_ms - header.first_time_ms > MAX_SEGMENT_SPAN_MS:
                    raise InvalidArgument(
                        f"segment {item.idempotency_key!r} spans more than two days"
                    )
                if item.record_type != SEGMENT_TYPE_PREFIX + header.device_type:
                    raise InvalidArgument(
                        f"segment record type {item.record_type!r} does not match its device type"
                    )
                validate_record_type(item.record_type)
                self._authorize_write(caller, header.patient_id, header.device_id)
                window = windows.get(header.window_id)
                if window is None:
                    wrid = new_record_id(caller.subject, "window/" + header.window_id)
                    window = self._window_cache.get(wrid)
                    if window is None:
                        wrec = self.index.get(wrid)
                        if wrec is None:
                            raise FailedPrecondition(
                                f"segment {item.idempotency_key!r}: window {header.window_id} was never written"
                            )
                        window = self._window_of(wrec, wrec.meta.patient_id, wrec.meta.author)
                        if len(self._window_cache) > 50_000:
                            self._window_cache.clear()
                        self._window_cache[wrid] = window
                    windows[header.window_id] = window
                if (window.patient_id, window.device_id) != (header.patient_id, header.device_id):
                    raise InvalidArgument(
                        f"segment {item.idempotency_key!r} names another patient or device than its window"
                    )
                record_id = new_record_id(caller.subject, "segment/" + item.idempotency_key)
                existing = self.index.get(record_id)
                if existing is not None:
                    if existing.meta.content_sha256 != hashlib.sha256(item.sealed).digest():
                        raise AlreadyExists(
                            f"segment {item.idempotency_key!r} was stored before with other content"
                        )
                    pending.append(
                        (None, WriteResult(item.idempotency_key, record_id, True), None, None)
                    )
                    continue
                meta = self._meta(
                    record_id,
                    header.patient_id,
                    item.record_type,
                    header.device_id,
                    now,
                    window.policy,
                    item.sealed,
                )
                seg = SegmentRow(
                    record_id,
                    header.patient_id,
                    header.device_id,
                    window.record_id,
                    header.first_seq,
                    header.last_seq,
                    header.first_time_ms,
                    header.last_time_ms,
                )
                future = self._writers.submit(self._put_one_object, meta, item.sealed)
                pending.append(
                    (future, WriteResult(item.idempotency_key, record_id, False), meta, seg)
                )
        except BaseException:
            # No object write may outlive a refused call (its answer says nothing was stored).
            for fut, *_ in pending:
                if fut is not None:
                    fut.exception()
            raise
        rows: list[tuple[RecordMeta, bytes, SegmentRow | None]] = []
        for fut, _res, row_meta, row_seg in pending:
            if fut is not None:
                fut.result()  # raises the store's typed error
            if row_meta is not None:
                rows.append((row_meta, merkle.leaf_hash(row_meta.leaf_bytes()), row_seg))
        inserted = iter(self.index.commit_group(rows)) if rows else iter(())
        results: list[WriteResult] = []
        for _fut, result, row_meta, _seg in pending:
            if row_meta is not None and not next(inserted):
                result = WriteResult(result.key, result.record_id, True)  # a concurrent twin won
            results.append(result)
        if rows:
            self.anchorer.notify()
        return results

    @staticmethod
    def _meta(
        record_id: str,
        patient_id: str,
        record_type: str,
        author: str,
        at: datetime,
        policy: str,
        data: bytes,
    ) -> RecordMeta:
        return RecordMeta(
            record_id=record_id,
            patient_id=patient_id,
            record_type=record_type,
            author=author,
            created_at=at,
            policy=policy,
            size=len(data),
            content_sha256=hashlib.sha256(data).digest(),
        )

    def _put_one_object(self, meta: RecordMeta, data: bytes, *, adopt: bool = True) -> None:
        """One object per record, its metadata riding along as object metadata (the
        index and the anchored leaf are the truth; this copy helps an operator).
        adopt: an existing object with the same bytes counts as written."""
        packed = base64.b64encode(json.dumps(meta.to_json_dict()).encode()).decode()
        try:
            self.store.put(envelope_key(meta.record_id), data, {"ehr-meta": packed})
        except AlreadyExists:
            if not adopt:
                raise
            # A resend after a failure between the object write and the index commit.
            if (
                hashlib.sha256(self.store.get(envelope_key(meta.record_id))).digest()
                != meta.content_sha256
            ):
                raise AlreadyExists(
                    f"record {meta.record_id} was stored before with other content"
                ) from None

    @staticmethod
    def _window_of(rec: IndexedRecord, patient_id: str, device_id: str) -> _Window:
        m = rec.meta
        if m.record_type != WINDOW_RECORD_TYPE or (m.patient_id, m.author) != (
            patient_id,
            device_id,
        ):
            raise InvalidArgument("this window id belongs to another patient or device")
        return _Window(m.record_id, m.patient_id, m.author, m.policy)

    def fetch_segments(
        self, caller: Caller, patient_id: str, since_ms: int, until_ms: int, limit: int
    ) -> Iterator[tuple[bytes, RecordMeta, Receipt, str]]:
        """A patient's segments in a time range, each preceded once by its window record;
        every item verified against its anchor (as get_record) before it is yielded."""
        validate_id("patient id", patient_id)
        self._require_read(caller, patient_id)
        limit = limit or 10_000
        if not 1 <= limit <= MAX_FETCH_SEGMENTS:
            raise InvalidArgument(f"limit must be between 1 and {MAX_FETCH_SEGMENTS}")
        # Segment times are 0 <= t < 2**62 (SegmentHeader.check); beyond that is "no end",
        # and SQLite's integers stop at 2**63.
        until_ms = min(until_ms, MAX_TIME_MS)
        if not 0 <= since_ms <= until_ms:
            raise InvalidArgument(
                "the time range must be ordered (since <= until) and not before 1970"
            )
        rows = self.index.segments(patient_id, since_ms, until_ms, limit)
        sent_windows: set[str] = set()
        for start in range(0, len(rows), 256):
            chunk = rows[start : start + 256]
            wanted: list[tuple[str, str]] = []  # (record id, its window's record id or "")
            for r in chunk:
                if r.window_record_id not in sent_windows:
                    sent_windows.add(r.window_record_id)
                    wanted.append((r.window_record_id, ""))
                wanted.append((r.record_id, r.window_record_id))
            keys = [envelope_key(rid) for rid, _ in wanted]
            for (rid, window_rid), (_key, data) in zip(
                wanted, self.store.get_many(keys), strict=True
            ):
                rec = self._record(rid)
                if data is None:
                    self._integrity_failure(rec, "the stored object is missing")
                    raise IntegrityError(f"record {rid} is missing from the object store")
                receipt = self._receipt(rec)
                problem = self._verify_one(rec, data, receipt)
                if problem:
                    self._integrity_failure(rec, problem)
                    raise IntegrityError(f"record {rid} failed its integrity check: {problem}")
                self.index.queue_access(rid, patient_id, caller.subject, utc_now())
                yield data, rec.meta, receipt, window_rid

    # -- reading ----------------------------------------------------------------
    def _require_read(self, caller: Caller, patient_id: str) -> None:
        if caller.subject == patient_id:
            return
        if not self.ledger.consent_allows(patient_id, caller.subject, utc_now()):
            raise AccessDenied(
                f"{caller.subject} has no consent from patient {patient_id} to read their records"
            )

    def _record(self, record_id: str) -> IndexedRecord:
        validate_id("record id", record_id)
        rec = self.index.get(record_id)
        if rec is None:
            raise NotFound(f"no record {record_id}")
        return rec

    def get_record(self, caller: Caller, record_id: str) -> tuple[bytes, RecordMeta, Receipt]:
        rec = self._record(record_id)
        self._require_read(caller, rec.meta.patient_id)
        try:
            envelope = self.store.get(envelope_key(record_id))
        except NotFound:
            self._integrity_failure(rec, "the stored object is missing")
            raise IntegrityError(f"record {record_id} is missing from the object store") from None
        receipt = self._receipt(rec)  # its proof serves the check and the answer
        problem = self._verify_one(rec, envelope, receipt)
        if problem:
            self._integrity_failure(rec, problem)
            raise IntegrityError(f"record {record_id} failed its integrity check: {problem}")
        self.index.queue_access(record_id, rec.meta.patient_id, caller.subject, utc_now())
        return envelope, rec.meta, receipt

    def get_receipt(self, caller: Caller, record_id: str) -> Receipt:
        rec = self._record(record_id)
        self._require_read(caller, rec.meta.patient_id)
        return self._receipt(rec)

    def list_records(
        self, caller: Caller, patient_id: str, page_size: int, page_token: str
    ) -> tuple[list[RecordMeta], str]:
        validate_id("patient id", patient_id)
        self._require_read(caller, patient_id)
        size = page_size or 50
        if not 1 <= size <= 1000:
            raise InvalidArgument("page_size must be between 1 and 1000")
        after = _decode_token(page_token)
        rows = self.index.by_patient(patient_id, after, size + 1)
        more = len(rows) > size
        rows = rows[:size]
        token = _encode_token(rows[-1].seq) if more and rows else ""
        return [r.meta for r in rows], token

    # -- verification -------------------------------------------------------------
    def _anchored_root(self, batch_id: str) -> bytes:
        with self._roots_lock:
            root = self._roots.get(batch_id)
        if root is None:
            root = self.ledger.get_anchor(batch_id).merkle_root
            with self._roots_lock:
                self._roots[batch_id] = root
        return root

    def _verify_one(self, rec: IndexedRecord, envelope: bytes, receipt: Receipt) -> str:
        """'' if the record is what was stored and anchored; else what is wrong.
        The receipt's inclusion proof is checked against the root read from the ledger."""
        if hashlib.sha256(envelope).digest() != rec.meta.content_sha256:
            return "the stored ciphertext does not match its recorded hash"
        leaf = merkle.leaf_hash(rec.meta.leaf_bytes())
        if leaf != rec.leaf_hash:
            return "the record's metadata does not match its leaf"
        if not receipt.anchored:
            return ""  # pending: durable locally, not yet on the ledger
        root = self._anchored_root(receipt.batch_id)
        if not merkle.verify_inclusion(
            leaf, receipt.leaf_index, receipt.tree_size, receipt.inclusion_proof, root
        ):
            return f"its leaf is not in the Merkle root anchored for batch {receipt.batch_id}"
        return ""

    def _integrity_failure(self, rec: IndexedRecord, detail: str) -> None:
        log.error("integrity failure: record %s: %s", rec.meta.record_id, detail)
        try:
            self.ledger.log_integrity_failure(rec.meta.record_id, rec.batch_id or "", detail)
        except Exception as exc:  # the read still fails; the log line above remains
            log.error("could not log integrity failure on the ledger: %s", exc)

    def verify_records(
        self,
        caller: Caller,
        *,
        patient_id: str | None = None,
        batch_id: str | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> VerifyReport:
        """Check stored records against their anchored leaves with the integrity core."""
        if patient_id is not None:
            self._require_read(caller, patient_id)
        elif not (caller.roles & AUDITOR_ROLES):
            raise AccessDenied("verifying the whole store needs the auditor role")
        started = time.perf_counter()
        report = verify_records_stream(
            self.index,
            self.store,
            root_of=self._anchored_root,
            patient_id=patient_id,
            batch_id=batch_id,
            on_progress=on_progress,
        )
        for rid in report.failed_record_ids:
            rec = self.index.get(rid)
            if rec is not None:
                self._integrity_failure(rec, "found by VerifyRecords")
        return VerifyReport(
            checked=report.checked,
            passed=report.passed,
            pending=report.pending,
            failed_record_ids=tuple(report.failed_record_ids),
            seconds=time.perf_counter() - started,
        )

    # -- consent and audit -------------------------------------------------------
    def grant_consent(
        self, caller: Caller, patient_id: str, subject_id: str, expires_at: datetime | None
    ) -> str:
        validate_id("patient id", patient_id)
        validate_id("subject id", subject_id)
        return self.ledger.grant_consent(caller, patient_id, subject_id, expires_at).tx_id

    def revoke_consent(self, caller: Caller, patient_id: str, subject_id: str) -> str:
        validate_id("patient id", patient_id)
        validate_id("subject id", subject_id)
        return self.ledger.revoke_consent(caller, patient_id, subject_id).tx_id

    def audit_trail(
        self, caller: Caller, *, record_id: str | None = None, subject_id: str | None = None
    ) -> list[AuditEntry]:
        """Ledger events for a record (accesses, integrity failures, and its patient's
        consent changes) or for a subject (their accesses)."""
        if (record_id is None) == (subject_id is None):
            raise InvalidArgument("give a record id or a subject id")
        entries: list[AuditEntry] = []
        if record_id is not None:
            rec = self._record(record_id)
            if caller.subject != rec.meta.patient_id and not (caller.roles & AUDITOR_ROLES):
                raise AccessDenied("only the patient or an auditor may read a record's audit trail")
            patient = rec.meta.patient_id
            for c in self.ledger.consent_history(patient):
                entries.append(
                    AuditEntry(
                        "consent-grant" if c.granted else "consent-revoke",
                        "",
                        patient,
                        c.subject_id,
                        c.at,
                        c.tx_id,
                        f"by {c.by_subject}",
                    )
                )
        else:
            assert subject_id is not None
            validate_id("subject id", subject_id)
            if caller.subject != subject_id and not (caller.roles & AUDITOR_ROLES):
                raise AccessDenied(
                    "only the subject or an auditor may read a subject's audit trail"
                )
        for e in self.ledger.access_log(record_id=record_id, subject_id=subject_id):
            entries.append(
                AuditEntry(e.kind, e.record_id, e.patient_id, e.subject_id, e.at, e.tx_id, e.detail)
            )
        return sorted(entries, key=lambda e: e.at)

    def flush(self) -> FlushResult:
        return self.anchorer.run_once(force=True)

    # -- receipts ---------------------------------------------------------------
    def _receipt(self, rec: IndexedRecord) -> Receipt:
        pending = Receipt(record_id=rec.meta.record_id, anchored=False, leaf_hash=rec.leaf_hash)
        if rec.batch_id is None or rec.leaf_index is None:
            return pending
        batch = self.index.batch(rec.batch_id)
        if batch is None or batch.tx_id is None:
            return pending
        proof = merkle.inclusion_proof(self.index.batch_leaf_hashes(rec.batch_id), rec.leaf_index)
        return Receipt(
            record_id=rec.meta.record_id,
            anchored=True,
            leaf_hash=rec.leaf_hash,
            batch_id=rec.batch_id,
            leaf_index=rec.leaf_index,
            tree_size=batch.tree_size,
            inclusion_proof=tuple(proof),
            merkle_root=batch.merkle_root,
            tx_id=batch.tx_id,
            block=batch.block or 0,
        )


def _warm_up_integrity() -> None:
    from storage_service.integrity.sha256 import sha256_many

    sha256_many([b"warm-up"])
    merkle.merkle_root([bytes(32), bytes(32)])


def _rand_id() -> str:
    import secrets

    return secrets.token_hex(4)


def _encode_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode()


def _decode_token(token: str) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        version, seq = text.split(":", 1)
        if version != "v1":
            raise ValueError
        return int(seq)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("page_token is not one this service issued") from None
