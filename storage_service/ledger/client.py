"""`LedgerClient`: the typed facade over a `Ledger` that the storage service uses.

It speaks the ehr contract's wire API (function names and string arguments of
`chaincode.core.FUNCTIONS`) and turns the JSON payloads into dataclasses.
Writes done on the service's own behalf (anchors, access and integrity logs)
use the `service_caller`; consent changes and key issues take the acting caller.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from chaincode import core
from ehr_common.errors import DecodeError, EhrAbeError, IntegrityError, InvalidArgument
from storage_service.ledger.base import Caller, Ledger, TxResult

AccessEvent = tuple[str, str, str, datetime]  # record id, patient id, subject id, when
#: ... and the event's id: the ledger logs an id once, whatever the number of resends
IdentifiedAccessEvent = tuple[str, str, str, datetime, str]


@runtime_checkable
class TxLocator(Protocol):
    """Ledgers that can say which block holds a transaction."""

    def block_of(self, tx_id: str) -> int: ...


@dataclass(frozen=True)
class TxReceipt:
    tx_id: str
    block: int


@dataclass(frozen=True)
class Anchor:
    batch_id: str
    merkle_root: bytes
    record_count: int
    tree_size: int
    metadata: dict[str, Any]
    msp_id: str
    subject: str
    anchored_at: datetime
    tx_id: str
    block: int  # -1 when the ledger cannot say (listings do not look it up)
    #: what the anchor covers (AnchorRecords): records first_seq..last_seq of `instance`;
    #: "" and 0 for an anchor made with the older AnchorBatch
    instance: str = ""
    first_seq: int = 0
    last_seq: int = 0

    def covers(self, seq: int) -> bool:
        return self.first_seq <= seq <= self.last_seq


@dataclass(frozen=True)
class KeyIssue:
    subject: str
    attributes_hash: bytes
    authority: str
    key_id: str
    msp_id: str
    issued_at: datetime
    tx_id: str


@dataclass(frozen=True)
class AuthorityEntry:
    """A multi-authority registry entry (current, or one version of the history)."""

    authority_id: str
    owner_msp: str
    scheme: str
    public_key: bytes
    fingerprint: bytes
    version: int
    active: bool
    reason: str
    by_msp: str
    at: datetime
    tx_id: str


def _authority(d: dict[str, Any]) -> AuthorityEntry:
    return AuthorityEntry(
        authority_id=str(d["authority_id"]),
        owner_msp=str(d["owner_msp"]),
        scheme=str(d["scheme"]),
        public_key=bytes.fromhex(d["public_key"]),
        fingerprint=bytes.fromhex(d["fingerprint"]),
        version=int(d["version"]),
        active=d["status"] == "active",
        reason=str(d.get("reason", "")),
        by_msp=str(d["by_msp"]),
        at=_time(d["at"]),
        tx_id=str(d["tx_id"]),
    )


@dataclass(frozen=True)
class ConsentChange:
    patient_id: str
    subject_id: str
    granted: bool
    expires_at: datetime | None
    by_subject: str
    by_msp: str
    at: datetime
    tx_id: str


@dataclass(frozen=True)
class AssignmentChange:
    patient_id: str
    device_id: str
    assigned: bool
    expires_at: datetime | None
    by_subject: str
    by_msp: str
    at: datetime
    tx_id: str


@dataclass(frozen=True)
class AuditEvent:
    kind: str  # "access" or "integrity-failure"
    record_id: str
    patient_id: str
    subject_id: str
    at: datetime
    tx_id: str
    detail: str


def _assignment_expiry(answer: dict[str, Any]) -> datetime | None:
    """An AssignmentAllows answer: the assignment's end, or None if it does not hold."""
    return _time(str(answer["expires_at"])) if answer["allowed"] else None


def _time(value: str) -> datetime:
    return core.parse_time("time", value)


