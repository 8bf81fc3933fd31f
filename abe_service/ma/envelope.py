"""Multi-authority hybrid envelopes: RW15 key encapsulation + the committing hybrid
layer (abe_service/hybrid.py, shared with FAME).

The same `Envelope` message as FAME with scheme "ma-rw15-bls12381-v1": the
header is `ma_rows`, and `ma_authorities` names every authority whose public
key the rows were made with, by fingerprint. The binding (associated data and
key commitment) covers the scheme, the policy, those fingerprints, every header
element and the caller's context, so any changed byte fails decryption
(IntegrityError) or parsing (DecodeError) and never yields a wrong plaintext,
and a malformed header cannot open to different plaintexts for different readers.

Encryptors take authority keys from the ledger's registry
(abe_service/ma/registry.py) and check each against its registered
fingerprint and authority id before use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from abe_service.envelope import envelope_binding
from abe_service.hybrid import Sealed, open_sealed, seal
from abe_service.ma.labels import authority_of_label, policy_authorities
from abe_service.ma.scheme import SCHEME_ID, AuthorityPublicKey, MultiAuthority, merge_keys
from abe_service.ma.serialization import (
    IssuedKey,
    envelope_header_bytes,
    envelope_header_from_bytes,
    fingerprint,
    header_to_fields,
    public_key_from_bytes,
    rows_used,
    user_key_from_bytes,
)
from abe_service.pairing.base import PairingBackend, get_backend
from abe_service.policy import CompiledPolicy, compile_policy_cached
from abe_service.serialization import ENVELOPE_VERSION
from ehr_common.api.v1 import formats_pb2 as fpb
from ehr_common.errors import DecodeError, IntegrityError, InvalidArgument, PolicyNotSatisfied

MAX_CONTEXT = 4096


def _binding(
    policy: str,
    authorities: Sequence[tuple[str, bytes]],
    header: tuple[tuple[bytes, ...], ...],
    context: bytes,
) -> bytes:
    """The hybrid layer's binding: FAME's layout (envelope.envelope_binding) with the
    authority references as the first header group."""
    refs = tuple(part for name, fp in authorities for part in (name.encode(), fp))
    return envelope_binding(SCHEME_ID, "", policy, (refs, *header), context)


def _compiled(policy: str) -> CompiledPolicy:
    return compile_policy_cached(policy)


def _check_context(context: bytes) -> None:
    if not isinstance(context, bytes) or len(context) > MAX_CONTEXT:
        raise InvalidArgument(f"context must be bytes of at most {MAX_CONTEXT} bytes")


@dataclass(frozen=True)
class VerifiedAuthority:
    """An authority public key whose bytes matched the fingerprint it was registered
    with, under the authority id it claims."""

    authority: str
    public_key: bytes
    fingerprint: bytes
    pk: AuthorityPublicKey


def verify_authority_key(
    group: PairingBackend, authority: str, public_key: bytes, expected_fingerprint: bytes
) -> VerifiedAuthority:
    """IntegrityError unless `public_key` hashes to `expected_fingerprint` and names
    `authority` (a registry entry cannot lend one authority's key to another)."""
    fp = fingerprint(public_key)
    if fp != expected_fingerprint:
        raise IntegrityError(
            f"authority {authority}: the public key does not match its fingerprint"
        )
    pk = public_key_from_bytes(group, public_key)
    if pk.authority != authority:
        raise IntegrityError(
            f"the key registered for authority {authority} belongs to {pk.authority}"
        )
    return VerifiedAuthority(authority, bytes(public_key), fp, pk)


class MaEncryptor:
    """Encrypts under multi-authority policies with verified authority keys."""

    def __init__(self, ma: MultiAuthority, authorities: Mapping[str, VerifiedAuthority]):
        self.ma = ma
        self.authorities = dict(authorities)

    @staticmethod
    def from_public_keys(keys: Sequence[bytes], backend: str = "auto") -> MaEncryptor:
        """From serialized public keys you trust as given (tests, offline use); services
        use the ledger registry (verify_authority_key)."""
        group = get_backend(backend)
        verified = {}
        for data in keys:
            pk = public_key_from_bytes(group, data)
            verified[pk.authority] = VerifiedAuthority(pk.authority, data, fingerprint(data), pk)
        return MaEncryptor(MultiAuthority.shared(group), verified)

    def encrypt(self, policy: str, plaintext: bytes, context: bytes = b"") -> bytes:
        _check_context(context)
        if not isinstance(plaintext, bytes | bytearray):
            raise InvalidArgument("plaintext must be bytes")
        compiled = _compiled(policy)
        needed = sorted(policy_authorities(compiled.normal_form))
        missing = [a for a in needed if a not in self.authorities]
        if missing:
            raise InvalidArgument(f"no registered public key for authority {', '.join(missing)}")
        group = self.ma.group
        header, K = self.ma.encrypt({a: self.authorities[a].pk for a in needed}, compiled)
        rows, header_bytes = header_to_fields(group, header.rows)
        refs = [(a, self.authorities[a].fingerprint) for a in needed]
        sealed = seal(
            group.gt_to_bytes(K),
            _binding(compiled.normal_form, refs, header_bytes, context),
            bytes(plaintext),
        )
        return fpb.Envelope(
            kind=fpb.OBJECT_KIND_ENVELOPE,
            version=ENVELOPE_VERSION,
            scheme=SCHEME_ID,
            policy=compiled.normal_form,
            nonce=sealed.nonce,
            ciphertext=sealed.ciphertext,
            key_commitment=sealed.commitment,
            ma_rows=rows,
            ma_authorities=[
                fpb.MaAuthorityRef(authority=a, public_key_sha256=fp) for a, fp in refs
            ],
        ).SerializeToString(deterministic=True)

    def envelope_policy(self, envelope: bytes) -> str:
        return envelope_policy(envelope)


def envelope_policy(envelope: bytes) -> str:
    """The (normal-form) policy of a multi-authority envelope; DecodeError if malformed."""
    msg = envelope_header_from_bytes(envelope)
    _check_header(msg)
    return msg.policy


def _check_header(msg: fpb.Envelope) -> CompiledPolicy:
    """The envelope's policy, compiled; its rows and authorities must match it."""
    compiled = _compiled_or_decode_error(msg.policy)
    if len(compiled.row_labels) != len(msg.ma_rows):
        raise DecodeError("envelope: header rows do not match its policy")
    try:
        needed = sorted(policy_authorities(compiled.normal_form))
    except InvalidArgument as exc:
        raise DecodeError(f"envelope: its policy is not a multi-authority one: {exc}") from None
    if needed != [a.authority for a in msg.ma_authorities]:
        raise DecodeError("envelope: its authorities do not match its policy")
    return compiled


def _compiled_or_decode_error(policy: str) -> CompiledPolicy:
    try:
        return _compiled(policy)
    except InvalidArgument as exc:
        raise DecodeError(f"envelope: its policy does not parse: {exc}") from None


class MaKeyring:
    """A client's keys from several authorities for ONE global identifier; decrypts
    multi-authority envelopes without any server."""

    def __init__(self, ma: MultiAuthority, keys: Sequence[IssuedKey]):
        if not keys:
            raise InvalidArgument("a keyring needs at least one key")
        self.ma = ma
        self.keys = tuple(keys)
        self.gid = keys[0].gid
        self.key = merge_keys([k.key for k in keys])  # InvalidArgument across GIDs
        # Which version of its authority's key each label was issued under (merge_keys
        # keeps the last key's part for a label, so the same here).
        self._label_authority_key = {
            label: k.authority_key_sha256 for k in keys for label in k.key.parts
        }

    @staticmethod
    def from_user_keys(keys: Sequence[bytes], backend: str = "auto") -> MaKeyring:
        group = get_backend(backend)
        return MaKeyring(
            MultiAuthority.shared(group), [user_key_from_bytes(group, k) for k in keys]
        )

    @property
    def authorities(self) -> frozenset[str]:
        return frozenset(k.authority for k in self.keys)

    def decrypt(self, envelope: bytes, context: bytes = b"") -> bytes:
        _check_context(context)
        group = self.ma.group
        msg = envelope_header_from_bytes(envelope)
        compiled = _check_header(msg)  # rows and authorities match the policy
        labels = frozenset(self.key.parts)
        if not compiled.satisfied_by(labels):
            raise PolicyNotSatisfied(
                f"the keys of {self.gid} do not satisfy the policy {msg.policy!r}"
            )
        gammas = self.ma.reconstruction(compiled, self.key)
        refs = [(a.authority, bytes(a.public_key_sha256)) for a in msg.ma_authorities]
        # A row opens only with a key part issued under the authority key version the
        # envelope names (a rotated or replaced authority key, or a swapped fingerprint):
        # say so plainly, before any pairing, rather than fail the key commitment.
        by_authority = dict(refs)
        for i in gammas:
            label = compiled.row_labels[i]
            authority = authority_of_label(label)
            issued_under = self._label_authority_key.get(label)  # None: a part set by hand
            if issued_under is not None and by_authority.get(authority or "") != issued_under:
                raise IntegrityError(
                    f"the envelope was made with another public key of authority {authority} "
                    "than the one this key was issued under (rotated or replaced authority "
                    "key, or a modified envelope)"
                )
        rows = rows_used(group, msg, gammas)
        K = self.ma.decrypt_rows(gammas, compiled.row_labels, rows, self.key)
        binding = _binding(msg.policy, refs, envelope_header_bytes(msg), context)
        return open_sealed(
            group.gt_to_bytes(K),
            binding,
            Sealed(bytes(msg.nonce), bytes(msg.key_commitment), bytes(msg.ciphertext)),
        )
