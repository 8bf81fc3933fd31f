"""Builds a StorageCore from configuration: picks the object store and ledger
implementations (embedded by default; MinIO and Fabric by configuration)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ehr_common.config import Config
from ehr_common.errors import ConfigError
from storage_service.anchoring import AnchorPolicy
from storage_service.index import RecordIndex
from storage_service.keys import ServiceKeys
from storage_service.ledger.base import Caller, Ledger
from storage_service.ledger.client import LedgerClient
from storage_service.objectstore.base import ObjectStore
from storage_service.service import Encryptor, StorageCore

log = logging.getLogger(__name__)

SERVICE_SUBJECT = "storage-service"
SERVICE_ROLES = frozenset({"anchorer", "auditor"})


def storage_secret(cfg: Config, passphrase: bytes | None = None) -> bytes:
    """The secret the storage service's keys derive from (`storage_service.keys`), read
    at start-up and never written beside the index: `storage.secret_file`, else the
    variable named by `storage.secret_env`, else the master key's own secret (the
    passphrase given, `authority.key_file`, or the passphrase variable)."""
    s, a = cfg.storage, cfg.authority
    env = os.environ
    sources: list[tuple[str, bytes | None]] = []
    if s.secret_file:
        path, data_dir = Path(s.secret_file), cfg.storage_dir
        if path.resolve().is_relative_to(data_dir.resolve()):
            raise ConfigError(
                f"storage.secret_file {path} is inside the data directory {data_dir}: "
                "keep the secret apart from the data it protects"
            )
        sources.append((s.secret_file, _read_secret_file(path)))
    sources.append((s.secret_env, env.get(s.secret_env, "").encode() or None))
    sources.append(("the master passphrase", passphrase))
    if a.key_file:
        sources.append((a.key_file, _read_secret_file(Path(a.key_file))))
    sources.append((a.passphrase_env, env.get(a.passphrase_env, "").encode() or None))
    for _, secret in sources:
        if secret:
            return b"ehr-abe/storage-secret/v1\x00" + secret
    raise ConfigError(
        "StorageService needs a secret for its index MACs and receipt signatures: set "
        f"storage.secret_file, ${s.secret_env}, or the master key's passphrase or key file"
    )


def _read_secret_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the secret file {path}: {exc.strerror}") from None


def build_index(cfg: Config, keys: ServiceKeys) -> RecordIndex:
    return RecordIndex(cfg.storage_dir / "index.sqlite", mac_key=keys.mac_key)


def anchor_policy(cfg: Config) -> AnchorPolicy:
    s = cfg.storage
    return AnchorPolicy(
        max_records=s.batch_max_records,
        max_age_s=s.batch_max_age_s,
        retry_s=s.ledger_retry_s,
        grace_s=s.anchor_grace_s,
    )


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


def build_ledger(cfg: Config, *, verify_chain: bool = True) -> Ledger:
    """The configured ledger; the embedded one checks its hash chain on opening
    (IntegrityError if it is broken) unless verify_chain is False."""
    if cfg.storage.ledger == "embedded":
        from storage_service.ledger.embedded import EmbeddedLedger

        return EmbeddedLedger(cfg.storage_dir / "ledger.sqlite", verify_chain=verify_chain)
    from storage_service.ledger.fabric import FabricLedger

    path = cfg.fabric_connection_path
    if not path.exists():
        raise ConfigError(
            f"ledger = fabric but {path} does not exist: run `ehr-abe infra up fabric` "
            "or set storage.fabric_connection"
        )
    return FabricLedger.from_connection_file(path)


def build_storage_core(
    cfg: Config, authority: Any | None, *, passphrase: bytes | None = None
) -> StorageCore:
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
    keys = ServiceKeys.derive(storage_secret(cfg, passphrase))
    service_caller = Caller(SERVICE_SUBJECT, s.msp_id, SERVICE_ROLES)
    ledger = LedgerClient(build_ledger(cfg), service_caller)
    ma = MaLedgerEncryptor(
        LedgerAuthorities(ledger, MultiAuthority.shared(get_backend()).prepare_in_background())
    )
    return StorageCore(
        store=build_object_store(cfg),
        index=build_index(cfg, keys),
        ledger=ledger,
        encryptor=SchemeRouter(fame, ma, validity=s.ma_validity, fame_validity=s.fame_validity),
        service_caller=service_caller,
        keys=keys,
        anchor_policy=anchor_policy(cfg),
    )
