"""The ehr contract: pure logic over a key-value state.

No Fabric imports. Every function takes the caller identity, the transaction
context (id and the proposal's timestamp, never the wall clock, so that
endorsements on different peers agree) and string arguments, and returns a
JSON payload (bytes). Both ledgers run this same code: the embedded one
in-process over SQLite, the Fabric one inside the chaincode server.

The state interface is asynchronous because the Fabric shim's is; the embedded
ledger drives the coroutines synchronously (`run_sync`), since its state never
suspends.

People and devices are organisation-qualified: `<MSP id>/<subject>` (e.g.
`Hosp1MSP/p-17`), the same form the storage service uses. The caller's own
qualified id is its creator's MSP (verified by the peer) and its subject, so
a certificate from one organisation's CA never names another's patient.

Keys (ids are restricted to a safe ASCII alphabet without '/', and a
qualified id has exactly one '/', so the separator is unambiguous and prefix
scans are exact):
  anchor/<batch>                                   one anchored batch
  anchor-inst/<instance>/<first seq, 16 digits>    a storage instance's anchors, by range
  anchor-head/<instance>                           the highest record seq anchored so far
  access-id/<event id>                             access events already logged (dedup)
  keyid/<key id>                                   uniqueness of key ids
  keyissue/<subject>/<ts>/<key id>                 key issuance, by subject
  consent/<patient>/<subject>                      current consent (qualified ids)
  consent-hist/<patient>/<subject>/<ts>/<tx>       every consent change, appended
  assign/<patient>/<device>                        current device assignment
  assign-hist/<patient>/<device>/<ts>/<tx>         every assignment change, appended
  access-rec/<record>/<ts>/<tx>/<n>                access events, by record
  access-sub/<subject>/<ts>/<tx>/<n>               access events, by (qualified) subject
  integrity/<record>/<ts>/<tx>                     integrity failures
  authority/<authority>                            multi-authority registry: current entry
  authority-ver/<authority>/<version, 10 digits>   every registered key version, appended
  keyissue-auth/<authority>/<ts>/<key id>          key issuance, by issuing authority
<ts> is a fixed-width UTC timestamp, so keys sort by time.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from ehr_common.errors import AccessDenied, AlreadyExists, InvalidArgument, NotFound

# -- roles the contract names ---------------------------------------------------------
ROLE_AUTHORITY = "authority"  # records key issuance
ROLE_CONSENT_ADMIN = "consent-admin"  # may change any patient's consent
ROLE_ANCHORER = "anchorer"  # the storage service: anchors batches, logs accesses
ROLE_AUDITOR = "auditor"  # reads audit trails
#: clinical staff: assign devices to their own organisation's patients
CLINICIAN_ROLES = frozenset({"clinician", "doctor", "nurse"})
MAX_ASSIGNMENT_DAYS = 366

MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_METADATA_BYTES = 4096
MAX_DETAIL_CHARS = 1024
MAX_ACCESS_EVENTS = 1000
#: (patient, device) pairs one AssignmentsAllow query may ask about
MAX_ASSIGNMENT_QUERY = 500
MAX_BATCH_RECORDS = 1_000_000

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,127}")
_MSP = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_PRINCIPAL = re.compile(_MSP + "/" + _ID.pattern)
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class Identity:
    """The caller as the contract sees it (kept local so chaincode/ stands alone;
    the ledgers convert their `Caller` into this)."""

    subject: str
    msp_id: str
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def principal(self) -> str:
        return f"{self.msp_id}/{self.subject}"


@dataclass(frozen=True)
class TxContext:
    tx_id: str
    timestamp: datetime  # the proposal's timestamp (UTC)


class State(Protocol):
    def get(self, key: str) -> Awaitable[bytes | None]: ...

    def put(self, key: str, value: bytes) -> Awaitable[None]: ...

    def scan(self, start: str, end: str, limit: int) -> Awaitable[list[tuple[str, bytes]]]:
        """Keys in [start, end), ascending, at most `limit` of them."""
        ...


T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Drive a coroutine that never suspends (a state that answers at once)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("the state suspended: use an event loop for this state")


# -- validation -----------------------------------------------------------------------
def _id(what: str, value: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidArgument(
            f"{what} must be 1-128 characters of letters, digits and . _ : @ + = - "
            f"(starting with a letter or digit), got {value[:40]!r}"
            if isinstance(value, str)
            else f"{what} must be a string"
        )
    return value


def _principal(what: str, value: str) -> str:
    """An organisation-qualified id `<MSP id>/<subject>`."""
    if not isinstance(value, str) or not _PRINCIPAL.fullmatch(value):
        raise InvalidArgument(
            f"{what} must be an organisation-qualified id <MSP id>/<subject> "
            f"(e.g. Hosp1MSP/p-17), got {str(value)[:80]!r}"
        )
    return value


def msp_of(principal: str) -> str:
    return principal.partition("/")[0]


def _hex(what: str, value: str, nbytes: int | None = None) -> str:
    if not _HEX.fullmatch(value) or len(value) % 2:
        raise InvalidArgument(f"{what} must be lowercase hex")
    if nbytes is not None and len(value) != 2 * nbytes:
        raise InvalidArgument(f"{what} must be {nbytes} bytes ({2 * nbytes} hex digits)")
    return value


def _count(what: str, value: str, *, minimum: int = 0) -> int:
    try:
        n = int(value, 10)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{what} must be a decimal integer, got {value[:20]!r}") from None
    if n < minimum or n > 2**53:
        raise InvalidArgument(f"{what} must be between {minimum} and 2^53")
    return n


def _page(page_size: str) -> int:
    if page_size == "":
        return DEFAULT_PAGE
    n = _count("page_size", page_size, minimum=1)
    if n > MAX_PAGE:
        raise InvalidArgument(f"page_size must be at most {MAX_PAGE}")
    return n


def parse_time(what: str, value: str) -> datetime:
    """ISO 8601 with an explicit offset (or 'Z'); returned in UTC."""
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        raise InvalidArgument(f"{what} must be an ISO 8601 time, got {value[:40]!r}") from None
    if t.tzinfo is None:
        raise InvalidArgument(f"{what} must carry a UTC offset (e.g. 'Z')")
    return t.astimezone(UTC)


def format_time(t: datetime) -> str:
    """Fixed width, so that lexicographic order is time order."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json_object(what: str, value: str, limit: int) -> dict[str, Any]:
    if len(value.encode()) > limit:
        raise InvalidArgument(f"{what} must be at most {limit} bytes")
    try:
        obj = json.loads(value) if value else {}
    except ValueError:
        raise InvalidArgument(f"{what} must be a JSON object") from None
    if not isinstance(obj, dict):
        raise InvalidArgument(f"{what} must be a JSON object")
    return obj


