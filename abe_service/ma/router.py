"""One product, two schemes: routing encryption and envelope parsing between FAME
and the multi-authority scheme, with authority keys from the ledger registry.

A policy whose attributes name their authority (`role:doctor@hosp1`) is a
multi-authority policy; any other is FAME's. An envelope says which scheme made
it in its `scheme` field.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Protocol

from google.protobuf.message import DecodeError as ProtobufDecodeError

from abe_service.envelope import envelope_policy as fame_envelope_policy
from abe_service.fame import SCHEME_ID as FAME_SCHEME
from abe_service.ma.envelope import MaEncryptor, VerifiedAuthority, verify_authority_key
from abe_service.ma.envelope import envelope_policy as ma_envelope_policy
from abe_service.ma.labels import authority_of_label, policy_authorities
from abe_service.ma.scheme import SCHEME_ID as MA_SCHEME
from abe_service.ma.scheme import MultiAuthority
from abe_service.ma.serialization import envelope_header_from_bytes as ma_header
from abe_service.ma.validity import VALID_UNTIL, day_number, validity_day, with_validity
from abe_service.policy import parse
from abe_service.policy.language import And, Attr, Compare, PolicyNode, render
from ehr_common.api.v1 import formats_pb2 as fpb
from ehr_common.errors import ConfigError, DecodeError, IntegrityError, InvalidArgument

#: How long a verified registry entry is reused before the ledger is asked again:
#: a revocation or rotation reaches encryptors within this time.
REGISTRY_TTL_S = 30.0


class AuthorityEntry(Protocol):
    """What the ledger registry returns (storage_service.ledger.client.AuthorityEntry)."""

    @property
    def authority_id(self) -> str: ...
    @property
    def scheme(self) -> str: ...
    @property
    def public_key(self) -> bytes: ...
    @property
    def fingerprint(self) -> bytes: ...
    @property
    def active(self) -> bool: ...


class AuthorityDirectory(Protocol):
    """The ledger's authority registry (LedgerClient has this method)."""

    def get_authority(self, authority_id: str) -> AuthorityEntry: ...


class Encryptor(Protocol):
    def encrypt(self, policy: str, plaintext: bytes, context: bytes) -> bytes: ...
    def envelope_policy(self, envelope: bytes) -> str: ...


class LedgerAuthorities:
    """Authority public keys from the ledger, verified (fingerprint, authority id,
    scheme, not revoked) and kept for REGISTRY_TTL_S."""

    def __init__(
        self,
        directory: AuthorityDirectory,
        ma: MultiAuthority,
        *,
        ttl_s: float = REGISTRY_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.directory = directory
        self.ma = ma
        self.ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, VerifiedAuthority]] = {}
        self._lock = threading.Lock()

    def verified(self, authorities: Iterable[str]) -> dict[str, VerifiedAuthority]:
        out = {}
        now = self._clock()
        for name in sorted(set(authorities)):
            with self._lock:
                hit = self._cache.get(name)
            if hit is not None and now - hit[0] < self.ttl_s:
                out[name] = hit[1]
                continue
            entry = self.directory.get_authority(name)  # NotFound if unregistered
            if entry.authority_id != name or entry.scheme != MA_SCHEME:
                raise IntegrityError(
                    f"the ledger's entry for authority {name} is not an {MA_SCHEME} key"
                )
            if not entry.active:
                raise InvalidArgument(
                    f"authority {name}'s key is revoked on the ledger: no new records under it"
                )
            v = verify_authority_key(self.ma.group, name, entry.public_key, entry.fingerprint)
            with self._lock:
                self._cache[name] = (now, v)
            out[name] = v
        return out


class MaLedgerEncryptor:
    """Multi-authority encryption with the registered keys of the policy's authorities."""

    def __init__(self, authorities: LedgerAuthorities):
        self.authorities = authorities

    def encrypt(self, policy: str, plaintext: bytes, context: bytes) -> bytes:
        keys = self.authorities.verified(policy_authorities(policy))
        return MaEncryptor(self.authorities.ma, keys).encrypt(policy, plaintext, context)

    def envelope_policy(self, envelope: bytes) -> str:
        return ma_envelope_policy(envelope)

    def check_authorities(self, envelope: bytes) -> None:
        """For a NEW record: every authority key the envelope names must be that
        authority's current, active key on the ledger (as `encrypt` would use). A
        client holding a stale copy of a rotated or revoked key gets a clear error
        instead of storing a record under a key that may be compromised."""
        refs = {a.authority: bytes(a.public_key_sha256) for a in ma_header(envelope).ma_authorities}
        current = self.authorities.verified(refs)  # NotFound, or InvalidArgument if revoked
        for name, fp in refs.items():
            if current[name].fingerprint != fp:
                raise InvalidArgument(
                    f"the envelope was made with a key of authority {name} that is not its "
                    "current key on the ledger (rotated): encrypt again with the registered key"
                )


