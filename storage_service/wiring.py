"""Builds a StorageCore from configuration: picks the object store and ledger
implementations (embedded by default; MinIO and Fabric by configuration)."""

from __future__ import annotations

import logging
import os
import secrets
from typing import Any

from ehr_common.config import Config
from ehr_common.errors import ConfigError
from storage_service.anchoring import AnchorPolicy
from storage_service.index import RecordIndex
from storage_service.ledger.base import Caller, Ledger
from storage_service.ledger.client import LedgerClient
from storage_service.objectstore.base import ObjectStore
from storage_service.record_ids import MIN_SECRET_BYTES, RecordIdKeys
from storage_service.service import Encryptor, StorageCore

log = logging.getLogger(__name__)

SERVICE_SUBJECT = "storage-service"
SERVICE_ROLES = frozenset({"anchorer", "auditor"})


def build_object_store(cfg: Config) -> ObjectStore:
    if cfg.storage.object_store == "filesystem":
        from storage_service.objectstore.fs import FilesystemStore

        return FilesystemStore(cfg.storage_dir / "objects", workers=cfg.storage.fetch_concurrency)
    from storage_service.objectstore.minio_store import MinioStore

    path = cfg.minio_connection_path
    if not path.exists():
        raise ConfigError(
            f"object_store = minio but {path} does not exist: run `ehr-abe infra up minio` "
            "or set storage.minio_connection"
        )
    store = MinioStore.from_connection_file(path, workers=cfg.storage.fetch_concurrency)
    try:
        mode, days = store.default_retention()
    except Exception:
        store.close()
        raise
    if mode != "COMPLIANCE":
        log.warning(
            "MinIO bucket %s retention is %s, not COMPLIANCE: whoever holds MinIO's root "
            "credentials can lift it and delete records (development only)",
            store.bucket,
            mode,
        )
    log.info("MinIO bucket %s: default retention %s, %d days", store.bucket, mode, days)
    return store


def build_ledger(cfg: Config) -> Ledger:
    if cfg.storage.ledger == "embedded":
        from storage_service.ledger.embedded import EmbeddedLedger

        return EmbeddedLedger(cfg.storage_dir / "ledger.sqlite")
    from storage_service.ledger.fabric import FabricLedger

    path = cfg.fabric_connection_path
    if not path.exists():
        raise ConfigError(
            f"ledger = fabric but {path} does not exist: run `ehr-abe infra up fabric` "
            "or set storage.fabric_connection"
        )
    return FabricLedger.from_connection_file(path)


def load_service_secret(cfg: Config) -> bytes:
    """The service secret: from `storage.secret_env`, else `storage.secret_file`
    (created 0600 with a fresh random secret the first time). Refuses a file
    inside the data directory."""
    env = os.environ.get(cfg.storage.secret_env, "") if cfg.storage.secret_env else ""
    if env:
        try:
            secret = bytes.fromhex(env.strip())
        except ValueError:
            raise ConfigError(f"${cfg.storage.secret_env} must be hex") from None
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"${cfg.storage.secret_env} must hold at least {MIN_SECRET_BYTES} bytes"
            )
        return secret
    path = cfg.storage_secret_path
    data_dir = cfg.storage_dir.resolve()
    if path.resolve().is_relative_to(data_dir):
        raise ConfigError(
            f"storage.secret_file {path} is inside the data directory {data_dir}: "
            "keep the service secret apart from the data it protects"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"cannot create the storage secret {path}: {exc.strerror}") from None
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
            f.flush()
            os.fsync(f.fileno())
        log.warning("created a new storage service secret in %s (keep it; back it up)", path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            secret = f.read(4096)
    except OSError as exc:
        raise ConfigError(f"cannot read the storage secret {path}: {exc.strerror}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"the storage secret {path} is shorter than {MIN_SECRET_BYTES} bytes")
    return secret


def build_storage_core(cfg: Config, authority: Any | None) -> StorageCore:
    """`authority` is the in-process key authority (for encrypting plain payloads under
    FAME); with server.abe_endpoint set, the public parameters come from that AbeService,
    checked against server.abe_authority_id and cached, and payloads are still
    encrypted here: plaintext never leaves this process. Multi-authority policies are
    encrypted here too, with the authority keys registered on the ledger
    (abe_service/ma/router.py)."""
    from abe_service.client import LocalEncryptor, fetch_public_params
    from abe_service.ma.router import LedgerAuthorities, MaLedgerEncryptor, SchemeRouter
    from abe_service.ma.scheme import MultiAuthority
    from abe_service.pairing.base import get_backend

    fame: Encryptor
    if cfg.server.abe_endpoint:
        params = fetch_public_params(
            cfg.server.abe_endpoint,
            cfg.server.abe_authority_id,
            cfg.storage_dir / "abe_public_params",
        )
        fame = LocalEncryptor(params)
    elif authority is not None:
        fame = LocalEncryptor(authority.public_params)
    else:
        raise ConfigError("StorageService needs AbeService: run both, or set server.abe_endpoint")
    s = cfg.storage
    service_caller = Caller(SERVICE_SUBJECT, s.msp_id, SERVICE_ROLES)
    ledger = LedgerClient(build_ledger(cfg), service_caller)
    ma = MaLedgerEncryptor(LedgerAuthorities(ledger, MultiAuthority.shared(get_backend())))
    return StorageCore(
        store=build_object_store(cfg),
        index=RecordIndex(cfg.storage_dir / "index.sqlite"),
        ledger=ledger,
        encryptor=SchemeRouter(fame, ma, validity=s.ma_validity, fame_validity=s.fame_validity),
        service_caller=service_caller,
        id_keys=RecordIdKeys.from_secret(load_service_secret(cfg)),
        anchor_policy=AnchorPolicy(
            max_records=s.batch_max_records, max_age_s=s.batch_max_age_s, retry_s=s.ledger_retry_s
        ),
    )
