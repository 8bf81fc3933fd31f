"""Client library for AbeService users.

* `AbeKeyring`: holds a user key and decrypts envelopes locally; a user key
  never has to be sent anywhere.
* `LocalEncryptor`: what StorageService uses to encrypt plain payloads, with
  public parameters it holds; `fetch_public_params` gets them from a remote
  AbeService once, checks them against the pinned authority id and caches
  them, so plaintext never travels to AbeService.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from abe_service.envelope import AbeDecryptor, AbeEncryptor, envelope_policy
from abe_service.serialization import authority_id
from ehr_common.api.v1 import abe_pb2, abe_pb2_grpc
from ehr_common.errors import ConfigError, EhrAbeError, IntegrityError
from ehr_common.files import PUBLIC_MODE, write_file_atomic
from ehr_common.grpc_errors import error_from_rpc


class AbeKeyring:
    """A user key, loaded and validated once, for repeated local decryption."""

    def __init__(self, decryptor: AbeDecryptor):
        self._decryptor = decryptor

    @staticmethod
    def from_bytes(user_key: bytes, backend: str = "auto") -> AbeKeyring:
        return AbeKeyring(AbeDecryptor.from_user_key(user_key, backend))

    @staticmethod
    def from_file(path: Path, backend: str = "auto") -> AbeKeyring:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read key file {path}: {exc.strerror}") from None
        return AbeKeyring.from_bytes(data, backend)

    @property
    def subject_id(self) -> str:
        return self._decryptor.subject_id

    @property
    def attributes(self) -> tuple[str, ...]:
        return self._decryptor.key.attributes

    def decrypt(self, envelope: bytes, context: bytes = b"") -> bytes:
        return self._decryptor.decrypt(envelope, context)


class LocalEncryptor:
    def __init__(self, public_params: bytes, backend: str = "auto"):
        self._enc = AbeEncryptor.from_public_params(public_params, backend)

    def encrypt(self, policy: str, plaintext: bytes, context: bytes) -> bytes:
        return self._enc.encrypt(policy, plaintext, context)

    def envelope_policy(self, envelope: bytes) -> str:
        return envelope_policy(envelope)


MAX_PUBLIC_PARAMS = 4096  # about 1.4 KB today


def verify_public_params(data: bytes, expected_authority_id: str) -> bytes:
    """`data` if it parses as public parameters whose authority id is the pinned one."""
    if len(data) > MAX_PUBLIC_PARAMS:
        raise IntegrityError("the public parameters are implausibly large")
    if authority_id(data) != expected_authority_id:
        raise IntegrityError(
            f"the public parameters are not those of authority {expected_authority_id} "
            f"(they are {authority_id(data)}): refusing to encrypt under them"
        )
    AbeEncryptor.from_public_params(data)  # parses and validates every element
    return data


def fetch_public_params(
    endpoint: str, expected_authority_id: str, cache_dir: Path, timeout_s: float = 10.0
) -> bytes:
    """The public parameters of the pinned authority: from `cache_dir` if cached
    (so the StorageService starts while AbeService is down), else from AbeService's
    GetPublicParams (public, unauthenticated: the pin is what makes them
    trustworthy), verified, then cached."""
    if not expected_authority_id:
        raise ConfigError(
            "server.abe_endpoint needs server.abe_authority_id: the id `ehr-abe authority info` "
            "prints on the authority's host, so the StorageService can verify the parameters"
        )
    if not all(c in "0123456789abcdef" for c in expected_authority_id):
        raise ConfigError("server.abe_authority_id is a lower-case hex fingerprint")
    cached = cache_dir / f"{expected_authority_id}.public_params"
    try:
        return verify_public_params(cached.read_bytes(), expected_authority_id)
    except FileNotFoundError:
        pass
    except (OSError, EhrAbeError):
        pass  # unreadable or wrong: fetch again, and replace it below
    with grpc.insecure_channel(endpoint) as channel:
        try:
            resp = abe_pb2_grpc.AbeServiceStub(channel).GetPublicParams(
                abe_pb2.GetPublicParamsRequest(), timeout=timeout_s
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
    data = verify_public_params(bytes(resp.public_params), expected_authority_id)
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_file_atomic(cached, data, PUBLIC_MODE, overwrite=True)
    return data