def _out(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _prefix_end(prefix: str) -> str:
    # every prefix ends with '/', and '0' is the next character after '/'
    return prefix[:-1] + "0"


def _require(caller: Identity, allowed: frozenset[str], action: str) -> None:
    if not (caller.roles & allowed):
        need = " or ".join(sorted(allowed))
        raise AccessDenied(
            f"{caller.subject} ({caller.msp_id}) may not {action}: needs role {need}"
        )


def _by(caller: Identity, ctx: TxContext) -> dict[str, str]:
    return {
        "by_subject": caller.subject,
        "by_msp": caller.msp_id,
        "tx_id": ctx.tx_id,
        "at": format_time(ctx.timestamp),
    }


async def _paged(
    state: State, prefix: str, page_size: str, page_token: str
) -> tuple[list[dict[str, Any]], str]:
    """A page of JSON values under `prefix`; the token is the last key returned."""
    size = _page(page_size)
    start = prefix
    if page_token:
        if not page_token.startswith(prefix):
            raise InvalidArgument("page_token does not belong to this query")
        start = page_token + "\x00"  # strictly after the last key returned
    rows = await state.scan(start, _prefix_end(prefix), size + 1)
    more = len(rows) > size
    rows = rows[:size]
    items = [json.loads(v) for _, v in rows]
    return items, (rows[-1][0] if more and rows else "")


# -- anchors --------------------------------------------------------------------------
async def anchor_batch(
    state: State,
    caller: Identity,
    ctx: TxContext,
    batch_id: str,
    merkle_root_hex: str,
    record_count: str,
    tree_size: str,
    metadata_json: str,
) -> bytes:
    _require(caller, frozenset({ROLE_ANCHORER}), "anchor batches")
    _id("batch_id", batch_id)
    _hex("merkle_root", merkle_root_hex, 32)
    records = _count("record_count", record_count, minimum=1)
    size = _count("tree_size", tree_size, minimum=1)
    if records > size:
        raise InvalidArgument("record_count cannot exceed tree_size")
    metadata = _json_object("metadata", metadata_json, MAX_METADATA_BYTES)
    key = f"anchor/{batch_id}"
    if await state.get(key) is not None:
        raise AlreadyExists(f"batch {batch_id} is already anchored; an anchor is never rewritten")
    anchor = {
        "batch_id": batch_id,
        "merkle_root": merkle_root_hex,
        "record_count": records,
        "tree_size": size,
        "metadata": metadata,
        **_by(caller, ctx),
    }
    await state.put(key, _out(anchor))
    return _out(anchor)


async def get_anchor(state: State, caller: Identity, ctx: TxContext, batch_id: str) -> bytes:
    _id("batch_id", batch_id)
    raw = await state.get(f"anchor/{batch_id}")
    if raw is None:
        raise NotFound(f"no anchor for batch {batch_id}")
    return bytes(raw)


async def list_anchors(
    state: State,
    caller: Identity,
    ctx: TxContext,
    start_id: str,
    end_id: str,
    page_size: str,
    page_token: str,
) -> bytes:
    """Anchors with start_id <= batch id < end_id (either may be '' for open)."""
    size = _page(page_size)
    start = f"anchor/{_id('start_id', start_id)}" if start_id else "anchor/"
    end = f"anchor/{_id('end_id', end_id)}" if end_id else _prefix_end("anchor/")
    if page_token:
        if not page_token.startswith("anchor/"):
            raise InvalidArgument("page_token does not belong to this query")
        start = max(start, page_token + "\x00")
    rows = await state.scan(start, end, size + 1) if start < end else []
    more = len(rows) > size
    rows = rows[:size]
    token = rows[-1][0] if more and rows else ""
    return _out({"anchors": [json.loads(v) for _, v in rows], "next_page_token": token})


async def anchor_records(
    state: State,
    caller: Identity,
    ctx: TxContext,
    batch_id: str,
    merkle_root_hex: str,
    instance: str,
    first_seq: str,
    last_seq: str,
    metadata_json: str,
) -> bytes:
    """Anchor the Merkle root of the records first_seq..last_seq (inclusive, leaf i is
    record first_seq + i) of storage instance `instance`. The ledger alone then says
    which records of the instance must be anchored and under which root: ranges of one
    instance never overlap and only move forward (a range starts after every range
    already anchored), and an instance belongs to the organisation that anchored it
    first."""
    _require(caller, frozenset({ROLE_ANCHORER}), "anchor batches")
    _id("batch_id", batch_id)
    _hex("merkle_root", merkle_root_hex, 32)
    _id("instance", instance)
    first = _count("first_seq", first_seq, minimum=1)
    last = _count("last_seq", last_seq, minimum=1)
    if last < first:
        raise InvalidArgument("last_seq cannot be before first_seq")
    if last - first + 1 > MAX_BATCH_RECORDS:
        raise InvalidArgument(f"a batch anchors at most {MAX_BATCH_RECORDS} records")
    metadata = _json_object("metadata", metadata_json, MAX_METADATA_BYTES)
    key = f"anchor/{batch_id}"
    if await state.get(key) is not None:
        raise AlreadyExists(f"batch {batch_id} is already anchored; an anchor is never rewritten")
    head_key = f"anchor-head/{instance}"
    raw_head = await state.get(head_key)
    if raw_head is not None:
        head = json.loads(raw_head)
        if head["msp_id"] != caller.msp_id:
            raise AccessDenied(f"storage instance {instance} belongs to {head['msp_id']}")
        if first <= int(head["last_seq"]):
            raise AlreadyExists(
                f"records {first}..{last} of instance {instance} overlap anchored records "
                f"(anchored up to {head['last_seq']})"
            )
    anchor = {
        "batch_id": batch_id,
        "merkle_root": merkle_root_hex,
        "record_count": last - first + 1,
        "tree_size": last - first + 1,
        "instance": instance,
        "first_seq": first,
        "last_seq": last,
        "metadata": metadata,
        **_by(caller, ctx),
    }
    await state.put(key, _out(anchor))
    await state.put(f"anchor-inst/{instance}/{first:016d}", _out(anchor))
    await state.put(head_key, _out({"last_seq": last, "msp_id": caller.msp_id}))
    return _out(anchor)


async def anchors_by_instance(
    state: State,
    caller: Identity,
    ctx: TxContext,
    instance: str,
    after_seq: str,
    page_size: str,
    page_token: str,
) -> bytes:
    """The anchors of a storage instance whose first record seq is > after_seq, in
    record order (what verification compares the local index with)."""
    _id("instance", instance)
    after = _count("after_seq", after_seq or "0")
    size = _page(page_size)
    prefix = f"anchor-inst/{instance}/"
    start = f"{prefix}{after + 1:016d}"
    if page_token:
        if not page_token.startswith(prefix):
            raise InvalidArgument("page_token does not belong to this query")
        start = max(start, page_token + "\x00")
    rows = await state.scan(start, _prefix_end(prefix), size + 1)
    more = len(rows) > size
    rows = rows[:size]
    token = rows[-1][0] if more and rows else ""
    return _out({"anchors": [json.loads(v) for _, v in rows], "next_page_token": token})


# -- key issuance -----------------------------------------------------------------------
async def record_key_issue(
    state: State,
    caller: Identity,
    ctx: TxContext,
    subject: str,
    attributes_hash_hex: str,
    authority: str,
    key_id: str,
) -> bytes:
    _require(caller, frozenset({ROLE_AUTHORITY}), "record key issuance")
    _id("subject", subject)
    _hex("attributes_hash", attributes_hash_hex, 32)
    _id("authority", authority)
    _id("key_id", key_id)
    if await state.get(f"authority/{authority}") is not None:
        # a registered (multi-authority) authority's issues come from its own organisation
        _require_owner(caller, authority, "record key issues of")
    unique = f"keyid/{key_id}"
    if await state.get(unique) is not None:
        raise AlreadyExists(f"key {key_id} is already recorded")
    record = {
        "subject": subject,
        "attributes_hash": attributes_hash_hex,
        "authority": authority,
        "key_id": key_id,
        **_by(caller, ctx),
    }
    await state.put(unique, _out({"subject": subject}))
    await state.put(f"keyissue/{subject}/{format_time(ctx.timestamp)}/{key_id}", _out(record))
    await state.put(
        f"keyissue-auth/{authority}/{format_time(ctx.timestamp)}/{key_id}", _out(record)
    )
    return _out(record)


async def key_issues_by_authority(
    state: State, caller: Identity, ctx: TxContext, authority: str, page_size: str, page_token: str
) -> bytes:
    _id("authority", authority)
    _require(caller, frozenset({ROLE_AUTHORITY, ROLE_AUDITOR}), f"read key issues of {authority}")
    items, token = await _paged(state, f"keyissue-auth/{authority}/", page_size, page_token)
    return _out({"key_issues": items, "next_page_token": token})


# -- multi-authority registry -----------------------------------------------------------
#: An authority id is its organisation's name: Hosp1MSP owns authority "hosp1".
_AUTHORITY = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_AUTHORITY_KEY_BYTES = 4096
AUTHORITY_KEY_DOMAIN = b"ehr-abe/ma-authority-key/v1\x00"
AUTHORITY_SCHEMES = frozenset({"ma-rw15-bls12381-v1"})


def authority_of_msp(msp_id: str) -> str:
    """The authority id an MSP owns: its name lower-cased, without a trailing 'msp'."""
    low = msp_id.lower()
    return low[:-3] if low.endswith("msp") and len(low) > 3 else low


def _authority_id(value: str) -> str:
    if not isinstance(value, str) or not _AUTHORITY.fullmatch(value):
        raise InvalidArgument(
            "authority_id must be 1-64 lower-case letters, digits, '_' or '-' (its organisation)"
        )
    return value


def _require_owner(caller: Identity, authority: str, action: str) -> None:
    """Only the authority's own organisation (by the submitter's MSP) may act for it."""
    _require(caller, frozenset({ROLE_AUTHORITY}), f"{action} authority {authority}")
    if authority_of_msp(caller.msp_id) != authority:
        raise AccessDenied(
            f"{caller.subject} ({caller.msp_id}) may not {action} authority {authority}: "
            f"only its own organisation may"
        )


def _authority_key(public_key_hex: str, fingerprint_hex: str) -> tuple[str, str]:
    if len(public_key_hex) > 2 * MAX_AUTHORITY_KEY_BYTES:
        raise InvalidArgument(f"public_key must be at most {MAX_AUTHORITY_KEY_BYTES} bytes")
    _hex("public_key", public_key_hex)
    _hex("fingerprint", fingerprint_hex, 32)
    digest = hashlib.sha256(AUTHORITY_KEY_DOMAIN + bytes.fromhex(public_key_hex)).hexdigest()
    if digest != fingerprint_hex:
        raise InvalidArgument("fingerprint is not the SHA-256 fingerprint of public_key")
    return public_key_hex, fingerprint_hex


async def _put_authority(
    state: State, caller: Identity, ctx: TxContext, entry: dict[str, Any]
) -> bytes:
    record = {**entry, **_by(caller, ctx)}
    await state.put(f"authority/{entry['authority_id']}", _out(record))
    if entry["status"] == "active":
        await state.put(
            f"authority-ver/{entry['authority_id']}/{entry['version']:010d}", _out(record)
        )
    return _out(record)


async def register_authority(
    state: State,
    caller: Identity,
    ctx: TxContext,
    authority_id: str,
    scheme: str,
    public_key_hex: str,
    fingerprint_hex: str,
) -> bytes:
    """First registration of an authority's public key, by its own organisation."""
    _authority_id(authority_id)
    _require_owner(caller, authority_id, "register")
    if scheme not in AUTHORITY_SCHEMES:
        raise InvalidArgument(f"unknown scheme {scheme[:40]!r}")
    pk, fp = _authority_key(public_key_hex, fingerprint_hex)
    if await state.get(f"authority/{authority_id}") is not None:
        raise AlreadyExists(f"authority {authority_id} is registered: rotate its key instead")
    entry = {
        "authority_id": authority_id,
        "owner_msp": caller.msp_id,
        "scheme": scheme,
        "public_key": pk,
        "fingerprint": fp,
        "version": 1,
        "status": "active",
        "reason": "",
    }
    return await _put_authority(state, caller, ctx, entry)


async def _current_authority(state: State, authority_id: str) -> dict[str, Any]:
    raw = await state.get(f"authority/{_authority_id(authority_id)}")
    if raw is None:
        raise NotFound(f"no authority {authority_id} is registered")
    entry: dict[str, Any] = json.loads(raw)
    return entry


async def rotate_authority(
    state: State,
    caller: Identity,
    ctx: TxContext,
    authority_id: str,
    public_key_hex: str,
    fingerprint_hex: str,
) -> bytes:
    """A new key version (also after a revocation); earlier versions stay in the history."""
    _authority_id(authority_id)
    _require_owner(caller, authority_id, "rotate")
    current = await _current_authority(state, authority_id)
    pk, fp = _authority_key(public_key_hex, fingerprint_hex)
    raw = await state.scan(
        f"authority-ver/{authority_id}/", _prefix_end(f"authority-ver/{authority_id}/"), MAX_PAGE
    )
    if any(json.loads(v)["fingerprint"] == fp for _, v in raw):
        raise AlreadyExists("this key was registered before: a rotation needs a new key")
    entry = {
        **{k: current[k] for k in ("authority_id", "owner_msp", "scheme")},
        "public_key": pk,
        "fingerprint": fp,
        "version": int(current["version"]) + 1,
        "status": "active",
        "reason": "",
    }
    return await _put_authority(state, caller, ctx, entry)


async def revoke_authority(
    state: State, caller: Identity, ctx: TxContext, authority_id: str, reason: str
) -> bytes:
    """Encryptors stop using the current key; a rotation registers a new one."""
    _authority_id(authority_id)
    _require_owner(caller, authority_id, "revoke")
    if len(reason) > MAX_DETAIL_CHARS:
        raise InvalidArgument(f"reason must be at most {MAX_DETAIL_CHARS} characters")
    current = await _current_authority(state, authority_id)
    if current["status"] == "revoked":
        raise AlreadyExists(f"authority {authority_id}'s key is already revoked")
    entry = {
        **{k: current[k] for k in ("authority_id", "owner_msp", "scheme", "public_key")},
        "fingerprint": current["fingerprint"],
        "version": current["version"],
        "status": "revoked",
        "reason": reason,
    }
    return await _put_authority(state, caller, ctx, entry)


async def get_authority(state: State, caller: Identity, ctx: TxContext, authority_id: str) -> bytes:
    return _out(await _current_authority(state, authority_id))


async def authority_history(
    state: State,
    caller: Identity,
    ctx: TxContext,
    authority_id: str,
    page_size: str,
    page_token: str,
) -> bytes:
    """Every registered key version of an authority, oldest first."""
    _authority_id(authority_id)
    items, token = await _paged(state, f"authority-ver/{authority_id}/", page_size, page_token)
    return _out({"versions": items, "next_page_token": token})


async def list_authorities(
    state: State, caller: Identity, ctx: TxContext, page_size: str, page_token: str
) -> bytes:
    items, token = await _paged(state, "authority/", page_size, page_token)
    return _out({"authorities": items, "next_page_token": token})


async def key_issues_by_subject(
    state: State, caller: Identity, ctx: TxContext, subject: str, page_size: str, page_token: str
) -> bytes:
    _id("subject", subject)
    if caller.subject != subject:
        _require(caller, frozenset({ROLE_AUTHORITY, ROLE_AUDITOR}), f"read key issues of {subject}")
    items, token = await _paged(state, f"keyissue/{subject}/", page_size, page_token)
    return _out({"key_issues": items, "next_page_token": token})


# -- consent ----------------------------------------------------------------------------
def _admin_of(caller: Identity, patient: str) -> bool:
    """A consent-admin acts only for patients of its own organisation."""
    return ROLE_CONSENT_ADMIN in caller.roles and caller.msp_id == msp_of(patient)


def _may_change_consent(caller: Identity, patient: str) -> None:
    if caller.principal != patient and not _admin_of(caller, patient):
        raise AccessDenied(
            f"{caller.principal} may not change the consent of patient {patient}: "
            f"only the patient or a {ROLE_CONSENT_ADMIN} of {msp_of(patient)} may"
        )


def _may_read_consent(caller: Identity, patient: str, subject: str) -> None:
    if caller.principal in (patient, subject) or _admin_of(caller, patient):
        return
    _require(
        caller,
        frozenset({ROLE_ANCHORER, ROLE_AUDITOR}),
        f"read the consent of patient {patient}",
    )


async def _set_consent(
    state: State,
    caller: Identity,
    ctx: TxContext,
    patient: str,
    subject: str,
    entry: dict[str, Any],
) -> bytes:
    record = {"patient_id": patient, "subject_id": subject, **entry, **_by(caller, ctx)}
    await state.put(f"consent/{patient}/{subject}", _out(record))
    hist = f"consent-hist/{patient}/{subject}/{format_time(ctx.timestamp)}/{ctx.tx_id}"
    await state.put(hist, _out(record))
    return _out(record)


async def grant_consent(
    state: State,
    caller: Identity,
    ctx: TxContext,
    patient: str,
    subject: str,
    expires_at: str,
) -> bytes:
    """Let `subject` read `patient`'s records, until `expires_at` ('' for no expiry)."""
    _principal("patient_id", patient)
    _principal("subject_id", subject)
    _may_change_consent(caller, patient)
    expiry = ""
    if expires_at:
        t = parse_time("expires_at", expires_at)
        if t <= ctx.timestamp:
            raise InvalidArgument("expires_at is in the past")
        expiry = format_time(t)
    return await _set_consent(
        state, caller, ctx, patient, subject, {"action": "grant", "expires_at": expiry}
    )


async def revoke_consent(
    state: State, caller: Identity, ctx: TxContext, patient: str, subject: str
) -> bytes:
    _principal("patient_id", patient)
    _principal("subject_id", subject)
    _may_change_consent(caller, patient)
    return await _set_consent(
        state, caller, ctx, patient, subject, {"action": "revoke", "expires_at": ""}
    )


def consent_allows_at(record: dict[str, Any] | None, at: datetime) -> bool:
    if record is None or record.get("action") != "grant":
        return False
    expiry = str(record.get("expires_at", ""))
    return not expiry or at < parse_time("expires_at", expiry)


async def get_consent(
    state: State, caller: Identity, ctx: TxContext, patient: str, subject: str
) -> bytes:
    _principal("patient_id", patient)
    _principal("subject_id", subject)
    _may_read_consent(caller, patient, subject)
    raw = await state.get(f"consent/{patient}/{subject}")
    if raw is None:
        raise NotFound(f"patient {patient} has never given {subject} a consent")
    return bytes(raw)


async def consent_allows(
    state: State, caller: Identity, ctx: TxContext, patient: str, subject: str, at: str
) -> bytes:
    """Is `subject` allowed to read `patient`'s records at time `at` ('' = tx time)?"""
    _principal("patient_id", patient)
    _principal("subject_id", subject)
    when = parse_time("at", at) if at else ctx.timestamp
    _may_read_consent(caller, patient, subject)
    raw = await state.get(f"consent/{patient}/{subject}")
    record = json.loads(raw) if raw is not None else None
    return _out(
        {
            "patient_id": patient,
            "subject_id": subject,
            "at": format_time(when),
            "allowed": consent_allows_at(record, when),
        }
    )


async def consent_history(
    state: State,
    caller: Identity,
    ctx: TxContext,
    patient: str,
    subject: str,
    page_size: str,
    page_token: str,
) -> bytes:
    """Every change to `patient`'s consent for `subject` ('' for all subjects), oldest first."""
    _principal("patient_id", patient)
    if subject:
        _principal("subject_id", subject)
        _may_read_consent(caller, patient, subject)
        prefix = f"consent-hist/{patient}/{subject}/"
    else:
        _may_read_consent(caller, patient, patient)
        prefix = f"consent-hist/{patient}/"
    items, token = await _paged(state, prefix, page_size, page_token)
    return _out({"changes": items, "next_page_token": token})


# -- device assignments -------------------------------------------------------------------
def _may_assign(caller: Identity, patient: str) -> None:
    """Clinicians and consent-admins of the patient's own organisation."""
    if caller.msp_id != msp_of(patient) or not (
        caller.roles & (CLINICIAN_ROLES | {ROLE_CONSENT_ADMIN})
    ):
        raise AccessDenied(
            f"{caller.principal} may not assign devices to patient {patient}: only a "
            f"clinician or {ROLE_CONSENT_ADMIN} of {msp_of(patient)} may"
        )


def _may_read_assignment(caller: Identity, patient: str, device: str) -> None:
    if caller.principal in (patient, device):
        return
    if caller.msp_id == msp_of(patient) and caller.roles & (CLINICIAN_ROLES | {ROLE_CONSENT_ADMIN}):
        return
    _require(
        caller, frozenset({ROLE_ANCHORER, ROLE_AUDITOR}), f"read the devices of patient {patient}"
    )


async def _set_assignment(
    state: State, caller: Identity, ctx: TxContext, patient: str, device: str, entry: dict[str, Any]
) -> bytes:
    record = {"patient_id": patient, "device_id": device, **entry, **_by(caller, ctx)}
    await state.put(f"assign/{patient}/{device}", _out(record))
    await state.put(
        f"assign-hist/{patient}/{device}/{format_time(ctx.timestamp)}/{ctx.tx_id}", _out(record)
    )
    return _out(record)


async def assign_device(
    state: State, caller: Identity, ctx: TxContext, patient: str, device: str, expires_at: str
) -> bytes:
    """Let `device` write records for `patient` until `expires_at` (required: an
    assignment always ends, at most MAX_ASSIGNMENT_DAYS after it is made)."""
    _principal("patient_id", patient)
    _principal("device_id", device)
    _may_assign(caller, patient)
    if not expires_at:
        raise InvalidArgument("a device assignment needs an expiry (expires_at)")
    t = parse_time("expires_at", expires_at)
    if t <= ctx.timestamp:
        raise InvalidArgument("expires_at is in the past")
    if (t - ctx.timestamp).days >= MAX_ASSIGNMENT_DAYS:
        raise InvalidArgument(f"an assignment lasts at most {MAX_ASSIGNMENT_DAYS} days")
    return await _set_assignment(
        state, caller, ctx, patient, device, {"action": "assign", "expires_at": format_time(t)}
    )


async def unassign_device(
    state: State, caller: Identity, ctx: TxContext, patient: str, device: str
) -> bytes:
    _principal("patient_id", patient)
    _principal("device_id", device)
    _may_assign(caller, patient)
    return await _set_assignment(
        state, caller, ctx, patient, device, {"action": "unassign", "expires_at": ""}
    )


def assignment_allows_at(record: dict[str, Any] | None, at: datetime) -> bool:
    if record is None or record.get("action") != "assign":
        return False
    return at < parse_time("expires_at", str(record.get("expires_at", "")))


async def assignment_allows(
    state: State, caller: Identity, ctx: TxContext, patient: str, device: str, at: str
) -> bytes:
    """Is `device` assigned to `patient` at time `at` ('' = tx time)? With the expiry."""
    _principal("patient_id", patient)
    _principal("device_id", device)
    when = parse_time("at", at) if at else ctx.timestamp
    answer = await _assignment_answer(state, caller, patient, device, when)
    return _out({**answer, "at": format_time(when)})


async def _assignment_answer(
    state: State, caller: Identity, patient: str, device: str, when: datetime
) -> dict[str, Any]:
    """Whether `device` is assigned to `patient` at `when`, with the expiry (for a
    caller allowed to ask)."""
    _may_read_assignment(caller, patient, device)
    raw = await state.get(f"assign/{patient}/{device}")
    record = json.loads(raw) if raw is not None else None
    allowed = assignment_allows_at(record, when)
    return {
        "patient_id": patient,
        "device_id": device,
        "allowed": allowed,
        "expires_at": str(record.get("expires_at", "")) if allowed and record else "",
    }


async def assignments_allow(
    state: State, caller: Identity, ctx: TxContext, pairs: str, at: str
) -> bytes:
    """AssignmentAllows for many (patient, device) pairs at once (a JSON list of
    [patient, device], at most MAX_ASSIGNMENT_QUERY): one query where a storage
    service re-confirms the assignments of every device streaming through it."""
    try:
        items = json.loads(pairs)
    except ValueError:
        raise InvalidArgument("pairs must be a JSON list of [patient_id, device_id]") from None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ASSIGNMENT_QUERY:
        raise InvalidArgument(
            f"pairs must be a JSON list of 1-{MAX_ASSIGNMENT_QUERY} [patient_id, device_id]"
        )
    when = parse_time("at", at) if at else ctx.timestamp
    results = []
    for i, item in enumerate(items):
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(isinstance(x, str) for x in item)
        ):
            raise InvalidArgument(f"pair {i} must be [patient_id, device_id]")
        patient = _principal(f"pair {i} patient_id", item[0])
        device = _principal(f"pair {i} device_id", item[1])
        results.append(await _assignment_answer(state, caller, patient, device, when))
    return _out({"at": format_time(when), "results": results})


