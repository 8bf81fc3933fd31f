"""The key authority: setup, the master key sealed at rest, user-key issuance.

Files in the authority directory:
    public_params.bin    public parameters (0644)
    master_key.sealed    the master key, AES-256-GCM under a key derived with
                         scrypt from a passphrase, or read from a key file (0600)
Files are created with O_EXCL and the final mode from the start, written to a
temporary name, fsynced and renamed, so a crash never leaves a partial key.

Passphrase sealing uses scrypt with N = 2^17, r = 8, p = 1 (128 MiB, about
0.3 s here; OWASP's minimum for scrypt). The parameters are stored in the
sealed file, so master keys sealed earlier with N = 2^15 still open; reading
refuses parameters outside a bounded range (at most 1 GiB of scrypt memory),
so a planted file cannot make unsealing exhaust the machine.

Key-issue records (on the ledger) carry an HMAC-SHA256 of the key's normalised
labels under a record key derived (HKDF) from the master key: it is never
stored anywhere, and without it nothing on the ledger lets a reader test a
guess of a key's attributes (an unsalted hash could be brute-forced from a
small dictionary of roles and departments).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from abe_service.envelope import AbeEncryptor
from abe_service.fame import Fame, MasterKey
from abe_service.pairing.base import get_backend
from abe_service.policy import expand_attributes
from abe_service.serialization import (
    FORMAT_VERSION,
    MAX_KEY_ATTRIBUTES,
    MAX_KEY_LABELS,
    MAX_LABEL_CHARS,
    UserKey,
    authority_id,
    master_key_from_bytes,
    master_key_to_bytes,
    public_params_from_bytes,
    public_params_to_bytes,
    user_key_to_bytes,
)
from ehr_common.api.v1 import formats_pb2 as fpb
from ehr_common.errors import AccessDenied, AlreadyExists, ConfigError, DecodeError, InvalidArgument
from ehr_common.files import write_file_atomic

PUBLIC_PARAMS_FILE = "public_params.bin"
SEALED_MASTER_KEY_FILE = "master_key.sealed"
SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 17, 8, 1
#: Oldest accepted cost (keys sealed before N went to 2^17) and a memory ceiling
#: for what a sealed file may ask for (128 * r * N bytes).
SCRYPT_MIN_LOG2_N = 15
SCRYPT_MAX_MEMORY = 1 << 30
MIN_PASSPHRASE = 12
#: The key parser's limits (serialization), enforced here so that the authority
#: never issues a key its own clients refuse to load.
MAX_ATTRIBUTES_PER_KEY = MAX_KEY_ATTRIBUTES
RECORD_KEY_INFO = b"ehr-abe/authority/key-issue-record/v1\x00"


class WrongPassphrase(AccessDenied):
    """The passphrase or key file does not open this master key."""


def _write_file(path: Path, data: bytes, mode: int, *, overwrite: bool) -> None:
    write_file_atomic(path, data, mode, overwrite=overwrite)


def _wrapping_key(
    passphrase: bytes | None, key_file: Path | None, salt: bytes, log2_n: int, r: int, p: int
) -> tuple[bytes, str]:
    if key_file is not None:
        try:
            material = key_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read key file {key_file}: {exc.strerror}") from None
        if len(material) < 32:
            raise ConfigError(f"key file {key_file} holds fewer than 32 bytes")
        return hashlib.sha256(b"ehr-abe/keyfile/v1\x00" + salt + material).digest(), "keyfile"
    if not passphrase:
        raise ConfigError("a passphrase or a key file is needed for the master key")
    return Scrypt(salt=salt, length=32, n=1 << log2_n, r=r, p=p).derive(passphrase), "scrypt"


def _ad(auth_id: str, kdf: str, log2_n: int, r: int, p: int) -> bytes:
    return f"ehr-abe/sealed-master-key/v{FORMAT_VERSION}\x00{auth_id}\x00{kdf}\x00{log2_n}:{r}:{p}".encode()


def seal_master_key(
    msk_bytes: bytes,
    auth_id: str,
    passphrase: bytes | None,
    key_file: Path | None,
    *,
    log2_n: int = SCRYPT_LOG2_N,
) -> bytes:
    """`log2_n` is for tests that make keys sealed the old way (N = 2^15)."""
    salt = os.urandom(16)
    key, kdf = _wrapping_key(passphrase, key_file, salt, log2_n, SCRYPT_R, SCRYPT_P)
    nonce = os.urandom(12)
    ct = AESGCM(key).encrypt(nonce, msk_bytes, _ad(auth_id, kdf, log2_n, SCRYPT_R, SCRYPT_P))
    return fpb.SealedMasterKey(
        kind=fpb.OBJECT_KIND_SEALED_MASTER_KEY,
        version=FORMAT_VERSION,
        authority_id=auth_id,
        kdf=kdf,
        salt=salt,
        scrypt_log2_n=log2_n,
        scrypt_r=SCRYPT_R,
        scrypt_p=SCRYPT_P,
        nonce=nonce,
        ciphertext=ct,
    ).SerializeToString(deterministic=True)


def unseal_master_key(sealed: bytes, passphrase: bytes | None, key_file: Path | None) -> bytes:
    try:
        msg = fpb.SealedMasterKey.FromString(sealed)
    except Exception:
        raise DecodeError("the sealed master key file is not valid") from None
    if msg.kind != fpb.OBJECT_KIND_SEALED_MASTER_KEY or msg.version != FORMAT_VERSION:
        raise DecodeError("the sealed master key file is of another kind or version")
    msg.DiscardUnknownFields()
    if msg.SerializeToString(deterministic=True) != sealed:
        raise DecodeError("the sealed master key file is not in canonical encoding")
    if not (
        SCRYPT_MIN_LOG2_N <= msg.scrypt_log2_n <= 22
        and 1 <= msg.scrypt_r <= 32
        and 1 <= msg.scrypt_p <= 16
        and 128 * msg.scrypt_r * (1 << msg.scrypt_log2_n) <= SCRYPT_MAX_MEMORY
    ):
        raise DecodeError("the sealed master key has out-of-range scrypt parameters")
    # Structure before cryptography: a truncated file must read as malformed, not as
    # a wrong passphrase (and AESGCM raises ValueError on a bad nonce length).
    if msg.kdf not in ("scrypt", "keyfile") or len(msg.salt) != 16 or len(msg.nonce) != 12:
        raise DecodeError("the sealed master key has an unknown KDF or a bad salt or nonce")
    if len(msg.ciphertext) <= 16:
        raise DecodeError("the sealed master key holds no ciphertext")
    if (msg.kdf == "keyfile") != (key_file is not None):
        raise ConfigError(
            "this master key is sealed with a key file: give --key-file"
            if msg.kdf == "keyfile"
            else "this master key is sealed with a passphrase, not a key file"
        )
    key, _ = _wrapping_key(
        passphrase, key_file, msg.salt, msg.scrypt_log2_n, msg.scrypt_r, msg.scrypt_p
    )
    try:
        return AESGCM(key).decrypt(
            msg.nonce,
            msg.ciphertext,
            _ad(msg.authority_id, msg.kdf, msg.scrypt_log2_n, msg.scrypt_r, msg.scrypt_p),
        )
    except InvalidTag:
        raise WrongPassphrase("wrong passphrase or key file for this master key") from None


@dataclass(frozen=True)
class IssuedKey:
    user_key: bytes = field(repr=False)  # secret: a user key
    key_id: str = ""
    #: HMAC-SHA256 (hex) of the key's normalised labels under the authority's record
    #: key: what the ledger records. Equal for equal attribute sets of one authority.
    attribute_set_hmac: str = ""


def record_key(msk_bytes: bytes) -> bytes:
    """The authority's key for key-issue records, derived from the serialized master key."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=RECORD_KEY_INFO).derive(
        msk_bytes
    )


