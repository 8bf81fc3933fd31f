"""Shared fixtures, and the one require/skip rule of the engine tests.

MinIO, Fabric and Mosquitto tests use the real engines started by `ehr-abe
infra up` (`make test` and .ci/run do that). When an engine is absent its
tests skip with the reason, unless EHR_ABE_REQUIRE_MINIO=1 /
EHR_ABE_REQUIRE_FABRIC=1 / EHR_ABE_REQUIRE_MQTT=1 (CI), where absence is a
failure. Every engine test goes through
`unavailable()` (directly or through the fixtures below); nothing else skips
for a missing engine. A test that uses an engine fixture gets the engine's
marker automatically, so `-m "not minio"` deselects exactly those tests.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from ehr_common.paths import state_dir

# Property tests assert behaviour, not speed: on a shared, loaded two-core host one
# example can take longer than hypothesis's 200 ms default deadline (it did).
settings.register_profile("ehr-abe", deadline=None)
settings.load_profile("ehr-abe")

pytest_plugins = ["pytester"]  # tests/test_infra_minio.py checks the skip/require rule

REQUIRE_MINIO = "EHR_ABE_REQUIRE_MINIO"
REQUIRE_FABRIC = "EHR_ABE_REQUIRE_FABRIC"
REQUIRE_MQTT = "EHR_ABE_REQUIRE_MQTT"

#: engine fixture -> the marker its users carry
ENGINE_FIXTURES = {
    "minio_connection": "minio",
    "minio_binary": "minio",
    "minio_store": "minio",
    "fabric_connection": "fabric",
    "mqtt_connection": "mqtt",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            marker = ENGINE_FIXTURES.get(fixture)
            if marker is not None and item.get_closest_marker(marker) is None:
                item.add_marker(getattr(pytest.mark, marker))


def free_ports(n: int = 1) -> list[int]:
    """n distinct loopback ports nothing listens on right now (bound together, then freed)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def infra_dir() -> Path:
    """The state dir `ehr-abe infra up` uses by default (same rule as InfraConfig)."""
    override = os.environ.get("EHR_ABE_INFRA_DIR")
    return Path(override) if override else state_dir() / "infra"


def unavailable(what: str, require_env: str, reason: str) -> None:
    """Skip the test, or fail it where the environment says `what` is required."""
    if os.environ.get(require_env) == "1":
        pytest.fail(f"{what} is required here ({require_env}=1) but unavailable: {reason}")
    pytest.skip(f"{what} unavailable: {reason}")


def _connection_file(component: str, what: str, require_env: str) -> Path:
    path = infra_dir() / component / "connection.json"
    if not path.exists():
        unavailable(what, require_env, f"{path} missing (run `ehr-abe infra up {component}`)")
    try:
        json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        unavailable(what, require_env, f"{path} unreadable: {exc}")
    return path


@pytest.fixture(scope="session")
def minio_connection() -> Path:
    """`<infra>/minio/connection.json` of a MinIO that answers its health check."""
    path = _connection_file("minio", "MinIO", REQUIRE_MINIO)
    endpoint = json.loads(path.read_text())["endpoint"]
    try:
        with urllib.request.urlopen(f"http://{endpoint}/minio/health/ready", timeout=3):
            pass
    except OSError as exc:
        unavailable("MinIO", REQUIRE_MINIO, f"not answering at {endpoint}: {exc}")
    return path


@pytest.fixture(scope="session")
def fabric_connection() -> Path:
    """`<infra>/fabric/connection.json` of the Fabric network `ehr-abe infra up` started."""
    return _connection_file("fabric", "Fabric", REQUIRE_FABRIC)


@pytest.fixture(scope="session")
def mqtt_connection() -> Path:
    """`<infra>/mqtt/connection.json` of a Mosquitto that accepts connections."""
    import socket

    path = _connection_file("mqtt", "Mosquitto", REQUIRE_MQTT)
    doc = json.loads(path.read_text())
    try:
        with socket.create_connection((doc["host"], int(doc["port"])), timeout=3):
            pass
    except OSError as exc:
        unavailable(
            "Mosquitto", REQUIRE_MQTT, f"not answering at {doc['host']}:{doc['port']}: {exc}"
        )
    return path


@pytest.fixture(scope="session")
def minio_binary() -> Path:
    """The cached MinIO binary of the pinned version (tests never build it)."""
    from ehr_abe.infra.config import minio_binary_path, pinned_minio_version

    path = minio_binary_path(pinned_minio_version())
    if not (path.is_file() and os.access(path, os.X_OK)):
        unavailable("MinIO", REQUIRE_MINIO, f"{path} not built (run `ehr-abe infra up minio`)")
    return path


@pytest.fixture
def minio_store(minio_connection: Path) -> Iterator[Any]:
    from storage_service.objectstore.minio_store import MinioStore

    store = MinioStore.from_connection_file(minio_connection)
    yield store
    store.close()


def minio_root_client(minio_connection: Path) -> Any:
    """MinIO's root user (who holds it is the storage operator: the attacker of the
    tamper tests, and the checks that need more than the service's own user)."""
    from minio import Minio

    conn = json.loads(minio_connection.read_text())
    root = json.loads((minio_connection.parent / "credentials.json").read_text())
    return Minio(conn["endpoint"], root["access_key"], root["secret_key"], secure=False)


@pytest.fixture
def unique_prefix() -> str:
    """A key prefix of its own per test: MinIO objects are locked and outlive the test."""
    return f"test/{secrets.token_hex(6)}/"