async def assignment_history(
    state: State,
    caller: Identity,
    ctx: TxContext,
    patient: str,
    device: str,
    page_size: str,
    page_token: str,
) -> bytes:
    """Every assignment change of `patient` for `device` ('' for all devices), oldest first."""
    _principal("patient_id", patient)
    if device:
        _principal("device_id", device)
        _may_read_assignment(caller, patient, device)
        prefix = f"assign-hist/{patient}/{device}/"
    else:
        _may_read_assignment(caller, patient, patient)
        prefix = f"assign-hist/{patient}/"
    items, token = await _paged(state, prefix, page_size, page_token)
    return _out({"changes": items, "next_page_token": token})


# -- audit ------------------------------------------------------------------------------
def _access_event(raw: Any, index: int) -> tuple[str, str, str, datetime, str]:
    if not isinstance(raw, dict):
        raise InvalidArgument(f"access event {index} must be a JSON object")
    try:
        record_id = _id(f"event {index} record_id", str(raw["record_id"]))
        patient = _principal(f"event {index} patient_id", str(raw["patient_id"]))
        subject = _principal(f"event {index} subject_id", str(raw["subject_id"]))
        at = parse_time(f"event {index} at", str(raw["at"]))
    except KeyError as missing:
        raise InvalidArgument(f"access event {index} lacks {missing}") from None
    event_id = raw.get("event_id", "")
    if event_id:
        _id(f"event {index} event_id", str(event_id))
    return record_id, patient, subject, at, str(event_id)


