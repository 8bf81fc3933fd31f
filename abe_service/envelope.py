"""Hybrid envelopes: FAME key encapsulation + HKDF-SHA256 + AES-256-GCM.

encrypt: FAME encapsulates a fresh random GT element K under the policy;
HKDF-SHA256(K) gives a 256-bit AES key; AES-256-GCM encrypts the payload with
associated data binding the format, scheme, authority, policy, every header
element and the caller's context (for example the record's patient id). Any
changed byte of an envelope therefore fails decryption with IntegrityError (or
DecodeError if it no longer parses); it never yields a wrong plaintext.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from abe_service.fame import SCHEME_ID, Fame, PublicKey
from abe_service.pairing.base import PairingBackend, get_backend
from abe_service.policy import CompiledPolicy, compile_policy
from abe_service.serialization import (
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

KDF_INFO = f"ehr-abe/{SCHEME_ID}/envelope/aes-256-gcm/v1".encode()
AD_PREFIX = b"ehr-abe/envelope/v1\x00"
MAX_CONTEXT = 4096


def _lp(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _associated_data(
    authority: str, policy: str, header_bytes: tuple[tuple[bytes, ...], ...], context: bytes
) -> bytes:
    parts = [
        AD_PREFIX,
        _lp(SCHEME_ID.encode()),
        _lp(authority.encode()),
        _lp(policy.encode()),
    ]
    for group in header_bytes:
        parts.extend(_lp(b) for b in group)
    parts.append(_lp(context))
    return b"".join(parts)


def _aes_key(group: PairingBackend, K: object) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KDF_INFO).derive(
        group.gt_to_bytes(K)
    )


@lru_cache(maxsize=1024)
def _compiled(policy: str) -> CompiledPolicy:
    return compile_policy(policy)


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
        env = EnvelopeData(
            authority_id=self.authority_id,
            policy=compiled.normal_form,
            header=header,
            nonce=os.urandom(12),
            ciphertext=b"",
            header_bytes=header_bytes,
        )
        sealed = AESGCM(_aes_key(group, K)).encrypt(
            env.nonce,
            bytes(plaintext),
            _associated_data(env.authority_id, env.policy, header_bytes, context),
        )
        return envelope_to_bytes(
            EnvelopeData(env.authority_id, env.policy, header, env.nonce, sealed, header_bytes)
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
    key: UserKey

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
        # Structure first (kinds, counts, lengths); then only the points this key
        # computes with are decoded and validated. The other rows are never used,
        # and their bytes are authenticated by AES-GCM's associated data anyway.
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
        ct0, rows = envelope_points(group, msg, gammas)
        K = self.fame.decrypt_rows(gammas, compiled.row_labels, ct0, rows, self.key.secret)
        ad = _associated_data(msg.authority_id, msg.policy, envelope_header_bytes(msg), context)
        try:
            return AESGCM(_aes_key(group, K)).decrypt(bytes(msg.nonce), bytes(msg.ciphertext), ad)
        except InvalidTag:
            raise IntegrityError(
                "the envelope failed authentication: it was modified, or the context differs"
            ) from None


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
