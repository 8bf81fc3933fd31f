"""The Mosquitto component: configuration, install hint, up/status/down by pid."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REQUIRE_MQTT, unavailable

from ehr_abe.infra.config import load_infra_config
from ehr_abe.infra.mqtt import MosquittoBroker, acl_text, mosquitto_binary, mosquitto_config
from ehr_common.errors import ConfigError


def test_config_and_acl_say_what_the_broker_enforces() -> None:
    conf = mosquitto_config(
        host="127.0.0.1",
        port=18999,
        ca=Path("/ca"),
        cert=Path("/c"),
        key=Path("/k"),
        acl=Path("/acl"),
        data_dir=Path("/d"),
        max_queued_messages=7,
        max_queued_mb=2,
        max_inflight_messages=3,
        max_packet_kb=64,
        run_as="someone",
    )
    for line in (
        "listener 18999 127.0.0.1",
        "require_certificate true",
        "use_identity_as_username true",
        "allow_anonymous false",
        "persistence true",
        "max_queued_messages 7",
        f"max_queued_bytes {2 * 1024 * 1024}",
        "max_inflight_messages 3",
        "acl_file /acl",
    ):
        assert line in conf.splitlines()
    acl = acl_text("edge-x").splitlines()
    assert acl[:2] == ["user edge-x", "topic read devices/#"]
    assert "pattern write devices/%u/#" in acl
    assert not any(
        line.startswith("pattern read") or line == "topic write devices/#" for line in acl
    )


def test_mqtt_settings_from_the_environment() -> None:
    cfg = load_infra_config(env={"EHR_ABE_MQTT_PORT": "18123", "EHR_ABE_INFRA_DIR": "/tmp/x"})
    assert cfg.mqtt.port == 18123
    for bad in (
        {"EHR_ABE_MQTT_PORT": "0"},
        {"EHR_ABE_MQTT_NOPE": "1"},
        {"EHR_ABE_MQTT_EDGE_SUBJECT": "a/#"},
    ):
        with pytest.raises(ConfigError):
            load_infra_config(env=bad)


def test_missing_mosquitto_says_how_to_install(tmp_path: Path) -> None:
    env = dict(
        os.environ, EHR_ABE_INFRA_DIR=str(tmp_path), EHR_ABE_MOSQUITTO=str(tmp_path / "none")
    )
    out = subprocess.run(
        [sys.executable, "-m", "ehr_abe", "infra", "up", "mqtt"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 7
    assert "apt-get install mosquitto" in out.stderr and "Traceback" not in out.stderr


def test_up_status_down_by_pid(tmp_path: Path) -> None:
    if mosquitto_binary() is None:
        unavailable("Mosquitto", REQUIRE_MQTT, "not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = load_infra_config(
        env={"EHR_ABE_INFRA_DIR": str(tmp_path), "EHR_ABE_MQTT_PORT": str(port)}
    )
    broker = MosquittoBroker(cfg)
    try:
        broker.up()
        broker.up()  # idempotent
        (row,) = broker.status()
        assert row.state == "running" and row.pid and row.endpoint == f"127.0.0.1:{port}"
        assert (tmp_path / "mqtt" / "connection.json").exists()
        assert (tmp_path / "mqtt" / "server.key").stat().st_mode & 0o077 == 0
    finally:
        broker.down()
    assert broker.status()[0].state == "stopped"
    assert not (tmp_path / "mqtt" / "connection.json").exists()