async def log_accesses(state: State, caller: Identity, ctx: TxContext, events_json: str) -> bytes:
    """Record that subjects fetched records: a JSON list of
    {record_id, patient_id, subject_id, at, event_id?}. An event whose event_id was
    logged before is skipped, so a client that resends after a crash logs it once."""
    _require(caller, frozenset({ROLE_ANCHORER}), "log record accesses")
    try:
        raw = json.loads(events_json)
    except ValueError:
        raise InvalidArgument("events must be a JSON list") from None
    if not isinstance(raw, list) or not raw:
        raise InvalidArgument("events must be a non-empty JSON list")
    if len(raw) > MAX_ACCESS_EVENTS:
        raise InvalidArgument(f"at most {MAX_ACCESS_EVENTS} access events per transaction")
    events = [_access_event(e, i) for i, e in enumerate(raw)]
    logged = 0
    seen: set[str] = set()
    for n, (record_id, patient, subject, at, event_id) in enumerate(events):
        if event_id:
            if event_id in seen or await state.get(f"access-id/{event_id}") is not None:
                continue  # a resend: logged by an earlier transaction (or twice in this one)
            seen.add(event_id)
        entry = {
            "kind": "access",
            "record_id": record_id,
            "patient_id": patient,
            "subject_id": subject,
            "accessed_at": format_time(at),
            "detail": "",
            **_by(caller, ctx),
        }
        if event_id:
            entry["event_id"] = event_id
            suffix = f"{format_time(at)}/{event_id}"
            await state.put(f"access-id/{event_id}", _out({"tx_id": ctx.tx_id}))
        else:
            suffix = f"{format_time(at)}/{ctx.tx_id}/{n:04d}"
        value = _out(entry)
        await state.put(f"access-rec/{record_id}/{suffix}", value)
        await state.put(f"access-sub/{subject}/{suffix}", value)
        logged += 1
    return _out({"logged": logged, "tx_id": ctx.tx_id})


