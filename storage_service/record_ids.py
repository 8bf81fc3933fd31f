"""Keys for record ids and idempotency fingerprints, derived from the service secret (pure).

One secret, configured outside the data directory (`storage.secret_file` or
the environment variable `storage.secret_env`), so that someone who can read
or write the storage host's data (objects, index, ledger file) learns nothing
from, and cannot forge, what is keyed by it:
- record ids for idempotency keys: HMAC(record-id key, caller || key), so an
  id reveals neither its writer nor the key;
- idempotency fingerprints: HMAC(fingerprint key, request), so the index does
  not hold a guessable hash of a plaintext.
Each use gets its own key, derived with HKDF-SHA256 under its own label.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ehr_common.errors import ConfigError, InvalidArgument

MIN_SECRET_BYTES = 32
MAX_IDEMPOTENCY_KEY = 256
_SALT = b"ehr-abe/storage-service/v1"


def derive_key(secret: bytes, label: str) -> bytes:
    """A 32-byte key for one purpose, from the service secret."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=label.encode()).derive(
        secret
    )


def _field(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


@dataclass(frozen=True)
class RecordIdKeys:
    """Keys derived from the service secret. Never printed (no secret in any repr)."""

    record_id_key: bytes = field(repr=False)
    fingerprint_key: bytes = field(repr=False)

    @classmethod
    def from_secret(cls, secret: bytes) -> RecordIdKeys:
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"the storage service secret must be at least {MIN_SECRET_BYTES} bytes"
            )
        return cls(
            record_id_key=derive_key(secret, "record-id"),
            fingerprint_key=derive_key(secret, "idempotency-fingerprint"),
        )

    def record_id(self, author: str, idempotency_key: str) -> str:
        """The record id of (author, idempotency key): stable across retries, and
        unlinkable to either without the secret."""
        if not idempotency_key:
            raise InvalidArgument("an idempotency key is needed for a derived record id")
        if len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
            raise InvalidArgument(
                f"idempotency key is longer than {MAX_IDEMPOTENCY_KEY} characters"
            )
        mac = hmac.new(
            self.record_id_key,
            _field(author.encode()) + _field(idempotency_key.encode()),
            hashlib.sha256,
        ).digest()[:16]
        return "r-" + base64.b32encode(mac).decode().rstrip("=").lower()

    def fingerprint(
        self,
        *,
        patient_id: str,
        record_type: str,
        envelope: bytes | None,
        payload: bytes | None,
        policy: str,
    ) -> bytes:
        """What an idempotency key is bound to: the request's patient, type and
        content (the envelope, or the plaintext and its policy)."""
        if envelope is not None:
            content = b"envelope\x00" + _field(hashlib.sha256(envelope).digest())
        else:
            assert payload is not None
            content = (
                b"plain\x00"
                + _field(hashlib.sha256(payload).digest())
                + _field(policy.strip().encode())
            )
        message = _field(patient_id.encode()) + _field(record_type.encode()) + content
        return hmac.new(self.fingerprint_key, message, hashlib.sha256).digest()
