"""MinioStore specifics: the server itself keeps stored versions (object lock),
errors map to the typed errors."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, minio_root_client
from minio import Minio
from minio.commonconfig import GOVERNANCE
from minio.error import S3Error
from minio.objectlockconfig import DAYS, ObjectLockConfig
from minio.retention import Retention

from ehr_common.errors import ConfigError, NotFound, Unavailable
from storage_service.objectstore.minio_store import MinioStore


def test_unreachable_server_is_unavailable() -> None:
    store = MinioStore(f"127.0.0.1:{free_port()}", "k", "s", "ehr-records", timeout_s=2)
    try:
        with pytest.raises(Unavailable, match=r"127\.0\.0\.1"):
            store.get("records/x")
        with pytest.raises(Unavailable):
            store.put("records/x", b"data")
        with pytest.raises(Unavailable):
            list(store.list_keys())
    finally:
        store.close()


def test_connection_file_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        MinioStore.from_connection_file(tmp_path / "missing.json")
    bad = tmp_path / "connection.json"
    bad.write_text(json.dumps({"endpoint": "127.0.0.1:1"}))
    with pytest.raises(ConfigError, match="malformed"):
        MinioStore.from_connection_file(bad)


@pytest.mark.minio
def test_locked_version_survives_a_client_that_skips_the_condition(
    minio_store: Any, minio_connection: Path, unique_prefix: str
) -> None:
    """Someone holding the credentials overwrites and deletes with the raw S3 API:
    MinIO keeps the original version and refuses to delete it."""
    store: MinioStore = minio_store
    key = unique_prefix + "record.env"
    store.put(key, b"original")
    original = store.client.stat_object(store.bucket, key)
    assert original.version_id  # versioning is on

    retention = store.client.get_object_retention(store.bucket, key, original.version_id)
    assert retention is not None and retention.mode in ("GOVERNANCE", "COMPLIANCE")

    # Overwrite without If-None-Match: only a newer version appears.
    store.client.put_object(store.bucket, key, io.BytesIO(b"forged"), 6)
    assert store.get(key) == b"forged"
    kept = store.client.get_object(store.bucket, key, version_id=original.version_id)
    try:
        assert kept.read() == b"original"
    finally:
        kept.close()
        kept.release_conn()

    # The service's credentials may not delete the version, nor even add a delete marker.
    for version in (original.version_id, None):
        with pytest.raises(S3Error) as refused:
            store.client.remove_object(store.bucket, key, version_id=version)
        assert refused.value.code == "AccessDenied"

    # Root can add a delete marker; the store then reports NotFound, the original
    # version is still there, and even root cannot delete it (COMPLIANCE).
    root = _root_client(minio_connection)
    root.remove_object(store.bucket, key)
    with pytest.raises(NotFound):
        store.get(key)
    assert not store.exists(key)
    assert key not in set(store.list_keys(unique_prefix))
    versions = {
        o.version_id
        for o in store.client.list_objects(
            store.bucket, prefix=key, include_version=True, recursive=True
        )
    }
    assert original.version_id in versions
    with pytest.raises(S3Error, match="WORM"):
        root.remove_object(store.bucket, key, version_id=original.version_id)


def _root_client(minio_connection: Path) -> Minio:
    return minio_root_client(minio_connection)  # type: ignore[no-any-return]


@pytest.mark.minio
def test_the_service_uses_its_own_user_not_root(minio_connection: Path) -> None:
    conn = json.loads(minio_connection.read_text())
    service = json.loads(Path(conn["credentials_file"]).read_text())
    root = json.loads((minio_connection.parent / "credentials.json").read_text())
    assert service["access_key"] != root["access_key"]
    assert conn["retention_mode"] == "COMPLIANCE"
    lock = _root_client(minio_connection).get_object_lock_config(conn["bucket"])
    assert lock.mode == "COMPLIANCE"
    # the service checks the bucket's retention with its own credentials at start-up
    from ehr_common.config import load_config
    from storage_service.wiring import build_object_store

    cfg = load_config(env={})
    cfg.storage.object_store = "minio"
    cfg.storage.minio_connection = str(minio_connection)
    store = build_object_store(cfg)
    try:
        assert store.default_retention() == ("COMPLIANCE", conn["retention_days"])  # type: ignore[attr-defined]
    finally:
        store.close()


@pytest.mark.minio
def test_the_service_user_cannot_lift_retention(
    minio_store: Any, minio_connection: Path, unique_prefix: str
) -> None:
    """Deleting versions, bypassing governance, changing retention or legal holds and
    changing the bucket's lock are all refused to the service's credentials."""
    store: MinioStore = minio_store
    root = _root_client(minio_connection)
    key = unique_prefix + "governed.env"
    # a GOVERNANCE version (only root can write one here), which root could lift
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    version = root.put_object(
        store.bucket, key, io.BytesIO(b"g"), 1, retention=Retention(GOVERNANCE, until)
    ).version_id
    svc = store.client
    attempts = {
        "bypass governance": lambda: svc._execute(
            "DELETE",
            store.bucket,
            key,
            query_params={"versionId": str(version)},
            headers={"x-amz-bypass-governance-retention": "true"},
        ),
        "extend retention": lambda: svc.set_object_retention(
            store.bucket, key, Retention(GOVERNANCE, until + dt.timedelta(days=1)), version
        ),
        "legal hold": lambda: svc.enable_object_legal_hold(store.bucket, key, version),
        "bucket lock": lambda: svc.set_object_lock_config(
            store.bucket, ObjectLockConfig(GOVERNANCE, 1, DAYS)
        ),
    }
    for what, attempt in attempts.items():
        with pytest.raises(S3Error) as refused:
            attempt()
        assert refused.value.code == "AccessDenied", what
    kept = root.get_object_retention(store.bucket, key, version)
    assert kept is not None and kept.mode == GOVERNANCE
    assert store.get(key) == b"g"


@pytest.mark.minio
def test_wrong_credentials_are_a_config_error(minio_connection: Path, tmp_path: Path) -> None:
    conn = json.loads(minio_connection.read_text())
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({"access_key": "nobody", "secret_key": "not-the-secret"}))
    conn["credentials_file"] = str(creds)
    path = tmp_path / "connection.json"
    path.write_text(json.dumps(conn))
    store = MinioStore.from_connection_file(path)
    try:
        with pytest.raises(ConfigError, match="credentials"):
            store.get("records/anything")
        with pytest.raises(ConfigError, match="credentials"):  # the write client too
            store.put("records/anything", b"x")
    finally:
        store.close()


@pytest.mark.minio
def test_a_put_is_one_locked_version_with_its_metadata(
    minio_store: Any, minio_connection: Path, unique_prefix: str
) -> None:
    """Writes go through their own client (obstore): the object is one version, under
    the bucket's COMPLIANCE retention, with its metadata; a second put of the key is
    AlreadyExists and leaves that version alone."""
    from ehr_common.errors import AlreadyExists

    store: MinioStore = minio_store
    root = _root_client(minio_connection)
    key = unique_prefix + "written.env"
    store.put(key, b"first", {"ehr-meta": "bWV0YQ=="})
    with pytest.raises(AlreadyExists):
        store.put(key, b"second", {"ehr-meta": "b3RoZXI="})
    assert store.get(key) == b"first"
    assert store.metadata(key) == {"ehr-meta": "bWV0YQ=="}
    stat = root.stat_object(store.bucket, key)
    assert stat.content_type == "application/octet-stream"
    versions = [
        o.version_id
        for o in root.list_objects(store.bucket, prefix=key, include_version=True)
        if o.object_name == key
    ]
    assert versions == [stat.version_id]
    retention = root.get_object_retention(store.bucket, key, stat.version_id)
    assert retention is not None and retention.mode == "COMPLIANCE"