async def log_access(
    state: State,
    caller: Identity,
    ctx: TxContext,
    record_id: str,
    patient: str,
    subject: str,
    at: str,
) -> bytes:
    event = {"record_id": record_id, "patient_id": patient, "subject_id": subject, "at": at}
    return await log_accesses(state, caller, ctx, json.dumps([event]))


async def access_log_by_record(
    state: State, caller: Identity, ctx: TxContext, record_id: str, page_size: str, token: str
) -> bytes:
    _id("record_id", record_id)
    _require(caller, frozenset({ROLE_AUDITOR}), f"read the access log of record {record_id}")
    items, nxt = await _paged(state, f"access-rec/{record_id}/", page_size, token)
    return _out({"events": items, "next_page_token": nxt})


async def access_log_by_subject(
    state: State, caller: Identity, ctx: TxContext, subject: str, page_size: str, token: str
) -> bytes:
    _principal("subject_id", subject)
    if caller.principal != subject:
        _require(caller, frozenset({ROLE_AUDITOR}), f"read the access log of {subject}")
    items, nxt = await _paged(state, f"access-sub/{subject}/", page_size, token)
    return _out({"events": items, "next_page_token": nxt})


async def log_integrity_failure(
    state: State, caller: Identity, ctx: TxContext, record_id: str, batch_id: str, detail: str
) -> bytes:
    _require(caller, frozenset({ROLE_ANCHORER, ROLE_AUDITOR}), "log integrity failures")
    _id("record_id", record_id)
    if batch_id:
        _id("batch_id", batch_id)
    if len(detail) > MAX_DETAIL_CHARS:
        raise InvalidArgument(f"detail must be at most {MAX_DETAIL_CHARS} characters")
    entry = {
        "kind": "integrity-failure",
        "record_id": record_id,
        "batch_id": batch_id,
        "detail": detail,
        **_by(caller, ctx),
    }
    await state.put(f"integrity/{record_id}/{format_time(ctx.timestamp)}/{ctx.tx_id}", _out(entry))
    return _out(entry)


