"""MinioStore specifics: the server itself keeps stored versions (object lock),
errors map to the typed errors."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from minio.error import S3Error

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
    minio_store: Any, unique_prefix: str
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

    # Deleting the locked version itself is refused by MinIO.
    with pytest.raises(S3Error) as refused:
        store.client.remove_object(store.bucket, key, version_id=original.version_id)
    assert refused.value.code in ("AccessDenied", "InvalidRequest")
    assert "WORM protected" in str(refused.value.message)

    # A plain delete only adds a delete marker; the store then reports NotFound,
    # and the original version is still there.
    store.client.remove_object(store.bucket, key)
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
    finally:
        store.close()
