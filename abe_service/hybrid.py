"""The scheme-agnostic hybrid layer of envelopes: session secret -> HKDF ->
(AES-256-GCM key, commitment key); payload sealed with AES-256-GCM, and a
commitment to the key stored beside it and checked before decryption.

Any key-encapsulation scheme (FAME today; others through the envelope's
`scheme` field) hands this module the secret bytes its KEM produced and
`binding`: the bytes that name everything the envelope is about (format,
scheme, authority, policy, every header element, the caller's context).

Why a commitment: AES-GCM is not key-committing. A writer who can make two
readers derive different session secrets from one header (a malformed or
inconsistent ABE header; or a writer who holds a key of their own and so knows
what their own key derives) can solve for one ciphertext and tag that
authenticate under both AES keys (Dodis et al. 2018, "invisible salamanders"),
so two authorised readers would open one envelope without error to different
plaintexts. Here the commitment C = HMAC-SHA256(k_commit, binding || nonce)
is stored in the envelope, bound into GCM's associated data, and compared (in
constant time) with the one each reader recomputes from the secret IT derived,
before any decryption: a reader whose secret differs from the writer's gets an
IntegrityError. Two different secrets giving the same C would be a SHA-256
collision (HKDF and HMAC are both built on it), so every reader that opens an
envelope derived the same AES key, and AES-GCM under one key, nonce and
associated data has one plaintext. This is the "CTX"/UtC pattern (Bellare &
Hoang 2022; Chan & Rogaway 2022): commit to the key with a collision-resistant
function, separately from the AEAD.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ehr_common.errors import IntegrityError, InvalidArgument

HYBRID_ID = "hkdf-sha256/aes-256-gcm/hmac-sha256-commitment/v2"
KDF_INFO = b"ehr-abe/envelope/v2/keys\x00"
COMMIT_LABEL = b"ehr-abe/envelope/v2/key-commitment\x00"
NONCE_BYTES = 12
COMMITMENT_BYTES = 32
TAG_BYTES = 16
MIN_SECRET_BYTES = 32


@dataclass(frozen=True)
class Sealed:
    """What the hybrid layer adds to an envelope (none of it secret)."""

    nonce: bytes
    commitment: bytes
    ciphertext: bytes  # AES-256-GCM output, tag included


def lp(b: bytes) -> bytes:
    """Length-prefixed bytes: concatenations of lp() parts are unambiguous."""
    return struct.pack(">I", len(b)) + b


def _keys(session_secret: bytes, binding: bytes) -> tuple[bytes, bytes]:
    if not isinstance(session_secret, bytes) or len(session_secret) < MIN_SECRET_BYTES:
        raise InvalidArgument(f"a session secret is bytes of at least {MIN_SECRET_BYTES}")
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=64,
        salt=None,
        info=KDF_INFO + hashlib.sha256(binding).digest(),
    ).derive(session_secret)
    return okm[:32], okm[32:]


def _commitment(commit_key: bytes, binding: bytes, nonce: bytes) -> bytes:
    return hmac.new(commit_key, COMMIT_LABEL + lp(binding) + lp(nonce), hashlib.sha256).digest()


def _aead_ad(binding: bytes, commitment: bytes) -> bytes:
    return lp(binding) + lp(commitment)


def seal(session_secret: bytes, binding: bytes, plaintext: bytes) -> Sealed:
    """Encrypt `plaintext` under a key derived from `session_secret`, bound to `binding`."""
    enc_key, commit_key = _keys(session_secret, binding)
    nonce = os.urandom(NONCE_BYTES)
    commitment = _commitment(commit_key, binding, nonce)
    ct = AESGCM(enc_key).encrypt(nonce, bytes(plaintext), _aead_ad(binding, commitment))
    return Sealed(nonce, commitment, ct)


def open_sealed(session_secret: bytes, binding: bytes, sealed: Sealed) -> bytes:
    """The plaintext, or IntegrityError if the key this reader derived is not the
    one the writer committed to, or anything authenticated was changed."""
    if (
        len(sealed.nonce) != NONCE_BYTES
        or len(sealed.commitment) != COMMITMENT_BYTES
        or len(sealed.ciphertext) < TAG_BYTES
    ):
        raise IntegrityError("the envelope's nonce, key commitment or ciphertext is malformed")
    enc_key, commit_key = _keys(session_secret, binding)
    expected = _commitment(commit_key, binding, sealed.nonce)
    if not hmac.compare_digest(expected, sealed.commitment):
        raise IntegrityError(
            "the envelope failed its key commitment: it was modified, the context differs, "
            "or its header is malformed (it does not give every authorised reader the same key)"
        )
    try:
        return AESGCM(enc_key).decrypt(
            sealed.nonce, sealed.ciphertext, _aead_ad(binding, sealed.commitment)
        )
    except InvalidTag:
        raise IntegrityError(
            "the envelope failed authentication: it was modified, or the context differs"
        ) from None