async def integrity_failures_by_record(
    state: State, caller: Identity, ctx: TxContext, record_id: str, page_size: str, token: str
) -> bytes:
    _id("record_id", record_id)
    _require(caller, frozenset({ROLE_AUDITOR}), "read integrity failures")
    items, nxt = await _paged(state, f"integrity/{record_id}/", page_size, token)
    return _out({"failures": items, "next_page_token": nxt})


# -- the wire API -------------------------------------------------------------------------
ContractFunction = Callable[..., Coroutine[Any, Any, bytes]]

#: name -> (implementation, number of string arguments, changes state)
FUNCTIONS: dict[str, tuple[ContractFunction, int, bool]] = {
    "AnchorBatch": (anchor_batch, 5, True),
    "AnchorRecords": (anchor_records, 6, True),
    "AnchorsByInstance": (anchors_by_instance, 4, False),
    "GetAnchor": (get_anchor, 1, False),
    "ListAnchors": (list_anchors, 4, False),
    "RecordKeyIssue": (record_key_issue, 4, True),
    "KeyIssuesBySubject": (key_issues_by_subject, 3, False),
    "KeyIssuesByAuthority": (key_issues_by_authority, 3, False),
    "RegisterAuthority": (register_authority, 4, True),
    "RotateAuthority": (rotate_authority, 3, True),
    "RevokeAuthority": (revoke_authority, 2, True),
    "GetAuthority": (get_authority, 1, False),
    "AuthorityHistory": (authority_history, 3, False),
    "ListAuthorities": (list_authorities, 2, False),
    "GrantConsent": (grant_consent, 3, True),
    "RevokeConsent": (revoke_consent, 2, True),
    "GetConsent": (get_consent, 2, False),
    "ConsentAllows": (consent_allows, 3, False),
    "ConsentHistory": (consent_history, 4, False),
    "AssignDevice": (assign_device, 3, True),
    "UnassignDevice": (unassign_device, 2, True),
    "AssignmentAllows": (assignment_allows, 3, False),
    "AssignmentHistory": (assignment_history, 4, False),
    "AssignmentsAllow": (assignments_allow, 2, False),
    "LogAccess": (log_access, 4, True),
    "LogAccesses": (log_accesses, 1, True),
    "AccessLogByRecord": (access_log_by_record, 3, False),
    "AccessLogBySubject": (access_log_by_subject, 3, False),
    "LogIntegrityFailure": (log_integrity_failure, 3, True),
    "IntegrityFailuresByRecord": (integrity_failures_by_record, 3, False),
}


