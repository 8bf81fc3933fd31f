"""`ehr-abe infra` for MinIO: configuration, the manager, and a real MinIO of the
test's own (own state dir and ports, so the shared one is never touched)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REQUIRE_MINIO, free_ports, unavailable
from minio.error import S3Error

from ehr_abe.infra import manager
from ehr_abe.infra.component import InfraError
from ehr_abe.infra.config import (
    InfraConfig,
    MinioSettings,
    load_infra_config,
    minio_binary_path,
    pinned_minio_version,
)
from ehr_abe.infra.minio import MinioServer, build_minio
from ehr_common.errors import AlreadyExists, ConfigError
from storage_service.objectstore.minio_store import MinioStore

# -- configuration ------------------------------------------------------------------


def test_pinned_version_is_a_go_pseudo_version_and_keys_the_cache() -> None:
    version = pinned_minio_version()
    assert re.fullmatch(r"v0\.0\.0-\d{14}-[0-9a-f]{12}", version)
    assert minio_binary_path(version).parts[-3:] == ("minio", version, "minio")


def test_pinned_version_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing"):
        pinned_minio_version(tmp_path)
    (tmp_path / "go.mod").write_text("module x\n\nrequire example.com/y v1.0.0\n")
    with pytest.raises(ConfigError, match="does not require"):
        pinned_minio_version(tmp_path)


def test_defaults(tmp_path: Path) -> None:
    cfg = load_infra_config(None, env={"EHR_ABE_HOME": str(tmp_path)})
    assert cfg.minio == MinioSettings()
    assert cfg.minio.host == "127.0.0.1"
    # clear of Fabric's ports
    assert {cfg.minio.port, cfg.minio.console_port}.isdisjoint({7050, 7051, 7053, 8051, 9051, 9443})


def test_toml_then_environment(tmp_path: Path) -> None:
    toml = tmp_path / "infra.toml"
    toml.write_text(
        'state_dir = "/srv/infra"\n'
        "[minio]\nport = 9800\nbucket = 'records-a'\nretention_days = 30\n"
        "[fabric]\nport_offset = 100\n"
    )
    cfg = load_infra_config(
        toml, env={"EHR_ABE_MINIO_PORT": "9900", "EHR_ABE_MINIO_RETENTION_MODE": "compliance"}
    )
    assert cfg.state_dir == Path("/srv/infra")
    assert (cfg.minio.port, cfg.minio.bucket, cfg.minio.retention_days) == (9900, "records-a", 30)
    assert cfg.minio.retention_mode == "COMPLIANCE"
    assert cfg.fabric_overrides == {"port_offset": 100}
    assert load_infra_config(toml, env={"EHR_ABE_INFRA_DIR": "/x"}).state_dir == Path("/x")


@pytest.mark.parametrize(
    "toml, env, message",
    [
        ("[minio]\nprot = 1\n", {}, "unknown MinIO setting 'prot'"),
        ("[minio]\nport = 'high'\n", {}, "port"),
        ("[minio]\nport = 70000\n", {}, "TCP port"),
        ("[minio]\nport = 9701\n", {}, "must differ"),
        ("[minio]\nretention_mode = 'forever'\n", {}, "GOVERNANCE or COMPLIANCE"),
        ("[minio]\nretention_days = 0\n", {}, "retention_days"),
        ("[minio]\nbucket = 'Bad_Bucket'\n", {}, "bucket"),
        ("[minio\n", {}, "not valid TOML"),
        ("colour = 'blue'\n", {}, "unknown keys colour"),
        ("", {"EHR_ABE_MINIO_PORT": "9.5"}, "port"),
    ],
)
def test_bad_configuration_is_a_config_error(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "infra.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_infra_config(path, env=env)


@pytest.mark.minio
def test_a_failed_build_names_its_log_and_leaves_no_binary(tmp_path: Path) -> None:
    if shutil.which("go") is None:  # the MinIO build needs Go: same rule as the engine
        unavailable("MinIO", REQUIRE_MINIO, "the Go toolchain that builds it is not on PATH")
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "go.mod").write_text("module broken\n\ngo 1.24\n")  # does not require minio
    binary = tmp_path / "cache" / "v0" / "minio"
    log = tmp_path / "build.log"
    with pytest.raises(InfraError, match="build failed") as failed:
        build_minio(binary, tools_dir=tools, log_file=log, timeout_s=120)
    assert failed.value.log == log and "github.com/minio/minio" in log.read_text()
    assert list(binary.parent.iterdir()) == []  # neither the binary nor a temporary


# -- manager --------------------------------------------------------------------------


def test_unknown_component_is_refused() -> None:
    with pytest.raises(InfraError, match="unknown component"):
        manager.select(["minio", "postgres"])
    assert manager.select([]) == ["minio", "fabric", "mqtt"]
    assert manager.select(["mqtt", "fabric", "minio"]) == ["minio", "fabric", "mqtt"]


def test_fabric_without_binaries_is_skipped_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FABRIC_HOME", str(tmp_path / "no-fabric"))
    monkeypatch.setenv("EHR_ABE_MOSQUITTO", str(tmp_path / "no-mosquitto"))
    cfg = InfraConfig(state_dir=tmp_path / "infra")
    lines: list[str] = []
    chosen = manager.components(cfg, [], lines.append)
    assert [c.name for c in chosen] == ["minio"]
    assert [line.split(":")[0] for line in lines] == ["Fabric skipped", "MQTT skipped"]
    assert "apt-get install mosquitto" in lines[1]
    with pytest.raises(InfraError, match="fabric"):
        manager.components(cfg, ["fabric"], lines.append)
    rows = manager.status(cfg)
    assert [r.name for r in rows] == ["minio", "fabric", "mqtt"]
    assert rows[1].state == rows[2].state == "not-installed"


def test_down_never_signals_a_process_that_is_not_ours(tmp_path: Path) -> None:
    """A stale pid file whose pid now belongs to another program: `down` leaves it alone."""
    cfg = InfraConfig(state_dir=tmp_path / "infra")
    server = MinioServer(cfg)
    server.dir.mkdir(parents=True)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        server.pid_file.write_text(str(stranger.pid))
        assert server.status()[0].state in ("stopped", "not-installed")
        server.down()
        assert stranger.poll() is None  # still running
        assert not server.pid_file.exists()
    finally:
        stranger.send_signal(signal.SIGKILL)
        stranger.wait()


# -- a real MinIO of our own ---------------------------------------------------------------


@pytest.fixture
def own_minio(minio_binary: Path, tmp_path: Path) -> Iterator[MinioServer]:
    port, console = free_ports(2)
    cfg = InfraConfig(
        state_dir=tmp_path / "infra",
        minio=MinioSettings(
            port=port, console_port=console, bucket="test-records", retention_days=1
        ),
    )
    server = MinioServer(cfg)
    yield server
    server.down()


def _store(server: MinioServer) -> MinioStore:
    return MinioStore.from_connection_file(server.connection_file)


@pytest.mark.minio
def test_up_status_down_up_keeps_data_and_locks(own_minio: MinioServer) -> None:
    own_minio.up()
    [row] = own_minio.status()
    assert row.state == "running" and row.pid is not None
    assert row.endpoint == own_minio.settings.endpoint

    # credentials: 0600, never in the connection file or the log
    assert stat.S_IMODE(own_minio.credentials_file.stat().st_mode) == 0o600
    secret = json.loads(own_minio.credentials_file.read_text())["secret_key"]
    conn = json.loads(own_minio.connection_file.read_text())
    assert conn["endpoint"] == own_minio.settings.endpoint and conn["bucket"] == "test-records"
    assert secret not in own_minio.connection_file.read_text()
    assert secret not in own_minio.log.read_text()

    store = _store(own_minio)
    try:
        # the bucket is versioned and locked by default
        lock = store.client.get_object_lock_config("test-records")
        assert (lock.mode, lock.duration) == ("GOVERNANCE", 1)
        store.put("records/r1.env", b"first record", {"device": "pump-1"})
        version = store.client.stat_object("test-records", "records/r1.env").version_id
        with pytest.raises(AlreadyExists):
            store.put("records/r1.env", b"replacement")
        with pytest.raises(S3Error, match="WORM"):
            store.client.remove_object("test-records", "records/r1.env", version_id=version)
    finally:
        store.close()

    # idempotent: a second `up` keeps the same process
    own_minio.up()
    assert own_minio.status()[0].pid == row.pid

    own_minio.down()
    assert own_minio.status()[0].state == "stopped"
    assert not own_minio.connection_file.exists()
    with pytest.raises(OSError):
        os.kill(row.pid, 0)  # the process is gone (reaped by MinIO's exit)

    own_minio.up()
    assert own_minio.status()[0].pid != row.pid
    store = _store(own_minio)
    try:
        assert store.get("records/r1.env") == b"first record"
        assert store.metadata("records/r1.env") == {"device": "pump-1"}
        with pytest.raises(AlreadyExists):
            store.put("records/r1.env", b"after restart")
    finally:
        store.close()


@pytest.mark.minio
def test_a_taken_port_is_named(own_minio: MinioServer) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", own_minio.settings.port))
        squatter.listen()
        with pytest.raises(InfraError, match=f"{own_minio.settings.port} is taken"):
            own_minio.up()
    assert own_minio.status()[0].state == "stopped"


@pytest.mark.minio
def test_cli_up_status_down(minio_binary: Path, tmp_path: Path) -> None:
    port, console, mqtt_port = free_ports(3)
    env = dict(
        os.environ,
        EHR_ABE_INFRA_DIR=str(tmp_path / "infra"),
        EHR_ABE_MINIO_PORT=str(port),
        EHR_ABE_MINIO_CONSOLE_PORT=str(console),
        EHR_ABE_MQTT_PORT=str(mqtt_port),
        FABRIC_HOME=str(tmp_path / "no-fabric"),
        COLUMNS="200",
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ehr_abe", "infra", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    try:
        up = cli("up")
        assert up.returncode == 0, up.stderr
        assert "Fabric skipped" in up.stdout and "up: minio" in up.stdout
        status = cli("status")
        assert re.search(rf"minio\s+.\s+running\s+.\s+\d+\s+.\s+127\.0\.0\.1:{port}", status.stdout)
        secret = json.loads((tmp_path / "infra/minio/credentials.json").read_text())["secret_key"]
        assert secret not in up.stdout + up.stderr + status.stdout
        unknown = cli("up", "postgres")
        assert unknown.returncode != 0 and "unknown component" in unknown.stderr
        assert "Traceback" not in unknown.stderr
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert "stopped" in cli("status").stdout


# -- the skip / require rule of tests/conftest.py ---------------------------------------------

_USES_ENGINES = """
def test_minio(minio_connection):
    pass