def _decode(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        raise DecodeError("the ledger returned a payload that is not JSON") from None


def _anchor(d: dict[str, Any], block: int) -> Anchor:
    return Anchor(
        batch_id=str(d["batch_id"]),
        merkle_root=bytes.fromhex(d["merkle_root"]),
        record_count=int(d["record_count"]),
        tree_size=int(d["tree_size"]),
        metadata=dict(d.get("metadata") or {}),
        msp_id=str(d["by_msp"]),
        subject=str(d["by_subject"]),
        anchored_at=_time(d["at"]),
        tx_id=str(d["tx_id"]),
        block=block,
        instance=str(d.get("instance", "")),
        first_seq=int(d.get("first_seq", 0)),
        last_seq=int(d.get("last_seq", 0)),
    )


def _key_issue(d: dict[str, Any]) -> KeyIssue:
    return KeyIssue(
        subject=str(d["subject"]),
        attributes_hash=bytes.fromhex(d["attributes_hash"]),
        authority=str(d["authority"]),
        key_id=str(d["key_id"]),
        msp_id=str(d["by_msp"]),
        issued_at=_time(d["at"]),
        tx_id=str(d["tx_id"]),
    )


def _consent(d: dict[str, Any]) -> ConsentChange:
    expiry = str(d.get("expires_at") or "")
    return ConsentChange(
        patient_id=str(d["patient_id"]),
        subject_id=str(d["subject_id"]),
        granted=d["action"] == "grant",
        expires_at=_time(expiry) if expiry else None,
        by_subject=str(d["by_subject"]),
        by_msp=str(d["by_msp"]),
        at=_time(d["at"]),
        tx_id=str(d["tx_id"]),
    )


def _assignment(d: dict[str, Any]) -> AssignmentChange:
    expiry = str(d.get("expires_at") or "")
    return AssignmentChange(
        patient_id=str(d["patient_id"]),
        device_id=str(d["device_id"]),
        assigned=d["action"] == "assign",
        expires_at=_time(expiry) if expiry else None,
        by_subject=str(d["by_subject"]),
        by_msp=str(d["by_msp"]),
        at=_time(d["at"]),
        tx_id=str(d["tx_id"]),
    )


def _event(d: dict[str, Any]) -> AuditEvent:
    return AuditEvent(
        kind=str(d["kind"]),
        record_id=str(d["record_id"]),
        patient_id=str(d.get("patient_id", "")),
        subject_id=str(d.get("subject_id", d.get("by_subject", ""))),
        at=_time(d.get("accessed_at") or d["at"]),
        tx_id=str(d["tx_id"]),
        detail=str(d.get("detail", "")),
    )


class LedgerClient:
    def __init__(self, ledger: Ledger, service_caller: Caller, *, page_size: int = 500) -> None:
        self.ledger = ledger
        self.service_caller = service_caller
        self._page = page_size

    def close(self) -> None:
        self.ledger.close()

    # -- plumbing ---------------------------------------------------------------------------
    def _submit(self, caller: Caller | None, function: str, *args: str) -> TxResult:
        return self.ledger.submit(caller or self.service_caller, function, list(args))

    def _eval(self, caller: Caller | None, function: str, *args: str) -> Any:
        return _decode(self.ledger.evaluate(caller or self.service_caller, function, list(args)))

    def _pages(
        self, caller: Caller | None, function: str, key: str, *args: str
    ) -> Iterator[dict[str, Any]]:
        token = ""
        while True:
            out = self._eval(caller, function, *args, str(self._page), token)
            yield from out[key]
            token = out["next_page_token"]
            if not token:
                return

    def _block_of(self, tx_id: str) -> int:
        if isinstance(self.ledger, TxLocator):
            try:
                return self.ledger.block_of(tx_id)
            except EhrAbeError:
                return -1
        return -1

    # -- anchors -----------------------------------------------------------------------------
    def anchor_batch(
        self,
        batch_id: str,
        merkle_root: bytes,
        tree_size: int,
        metadata: dict[str, Any] | None = None,
        *,
        record_count: int | None = None,
    ) -> TxReceipt:
        """Anchor a batch's Merkle root. AlreadyExists if the batch id was ever anchored."""
        if len(merkle_root) != 32:
            raise InvalidArgument("a Merkle root is 32 bytes")
        count = tree_size if record_count is None else record_count
        r = self._submit(
            None,
            "AnchorBatch",
            batch_id,
            merkle_root.hex(),
            str(count),
            str(tree_size),
            json.dumps(metadata or {}, sort_keys=True, separators=(",", ":")),
        )
        return TxReceipt(r.tx_id, r.block)

    def anchor_records(
        self,
        batch_id: str,
        merkle_root: bytes,
        instance: str,
        first_seq: int,
        last_seq: int,
        metadata: dict[str, Any] | None = None,
    ) -> TxReceipt:
        """Anchor the root of records first_seq..last_seq of a storage instance.
        AlreadyExists if the batch id was used or the range overlaps an anchored one."""
        if len(merkle_root) != 32:
            raise InvalidArgument("a Merkle root is 32 bytes")
        r = self._submit(
            None,
            "AnchorRecords",
            batch_id,
            merkle_root.hex(),
            instance,
            str(first_seq),
            str(last_seq),
            json.dumps(metadata or {}, sort_keys=True, separators=(",", ":")),
        )
        return TxReceipt(r.tx_id, r.block)

    def anchors_by_instance(self, instance: str, after_seq: int = 0) -> list[Anchor]:
        """Every anchor of `instance` whose range starts after `after_seq`, in order."""
        return [
            _anchor(d, -1)
            for d in self._pages(
                None, "AnchorsByInstance", "anchors", instance, str(max(0, after_seq))
            )
        ]

    def block_of(self, tx_id: str) -> int:
        """The block holding a transaction, -1 if the ledger cannot say."""
        return self._block_of(tx_id)

    def get_anchor(self, batch_id: str) -> Anchor:
        d = self._eval(None, "GetAnchor", batch_id)
        return _anchor(d, self._block_of(str(d["tx_id"])))

    def list_anchors(
        self, start_id: str = "", end_id: str = "", *, page_size: int = 100, page_token: str = ""
    ) -> tuple[list[Anchor], str]:
        """Anchors with start_id <= id < end_id, a page at a time; '' token = last page."""
        out = self._eval(None, "ListAnchors", start_id, end_id, str(page_size), page_token)
        return [_anchor(d, -1) for d in out["anchors"]], str(out["next_page_token"])

    # -- key issuance -----------------------------------------------------------------------
    def record_key_issue(
        self, caller: Caller, subject: str, attributes_hash: bytes, authority: str, key_id: str
    ) -> TxReceipt:
        r = self._submit(
            caller, "RecordKeyIssue", subject, attributes_hash.hex(), authority, key_id
        )
        return TxReceipt(r.tx_id, r.block)

    def key_issues(self, subject: str, caller: Caller | None = None) -> list[KeyIssue]:
        return [
            _key_issue(d) for d in self._pages(caller, "KeyIssuesBySubject", "key_issues", subject)
        ]

    def key_issues_by_authority(
        self, authority: str, caller: Caller | None = None
    ) -> list[KeyIssue]:
        return [
            _key_issue(d)
            for d in self._pages(caller, "KeyIssuesByAuthority", "key_issues", authority)
        ]

    # -- multi-authority registry ------------------------------------------------------------
    def register_authority(
        self, caller: Caller, authority_id: str, scheme: str, public_key: bytes, fingerprint: bytes
    ) -> TxReceipt:
        r = self._submit(
            caller, "RegisterAuthority", authority_id, scheme, public_key.hex(), fingerprint.hex()
        )
        return TxReceipt(r.tx_id, r.block)

    def rotate_authority(
        self, caller: Caller, authority_id: str, public_key: bytes, fingerprint: bytes
    ) -> TxReceipt:
        r = self._submit(
            caller, "RotateAuthority", authority_id, public_key.hex(), fingerprint.hex()
        )
        return TxReceipt(r.tx_id, r.block)

    def revoke_authority(self, caller: Caller, authority_id: str, reason: str) -> TxReceipt:
        r = self._submit(caller, "RevokeAuthority", authority_id, reason)
        return TxReceipt(r.tx_id, r.block)

    def get_authority(self, authority_id: str, caller: Caller | None = None) -> AuthorityEntry:
        return _authority(self._eval(caller, "GetAuthority", authority_id))

    def authority_history(
        self, authority_id: str, caller: Caller | None = None
    ) -> list[AuthorityEntry]:
        return [
            _authority(d) for d in self._pages(caller, "AuthorityHistory", "versions", authority_id)
        ]

    def list_authorities(self, caller: Caller | None = None) -> list[AuthorityEntry]:
        return [_authority(d) for d in self._pages(caller, "ListAuthorities", "authorities")]

    # -- consent ---------------------------------------------------------------------------
    def grant_consent(
        self, caller: Caller, patient_id: str, subject_id: str, expires_at: datetime | None
    ) -> TxReceipt:
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidArgument("expires_at must be timezone-aware")
        expiry = core.format_time(expires_at) if expires_at else ""
        r = self._submit(caller, "GrantConsent", patient_id, subject_id, expiry)
        return TxReceipt(r.tx_id, r.block)

    def revoke_consent(self, caller: Caller, patient_id: str, subject_id: str) -> TxReceipt:
        r = self._submit(caller, "RevokeConsent", patient_id, subject_id)
        return TxReceipt(r.tx_id, r.block)

    def consent_allows(
        self, patient_id: str, subject_id: str, at: datetime, caller: Caller | None = None
    ) -> bool:
        if at.tzinfo is None:
            raise InvalidArgument("the time must be timezone-aware")
        out = self._eval(caller, "ConsentAllows", patient_id, subject_id, core.format_time(at))
        return bool(out["allowed"])

    def consent_history(
        self, patient_id: str, subject_id: str = "", caller: Caller | None = None
    ) -> list[ConsentChange]:
        """Every change, oldest first; subject_id '' for all subjects of the patient."""
        return [
            _consent(d)
            for d in self._pages(caller, "ConsentHistory", "changes", patient_id, subject_id)
        ]

    # -- device assignments ----------------------------------------------------------------
    def assign_device(
        self, caller: Caller, patient_id: str, device_id: str, expires_at: datetime
    ) -> TxReceipt:
        """Let a device write for a patient until `expires_at` (qualified ids)."""
        if expires_at.tzinfo is None:
            raise InvalidArgument("expires_at must be timezone-aware")
        r = self._submit(
            caller, "AssignDevice", patient_id, device_id, core.format_time(expires_at)
        )
        return TxReceipt(r.tx_id, r.block)

    def unassign_device(self, caller: Caller, patient_id: str, device_id: str) -> TxReceipt:
        r = self._submit(caller, "UnassignDevice", patient_id, device_id)
        return TxReceipt(r.tx_id, r.block)

    def assignment_expiry(
        self, patient_id: str, device_id: str, at: datetime, caller: Caller | None = None
    ) -> datetime | None:
        """When the device's current assignment to the patient ends; None if it has none
        at time `at`."""
        if at.tzinfo is None:
            raise InvalidArgument("the time must be timezone-aware")
        out = self._eval(caller, "AssignmentAllows", patient_id, device_id, core.format_time(at))
        return _assignment_expiry(out)

    def assignment_expiries(
        self, pairs: Sequence[tuple[str, str]], at: datetime, caller: Caller | None = None
    ) -> list[datetime | None]:
        """assignment_expiry for many (patient, device) pairs: one ledger query per
        core.MAX_ASSIGNMENT_QUERY pairs."""
        if at.tzinfo is None:
            raise InvalidArgument("the time must be timezone-aware")
        out: list[datetime | None] = []
        step = core.MAX_ASSIGNMENT_QUERY
        for i in range(0, len(pairs), step):
            chunk = [[p, d] for p, d in pairs[i : i + step]]
            doc = self._eval(
                caller,
                "AssignmentsAllow",
                json.dumps(chunk, separators=(",", ":")),
                core.format_time(at),
            )
            results = doc["results"]
            if len(results) != len(chunk):
                raise IntegrityError("the ledger answered for other assignments than asked")
            for (patient, device), r in zip(chunk, results, strict=True):
                if (r["patient_id"], r["device_id"]) != (patient, device):
                    raise IntegrityError("the ledger answered for other assignments than asked")
                out.append(_assignment_expiry(r))
        return out

    def assignment_history(
        self, patient_id: str, device_id: str = "", caller: Caller | None = None
    ) -> list[AssignmentChange]:
        """Every assignment change of the patient, oldest first ('' device: all devices;
        the ledger keeps them by device, so they are sorted here)."""
        changes = [
            _assignment(d)
            for d in self._pages(caller, "AssignmentHistory", "changes", patient_id, device_id)
        ]
        return sorted(changes, key=lambda c: (c.at, c.tx_id))

    # -- audit -----------------------------------------------------------------------------
    def log_access(
        self, record_id: str, patient_id: str, subject_id: str, at: datetime
    ) -> TxReceipt:
        return self.log_accesses([(record_id, patient_id, subject_id, at)])[0]

    def log_accesses(
        self, events: Iterable[AccessEvent | IdentifiedAccessEvent]
    ) -> list[TxReceipt]:
        """One transaction per chunk of at most core.MAX_ACCESS_EVENTS events. Events that
        carry an id are logged once however often they are sent."""
        rows: list[dict[str, str]] = []
        for e in events:
            row = {
                "record_id": e[0],
                "patient_id": e[1],
                "subject_id": e[2],
                "at": core.format_time(e[3]),
            }
            if len(e) > 4 and e[4]:
                row["event_id"] = e[4]
            rows.append(row)
        receipts = []
        for i in range(0, len(rows), core.MAX_ACCESS_EVENTS):
            chunk = rows[i : i + core.MAX_ACCESS_EVENTS]
            r = self._submit(None, "LogAccesses", json.dumps(chunk, separators=(",", ":")))
            receipts.append(TxReceipt(r.tx_id, r.block))
        return receipts

    def access_log(
        self,
        *,
        record_id: str | None = None,
        subject_id: str | None = None,
        caller: Caller | None = None,
    ) -> list[AuditEvent]:
        """Access events for one record (with its integrity failures) or one subject."""
        if (record_id is None) == (subject_id is None):
            raise InvalidArgument("give exactly one of record_id and subject_id")
        events: Sequence[AuditEvent]
        if record_id is not None:
            events = [
                _event(d) for d in self._pages(caller, "AccessLogByRecord", "events", record_id)
            ]
            events += [
                _event(d)
                for d in self._pages(caller, "IntegrityFailuresByRecord", "failures", record_id)
            ]
        else:
            assert subject_id is not None
            events = [
                _event(d) for d in self._pages(caller, "AccessLogBySubject", "events", subject_id)
            ]
        return sorted(events, key=lambda e: (e.at, e.tx_id))

    def log_integrity_failure(self, record_id: str, batch_id: str, detail: str) -> TxReceipt:
        r = self._submit(None, "LogIntegrityFailure", record_id, batch_id, detail[:1024])
        return TxReceipt(r.tx_id, r.block)
