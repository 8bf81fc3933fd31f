"""Hybrid envelopes: FAME key encapsulation + the committing hybrid layer (hybrid.py).

encrypt: FAME encapsulates a fresh random GT element K under the policy; its
encoding is the session secret of `hybrid.seal`: HKDF-SHA256 gives an
AES-256-GCM key and a commitment key, and the envelope stores the commitment.
The binding (associated data) names the format, scheme, authority, policy,
every header element and the caller's context (for example the record's
patient id). Any changed byte of an envelope therefore fails decryption with
IntegrityError (or DecodeError if it no longer parses); it never yields a wrong
plaintext. A malformed header that gives different readers different K (a
writer holding a key of their own can build one) is caught by the key
commitment: every reader that opens an envelope gets the same plaintext.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from abe_service.fame import SCHEME_ID, Fame, PublicKey
from abe_service.hybrid import Sealed, lp, open_sealed, seal
from abe_service.pairing.base import get_backend
from abe_service.policy import CompiledPolicy, compile_policy_cached
from abe_service.serialization import (
    ENVELOPE_VERSION,
    EnvelopeData,
    UserKey,
    authority_id,
    envelope_header_bytes,
    envelope_header_from_bytes,
    envelope_points,
    envelope_to_bytes,
    public_params_from_bytes,
    user_key_from_bytes,
)
from ehr_common.errors import DecodeError, IntegrityError, InvalidArgument, PolicyNotSatisfied

AD_PREFIX = f"ehr-abe/envelope/v{ENVELOPE_VERSION}\x00".encode()
MAX_CONTEXT = 4096


def envelope_binding(
    scheme: str,
    authority: str,
    policy: str,
    header_bytes: tuple[tuple[bytes, ...], ...],
    context: bytes,
) -> bytes:
    """What the hybrid layer binds the payload and key commitment to: every field of
    the envelope but the hybrid layer's own, and the caller's context. Scheme-agnostic:
    `header_bytes` are the KEM header's element encodings, in groups."""
    parts = [AD_PREFIX, lp(scheme.encode()), lp(authority.encode()), lp(policy.encode())]
    parts.append(lp(len(header_bytes).to_bytes(4, "big")))
    for group in header_bytes:
        parts.append(lp(len(group).to_bytes(4, "big")))
        parts.extend(lp(b) for b in group)
    parts.append(lp(context))
    return b"".join(parts)


def _compiled(policy: str) -> CompiledPolicy:
    return compile_policy_cached(policy)


def _check_context(context: bytes) -> None:
    if not isinstance(context, bytes) or len(context) > MAX_CONTEXT:
        raise InvalidArgument(f"context must be bytes of at most {MAX_CONTEXT} bytes")


@dataclass(frozen=True)
class AbeEncryptor:
    """Encrypts under policies with an authority's public parameters."""

    fame: Fame
    pk: PublicKey
    public_params: bytes
    authority_id: str

    @staticmethod
    def from_public_params(data: bytes, backend: str = "auto") -> AbeEncryptor:
        group = get_backend(backend)
        return AbeEncryptor(
            Fame(group), public_params_from_bytes(group, data), bytes(data), authority_id(data)
        )

    def encrypt(self, policy: str, plaintext: bytes, context: bytes = b"") -> bytes:
        _check_context(context)
        if not isinstance(plaintext, bytes | bytearray):
            raise InvalidArgument("plaintext must be bytes")
        compiled = _compiled(policy)
        group = self.fame.group
        header, K = self.fame.encrypt(self.pk, compiled)
        header_bytes = (
            tuple(group.g2_to_bytes(p) for p in header.ct0),
            *(tuple(group.g1_to_bytes(p) for p in row) for row in header.ct),
        )
        binding = envelope_binding(
            SCHEME_ID, self.authority_id, compiled.normal_form, header_bytes, context
        )
        sealed = seal(group.gt_to_bytes(K), binding, bytes(plaintext))
        return envelope_to_bytes(
            EnvelopeData(
                authority_id=self.authority_id,
                policy=compiled.normal_form,
                header=header,
                nonce=sealed.nonce,
                ciphertext=sealed.ciphertext,
                header_bytes=header_bytes,
                key_commitment=sealed.commitment,
            )
        )

    # what the storage service needs (storage_service.service.Encryptor)
    def envelope_policy(self, envelope: bytes) -> str:
        return envelope_policy(envelope)


