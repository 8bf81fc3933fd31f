"""Client library for AbeService users.

* `AbeKeyring`: holds a user key and decrypts envelopes locally; a user key
  never has to be sent anywhere.
* `LocalEncryptor` / `RemoteEncryptor`: what StorageService uses to encrypt
  plain payloads, in-process or through a remote AbeService.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from abe_service.envelope import AbeDecryptor, AbeEncryptor, envelope_policy
from ehr_common.api.v1 import abe_pb2, abe_pb2_grpc
from ehr_common.errors import ConfigError
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


class RemoteEncryptor:
    """Encrypts through AbeService.Encrypt (used when the services run apart)."""

    def __init__(self, channel: grpc.Channel, timeout_s: float = 10.0):
        self._stub = abe_pb2_grpc.AbeServiceStub(channel)
        self._timeout = timeout_s

    @staticmethod
    def connect(endpoint: str) -> RemoteEncryptor:
        return RemoteEncryptor(grpc.insecure_channel(endpoint))

    def encrypt(self, policy: str, plaintext: bytes, context: bytes) -> bytes:
        try:
            resp = self._stub.Encrypt(
                abe_pb2.EncryptRequest(policy=policy, plaintext=plaintext, context=context),
                timeout=self._timeout,
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return bytes(resp.envelope)

    def envelope_policy(self, envelope: bytes) -> str:
        return envelope_policy(envelope)
