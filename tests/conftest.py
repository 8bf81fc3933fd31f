"""Shared fixtures.

MinIO and Fabric tests use the real engines started by `ehr-abe infra up`
(`make test` and .ci/run do that). When an engine is absent its tests skip
with the reason, unless EHR_ABE_REQUIRE_MINIO=1 / EHR_ABE_REQUIRE_FABRIC=1
(CI), where absence is a failure.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ehr_abe.paths import state_dir


def infra_dir() -> Path:
    override = os.environ.get("EHR_ABE_INFRA_DIR")
    return Path(override) if override else state_dir() / "infra"


def _unavailable(what: str, env: str, reason: str) -> None:
    if os.environ.get(env) == "1":
        pytest.fail(f"{what} is required here ({env}=1) but unavailable: {reason}")
    pytest.skip(f"{what} unavailable: {reason}")


@pytest.fixture(scope="session")
def minio_connection() -> Path:
    path = infra_dir() / "minio" / "connection.json"
    if not path.exists():
        _unavailable("MinIO", "EHR_ABE_REQUIRE_MINIO", f"{path} missing (run `ehr-abe infra up minio`)")
    endpoint = json.loads(path.read_text())["endpoint"]
    try:
        with urllib.request.urlopen(f"http://{endpoint}/minio/health/ready", timeout=3):
            pass
    except OSError as exc:
        _unavailable("MinIO", "EHR_ABE_REQUIRE_MINIO", f"not answering at {endpoint}: {exc}")
    return path


@pytest.fixture(scope="session")
def fabric_connection() -> Path:
    path = infra_dir() / "fabric" / "connection.json"
    if not path.exists():
        _unavailable("Fabric", "EHR_ABE_REQUIRE_FABRIC", f"{path} missing (run `ehr-abe infra up fabric`)")
    return path


@pytest.fixture
def minio_store(minio_connection: Path) -> Iterator[object]:
    from storage_service.objectstore.minio_store import MinioStore

    store = MinioStore.from_connection_file(minio_connection)
    yield store
    store.close()