def lookup(function: str, args: list[str]) -> tuple[ContractFunction, bool]:
    """The implementation of a wire function and whether it writes; checks arity."""
    entry = FUNCTIONS.get(function)
    if entry is None:
        raise InvalidArgument(f"the ehr contract has no function {function[:60]!r}")
    impl, arity, writes = entry
    if len(args) != arity:
        raise InvalidArgument(f"{function} takes {arity} arguments, got {len(args)}")
    if not all(isinstance(a, str) for a in args):
        raise InvalidArgument(f"{function} takes string arguments")
    return impl, writes


async def invoke(
    state: State, caller: Identity, ctx: TxContext, function: str, args: list[str]
) -> bytes:
    impl, _ = lookup(function, args)
    if not caller.subject or not caller.msp_id:
        raise AccessDenied("the caller has no subject or MSP id")
    return await impl(state, caller, ctx, *args)


# -- errors on the wire ---------------------------------------------------------------------
#: A chaincode error message starts with one of these tags so that clients can map it back
#: to the typed error (Fabric carries only a string).
ERROR_TAGS: dict[str, str] = {
    "InvalidArgument": "INVALID_ARGUMENT",
    "AccessDenied": "PERMISSION_DENIED",
    "AlreadyExists": "ALREADY_EXISTS",
    "NotFound": "NOT_FOUND",
}


