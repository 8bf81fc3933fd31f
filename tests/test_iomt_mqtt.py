"""IoMT ingestion end to end on real engines: devices -> Mosquitto (TLS, client
certificates, per-device ACL) -> edge gateway -> StorageService on MinIO -> reader."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from abe_service.client import AbeKeyring
from edge.config import Device
from edge.fhir import validate
from edge.gateway import Gateway, GrpcSegmentSink
from ehr_common.errors import PolicyNotSatisfied
from tests.iomt_helpers import (
    DeviceSim,
    Storage,
    edge_config,
    fetch,
    grant,
    mqtt_device,
    reading_ids,
    tag,
    with_mqtt,
    write_identity,
)
from tests.polling import wait_until

pytestmark = [pytest.mark.mqtt, pytest.mark.minio]
READER = "dr-iomt"


@pytest.fixture(scope="module")
def storage(
    tmp_path_factory: pytest.TempPathFactory, minio_connection: Path, mqtt_connection: Path
) -> Iterator[Storage]:
    s = Storage.create(tmp_path_factory.mktemp("home"), minio_connection)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def keyring(storage: Storage) -> AbeKeyring:
    key = storage.authority().issue_key(READER, ["role:doctor", "dept:cardiology"])
    return AbeKeyring.from_bytes(key.user_key)


def _devices(t: str) -> dict[str, Device]:
    patient = f"p-{t}"
    return {
        f"ecg-{t}": Device("ecg", patient),
        f"ox-{t}": Device("pulse-oximeter", patient),
        f"bp-{t}": Device("bp-cuff", patient),
    }


def _connect(conn: Path, tmp: Path, device_id: str) -> Any:
    cert, key = write_identity(conn, device_id, ["device"], tmp / "certs")
    return mqtt_device(conn, cert.read_bytes(), key.read_bytes(), device_id)


def _all_fetched(
    storage: Storage, keyring: AbeKeyring, patient: str, expected: set[tuple[str, int]]
) -> list[tuple[str, int]]:
    grant(storage, patient, READER)
    got: list[tuple[str, int]] = []

    def complete() -> bool:
        nonlocal got
        got = reading_ids(fetch(storage, keyring, patient, READER))
        return set(got) >= expected

    wait_until(complete, 60, "every reading to be stored")
    return got


def test_a_device_certificate_from_another_ca_is_refused(
    mqtt_connection: Path, tmp_path: Path
) -> None:
    from ehr_abe.infra.mqtt import _self_signed_ca
    from ehr_common.certificates import mint_client_identity

    ca_cert, ca_key = _self_signed_ca("another organisation's CA")
    (tmp_path / "other-ca.crt").write_bytes(ca_cert)
    cert, key = mint_client_identity(ca_cert, ca_key, f"ox-{tag()}", ["device"])
    with pytest.raises(OSError):
        mqtt_device(mqtt_connection, cert, key, "intruder", connect_timeout=3)
    # the same subject from the broker's own CA is accepted: the refusal was the CA
    dev = _connect(mqtt_connection, tmp_path, f"ox-{tag()}")
    dev.close()


def test_end_to_end_with_refusals(
    storage: Storage, keyring: AbeKeyring, mqtt_connection: Path, tmp_path: Path
) -> None:
    t = tag()
    devices = _devices(t)
    cfg = with_mqtt(
        edge_config(tmp_path / "spool", storage, devices, segment_max_readings=10),
        mqtt_connection,
        tmp_path / "certs",
    )
    gw = Gateway(cfg, GrpcSegmentSink(storage.endpoint, subject=cfg.subject))
    gw.start()
    sims = [DeviceSim(d, x.device_type) for d, x in devices.items()]
    clients = {s.device_id: _connect(mqtt_connection, tmp_path, s.device_id) for s in sims}
    try:
        for _ in range(40):
            for s in sims:
                assert clients[s.device_id].publish(s.topic, s.reading()) == 0
        ox = next(s for s in sims if s.device_type == "pulse-oximeter")
        c = clients[ox.device_id]
        now = int(time.time() * 1000)
        # malformed, out of range, replayed: acknowledged by the broker, refused by the edge
        c.publish(ox.topic, b"{not json")
        c.publish(
            ox.topic, json.dumps({"seq": ox.seq + 1, "t": now, "spo2": 140, "hr": 70}).encode()
        )
        c.publish(ox.topic, json.dumps({"seq": 3, "t": now, "spo2": 97, "hr": 70}).encode())
        # a device publishing under another device's topic: refused by the broker's ACL
        ecg = next(s for s in sims if s.device_type == "ecg")
        forged = json.dumps({"seq": 10_000, "t": now, "spo2": 97, "hr": 70}).encode()
        assert c.publish(f"devices/{ecg.device_id}/readings", forged) == 135  # not authorised
        wait_until(lambda: gw.stats.received >= 123, 30, "the edge to see every allowed message")
        time.sleep(0.5)
        assert gw.stats.received == 123  # the forged message never reached the edge
        assert gw.stats.rejected.get("malformed", 0) >= 1
        assert gw.stats.rejected.get("out_of_range", 0) >= 1
        assert gw.stats.rejected.get("replayed", 0) >= 1
        expected = {(s.device_id, q) for s in sims for q in s.sent}
        got = _all_fetched(storage, keyring, f"p-{t}", expected)
        assert sorted(got) == sorted(expected)  # every reading exactly once
        assert (ecg.device_id, 10_000) not in got
        # every Observation validates as FHIR
        for seg in fetch(storage, keyring, f"p-{t}", READER):
            for obs in seg.observations:
                validate(obs)
                assert obs["subject"]["reference"] == f"Patient/p-{t}"
        # one CP-ABE encapsulation per device window, not per segment
        assert gw.stats.windows_opened == len(devices) < gw.stats.segments_sealed
        # a reader whose key lacks the policy's attributes opens nothing
        other = AbeKeyring.from_bytes(
            storage.authority().issue_key("dr-skin", ["role:dermatologist"]).user_key
        )
        grant(storage, f"p-{t}", "dr-skin")
        with pytest.raises(PolicyNotSatisfied):
            fetch(storage, other, f"p-{t}", "dr-skin")
    finally:
        for cl in clients.values():
            cl.close()
        gw.stop()


def test_storage_outage_then_everything_stored_once(
    storage: Storage, keyring: AbeKeyring, mqtt_connection: Path, tmp_path: Path
) -> None:
    t = tag()
    devices = _devices(t)
    cfg = with_mqtt(
        edge_config(tmp_path / "spool", storage, devices), mqtt_connection, tmp_path / "certs"
    )
    gw = Gateway(cfg, GrpcSegmentSink(storage.endpoint, subject=cfg.subject, timeout_s=5))
    gw.start()
    sims = [DeviceSim(d, x.device_type) for d, x in devices.items()]
    clients = {s.device_id: _connect(mqtt_connection, tmp_path, s.device_id) for s in sims}
    try:

        def publish_for(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for s in sims:
                    clients[s.device_id].publish(s.topic, s.reading())
                time.sleep(0.02)

        publish_for(1.0)
        storage.stop()
        publish_for(12.0)  # the StorageService is gone for ~12 s
        assert not gw.stats.storage_up and gw.spool.counts()["outbox_items"] > 0
        storage.start()
        publish_for(1.0)
        expected = {(s.device_id, q) for s in sims for q in s.sent}
        got = _all_fetched(storage, keyring, f"p-{t}", expected)
        assert len(got) == len(set(got)) == len(expected)
    finally:
        for cl in clients.values():
            cl.close()
        gw.stop()
        if storage.running is None:
            storage.start()


def _edge_toml(cfg: Any, path: Path) -> None:
    lines = [
        "[edge]",
        f'spool_dir = "{cfg.spool_dir}"',
        f'public_params = "{cfg.public_params}"',
        f'subject = "{cfg.subject}"',
        f"segment_max_age_s = {cfg.segment_max_age_s}",
        "[mqtt]",
        f'host = "{cfg.mqtt_host}"',
        f"port = {cfg.mqtt_port}",
        f'ca = "{cfg.mqtt_ca}"',
        f'cert = "{cfg.mqtt_cert}"',
        f'key = "{cfg.mqtt_key}"',
        "[storage]",
        f'endpoint = "{cfg.storage_endpoint}"',
    ]
    for device_id, d in cfg.devices.items():
        lines += [
            f'[devices."{device_id}"]',
            f'type = "{d.device_type}"',
            f'patient = "{d.patient_id}"',
        ]
    path.write_text("\n".join(lines) + "\n")


def test_edge_killed_mid_stream_loses_nothing(
    storage: Storage, keyring: AbeKeyring, mqtt_connection: Path, tmp_path: Path
) -> None:
    t = tag()
    devices = _devices(t)
    cfg = with_mqtt(
        edge_config(tmp_path / "spool", storage, devices), mqtt_connection, tmp_path / "certs"
    )
    toml = tmp_path / "edge.toml"
    _edge_toml(cfg, toml)

    def start_edge() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "ehr_abe", "edge", "--config", str(toml)],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "edge.log", "ab"),
            env=dict(os.environ),
        )

    def stats() -> dict[str, Any]:
        try:
            return dict(json.loads((cfg.spool_dir / "stats.json").read_text()))
        except (OSError, ValueError):
            return {}

    edge = start_edge()
    sims = [DeviceSim(d, x.device_type) for d, x in devices.items()]
    clients = {s.device_id: _connect(mqtt_connection, tmp_path, s.device_id) for s in sims}
    stop = threading.Event()
    refused: list[int] = []

    def publish() -> None:
        while not stop.is_set():
            for s in sims:
                rc = clients[s.device_id].publish(s.topic, s.reading())
                if rc != 0:
                    refused.append(rc)

    publisher = threading.Thread(target=publish)
    try:
        wait_until(lambda: "received" in stats(), 60, "the edge to start")
        publisher.start()
        wait_until(lambda: stats().get("delivered_readings", 0) >= 100, 60, "readings to flow")
        os.kill(edge.pid, signal.SIGKILL)  # mid-stream: spooled, sealed, in flight, unacked
        edge.wait()
        time.sleep(1.0)  # devices keep publishing; the broker queues for the edge's session
        edge = start_edge()
        time.sleep(1.0)
        stop.set()
        publisher.join()
        assert not refused
        expected = {(s.device_id, q) for s in sims for q in s.sent}
        got = _all_fetched(storage, keyring, f"p-{t}", expected)
        assert len(got) == len(set(got)) == len(expected)  # nothing lost, nothing twice
    finally:
        stop.set()
        if publisher.is_alive():
            publisher.join()
        for cl in clients.values():
            cl.close()
        edge.send_signal(signal.SIGTERM)
        edge.wait(timeout=30)


@pytest.mark.fabric
def test_segments_are_anchored_on_fabric(
    tmp_path: Path, minio_connection: Path, mqtt_connection: Path, fabric_connection: Path
) -> None:
    storage = Storage.create(tmp_path / "home", minio_connection, fabric_connection)
    t = tag()
    devices = {f"ox-{t}": Device("pulse-oximeter", f"p-{t}")}
    cfg = with_mqtt(
        edge_config(tmp_path / "spool", storage, devices), mqtt_connection, tmp_path / "certs"
    )
    gw = Gateway(cfg, GrpcSegmentSink(storage.endpoint, subject=cfg.subject))
    gw.start()
    sim = DeviceSim(f"ox-{t}", "pulse-oximeter")
    client = _connect(mqtt_connection, tmp_path, sim.device_id)
    try:
        for _ in range(20):
            assert client.publish(sim.topic, sim.reading()) == 0
        reader = AbeKeyring.from_bytes(
            storage.authority().issue_key(READER, ["role:nurse"]).user_key
        )
        expected = {(sim.device_id, q) for q in sim.sent}
        got = _all_fetched(storage, reader, f"p-{t}", expected)
        assert sorted(got) == sorted(expected)

        def anchored() -> bool:
            segs = fetch(storage, reader, f"p-{t}", READER)
            return bool(segs) and all(s.anchored for s in segs)

        wait_until(anchored, 60, "the segments' batch to be anchored on Fabric")
    finally:
        client.close()
        gw.stop()
        storage.stop()
