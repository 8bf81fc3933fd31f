"""The storage service's own keys, derived at start-up from its configured secret.

Nothing here is ever written to disk: a key that protects the local index must
not live beside it (someone who can write the index could otherwise recompute
it). From one secret (a key file or an environment variable, see
`storage_service.wiring.storage_secret`), HKDF-SHA256 derives:

- the index MAC key: HMAC-SHA256 over every index row (the record's canonical
  leaf bytes and the storage instance), so a row edited, forged or moved to
  another instance is never served and never anchored;
- the receipt signing key: Ed25519, signing the receipt PutRecord returns for
  a record not yet anchored (record id, leaf hash, time, anchoring deadline),
  like Certificate Transparency's signed certificate timestamps;
- the record-id and idempotency-fingerprint keys (`storage_service.record_ids`).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from functools import cached_property

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ehr_common.errors import ConfigError
from storage_service.record_ids import RecordIdKeys

MIN_SECRET_BYTES = 16
_SALT = b"ehr-abe/storage-keys/v1"
_ROW_DOMAIN = b"ehr-abe/index-row/v1\x00"


def _derive(secret: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=label).derive(secret)


@dataclass(frozen=True)
class ServiceKeys:
    mac_key: bytes = field(repr=False)
    signing_key: Ed25519PrivateKey = field(repr=False)
    ids: RecordIdKeys = field(repr=False)

    @staticmethod
    def derive(secret: bytes) -> ServiceKeys:
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"the storage secret must be at least {MIN_SECRET_BYTES} bytes")
        return ServiceKeys(
            mac_key=_derive(secret, b"index-mac"),
            signing_key=Ed25519PrivateKey.from_private_bytes(_derive(secret, b"receipt-signing")),
            ids=RecordIdKeys.from_secret(_derive(secret, b"record-ids")),
        )

    @cached_property  # every receipt names it: derived once
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 key that verifies this service's receipts."""
        return self.signing_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @cached_property
    def key_id(self) -> str:
        return key_id_of(self.public_key)

    def row_mac(self, instance: str, leaf_bytes: bytes) -> bytes:
        return row_mac(self.mac_key, instance, leaf_bytes)

    def setting_mac(self, name: str, value: str) -> bytes:
        msg = b"ehr-abe/setting/v1\x00" + name.encode() + b"\x00" + value.encode()
        return hmac.new(self.mac_key, msg, hashlib.sha256).digest()


def key_id_of(public_key: bytes) -> str:
    return hashlib.sha256(b"ehr-abe/receipt-key/v1\x00" + public_key).hexdigest()[:16]


def row_mac(mac_key: bytes, instance: str, leaf_bytes: bytes) -> bytes:
    """HMAC-SHA256 binding a record's canonical leaf bytes to the storage instance."""
    msg = _ROW_DOMAIN + instance.encode() + b"\x00" + leaf_bytes
    return hmac.digest(mac_key, msg, "sha256")
