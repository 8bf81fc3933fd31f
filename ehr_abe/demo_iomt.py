"""The IoMT part of `ehr-abe demo`: simulated devices (ECG, pulse oximeter,
blood-pressure cuff) publish over MQTT (a Mosquitto of the demo's own, TLS with
client certificates) through the edge gateway into the StorageService; a nurse
fetches the segments and decrypts them into FHIR Observations. Without
Mosquitto, one line says so and the devices hand readings to the edge in-process.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from abe_service.client import AbeKeyring
from edge.config import Device, EdgeConfig
from edge.gateway import Gateway, GrpcSegmentSink
from ehr_abe.records import fetch_request, open_items


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _reading(device_type: str, seq: int) -> bytes:
    body: dict[str, Any] = {"seq": seq, "t": int(time.time() * 1000)}
    if device_type == "ecg":
        body.update(fs=250, samples=[(seq * 25 + i) * 37 % 1200 - 600 for i in range(25)])
    elif device_type == "pulse-oximeter":
        body.update(spo2=96 + seq % 3, hr=70 + seq % 9)
    else:
        body.update(sys=118 + seq % 7, dia=76 + seq % 5, hr=71)
    return json.dumps(body).encode()


def run_iomt(
    console: Console,
    *,
    endpoint: str,
    public_params: bytes,
    work: Path,
    patient: str,
    reader: str,
    reader_key: AbeKeyring,
    storage: Any,
    reader_md: Any,
) -> None:
    from ehr_abe.infra.mqtt import mosquitto_binary

    work.mkdir(parents=True, exist_ok=True)
    (work / "public_params.bin").write_bytes(public_params)
    tag = secrets.token_hex(2)
    devices = {
        f"ecg-7-{tag}": Device("ecg", patient),
        f"spo2-3-{tag}": Device("pulse-oximeter", patient),
        f"bp-cuff-1-{tag}": Device("bp-cuff", patient),
    }
    cfg = EdgeConfig(
        spool_dir=work / "spool",
        public_params=work / "public_params.bin",
        devices=devices,
        storage_endpoint=endpoint,
        segment_max_age_s=0.5,
    )
    broker = None
    clients: dict[str, Any] = {}
    if mosquitto_binary() is None:
        console.print(
            "  Mosquitto is not installed (apt-get install mosquitto): the devices hand "
            "their readings to the edge in-process instead of over MQTT",
            highlight=False,
        )
    else:
        broker, clients = _start_mqtt(cfg, work, devices)
        console.print(
            f"  [green]✔[/] Mosquitto on {cfg.mqtt_host}:{cfg.mqtt_port}: TLS, client "
            "certificates, ACL `pattern write devices/%u/#`"
        )
    sink = GrpcSegmentSink(endpoint, subject=cfg.subject)
    gateway = Gateway(cfg, sink)
    try:
        gateway.start_workers()
        if broker is not None:
            gateway.connect_mqtt()
            time.sleep(0.5)
        seqs = dict.fromkeys(devices, 0)
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            for device_id, d in devices.items():
                if d.device_type != "ecg" and seqs[device_id] >= 3:
                    continue
                seqs[device_id] += 1
                payload = _reading(d.device_type, seqs[device_id])
                topic = f"devices/{device_id}/readings"
                if clients:
                    clients[device_id].publish(topic, payload, qos=1).wait_for_publish(5)
                else:
                    gateway.submit(0, 1, topic, payload)
            time.sleep(0.1)
        ox = next(d for d, x in devices.items() if x.device_type == "pulse-oximeter")
        bad = json.dumps({"seq": 999, "t": int(time.time() * 1000), "spo2": 140, "hr": 70})
        if clients:
            clients[ox].publish(f"devices/{ox}/readings", bad.encode(), qos=1).wait_for_publish(5)
            forged = clients[ox].publish(
                f"devices/{next(iter(devices))}/readings", _reading("ecg", 10_000), qos=1
            )
            forged.wait_for_publish(5)
            console.print(
                f"  [yellow]✘[/] {ox} publishes under the ECG's topic: the broker refuses it "
                "(MQTT v5 PUBACK reason 135, Not authorized)"
            )
        else:
            gateway.submit(0, 1, f"devices/{ox}/readings", bad.encode())
        total = sum(seqs.values())
        deadline = time.monotonic() + 30
        while gateway.stats.received < total + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        gateway.drain(30)
        s = gateway.stats
        console.print(
            f"  [green]✔[/] edge: {s.received} received, {s.accepted} accepted, refused "
            f"{dict(s.rejected) or 'none'}; {s.windows_opened} CP-ABE window keys for "
            f"{s.segments_sealed} AES-GCM segments, all durable in the StorageService",
            highlight=False,
        )
    finally:
        for c in clients.values():
            c.disconnect()
            c.loop_stop()
        gateway.stop()
        sink.close()
        if broker is not None:
            broker.down()
    from ehr_common.api.v1 import storage_pb2

    storage.FlushAnchors(storage_pb2.FlushAnchorsRequest(), metadata=reader_md, timeout=30)
    items = storage.FetchSegments(
        fetch_request(patient, None, None), metadata=reader_md, timeout=60
    )
    table = Table("device", "segments", "observations", "first observation")
    per: dict[str, list[Any]] = {}
    for seg in open_items(items, reader_key, patient):
        per.setdefault(seg.device_id, []).append(seg)
    for device_id, segs in per.items():
        first = segs[0].observations[0]
        code = first["code"]["coding"][0]
        table.add_row(
            device_id,
            str(len(segs)),
            str(sum(len(x.observations) for x in segs)),
            f"{code['code']} ({code['display'][:24]}): {_value(first)}",
        )
    console.print(
        f"  {reader} fetches {patient}'s device segments (verified, anchored) and decrypts:"
    )
    console.print(table)


def _value(obs: dict[str, Any]) -> str:
    if "valueQuantity" in obs:
        q = obs["valueQuantity"]
        return f"{q['value']} {q['unit']}"
    if "valueSampledData" in obs:
        n = len(obs["valueSampledData"]["data"].split())
        return f"{n} samples every {obs['valueSampledData']['period']} ms (µV)"
    parts = [c["valueQuantity"]["value"] for c in obs.get("component", [])]
    return "/".join(str(p) for p in parts) + " mmHg"


def _start_mqtt(
    cfg: EdgeConfig, work: Path, devices: dict[str, Device]
) -> tuple[Any, dict[str, Any]]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from ehr_abe.infra.config import InfraConfig
    from ehr_abe.infra.mqtt import MosquittoBroker, client_tls_context, issue_identity

    infra = InfraConfig(state_dir=work / "infra")
    infra.mqtt.port = _free_port()
    broker = MosquittoBroker(infra)
    broker.up()
    conn = broker.connection_file
    doc = json.loads(conn.read_text())
    cfg.mqtt_host, cfg.mqtt_port, cfg.mqtt_ca = doc["host"], int(doc["port"]), Path(doc["ca_cert"])
    cfg.subject = doc["edge_subject"]
    certs = work / "certs"
    certs.mkdir(exist_ok=True)
    cert, key = issue_identity(conn, cfg.subject, ["edge-gateway"])
    (certs / "edge.crt").write_bytes(cert)
    (certs / "edge.key").write_bytes(key)
    (certs / "edge.key").chmod(0o600)
    cfg.mqtt_cert, cfg.mqtt_key = certs / "edge.crt", certs / "edge.key"
    clients = {}
    for device_id in devices:
        c_pem, k_pem = issue_identity(conn, device_id, ["device"])
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
        client.tls_set_context(client_tls_context(cfg.mqtt_ca, c_pem, k_pem))
        client.connect(cfg.mqtt_host, cfg.mqtt_port)
        client.loop_start()
        clients[device_id] = client
    deadline = time.monotonic() + 10
    while not all(c.is_connected() for c in clients.values()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return broker, clients