def wire_error(exc: Exception) -> str:
    """`[ehr:<STATUS>] message` for a typed error; a generic text for anything else."""
    for cls in type(exc).__mro__:
        tag = ERROR_TAGS.get(cls.__name__)
        if tag is not None:
            return f"[ehr:{tag}] {exc}"
    return "[ehr:INTERNAL] the ehr contract failed"


_WIRE_TAG = re.compile(r"\[ehr:([A-Z_]+)\] ?(.*)", re.S)


def parse_wire_error(message: str) -> tuple[str, str] | None:
    """(status, text) from a message produced by `wire_error`, found anywhere in it
    (peers wrap chaincode messages in their own text)."""
    m = _WIRE_TAG.search(message)
    return (m.group(1), m.group(2)) if m else None


class DictState:
    """A state held in a dict: for tests and for running the contract in memory."""

    def __init__(self, data: dict[str, bytes] | None = None) -> None:
        self.data: dict[str, bytes] = dict(data or {})

    async def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def put(self, key: str, value: bytes) -> None:
        self.data[key] = bytes(value)

    async def scan(self, start: str, end: str, limit: int) -> list[tuple[str, bytes]]:
        keys = sorted(k for k in self.data if start <= k < end)[:limit]
        return [(k, self.data[k]) for k in keys]