def _qualified(node: PolicyNode) -> bool:
    if isinstance(node, Attr):
        return authority_of_label(node.label) is not None
    if isinstance(node, Compare):
        return authority_of_label(node.name) is not None
    return any(_qualified(c) for c in node.children)


def is_multi_authority(policy: str) -> bool:
    """Does the policy name an authority anywhere (`...@hosp1`)? Then every attribute
    must (PolicyError from the encryptor otherwise)."""
    return _qualified(parse(policy))


def envelope_scheme(envelope: bytes) -> str:
    if not isinstance(envelope, bytes | bytearray) or not envelope:
        raise DecodeError("envelope: empty or not bytes")
    try:
        msg = fpb.Envelope.FromString(bytes(envelope))
    except (ProtobufDecodeError, ValueError, RuntimeError):
        raise DecodeError("envelope: not a valid serialized envelope") from None
    if msg.scheme not in (FAME_SCHEME, MA_SCHEME):
        raise DecodeError(f"envelope: unsupported scheme {msg.scheme[:40]!r}")
    return msg.scheme


def today() -> int:
    return day_number(datetime.now(UTC))


class SchemeRouter:
    """The Encryptor the storage service (and AbeService.Encrypt) use: FAME or the
    multi-authority scheme by policy; envelopes by their scheme field. New
    multi-authority records get the validity condition (validity.py) when
    `validity` is on."""

    def __init__(
        self,
        fame: Encryptor | None,
        ma: Encryptor | None,
        *,
        validity: bool = True,
        fame_validity: bool = False,
        day: Callable[[], int] = today,
    ):
        self.fame = fame
        self.ma = ma
        self.validity = validity
        self.fame_validity = fame_validity
        self._day = day

    def policy_for_new_record(self, policy: str) -> str:
        if is_multi_authority(policy):
            return with_validity(policy, self._day()) if self.validity else policy
        if self.fame_validity:  # one authority: the condition goes on the whole policy
            return render(And((parse(policy), Compare(VALID_UNTIL, ">=", self._day()))))
        return policy

    def encrypt(self, policy: str, plaintext: bytes, context: bytes) -> bytes:
        if is_multi_authority(policy):
            if self.ma is None:
                raise ConfigError("this service has no multi-authority encryptor (ledger registry)")
            return self.ma.encrypt(self.policy_for_new_record(policy), plaintext, context)
        if self.fame is None:
            raise ConfigError("this service has no FAME authority: qualify attributes (@authority)")
        return self.fame.encrypt(self.policy_for_new_record(policy), plaintext, context)

    def envelope_policy(self, envelope: bytes) -> str:
        return self._policy_of(envelope, envelope_scheme(envelope))

    @staticmethod
    def _policy_of(envelope: bytes, scheme: str) -> str:
        if scheme == MA_SCHEME:
            return ma_envelope_policy(envelope)
        return fame_envelope_policy(envelope)

    def check_new_envelope(self, envelope: bytes, *, fame: bool = True) -> str:
        """envelope_policy for an envelope a client made and now stores as a new record:
        with validity on, its policy must carry the condition this router would have
        attached (policy_for_new_record), for a day no earlier than yesterday (a client
        may have sealed it just before midnight UTC). Otherwise a writer could store
        records that keys expired before today still open. `fame=False` leaves FAME
        envelopes unchecked (edge gateways seal window keys without the condition)."""
        scheme = envelope_scheme(envelope)
        policy = self._policy_of(envelope, scheme)
        multi = scheme == MA_SCHEME
        if multi and isinstance(self.ma, MaLedgerEncryptor):
            self.ma.check_authorities(envelope)
        if not (self.validity if multi else self.fame_validity and fame):
            return policy
        day = validity_day(policy, multi_authority=multi)
        if day is None or day < self._day() - 1:
            example = "valid_until@<authority> >= <today>" if multi else "valid_until >= <today>"
            raise InvalidArgument(
                f"this service stores new records only with the validity condition "
                f"({example}, UTC day number, attached as abe_service/ma/validity.py does); "
                f"the envelope's policy {policy[:200]!r} lacks it or is dated before yesterday: "
                "send the payload with its policy instead, or encrypt under the policy the "
                "service would use"
            )
        return policy