def envelope_policy(envelope: bytes) -> str:
    """The (normal-form) policy of an envelope; DecodeError if it is malformed."""
    msg = envelope_header_from_bytes(envelope)
    compiled = _compiled_or_decode_error(msg.policy)
    if len(compiled.row_labels) != len(msg.rows):
        raise DecodeError("envelope: header rows do not match its policy")
    return msg.policy


def _compiled_or_decode_error(policy: str) -> CompiledPolicy:
    try:
        return _compiled(policy)
    except InvalidArgument as exc:
        raise DecodeError(f"envelope: its policy does not parse: {exc}") from None


@dataclass(frozen=True)
class AbeDecryptor:
    """A user key, ready to decrypt envelopes. Never needs a server."""

    fame: Fame
    key: UserKey = field(repr=False)

    @staticmethod
    def from_user_key(data: bytes, backend: str = "auto") -> AbeDecryptor:
        group = get_backend(backend)
        return AbeDecryptor(Fame(group), user_key_from_bytes(group, data))

    @property
    def subject_id(self) -> str:
        return self.key.subject_id

    def decrypt(self, envelope: bytes, context: bytes = b"") -> bytes:
        _check_context(context)
        group = self.fame.group
        # Structure first (kinds, version, counts, lengths), then the header must be
        # well formed: as many rows as the policy's span program, and every point
        # (ct0 and ALL rows, not only those this key uses) on the curve, in the
        # prime-order subgroup and not the identity. A header can still be
        # inconsistent (rows made with other randomness, which no public check can
        # see without the master key); the key commitment catches that.
        msg = envelope_header_from_bytes(envelope)
        if msg.authority_id != self.key.authority_id:
            raise IntegrityError("the envelope was made for another key authority than this key's")
        compiled = _compiled_or_decode_error(msg.policy)
        if len(compiled.row_labels) != len(msg.rows):
            raise DecodeError("envelope: header rows do not match its policy")
        if not compiled.satisfied_by(frozenset(self.key.secret.sk)):
            raise PolicyNotSatisfied(
                f"key of {self.key.subject_id} does not satisfy the policy {msg.policy!r}"
            )
        gammas = self.fame.reconstruction(compiled, self.key.secret)
        ct0, rows = envelope_points(group, msg, range(len(msg.rows)))
        K = self.fame.decrypt_rows(gammas, compiled.row_labels, ct0, rows, self.key.secret)
        header_bytes = envelope_header_bytes(msg)
        binding = envelope_binding(msg.scheme, msg.authority_id, msg.policy, header_bytes, context)
        return open_sealed(
            group.gt_to_bytes(K),
            binding,
            Sealed(bytes(msg.nonce), bytes(msg.key_commitment), bytes(msg.ciphertext)),
        )


# -- one-call API (Tink-style): bytes in, bytes out, context required -----------------------
def encrypt(public_params: bytes, policy: str, plaintext: bytes, context: bytes) -> bytes:
    """Seal `plaintext` under `policy` for the authority of `public_params`.

    `context` (for example the record id) is bound into the envelope and must be
    given again to decrypt. For many envelopes, keep an `AbeEncryptor`."""
    return AbeEncryptor.from_public_params(public_params).encrypt(policy, plaintext, context)


def decrypt(user_key: bytes, envelope: bytes, context: bytes) -> bytes:
    """Open `envelope` with a serialized user key; the same `context` as at encryption.

    Raises PolicyNotSatisfied if the key's attributes do not satisfy the policy,
    IntegrityError if the envelope was modified or the context differs, DecodeError
    if it does not parse. For many envelopes, keep an `AbeDecryptor`."""
    return AbeDecryptor.from_user_key(user_key).decrypt(envelope, context)