def test_fabric(fabric_connection):
    pass

def test_mqtt(mqtt_connection):
    pass
"""


@pytest.mark.parametrize("required", [False, True])
def test_absent_engines_skip_unless_required(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, required: bool
) -> None:
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(_USES_ENGINES)
    monkeypatch.setenv("EHR_ABE_INFRA_DIR", str(tmp_path / "nothing-here"))
    for name in ("EHR_ABE_REQUIRE_MINIO", "EHR_ABE_REQUIRE_FABRIC", "EHR_ABE_REQUIRE_MQTT"):
        monkeypatch.setenv(name, "1" if required else "0")
    result = pytester.runpytest_inprocess("-rsf", "-p", "no:cacheprovider")
    if required:
        result.assert_outcomes(errors=3)  # pytest.fail in a fixture: an error, never a pass
        result.stdout.fnmatch_lines(["*MinIO is required here (EHR_ABE_REQUIRE_MINIO=1)*"])
        result.stdout.fnmatch_lines(["*Mosquitto is required here (EHR_ABE_REQUIRE_MQTT=1)*"])
    else:
        result.assert_outcomes(skipped=3)
        result.stdout.fnmatch_lines(["*MinIO unavailable*connection.json missing*"])
        result.stdout.fnmatch_lines(["*Mosquitto unavailable*connection.json missing*"])