def attribute_set_hmac(key: bytes, labels: list[str]) -> str:
    """HMAC of the normalised (expanded, sorted, de-duplicated) labels of a key."""
    canonical = b"".join(len(x).to_bytes(4, "big") + x.encode() for x in sorted(set(labels)))
    return hmac.new(key, b"ehr-abe/attribute-set/v2\x00" + canonical, hashlib.sha256).hexdigest()


class KeyAuthority:
    def __init__(self, fame: Fame, public_params: bytes, msk: MasterKey | None):
        self.fame = fame
        self.public_params = public_params
        self.authority_id = authority_id(public_params)
        self.pk = public_params_from_bytes(fame.group, public_params)
        self._msk = msk
        self._record_key = (
            record_key(master_key_to_bytes(fame.group, msk, self.authority_id))
            if msk is not None
            else None
        )
        self.encryptor = AbeEncryptor(fame, self.pk, public_params, self.authority_id)

    @staticmethod
    def setup(
        directory: Path,
        *,
        passphrase: bytes | None = None,
        key_file: Path | None = None,
        force: bool = False,
        backend: str = "auto",
    ) -> KeyAuthority:
        if passphrase is not None and key_file is None and len(passphrase) < MIN_PASSPHRASE:
            raise InvalidArgument(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        pp_path = directory / PUBLIC_PARAMS_FILE
        mk_path = directory / SEALED_MASTER_KEY_FILE
        if (pp_path.exists() or mk_path.exists()) and not force:
            raise AlreadyExists(
                f"an authority already exists in {directory}; refusing to overwrite its master key "
                "(use --force to replace it: every key it issued stops working)"
            )
        fame = Fame(get_backend(backend))
        pk, msk = fame.setup()
        pp = public_params_to_bytes(fame.group, pk)
        auth = authority_id(pp)
        sealed = seal_master_key(
            master_key_to_bytes(fame.group, msk, auth), auth, passphrase, key_file
        )
        _write_file(mk_path, sealed, 0o600, overwrite=force)
        _write_file(pp_path, pp, 0o644, overwrite=force)
        return KeyAuthority(fame, pp, msk)

    @staticmethod
    def open(
        directory: Path,
        *,
        passphrase: bytes | None = None,
        key_file: Path | None = None,
        public_only: bool = False,
        backend: str = "auto",
    ) -> KeyAuthority:
        pp_path = directory / PUBLIC_PARAMS_FILE
        if not pp_path.exists():
            raise ConfigError(
                f"no key authority in {directory}: run `ehr-abe authority setup` first"
            )
        fame = Fame(get_backend(backend))
        pp = pp_path.read_bytes()
        if public_only:
            return KeyAuthority(fame, pp, None)
        try:
            sealed = (directory / SEALED_MASTER_KEY_FILE).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the sealed master key in {directory}: {exc.strerror} "
                "(open it public-only, or restore the file)"
            ) from None
        msk_bytes = unseal_master_key(sealed, passphrase, key_file)
        msk, auth = master_key_from_bytes(fame.group, msk_bytes)
        if auth != authority_id(pp):
            raise DecodeError("the master key does not belong to these public parameters")
        return KeyAuthority(fame, pp, msk)

    def __repr__(self) -> str:  # never the master key
        return f"KeyAuthority(authority_id={self.authority_id!r}, can_issue={self.can_issue})"

    @property
    def can_issue(self) -> bool:
        return self._msk is not None

    def issue_key(self, subject_id: str, attributes: list[str]) -> IssuedKey:
        if self._msk is None:
            raise AccessDenied("this authority was opened without its master key")
        # Printable and unpadded, like a GID (ma/scheme.py): a NUL or RTL override in
        # the name on a key would mislead whoever reads logs and key records.
        if (
            not isinstance(subject_id, str)
            or not 1 <= len(subject_id) <= 256
            or not subject_id.isprintable()
            or subject_id != subject_id.strip()
        ):
            raise InvalidArgument("a key needs a subject id of 1-256 printable characters")
        if not attributes:
            raise InvalidArgument("a key needs at least one attribute")
        if len(attributes) > MAX_ATTRIBUTES_PER_KEY:
            raise InvalidArgument(f"at most {MAX_ATTRIBUTES_PER_KEY} attributes per key")
        labels = sorted(expand_attributes(attributes))
        # The parser's limits (integer attributes expand to up to 65 labels each).
        if len(labels) > MAX_KEY_LABELS:
            raise InvalidArgument(
                f"these attributes expand to {len(labels)} key labels, more than "
                f"{MAX_KEY_LABELS} (an integer attribute costs up to 65)"
            )
        if any(len(label) > MAX_LABEL_CHARS for label in labels):
            raise InvalidArgument(f"a key label is longer than {MAX_LABEL_CHARS} characters")
        assert self._record_key is not None  # with the master key
        secret = self.fame.keygen(self.pk, self._msk, labels)
        attr_hmac = attribute_set_hmac(self._record_key, labels)
        key_id = "k-" + secrets.token_hex(12)
        user_key = UserKey(
            subject_id=subject_id,
            key_id=key_id,
            attributes=tuple(attributes),
            authority_id=self.authority_id,
            public_params=self.public_params,
            secret=secret,
        )
        return IssuedKey(user_key_to_bytes(self.fame.group, user_key), key_id, attr_hmac)
