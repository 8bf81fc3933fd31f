"""StorageService application logic, independent of gRPC.

put: authorise (`authorization.decide_write`), encrypt if needed, write the
envelope and its metadata to the object store (write-once), index the pending
leaf durably (with its MAC), answer with a receipt the service signs;
anchoring happens in batches (`anchoring.Anchorer`). get: consent check on the
ledger, fetch, verify against the anchor the LEDGER holds for the record's seq
(the index is never trusted to say whether a record is anchored), audit,
answer; a record that fails verification is never returned (DATA_LOSS) and is
logged on the ledger, and a record the caller may not read is answered exactly
like a missing one.

Patients, grantees, authors and devices are organisation-qualified
(`<MSP>/<subject>`); a bare subject in a request is one of the caller's own
organisation (`ehr_common.identity.qualify`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NoReturn, Protocol, runtime_checkable

from ehr_common.errors import (
    AccessDenied,
    AlreadyExists,
    DecodeError,
    EhrAbeError,
    FailedPrecondition,
    IntegrityError,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from ehr_common.identity import qualify
from storage_service.anchoring import Anchorer, AnchorPolicy, FlushResult
from storage_service.anchors import AnchorBook
from storage_service.authorization import (
    FACT_ASSIGNMENT,
    FACT_CONSENT,
    WriteFacts,
    decide_write,
    facts_needed,
    may_read,
    resolve_author,
)
from storage_service.index import MAX_SEQ, BadRow, IndexedRecord, RecordIndex, Row, SegmentRow
from storage_service.integrity import merkle
from storage_service.integrity.merkle import merkle_root_or_none
from storage_service.keys import ServiceKeys
from storage_service.ledger.base import Caller
from storage_service.ledger.client import Anchor, AssignmentChange, LedgerClient
from storage_service.objectstore.base import ObjectStore
from storage_service.receipts import PendingPromise, sign_promise
from storage_service.record_ids import RecordIdKeys
from storage_service.records import (
    MAX_POLICY_CHARS,
    PACK_MAX_BYTES,
    PACK_MAX_ITEMS,
    Pack,
    PackRef,
    RecordMeta,
    envelope_key,
    new_record_id,
    record_context,
    utc_now,
    validate_id,
    validate_record_type,
)
from storage_service.shared_puts import SharedPuts
from storage_service.stored_bytes import read_records
from storage_service.verification import StreamReport, verify_instance

if TYPE_CHECKING:
    from abe_service.segments import SegmentHeader

log = logging.getLogger(__name__)

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
#: How long a positive ledger answer for a write (a device's assignment, a
#: cross-organisation clinician's consent) is reused without asking again: an
#: unassignment or a revocation takes effect on writes within this time.
#: Refusals are never cached, and nothing is reused past an assignment's expiry.
WRITE_FACTS_TTL_S = 5.0
#: ... and for a device's assignment: longer, because every streaming device needs
#: one re-confirmed per TTL (a thousand devices at 5 s kept a fifth of a core of
#: peer and chaincode busy); an unassignment through this service still applies
#: at once, and nothing is reused past the assignment's own expiry.
ASSIGNMENT_FACTS_TTL_S = 30.0
#: While the ledger is unreachable, a positive answer confirmed within this
#: time (and, for an assignment, not yet expired) still authorises writes, so
#: an assigned device keeps writing through a ledger outage of minutes.
WRITE_FACTS_GRACE_S = 600.0
#: The refresher re-confirms, in bulk, the assignments of devices that wrote recently
#: once a fact is this far through its TTL, so a streaming device never waits for a
#: ledger query (asked on the write path, 1,000 devices at a 5 s TTL were 200
#: sequential ledger queries a second).
WRITE_FACTS_REFRESH_AT = 0.6
#: "Recently": within this time (15 s; a streaming device writes every few seconds).
#: One that stopped is forgotten by the refresher, and asks again on its next write,
#: rather than costing the ledger a read per TTL for nothing.
WRITE_FACTS_KEEP_WARM_S = 3 * WRITE_FACTS_TTL_S


class _FactCache:
    """Positive ledger answers for write authorisation: fresh for `ttl_s`, and usable
    while the ledger is unreachable until `grace_s` after confirmation (never past
    the fact's own end)."""

    def __init__(
        self,
        ttl_s: float,
        grace_s: float,
        clock: Callable[[], float] = time.monotonic,
        keep_warm_s: float = WRITE_FACTS_KEEP_WARM_S,
        ttl_by_kind: Mapping[str, float] | None = None,
    ) -> None:
        self._ttl = ttl_s
        self._ttl_by_kind = dict(ttl_by_kind or {})
        self._keep_warm = keep_warm_s
        self._grace = grace_s
        self._clock = clock
        self._until: dict[tuple[str, str, str], tuple[float, float]] = {}
        self._used: dict[tuple[str, str, str], float] = {}  # last authorised write
        self._drops = 0  # counts drop() calls
        self._dropped: dict[tuple[str, str, str], int] = {}  # key -> _drops after its drop
        self._lock = threading.Lock()

    def _lookup(self, key: tuple[str, str, str], stale_ok: bool) -> bool:
        with self._lock:
            entry = self._until.get(key)
            if entry is None:
                return False
            fresh_until, usable_until = entry
            now = self._clock()
            if now >= usable_until:
                del self._until[key]
                return False
            return stale_ok or now < fresh_until

    def fresh(self, key: tuple[str, str, str]) -> bool:
        if self._lookup(key, stale_ok=False):
            with self._lock:
                self._used[key] = self._clock()
            return True
        return False

    def ttl_of(self, kind: str) -> float:
        return self._ttl_by_kind.get(kind, self._ttl)

    def touch(self, key: tuple[str, str, str]) -> None:
        """Count `key` as in use, so the refresher keeps it confirmed."""
        with self._lock:
            self._used[key] = self._clock()

    def due(self, kind: str) -> list[tuple[str, str, str]]:
        """Facts of `kind` used within `keep_warm_s` that are past WRITE_FACTS_REFRESH_AT
        of their freshness: what a refresher should re-confirm now. Facts not used
        for that long are forgotten by it (their next write asks the ledger itself)."""
        now = self._clock()
        out = []
        with self._lock:
            for key, used in list(self._used.items()):
                if now - used > self._keep_warm:
                    del self._used[key]
                    continue
                entry = self._until.get(key)
                if key[0] == kind and (
                    entry is None
                    or entry[0] - now < self.ttl_of(kind) * (1 - WRITE_FACTS_REFRESH_AT)
                ):
                    out.append(key)
        return out

    def usable_offline(self, key: tuple[str, str, str]) -> bool:
        return self._lookup(key, stale_ok=True)

    def drops(self) -> int:
        """A mark for put(unless_dropped_since=...)."""
        with self._lock:
            return self._drops

    def put(
        self, key: tuple[str, str, str], valid_for_s: float, *, unless_dropped_since: int = -1
    ) -> None:
        """The ledger says `key` holds for `valid_for_s` more seconds. With
        unless_dropped_since (a drops() mark taken before asking), an answer that
        raced with a drop of the key (an unassignment on this service) is ignored."""
        if valid_for_s <= 0:
            return
        now = self._clock()
        with self._lock:
            if unless_dropped_since >= 0 and self._dropped.get(key, -1) > unless_dropped_since:
                return
            if len(self._until) > 100_000:  # bounded: drop everything rather than grow
                self._until.clear()
            self._until[key] = (
                now + min(self.ttl_of(key[0]), valid_for_s),
                now + min(self._grace, valid_for_s),
            )

    def drop(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._until.pop(key, None)
            self._used.pop(key, None)
            self._drops += 1
            if len(self._dropped) > 100_000:
                self._dropped.clear()
            self._dropped[key] = self._drops


class _Pack(Pack):
    """The window keys and segments of one WriteSegments call, and its object write."""

    future: Future[None] | None = None


#: WriteSegments reads this far ahead of the item it works on (see _read_ahead)
READ_AHEAD_ITEMS = 256
READ_AHEAD_BYTES = 4 * 1024 * 1024
#: batches whose leaves, proven against the ledger's root, GetRecord keeps in memory
PROVEN_BATCHES = 32
#: integrity failures one VerifyRecords logs on the ledger (one transaction each)
MAX_LOGGED_FAILURES = 200
_LOGGABLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,127}")


class Encryptor(Protocol):
    """What the storage service needs from the CP-ABE side (in-process or AbeService)."""

    def encrypt(self, policy: str, plaintext: bytes, context: bytes) -> bytes: ...

    def envelope_policy(self, envelope: bytes) -> str:
        """Validate an envelope's structure and return its policy (normal form);
        DecodeError if it is not a well-formed envelope."""
        ...


@runtime_checkable
class NewEnvelopeCheck(Protocol):
    """An Encryptor that can also vet a client-made envelope for a NEW record (the
    SchemeRouter: the validity condition must be there, abe_service/ma/validity.py)."""

    def check_new_envelope(self, envelope: bytes, *, fame: bool = True) -> str: ...


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
    #: pending receipts: the service's signed promise to anchor by `anchor_deadline`
    accepted_at: datetime | None = None
    anchor_deadline: datetime | None = None
    signature: bytes = b""
    key_id: str = ""
    instance_id: str = ""


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
    problems: tuple[tuple[str, str, str], ...] = ()  # (record id, batch id, what is wrong)
    lost_anchors: tuple[str, ...] = ()
    root_mismatches: tuple[str, ...] = ()
    missing_on_ledger: tuple[str, ...] = ()
    missing_in_index: tuple[str, ...] = ()
    set_aside_batches: tuple[str, ...] = ()
    ledger_chain: str = ""  # embedded ledger: "" if its hash chain verifies, else why not

    @property
    def ok(self) -> bool:
        return not (
            self.failed_record_ids
            or self.problems
            or self.lost_anchors
            or self.root_mismatches
            or self.missing_on_ledger
            or self.missing_in_index
            or self.set_aside_batches
            or self.ledger_chain
        )

    @staticmethod
    def from_stream(
        r: StreamReport, seconds: float, set_aside: tuple[str, ...], chain: str
    ) -> VerifyReport:
        return VerifyReport(
            checked=r.checked,
            passed=r.passed,
            pending=r.pending,
            failed_record_ids=tuple(r.failed_record_ids),
            seconds=seconds,
            problems=tuple(r.problems),
            lost_anchors=tuple(r.lost_anchors),
            root_mismatches=tuple(r.root_mismatches),
            missing_on_ledger=tuple(r.missing_on_ledger),
            missing_in_index=tuple(r.missing_in_index),
            set_aside_batches=set_aside,
            ledger_chain=chain,
        )


def ledger_chain_problem(ledger: LedgerClient) -> str:
    """'' if the ledger has no local hash chain or it verifies; else what is wrong."""
    verify_chain = getattr(ledger.ledger, "verify_chain", None)
    if verify_chain is None:
        return ""
    try:
        verify_chain()
    except IntegrityError as exc:
        return str(exc)
    return ""


class StorageCore:
    def __init__(
        self,
        *,
        store: ObjectStore,
        index: RecordIndex,
        ledger: LedgerClient,
        encryptor: Encryptor,
        service_caller: Caller,
        id_keys: RecordIdKeys | None = None,
        keys: ServiceKeys,
        anchor_policy: AnchorPolicy | None = None,
        write_facts_ttl_s: float = WRITE_FACTS_TTL_S,
        assignment_facts_ttl_s: float = ASSIGNMENT_FACTS_TTL_S,
    ):
        self.store = store
        self.index = index
        self.ledger = ledger
        self.encryptor = encryptor
        # a runtime-checkable Protocol's isinstance costs tens of microseconds: once here
        self._vetter = encryptor if isinstance(encryptor, NewEnvelopeCheck) else None
        self.service_caller = service_caller
        self.id_keys = id_keys or keys.ids  # tests may pin their own
        self._facts = _FactCache(
            write_facts_ttl_s,
            WRITE_FACTS_GRACE_S,
            ttl_by_kind={FACT_ASSIGNMENT: assignment_facts_ttl_s},
        )
        self._stopping = threading.Event()
        self._refresher: threading.Thread | None = None
        self.keys = keys
        self.policy = anchor_policy or AnchorPolicy()
        self.instance_id = index.instance_id
        self.book = AnchorBook(ledger, self.instance_id)
        self.anchorer = Anchorer(
            index, ledger, self.policy, self.book, on_bad_row=self._bad_row_failure
        )
        self._proven: OrderedDict[tuple[str, bytes], list[bytes]] = OrderedDict()
        self._proven_lock = threading.Lock()
        self._window_cache: dict[str, _Window] = {}  # window records are immutable
        # Object writes of the segment streams overlap (MinIO answers in parallel).
        self._writers = ThreadPoolExecutor(max_workers=48, thread_name_prefix="segment-put")
        self._shared_puts = SharedPuts(
            put_one=self._put_one_object,
            put_pack=lambda key, body, metadata: self.store.put(key, body, metadata),
            commit=self.index.commit_group,
            max_bytes=PACK_MAX_BYTES,
            max_items=PACK_MAX_ITEMS,
        )

    def start(self) -> None:
        try:  # learn what the ledger holds; new records then get seqs it never covered
            self.book.refresh()
            self.index.reserve_seqs_through(self.book.head())
        except EhrAbeError as exc:
            log.warning("ledger unavailable at start-up, anchoring will catch up: %s", exc)
        self.anchorer.start()
        # Devices that were streaming before a restart: confirm them in bulk on the
        # refresher's first pass, not one ledger query per device on the write path.
        for patient, device in self.index.recent_segment_writers():
            self._facts.touch((FACT_ASSIGNMENT, patient, device))
        self._refresher = threading.Thread(
            target=self._refresh_facts_forever, name="write-facts", daemon=True
        )
        self._refresher.start()
        # Compile the integrity kernels in the background so the first
        # VerifyRecords does not pay numba's compilation time.
        threading.Thread(target=_warm_up_integrity, name="numba-warmup", daemon=True).start()

    def close(self) -> None:
        self._stopping.set()
        if self._refresher is not None:
            self._refresher.join(timeout=30)
        self._writers.shutdown(wait=True)
        self.anchorer.stop()
        self.index.close()
        self.store.close()
        self.ledger.close()

    # -- writing --------------------------------------------------------------
    def authorize_write(self, caller: Caller, patient_id: str, device_id: str | None = None) -> str:
        """The qualified patient id if `caller` may write for `patient_id` now;
        AccessDenied otherwise. Every write path calls this (or `decide_write`).
        `device_id`: the device whose reading the caller relays (an edge gateway),
        bare ids being of the caller's organisation."""
        patient = qualify(patient_id, caller.msp_id, "patient id")
        device = qualify(device_id, caller.msp_id, "device id") if device_id else None
        needed = facts_needed(caller, patient, device)
        facts = WriteFacts(
            device_assigned=FACT_ASSIGNMENT in needed
            and self._device_assigned(device or caller.principal, patient),
            consented=FACT_CONSENT in needed and self._write_consent(caller, patient),
        )
        decide_write(caller, patient, facts, device=device)
        return patient

    def _device_assigned(self, device: str, patient: str) -> bool:
        key = (FACT_ASSIGNMENT, patient, device)

        def ask() -> float | None:
            now = utc_now()
            expiry = self.ledger.assignment_expiry(patient, device, now)
            return None if expiry is None else (expiry - now).total_seconds()

        return self._fact(key, ask)

    def refresh_write_facts(self) -> int:
        """Re-confirm, in bulk, the assignments of devices writing now (see
        _FactCache.due); returns how many were asked about. A refusal drops the
        fact (the device's next write asks the ledger itself and is refused); an
        unreachable ledger leaves the cache as it is (the write path's grace rules)."""
        keys = self._facts.due(FACT_ASSIGNMENT)
        if keys:
            self._confirm_assignments(keys)
        return len(keys)

    def _confirm_assignments(self, keys: list[tuple[str, str, str]]) -> None:
        """Ask the ledger about these assignment facts in bulk (AssignmentsAllow) and
        cache its answers: a holding one for as long as it holds (unless the key was
        dropped meanwhile, an unassignment on this service), a refusal dropped.
        Unavailable when the ledger cannot be reached (the cache is left as it is)."""
        mark = self._facts.drops()
        now = utc_now()
        expiries = self.ledger.assignment_expiries([(k[1], k[2]) for k in keys], now)
        for key, expiry in zip(keys, expiries, strict=True):
            if expiry is None:
                self._facts.drop(key)
            else:
                self._facts.put(key, (expiry - now).total_seconds(), unless_dropped_since=mark)

    def _refresh_facts_forever(self) -> None:
        interval = max(0.05, self._facts.ttl_of(FACT_ASSIGNMENT) / 10)
        while not self._stopping.wait(interval):
            try:
                self.refresh_write_facts()
            except EhrAbeError as exc:
                log.warning("could not re-confirm device assignments on the ledger: %s", exc)

    def _write_consent(self, caller: Caller, patient: str) -> bool:
        key = (FACT_CONSENT, patient, caller.principal)

        def ask() -> float | None:
            allowed = self.ledger.consent_allows(patient, caller.principal, utc_now())
            return WRITE_FACTS_GRACE_S if allowed else None

        return self._fact(key, ask)

    def _fact(self, key: tuple[str, str, str], ask: Callable[[], float | None]) -> bool:
        """A ledger fact for a write: cached if fresh, else asked (`ask` returns how long
        it holds, or None if it does not); a recent positive answer stands in while
        the ledger is unreachable."""
        if self._facts.fresh(key):
            return True
        try:
            holds_for = ask()
        except Unavailable:
            if self._facts.usable_offline(key):
                log.warning("ledger unreachable: write authorised by a recent %s", key[0])
                return True
            raise
        if holds_for is None:
            self._facts.drop(key)
            return False
        self._facts.put(key, holds_for)
        return True

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
        validate_record_type(record_type)
        author = resolve_author(caller, author)
        if (envelope is None) == (payload is None):
            raise InvalidArgument("give either an envelope or a payload with a policy")
        if idempotency_key.startswith(_STREAM_KEY_PREFIXES):
            # WriteSegments' record ids live there: a PutRecord must not pre-empt them.
            raise InvalidArgument(
                f"idempotency keys starting with {' or '.join(_STREAM_KEY_PREFIXES)} are "
                "reserved for WriteSegments"
            )
        patient_id = self.authorize_write(caller, patient_id)
        if idempotency_key:
            record_id = self.id_keys.record_id(caller.principal, idempotency_key)
            fingerprint = self.id_keys.fingerprint(
                patient_id=patient_id,
                record_type=record_type,
                envelope=envelope,
                payload=payload,
                policy=policy,
            )
            if self.index.claim_idempotency(record_id, fingerprint) != fingerprint:
                raise AlreadyExists(
                    "this idempotency key was already used for a different request "
                    "(another patient, record type, content or policy); use a new key"
                )
            existing = self.index.get(record_id)
            if existing is not None:
                sound = self._sound(existing)
                return PutResult(sound.meta, self._receipt(sound), duplicate=True)
        else:
            record_id = new_record_id()
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
            envelope_policy = (
                self.encryptor.envelope_policy(envelope)
                if payload is not None  # this service made it, with its own policy
                else self._new_envelope_policy(envelope)
            )
        except DecodeError as exc:
            raise InvalidArgument(f"not a valid ehr-abe envelope: {exc}") from None

        duplicate = False
        meta = self._meta(
            record_id, patient_id, record_type, author, utc_now(), envelope_policy, envelope
        )
        leaf = merkle.leaf_hash(meta.leaf_bytes())
        try:
            seq = self._shared_puts.store(meta, envelope, leaf)
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
            seq = self.index.commit_group([(meta, leaf, None, None)])[0]
        self.anchorer.notify()
        if seq is not None and not duplicate and 1 <= seq <= MAX_SEQ:
            # The row just committed holds exactly this metadata and leaf: reading it
            # back would re-check our own MAC. A new record is pending: no ledger read.
            fresh = IndexedRecord(seq, meta, leaf, None, None)
            return PutResult(meta, self._pending_receipt(fresh), duplicate=False)
        row = self.index.get(record_id)
        if row is None:
            raise IntegrityError(f"record {record_id} vanished from the index")
        indexed = self._sound(row)
        return PutResult(indexed.meta, self._receipt(indexed), duplicate=True)

    def _new_envelope_policy(self, envelope: bytes, *, fame: bool = True) -> str:
        """The policy of a client-made envelope for a new record, vetted if the
        encryptor can (NewEnvelopeCheck); DecodeError if malformed."""
        if self._vetter is not None:
            return self._vetter.check_new_envelope(envelope, fame=fame)
        return self.encryptor.envelope_policy(envelope)

    # -- IoMT segment streams -------------------------------------------------------
    def write_segments(
        self, caller: Caller, items: Iterable[WindowItem | SegmentItem]
    ) -> list[WriteResult]:
        """Store a stream of window keys and sealed segments; returns once every one
        is durable (objects written, index rows group-committed).

        Items are read a few at a time (`_read_ahead`: a run of window keys has its
        devices' assignments confirmed in one ledger query), each is checked and its
        object write starts at once, so reading the stream, writing objects and other
        streams' commits overlap. A segment must name a window written earlier in
        this stream or before."""
        from abe_service.segments import parse_segment

        windows: dict[str, _Window] = {}
        # (its pack, the answer, the row to commit, its segment row, its place in the pack)
        pending: list[
            tuple[_Pack | None, WriteResult, RecordMeta | None, SegmentRow | None, PackRef | None]
        ] = []
        pack = _Pack()
        in_call: dict[str, bytes] = {}  # record id -> content hash, of this call's new items

        def duplicate(key: str, record_id: str) -> None:
            """An item stored before (or earlier in this call): answered, not written."""
            pending.append((None, WriteResult(key, record_id, True), None, None, None))

        def repeated(record_id: str, digest: bytes, what: str) -> bool:
            """True if this call already carries the record with these bytes (then it is
            a duplicate); AlreadyExists if with other bytes (one would be dropped)."""
            seen = in_call.get(record_id)
            if seen is None:
                in_call[record_id] = digest
                return False
            if seen != digest:
                raise AlreadyExists(f"{what} comes twice in this call with other content")
            return True

        now = utc_now()
        now_ms = int(now.timestamp() * 1000)
        received = 0
        try:
            for n, (item, parsed) in enumerate(self._read_ahead(caller, items)):
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
                    # the device relayed must be assigned to the patient (ledger, cached)
                    patient = self.authorize_write(caller, item.patient_id, item.device_id)
                    device = qualify(item.device_id, caller.msp_id, "device id")
                    record_id = self.id_keys.record_id(caller.principal, "window/" + item.window_id)
                    existing = self.index.get(record_id)
                    if existing is not None:
                        sound = self._sound(existing)
                        w = self._window_of(sound, patient, device)
                        if sound.meta.content_sha256 != hashlib.sha256(item.envelope).digest():
                            raise AlreadyExists(
                                f"window {item.window_id} was stored before with another key"
                            )
                        windows[item.window_id] = w
                        duplicate(item.window_id, record_id)
                        continue
                    if len(item.envelope) > MAX_ENVELOPE_BYTES:
                        raise InvalidArgument("window envelope too large")
                    try:
                        # edge gateways seal window keys under FAME without validity
                        policy = self._new_envelope_policy(item.envelope, fame=False)
                    except DecodeError as exc:
                        raise InvalidArgument(
                            f"window {item.window_id}: not a valid envelope: {exc}"
                        ) from None
                    # the author of a relayed reading is the device the gateway vouches for
                    meta = self._meta(
                        record_id, patient, WINDOW_RECORD_TYPE, device, now, policy, item.envelope
                    )
                    if repeated(record_id, meta.content_sha256, f"window {item.window_id}"):
                        duplicate(item.window_id, record_id)
                        continue
                    windows[item.window_id] = _Window(record_id, patient, device, policy)
                    ref = pack.add(item.envelope)
                    pending.append(
                        (pack, WriteResult(item.window_id, record_id, False), meta, None, ref)
                    )
                    if pack.full:
                        self._write_pack(pack)
                        pack = _Pack()
                    continue
                try:
                    header = parsed if parsed is not None else parse_segment(item.sealed)[0]
                except DecodeError as exc:
                    raise InvalidArgument(f"segment {item.idempotency_key!r}: {exc}") from None
                if not item.idempotency_key or len(item.idempotency_key) > 256:
                    raise InvalidArgument("a segment needs an idempotency key of 1-256 characters")
                patient = self.authorize_write(caller, header.patient_id, header.device_id)
                device = qualify(header.device_id, caller.msp_id, "device id")
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
                window = windows.get(header.window_id)
                if window is None:
                    wrid = self.id_keys.record_id(caller.principal, "window/" + header.window_id)
                    window = self._window_cache.get(wrid)
                    if window is None:
                        wrec = self.index.get(wrid)
                        if wrec is None:
                            raise FailedPrecondition(
                                f"segment {item.idempotency_key!r}: window {header.window_id} was never written"
                            )
                        sound = self._sound(wrec)
                        window = self._window_of(sound, sound.meta.patient_id, sound.meta.author)
                        if len(self._window_cache) > 50_000:
                            self._window_cache.clear()
                        self._window_cache[wrid] = window
                    windows[header.window_id] = window
                if (window.patient_id, window.device_id) != (patient, device):
                    raise InvalidArgument(
                        f"segment {item.idempotency_key!r} names another patient or device than its window"
                    )
                record_id = self.id_keys.record_id(
                    caller.principal, "segment/" + item.idempotency_key
                )
                existing = self.index.get(record_id)
                if existing is not None:
                    if (
                        self._sound(existing).meta.content_sha256
                        != hashlib.sha256(item.sealed).digest()
                    ):
                        raise AlreadyExists(
                            f"segment {item.idempotency_key!r} was stored before with other content"
                        )
                    duplicate(item.idempotency_key, record_id)
                    continue
                meta = self._meta(
                    record_id, patient, item.record_type, device, now, window.policy, item.sealed
                )
                seg = SegmentRow(
                    record_id,
                    patient,
                    device,
                    window.record_id,
                    header.first_seq,
                    header.last_seq,
                    header.first_time_ms,
                    header.last_time_ms,
                )
                if repeated(record_id, meta.content_sha256, f"segment {item.idempotency_key!r}"):
                    duplicate(item.idempotency_key, record_id)
                    continue
                ref = pack.add(item.sealed)
                pending.append(
                    (pack, WriteResult(item.idempotency_key, record_id, False), meta, seg, ref)
                )
                if pack.full:
                    self._write_pack(pack)
                    pack = _Pack()
            if pack.count and pack.future is None:
                self._write_pack(pack)
        except BaseException:
            # No object write may outlive a refused call (its answer says nothing was stored).
            for written in {id(p): p for p, *_ in pending if p is not None}.values():
                if written.future is not None:
                    written.future.exception()
            raise
        rows: list[tuple[RecordMeta, bytes, SegmentRow | None, PackRef | None]] = []
        for in_pack, _res, row_meta, row_seg, place in pending:
            if in_pack is not None and in_pack.future is not None:
                in_pack.future.result()  # raises the store's typed error
            if row_meta is not None:
                rows.append((row_meta, merkle.leaf_hash(row_meta.leaf_bytes()), row_seg, place))
        inserted = iter(self.index.commit_group(rows)) if rows else iter(())
        results: list[WriteResult] = []
        conflicts: list[str] = []
        for _pack, result, row_meta, _seg, _ref in pending:
            if row_meta is not None and next(inserted) is None:
                # a concurrent call committed this record first: the same bytes are a
                # duplicate; other bytes must not be reported as stored
                won = self.index.get(row_meta.record_id)
                if isinstance(won, IndexedRecord) and (
                    won.meta.content_sha256 != row_meta.content_sha256
                ):
                    conflicts.append(result.key)
                result = WriteResult(result.key, result.record_id, True)
            results.append(result)
        if rows:
            self.anchorer.notify(len(rows))
        if conflicts:
            raise AlreadyExists(
                f"{', '.join(map(repr, conflicts[:5]))} stored by a concurrent call with other "
                "content; the call's other items are stored (a resend finds them)"
            )
        return results

    def _read_ahead(
        self, caller: Caller, items: Iterable[WindowItem | SegmentItem]
    ) -> Iterator[tuple[WindowItem | SegmentItem, SegmentHeader | None]]:
        """`items` as they come, each with its segment header when it is a well-formed
        segment, read at most READ_AHEAD_ITEMS / READ_AHEAD_BYTES ahead so that the
        devices they name are confirmed in bulk. An edge that starts sends a window
        key per device first, and a ward whose devices wrote nothing for a while has
        their first segments arrive together: 2,000 devices were 2,000 sequential
        ledger queries (about 10 s on Fabric)."""
        it = iter(items)
        while True:
            chunk: list[WindowItem | SegmentItem] = []
            size = 0
            for item in it:
                chunk.append(item)
                size += len(item.envelope if isinstance(item, WindowItem) else item.sealed)
                if len(chunk) >= READ_AHEAD_ITEMS or size >= READ_AHEAD_BYTES:
                    break
            if not chunk:
                return
            yield from zip(chunk, self._prefetch_assignments(caller, chunk), strict=True)

    def _prefetch_assignments(
        self, caller: Caller, chunk: list[WindowItem | SegmentItem]
    ) -> list[SegmentHeader | None]:
        """Cache, with one ledger query, the assignments the items in `chunk` will need
        and the cache does not hold; returns each item's segment header (None for a
        window key or a malformed segment, which its own checks refuse). Each item is
        still authorised on its own (authorize_write): a device the ledger refused is
        not cached, so its item asks again and is refused; an unreachable ledger
        leaves the decision to that check too."""
        from abe_service.segments import parse_segment

        keys: dict[tuple[str, str, str], None] = {}  # in order, each once
        headers: list[SegmentHeader | None] = []
        for item in chunk:
            header: SegmentHeader | None = None
            try:
                if isinstance(item, WindowItem):
                    named = (item.patient_id, item.device_id)
                else:
                    header = parse_segment(item.sealed)[0]
                    named = (header.patient_id, header.device_id)
                patient = qualify(named[0], caller.msp_id, "patient id")
                device = qualify(named[1], caller.msp_id, "device id")
            except EhrAbeError:
                headers.append(header)
                continue  # refused by the item's own checks
            headers.append(header)
            key = (FACT_ASSIGNMENT, patient, device)
            if (
                FACT_ASSIGNMENT in facts_needed(caller, patient, device)
                and key not in keys
                and not self._facts.fresh(key)
            ):
                keys[key] = None
        if len(keys) >= 2:  # for one, the item's own check is the same single query
            with contextlib.suppress(Unavailable):
                self._confirm_assignments(list(keys))
        return headers

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

    def _write_pack(self, pack: _Pack) -> None:
        """Start writing `pack` (its segments' rows are committed once it is durable)."""
        pack.future = self._writers.submit(self.store.put, pack.key, *pack.seal())

    def _put_one_object(self, meta: RecordMeta, data: bytes) -> None:
        """A PutRecord's object, its metadata riding along as object metadata (the
        index and the anchored leaf are the truth; this copy helps an operator).
        AlreadyExists if the key is taken."""
        packed = base64.b64encode(json.dumps(meta.to_json_dict()).encode()).decode()
        self.store.put(envelope_key(meta.record_id), data, {"ehr-meta": packed})

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
        patient_id = qualify(patient_id, caller.msp_id, "patient id")
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
            recs: list[IndexedRecord] = []
            unsound: EhrAbeError | None = None
            for rid, _ in wanted:
                try:
                    recs.append(self._record(rid))
                except EhrAbeError as exc:
                    unsound = exc  # raised after the records before it are sent
                    break
            stored = read_records(self.store, self.index, [r.meta for r in recs])
            for (rid, window_rid), rec, data in zip(wanted, recs, stored, strict=False):
                if data is None:
                    self._fail(rec, "the stored object is missing")
                if hashlib.sha256(data).digest() != rec.meta.content_sha256:
                    self._fail(rec, "the stored ciphertext does not match its recorded hash")
                receipt = self._receipt(rec)  # from the ledger's anchor
                self.index.queue_access(rid, patient_id, caller.principal, utc_now())
                yield data, rec.meta, receipt, window_rid
            if unsound is not None:
                raise unsound

    # -- reading ----------------------------------------------------------------
    def _may_read(self, caller: Caller, patient: str) -> bool:
        if may_read(caller, patient, False):
            return True  # the patient: no ledger round trip
        return may_read(
            caller, patient, self.ledger.consent_allows(patient, caller.principal, utc_now())
        )

    def _require_read(self, caller: Caller, patient: str) -> None:
        # The caller named the patient; the refusal does not repeat it.
        if not self._may_read(caller, patient):
            raise AccessDenied("no consent from this patient to read their records")

    def _row(self, record_id: str) -> Row:
        validate_id("record id", record_id)
        row = self.index.get(record_id)
        if row is None:
            if self.store.exists(envelope_key(record_id)):
                # stored but unknown to the index: the index lost it (or had it deleted)
                self._integrity_failure(record_id, "", "the index has no row for this record")
                raise IntegrityError(f"record {record_id} is stored but missing from the index")
            raise NotFound(f"no record {record_id}")
        return row

    def _sound(self, row: Row) -> IndexedRecord:
        """The record, or DATA_LOSS (logged) for a row that is malformed or fails its MAC."""
        if isinstance(row, BadRow):
            self._bad_row_failure(row)
            raise IntegrityError(f"record {row.record_id or row.seq}: {row.detail}")
        return row

    def _record(self, record_id: str) -> IndexedRecord:
        return self._sound(self._row(record_id))

    def _readable_record(self, caller: Caller, record_id: str) -> IndexedRecord:
        """The record if `caller` may read it. A record it may not read is NotFound
        with the very message of a missing one: no oracle for ids or patients."""
        rec = self._record(record_id)
        if not self._may_read(caller, rec.meta.patient_id):
            raise NotFound(f"no record {record_id}")
        return rec

    def get_record(self, caller: Caller, record_id: str) -> tuple[bytes, RecordMeta, Receipt]:
        rec = self._readable_record(caller, record_id)
        try:
            stored = read_records(self.store, self.index, [rec.meta])[0]
        except IntegrityError as exc:
            self._fail(rec, str(exc))
        if stored is None:
            self._fail(rec, "the stored object is missing")
        envelope = stored
        if hashlib.sha256(envelope).digest() != rec.meta.content_sha256:
            self._fail(rec, "the stored ciphertext does not match its recorded hash")
        receipt = self._receipt(rec)  # from the ledger's anchor; raises if it does not hold
        self.index.queue_access(record_id, rec.meta.patient_id, caller.principal, utc_now())
        return envelope, rec.meta, receipt

    def get_receipt(self, caller: Caller, record_id: str) -> Receipt:
        return self._receipt(self._readable_record(caller, record_id))

    def service_key(self) -> tuple[bytes, str, str]:
        """(Ed25519 public key, key id, instance id): what verifies pending receipts."""
        return self.keys.public_key, self.keys.key_id, self.instance_id

    def list_records(
        self, caller: Caller, patient_id: str, page_size: int, page_token: str
    ) -> tuple[list[RecordMeta], str]:
        patient_id = qualify(patient_id, caller.msp_id, "patient id")
        self._require_read(caller, patient_id)
        size = page_size or 50
        if not 1 <= size <= 1000:
            raise InvalidArgument("page_size must be between 1 and 1000")
        after = _decode_token(page_token)
        rows = self.index.by_patient(patient_id, after, size + 1)
        more = len(rows) > size
        rows = rows[:size]
        token = _encode_token(rows[-1].seq) if more and rows else ""
        sound = []
        for r in rows:
            if isinstance(r, BadRow):  # never listed: its metadata cannot be trusted
                self._bad_row_failure(r)
            else:
                sound.append(r.meta)
        return sound, token

    # -- verification -------------------------------------------------------------
    def _fail(self, rec: IndexedRecord, detail: str) -> NoReturn:
        self._integrity_failure(rec.meta.record_id, rec.batch_id or "", detail)
        raise IntegrityError(f"record {rec.meta.record_id} failed its integrity check: {detail}")

    def _deadline(self, rec: IndexedRecord) -> datetime:
        return rec.meta.created_at + timedelta(seconds=self.policy.deadline_s)

    def _claimed_anchored(self, rec: IndexedRecord) -> bool:
        if rec.batch_id is None:
            return False
        batch = self.index.batch(rec.batch_id)
        return batch is not None and batch.tx_id is not None

    def _receipt(self, rec: IndexedRecord) -> Receipt:
        """The record's receipt, from the anchor the ledger holds for its seq. A record
        the ledger does not cover is pending (a signed promise) until its deadline; after
        it, or if the index claims an anchor the ledger lacks, it is an integrity failure."""
        anchor = self.book.covering(rec.seq)
        if anchor is None:
            if self._claimed_anchored(rec):
                self._fail(
                    rec,
                    f"the index says batch {rec.batch_id} is anchored; the ledger "
                    "has no anchor covering this record",
                )
            if utc_now() > self._deadline(rec):
                self._fail(rec, "no anchor covers it, and its anchoring deadline has passed")
            return self._pending_receipt(rec)
        return self._anchored_receipt(rec, anchor)

    def _pending_receipt(self, rec: IndexedRecord) -> Receipt:
        promise = PendingPromise(
            record_id=rec.meta.record_id,
            leaf_hash=rec.leaf_hash,
            accepted_at=rec.meta.created_at,
            anchor_deadline=self._deadline(rec),
            instance_id=self.instance_id,
            key_id=self.keys.key_id,
        )
        return Receipt(
            record_id=rec.meta.record_id,
            anchored=False,
            leaf_hash=rec.leaf_hash,
            accepted_at=promise.accepted_at,
            anchor_deadline=promise.anchor_deadline,
            signature=sign_promise(self.keys.signing_key, promise),
            key_id=promise.key_id,
            instance_id=self.instance_id,
        )

    def _anchored_receipt(self, rec: IndexedRecord, anchor: Anchor) -> Receipt:
        index = rec.seq - anchor.first_seq
        if (rec.batch_id, rec.leaf_index) != (anchor.batch_id, index):
            # The row may have been read before the anchorer placed it and the book
            # learnt the anchor (a read fetches objects in between): judge the row as
            # it is now.
            fresh = self._record(rec.meta.record_id)
            if fresh.seq == rec.seq:
                rec = fresh
        if (rec.batch_id, rec.leaf_index) != (anchor.batch_id, index):
            self._fail(
                rec,
                f"the index places it at {rec.batch_id}/{rec.leaf_index}; the ledger anchors "
                f"it at {anchor.batch_id}/{index}",
            )
        ordered = self._proven_leaves(rec, anchor)
        proof = merkle.inclusion_proof(ordered, index)
        if not merkle.verify_inclusion(
            rec.leaf_hash, index, anchor.tree_size, proof, anchor.merkle_root
        ):
            self._fail(rec, f"its leaf is not in the Merkle root anchored for {anchor.batch_id}")
        return Receipt(
            record_id=rec.meta.record_id,
            anchored=True,
            leaf_hash=rec.leaf_hash,
            batch_id=anchor.batch_id,
            leaf_index=index,
            tree_size=anchor.tree_size,
            inclusion_proof=tuple(proof),
            merkle_root=anchor.merkle_root,
            tx_id=anchor.tx_id,
            block=max(0, self.book.block_of(anchor)),
            instance_id=self.instance_id,
        )

    def _proven_leaves(self, rec: IndexedRecord, anchor: Anchor) -> list[bytes]:
        """The batch's leaves, in order, once they hash to the root the ledger anchored
        (kept for a few batches: proven leaves stay true whatever the index says later)."""
        key = (anchor.batch_id, anchor.merkle_root)
        with self._proven_lock:
            cached = self._proven.get(key)
            if cached is not None:
                self._proven.move_to_end(key)
                return cached
        leaves = self.index.leaves_in_range(anchor.first_seq, anchor.last_seq)
        if len(leaves) != anchor.tree_size:
            self._fail(rec, f"records of its batch {anchor.batch_id} are missing from the index")
        span = range(anchor.first_seq, anchor.last_seq + 1)
        ordered = [leaves[s] for s in span]
        if merkle_root_or_none(ordered) != anchor.merkle_root:
            # a neighbour's leaf column was edited: recompute from MAC-checked rows
            leaves = self.index.authenticated_leaves(anchor.first_seq, anchor.last_seq)
            ordered = [leaves[s] for s in span]
            if merkle_root_or_none(ordered) != anchor.merkle_root:
                self._fail(rec, f"the index's leaves for {anchor.batch_id} differ from its root")
        with self._proven_lock:
            self._proven[key] = ordered
            while len(self._proven) > PROVEN_BATCHES:
                self._proven.popitem(last=False)
        return ordered

    def _bad_row_failure(self, row: BadRow) -> None:
        self._integrity_failure(row.record_id or f"seq-{row.seq}", row.batch_id or "", row.detail)

    def _integrity_failure(self, record_id: str, batch_id: str, detail: str) -> None:
        log.error("integrity failure: record %s: %s", record_id, detail)
        try:
            self.ledger.log_integrity_failure(
                record_id if _LOGGABLE.fullmatch(record_id) else "unreadable-row",
                batch_id if _LOGGABLE.fullmatch(batch_id) else "",
                detail,
            )
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
        """Check stored records and the index against the anchors the ledger holds for
        this instance. Never raises on bad local state: every problem is reported."""
        if patient_id is not None:
            patient_id = qualify(patient_id, caller.msp_id, "patient id")
            self._require_read(caller, patient_id)
        elif not (caller.roles & AUDITOR_ROLES):
            raise AccessDenied("verifying the whole store needs the auditor role")
        started = time.perf_counter()
        chain = ledger_chain_problem(self.ledger)
        report = verify_instance(
            self.index,
            self.store,
            self.book.fresh(),
            deadline_s=self.policy.deadline_s,
            patient_id=patient_id,
            batch_id=batch_id,
            on_progress=on_progress,
            relist=self.book.fresh,
        )
        # Record failures go on the ledger (batch-level findings are in the report).
        for record_id, batch, detail in [p for p in report.problems if p[0]][:MAX_LOGGED_FAILURES]:
            self._integrity_failure(record_id, batch, f"VerifyRecords: {detail}")
        return VerifyReport.from_stream(
            report, time.perf_counter() - started, self.anchorer.set_aside(), chain
        )

    # -- consent and audit -------------------------------------------------------
    # The chaincode decides who may change consent and assignments, from the
    # caller's organisation and subject; the service only qualifies the ids.
    def grant_consent(
        self, caller: Caller, patient_id: str, subject_id: str, expires_at: datetime | None
    ) -> str:
        patient = qualify(patient_id, caller.msp_id, "patient id")
        subject = qualify(subject_id, caller.msp_id, "subject id")
        return self.ledger.grant_consent(caller, patient, subject, expires_at).tx_id

    def revoke_consent(self, caller: Caller, patient_id: str, subject_id: str) -> str:
        patient = qualify(patient_id, caller.msp_id, "patient id")
        subject = qualify(subject_id, caller.msp_id, "subject id")
        tx = self.ledger.revoke_consent(caller, patient, subject).tx_id
        self._facts.drop((FACT_CONSENT, patient, subject))  # at once on this service
        return tx

    def assign_device(
        self, caller: Caller, patient_id: str, device_id: str, expires_at: datetime
    ) -> str:
        patient = qualify(patient_id, caller.msp_id, "patient id")
        device = qualify(device_id, caller.msp_id, "device id")
        tx = self.ledger.assign_device(caller, patient, device, expires_at).tx_id
        # committed: the device may write until expires_at (seen without a ledger read)
        key = (FACT_ASSIGNMENT, patient, device)
        self._facts.put(key, (expires_at - utc_now()).total_seconds())
        self._facts.touch(key)  # the device is about to write: keep it confirmed
        return tx

    def unassign_device(self, caller: Caller, patient_id: str, device_id: str) -> str:
        patient = qualify(patient_id, caller.msp_id, "patient id")
        device = qualify(device_id, caller.msp_id, "device id")
        tx = self.ledger.unassign_device(caller, patient, device).tx_id
        self._facts.drop((FACT_ASSIGNMENT, patient, device))  # at once on this service
        return tx

    def assignment_history(
        self, caller: Caller, patient_id: str, device_id: str = ""
    ) -> list[AssignmentChange]:
        """Read with the caller's own identity: the chaincode decides who may see it."""
        patient = qualify(patient_id, caller.msp_id, "patient id")
        device = qualify(device_id, caller.msp_id, "device id") if device_id else ""
        return self.ledger.assignment_history(patient, device, caller=caller)

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
            if caller.principal != rec.meta.patient_id and not (caller.roles & AUDITOR_ROLES):
                raise NotFound(f"no record {record_id}")  # as for a missing record: no oracle
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
                        f"by {c.by_msp}/{c.by_subject}",
                    )
                )
        else:
            assert subject_id is not None
            subject_id = qualify(subject_id, caller.msp_id, "subject id")
            if caller.principal != subject_id and not (caller.roles & AUDITOR_ROLES):
                raise AccessDenied(
                    "only the subject or an auditor may read a subject's audit trail"
                )
        for e in self.ledger.access_log(record_id=record_id, subject_id=subject_id):
            entries.append(
                AuditEntry(e.kind, e.record_id, e.patient_id, e.subject_id, e.at, e.tx_id, e.detail)
            )
        return sorted(entries, key=lambda e: e.at)

    def anchoring_status(self) -> tuple[int, float, int, tuple[str, ...], bool]:
        """(pending records, oldest pending age in s, ledger-covered seq, set-aside
        batches, ledger healthy): what `GetAnchoringStatus` reports."""
        head = self.book.head()
        n, oldest = self.index.pending_count_and_oldest(after_seq=head)
        age = (utc_now() - oldest).total_seconds() if oldest is not None else 0.0
        return n, age, head, self.anchorer.set_aside(every_row=False), self.anchorer.ledger_healthy

    def flush(self) -> FlushResult:
        return self.anchorer.run_once(force=True)


def _warm_up_integrity() -> None:
    from storage_service.integrity.sha256 import sha256_many

    sha256_many([b"warm-up"])
    merkle.merkle_root([bytes(32), bytes(32)])


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
