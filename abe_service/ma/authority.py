"""A multi-authority key authority: one organisation's key pair, sealed at rest,
issuing time-bound attribute keys for global identifiers.

Files in its directory (like abe_service/authority.py's):
    ma_public_key.bin     the MaAuthorityPublicKey (0644): what the ledger registry holds
    ma_secret_key.sealed  the MaAuthoritySecretKey, AES-256-GCM under scrypt(passphrase)
                          or a key file (0600)
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from abe_service.authority import (
    MAX_ATTRIBUTES_PER_KEY,
    MIN_PASSPHRASE,
    _write_file,
    attribute_set_hmac,
    record_key,
    seal_master_key,
    unseal_master_key,
)
from abe_service.ma.labels import authority_of_label, check_authority_id
from abe_service.ma.scheme import AuthoritySecretKey, MultiAuthority
from abe_service.ma.serialization import (
    MAX_LABEL_CHARS,
    MAX_PARTS,
    IssuedKey,
    fingerprint,
    public_key_from_bytes,
    public_key_to_bytes,
    secret_key_from_bytes,
    secret_key_to_bytes,
    user_key_to_bytes,
)
from abe_service.ma.validity import day_number, is_validity_attribute, validity_attributes
from abe_service.pairing.base import get_backend
from abe_service.policy import expand_attributes, parse_attribute
from ehr_common.errors import AccessDenied, AlreadyExists, ConfigError, DecodeError, InvalidArgument

PUBLIC_KEY_FILE = "ma_public_key.bin"
SEALED_SECRET_KEY_FILE = "ma_secret_key.sealed"


@dataclass(frozen=True)
class MaIssued:
    user_key: bytes = field(repr=False)  # serialized MaUserKey: secret
    key_id: str
    #: for the ledger's key-issue record: HMAC-SHA256 of the key's labels under a key
    #: derived from the authority's secret key (abe_service.authority.attribute_set_hmac),
    #: so the ledger lets no one test a guess of a key's attributes
    attribute_set_hmac: bytes


class MaAuthority:
    def __init__(self, ma: MultiAuthority, public_key: bytes, sk: AuthoritySecretKey | None):
        self.ma = ma
        self.public_key = public_key
        self.pk = public_key_from_bytes(ma.group, public_key)
        self.authority = self.pk.authority
        self.fingerprint = fingerprint(public_key)
        self._sk = sk
        self._record_key = (
            record_key(secret_key_to_bytes(ma.group, sk, public_key)) if sk is not None else None
        )

    @staticmethod
    def setup(
        directory: Path,
        authority: str,
        *,
        passphrase: bytes | None = None,
        key_file: Path | None = None,
        force: bool = False,
        backend: str = "auto",
    ) -> MaAuthority:
        check_authority_id(authority)
        if passphrase is not None and key_file is None and len(passphrase) < MIN_PASSPHRASE:
            raise InvalidArgument(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
        directory.mkdir(parents=True, exist_ok=True)
        pk_path, sk_path = directory / PUBLIC_KEY_FILE, directory / SEALED_SECRET_KEY_FILE
        if (pk_path.exists() or sk_path.exists()) and not force:
            raise AlreadyExists(
                f"authority {authority} already exists in {directory}; refusing to overwrite "
                "its key (use --force, then rotate the key on the ledger)"
            )
        ma = MultiAuthority.shared(get_backend(backend))
        pk, sk = ma.authority_setup(authority)
        pk_bytes = public_key_to_bytes(ma.group, pk)
        sealed = seal_master_key(
            secret_key_to_bytes(ma.group, sk, pk_bytes), authority, passphrase, key_file
        )
        _write_file(sk_path, sealed, 0o600, overwrite=force)
        _write_file(pk_path, pk_bytes, 0o644, overwrite=force)
        return MaAuthority(ma, pk_bytes, sk)

    @staticmethod
    def open(
        directory: Path,
        *,
        passphrase: bytes | None = None,
        key_file: Path | None = None,
        public_only: bool = False,
        backend: str = "auto",
    ) -> MaAuthority:
        pk_path = directory / PUBLIC_KEY_FILE
        if not pk_path.exists():
            raise ConfigError(
                f"no multi-authority key in {directory}: run `ehr-abe authority setup --org ...`"
            )
        ma = MultiAuthority.shared(get_backend(backend))
        pk_bytes = pk_path.read_bytes()
        if public_only:
            return MaAuthority(ma, pk_bytes, None)
        try:
            sealed = (directory / SEALED_SECRET_KEY_FILE).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the sealed key in {directory}: {exc.strerror}"
            ) from None
        sk, fp = secret_key_from_bytes(ma.group, unseal_master_key(sealed, passphrase, key_file))
        if fp != fingerprint(pk_bytes):
            raise DecodeError("the secret key does not belong to this public key")
        return MaAuthority(ma, pk_bytes, sk)

    @property
    def can_issue(self) -> bool:
        return self._sk is not None

    def _issue(self, gid: str, attributes: list[str]) -> MaIssued:
        if self._sk is None:
            raise AccessDenied("this authority was opened without its secret key")
        labels = sorted(expand_attributes(attributes))
        # The parser's limits (user_key_from_bytes), before any group operation: a key
        # it would refuse must not be issued (an integer attribute is up to 65 labels).
        if len(labels) > MAX_PARTS:
            raise InvalidArgument(
                f"these attributes expand to {len(labels)} key labels, more than {MAX_PARTS} "
                "(an integer attribute costs up to 65)"
            )
        if any(len(label) > MAX_LABEL_CHARS for label in labels):
            raise InvalidArgument(f"a key label is longer than {MAX_LABEL_CHARS} characters")
        for label in labels:
            if authority_of_label(label) != self.authority:
                raise InvalidArgument(
                    f"authority {self.authority} issues only its own attributes "
                    f"(name:value@{self.authority}), not {label.split('#')[0]!r}"
                )
        key = self.ma.keygen(self._sk, gid, labels)
        key_id = "k-" + secrets.token_hex(12)
        assert self._record_key is not None  # with the secret key
        digest = bytes.fromhex(attribute_set_hmac(self._record_key, labels))
        issued = IssuedKey(self.authority, gid, key_id, tuple(attributes), self.fingerprint, key)
        return MaIssued(user_key_to_bytes(self.ma.group, issued), key_id, digest)

    def issue_key(
        self, gid: str, attributes: list[str], *, valid_from: int, valid_until: int
    ) -> MaIssued:
        """Keys for `attributes` (each `...@<this authority>`) and the validity period
        (day numbers), bound to `gid`."""
        if not attributes:
            raise InvalidArgument("a key needs at least one attribute")
        if len(attributes) > MAX_ATTRIBUTES_PER_KEY:
            raise InvalidArgument(f"at most {MAX_ATTRIBUTES_PER_KEY} attributes per key")
        for a in attributes:
            if is_validity_attribute(parse_attribute(a).name):
                raise InvalidArgument("the validity period is set by the authority, not listed")
        _refuse_postdated(valid_from)
        return self._issue(
            gid, [*attributes, *validity_attributes(self.authority, valid_from, valid_until)]
        )

    def renew(self, gid: str, *, valid_from: int, valid_until: int) -> MaIssued:
        """Only the time attributes, for a GID that holds this authority's attributes:
        the client adds this key to its keyring."""
        _refuse_postdated(valid_from)
        return self._issue(gid, validity_attributes(self.authority, valid_from, valid_until))


def _refuse_postdated(valid_from: int) -> None:
    """Nothing in ABE can hold a key back until a date: a postdated key would open
    everything it satisfies the day it is handed over. So a validity period starts
    no later than tomorrow (UTC; a day of slack for the issuer's time zone)."""
    tomorrow = day_number(datetime.now(UTC)) + 1
    if valid_from > tomorrow:
        raise InvalidArgument(
            f"valid_from (day {valid_from}) is after tomorrow (day {tomorrow}): a key "
            "cannot be held back until a date; issue it when its period starts"
        )
