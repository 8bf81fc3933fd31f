"""Shared pieces of the IoMT tests: a real StorageService over gRPC (restartable on
the same port and state), an edge gateway, devices and readings, and a reader."""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from abe_service.authority import KeyAuthority
from abe_service.client import AbeKeyring
from edge.config import Device, EdgeConfig
from ehr_abe.records import FetchedSegment, fetch_request, open_items
from ehr_abe.server import RunningServer, start_server
from ehr_common.api.v1 import storage_pb2 as pb
from ehr_common.api.v1 import storage_pb2_grpc
from ehr_common.config import Config, load_config

PASS = b"iomt test passphrase"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Storage:
    """A StorageService (development mode) whose process can go away and come back."""

    cfg: Config
    running: RunningServer | None = None

    @staticmethod
    def create(
        home: Path, minio_connection: Path | None, fabric_connection: Path | None = None
    ) -> Storage:
        cfg = load_config(env={})
        cfg.home = str(home)
        cfg.server.listen = f"127.0.0.1:{free_port()}"
        cfg.storage.batch_max_age_s = 0.2
        if minio_connection is not None:
            cfg.storage.object_store = "minio"
            cfg.storage.minio_connection = str(minio_connection)
        if fabric_connection is not None:
            cfg.storage.ledger = "fabric"
            cfg.storage.fabric_connection = str(fabric_connection)
        KeyAuthority.setup(cfg.authority_dir, passphrase=PASS)
        s = Storage(cfg)
        s.start()
        return s

    @property
    def endpoint(self) -> str:
        return self.cfg.server.listen

    @property
    def public_params(self) -> Path:
        return self.cfg.authority_dir / "public_params.bin"

    def authority(self) -> KeyAuthority:
        return KeyAuthority.open(self.cfg.authority_dir, passphrase=PASS)

    def start(self) -> None:
        self.running = start_server(self.cfg, passphrase=PASS)

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop(grace=0.5)
            self.running = None

    def stub(self) -> Any:
        return storage_pb2_grpc.StorageServiceStub(grpc.insecure_channel(self.endpoint))


def md(subject: str, roles: str = "") -> tuple[tuple[str, str], ...]:
    return (("x-ehr-subject", subject), ("x-ehr-roles", roles))


def edge_config(spool: Path, storage: Storage, devices: dict[str, Device], **kw: Any) -> EdgeConfig:
    cfg = EdgeConfig(spool_dir=spool, public_params=storage.public_params, devices=devices)
    cfg.storage_endpoint = storage.endpoint
    cfg.segment_max_age_s = 0.3
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def tag() -> str:
    """Device and patient ids of their own per test: MinIO objects outlive a test."""
    return secrets.token_hex(3)


@dataclass
class DeviceSim:
    device_id: str
    device_type: str
    seq: int = 0
    sent: list[int] = field(default_factory=list)

    def reading(self, now_ms: int | None = None) -> bytes:
        self.seq += 1
        t = now_ms if now_ms is not None else int(time.time() * 1000)
        self.sent.append(self.seq)
        body: dict[str, Any] = {"seq": self.seq, "t": t}
        if self.device_type == "pulse-oximeter":
            body.update(spo2=95 + self.seq % 5, hr=60 + self.seq % 30)
        elif self.device_type == "bp-cuff":
            body.update(sys=110 + self.seq % 20, dia=70 + self.seq % 10, hr=70)
        elif self.device_type == "thermometer":
            body.update(temp_c=36.5)
        elif self.device_type == "ecg":
            body.update(fs=250, samples=[(i * 37) % 900 - 450 for i in range(25)])
        return json.dumps(body).encode()

    @property
    def topic(self) -> str:
        return f"devices/{self.device_id}/readings"


def fetch(
    storage: Storage, keyring: AbeKeyring, patient_id: str, reader: str
) -> list[FetchedSegment]:
    items: Iterator[pb.FetchedItem] = storage.stub().FetchSegments(
        fetch_request(patient_id, None, None), metadata=md(reader, "doctor"), timeout=60
    )
    return list(open_items(items, keyring, patient_id))


def reading_ids(segments: list[FetchedSegment]) -> list[tuple[str, int]]:
    """(device, seq) of every reading in the fetched segments (from the FHIR identifiers)."""
    out: list[tuple[str, int]] = []
    for seg in segments:
        for obs in seg.observations:
            value = obs["identifier"][0]["value"]
            device, rest = value.split("/", 1)
            if rest.endswith("#hr"):
                continue  # the second Observation of a pulse-oximeter or cuff reading
            out.append((device, int(rest.split("#")[0])))
    return out


def grant(storage: Storage, patient_id: str, reader: str) -> None:
    storage.stub().GrantConsent(
        pb.GrantConsentRequest(patient_id=patient_id, subject_id=reader),
        metadata=md(patient_id, "patient"),
        timeout=30,
    )


# -- MQTT ---------------------------------------------------------------------------------
def write_identity(conn: Path, subject: str, roles: list[str], out: Path) -> tuple[Path, Path]:
    from ehr_abe.infra.mqtt import issue_identity

    cert, key = issue_identity(conn, subject, roles)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{subject}.crt").write_bytes(cert)
    (out / f"{subject}.key").write_bytes(key)
    (out / f"{subject}.key").chmod(0o600)
    return out / f"{subject}.crt", out / f"{subject}.key"


def with_mqtt(cfg: EdgeConfig, conn: Path, certs: Path) -> EdgeConfig:
    from ehr_abe.infra.mqtt import load_connection

    doc = load_connection(conn)
    cfg.mqtt_host, cfg.mqtt_port, cfg.mqtt_ca = doc["host"], int(doc["port"]), Path(doc["ca_cert"])
    cfg.subject = doc["edge_subject"]
    cfg.mqtt_cert, cfg.mqtt_key = write_identity(conn, cfg.subject, ["edge-gateway"], certs)
    return cfg


@dataclass
class MqttDevice:
    """A device's MQTT v5 client: publishes QoS 1 and sees each PUBACK's reason code."""

    client: Any
    reason_codes: dict[int, int] = field(default_factory=dict)

    def publish(self, topic: str, payload: bytes, timeout: float = 10.0) -> int:
        """The broker's reason code for this publish (0 success, 135 not authorised)."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout)
        deadline = time.monotonic() + timeout
        while info.mid not in self.reason_codes and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.reason_codes.pop(info.mid)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def mqtt_device(
    conn: Path,
    cert_pem: bytes,
    key_pem: bytes,
    client_id: str,
    *,
    ca: Path | None = None,
    connect_timeout: float = 10.0,
) -> MqttDevice:
    """Connected, or raises OSError/ssl.SSLError when the broker refuses the handshake."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from ehr_abe.infra.mqtt import client_tls_context, load_connection

    doc = load_connection(conn)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.tls_set_context(client_tls_context(ca or Path(doc["ca_cert"]), cert_pem, key_pem))
    dev = MqttDevice(client)

    def on_publish(_c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        dev.reason_codes[mid] = int(reason.value) if hasattr(reason, "value") else int(reason)

    client.on_publish = on_publish
    client.max_inflight_messages_set(200)
    client.connect(doc["host"], int(doc["port"]), keepalive=30)
    client.loop_start()
    deadline = time.monotonic() + connect_timeout
    while not client.is_connected():
        if time.monotonic() > deadline:
            client.loop_stop()
            raise OSError("the broker did not accept the connection")
        time.sleep(0.01)
    return dev
