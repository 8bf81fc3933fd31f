"""IoMT ingestion benchmark, all in one run on MinIO + Fabric with TLS and QoS 1.

    uv run python bench/ingest_bench.py [--duration 60] [--ingest-seconds 20] [--puts 6000]
                                        [--sweep 100,300,600] [--plot] [--ops ingest,raw_mqtt,ward,put]

Needs `ehr-abe infra up minio fabric mqtt` (same EHR_ABE_* environment). One JSON
line per measurement, {"op", "per_s", "p50_ms", "p99_ms", ...}:

- ingest: devices publish single ~80-byte readings as fast as the broker takes
  them (QoS 1, TLS, client certificates) -> Mosquitto -> edge (own process) ->
  StorageService (own process, mutual TLS) on MinIO + Fabric. A reading counts
  when the batch holding its segment is anchored on the ledger; latency is
  publish -> anchored (the index's anchored_at; one clock, one machine).
- raw_mqtt: the same publishers; a Python paho subscriber (own process) that only counts.
  Every row with a stream of completions (raw_mqtt, ingest, ward) times per_s
  the same way: completions (received; anchored) after the first, over the span
  from the first completion to the last, so none counts process start-up,
  connecting or its pipeline's fill time. The ingest row also prints
  end_to_end_per_s: readings over first publish -> last anchor.
- ward: 1,000 devices, a tenth ECGs publishing 25-sample blocks 10x/s, the rest
  vitals 1x/s, for --duration seconds. "ward_cold" covers the whole run (every
  device opens its first window: one CP-ABE encapsulation each); "ward" the
  part after the warm-up. "sustained": everything anchored within 10 s of the
  end and the last third's p99 no worse than the middle third's (+1 s).
- put: PutRecord of 1 KiB records (client-side envelopes), 8 clients, mutual TLS.
- raw_minio_put: PUTs of the same size, 8 clients, the minio client, same bucket,
  in slices alternating with put's (part of --ops put), and their ratio.
Each row carries "cpu": seconds of CPU per process over its window (what bounds it).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import heapq
import json
import multiprocessing as mp
import os
import random
import resource
import secrets
import selectors
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PASS = "ingest bench passphrase"
OUT = Path(__file__).resolve().parent / "out"


def completion_rate(done: list[float]) -> float:
    """Completions per second between the first and the last completion: those at the
    first instant start the clock and are not counted (anchoring completes readings
    in batches; a batch at the start would otherwise count with no time spent)."""
    if len(done) < 2:
        return 0.0
    done = sorted(done)
    span = done[-1] - done[0]
    return (len(done) - bisect.bisect_right(done, done[0])) / span if span > 0 else 0.0


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


ROWS: list[dict[str, Any]] = []


def emit(**kv: Any) -> dict[str, Any]:
    print(json.dumps(kv), flush=True)
    ROWS.append(kv)
    return kv


def infra_dir() -> Path:
    from ehr_common.paths import state_dir

    return Path(os.environ.get("EHR_ABE_INFRA_DIR") or state_dir() / "infra")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise SystemExit(f"nothing listening on {port}")


# -- CPU accounting ---------------------------------------------------------------------------
class Cpu:
    """CPU seconds per process of interest over a window."""

    def __init__(self, pids: dict[str, int]):
        import psutil

        self.procs = {}
        for name, pid in pids.items():
            with contextlib.suppress(psutil.Error):
                self.procs[name] = psutil.Process(pid)
        self.start = self._now()

    def _now(self) -> dict[str, float]:
        out = {}
        for name, p in self.procs.items():
            try:
                t = p.cpu_times()
                out[name] = t.user + t.system
            except Exception:
                out[name] = 0.0
        return out

    def used(self) -> dict[str, float]:
        end = self._now()
        return {k: round(end[k] - self.start.get(k, 0.0), 2) for k in end}


def pids_by_marker() -> dict[str, int]:
    """The infrastructure's processes (MinIO, Fabric, Mosquitto) from `infra status`."""
    from ehr_abe.infra import manager
    from ehr_abe.infra.config import load_infra_config

    return {r.name: r.pid for r in manager.status(load_infra_config()) if r.pid}


# -- the system under test ----------------------------------------------------------------------
def _terminate(p: subprocess.Popen[bytes] | None) -> None:
    if p is not None and p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


class System:
    def __init__(
        self,
        work: Path,
        devices: dict[str, tuple[str, str]],
        ledger: str,
        age_s: float,
        anchor_age_s: float = 0.5,
    ):
        from abe_service.authority import KeyAuthority
        from ehr_abe.infra.mqtt import issue_identity, load_connection
        from ehr_common.certificates import mint_tls_server_cert

        self.work = work
        self.mqtt_conn = infra_dir() / "mqtt" / "connection.json"
        doc = load_connection(self.mqtt_conn)
        self.mqtt_host, self.mqtt_port = doc["host"], int(doc["port"])
        self.ca = Path(doc["ca_cert"])
        self.edge_subject = doc["edge_subject"]
        home = work / "home"
        KeyAuthority.setup(home / "authority", passphrase=PASS.encode())
        self.public_params = home / "authority" / "public_params.bin"
        ca_pem, ca_key = self.ca.read_bytes(), Path(doc["ca_key"]).read_bytes()
        cert, key = mint_tls_server_cert(ca_pem, ca_key, "localhost", ["127.0.0.1", "localhost"])
        tls = work / "tls"
        tls.mkdir()
        (tls / "server.crt").write_bytes(cert)
        (tls / "server.key").write_bytes(key)
        self.devices = devices
        for subject, roles in (
            (self.edge_subject, ["edge-gateway"]),
            ("bench-writer", ["device"]),
            ("bench-nurse", ["nurse"]),  # assigns the devices to their patients
        ):
            c, k = issue_identity(self.mqtt_conn, subject, roles)
            (tls / f"{subject}.crt").write_bytes(c)
            (tls / f"{subject}.key").write_bytes(k)
        self.tls = tls
        self.port = free_port()
        self.home = home
        minio = infra_dir() / "minio" / "connection.json"
        fabric = infra_dir() / "fabric" / "connection.json"
        (work / "server.toml").write_text(
            f'home = "{home}"\n[server]\nlisten = "127.0.0.1:{self.port}"\n'
            f'tls_cert = "{tls / "server.crt"}"\ntls_key = "{tls / "server.key"}"\n'
            f'client_ca = "{self.ca}"\n[storage]\nobject_store = "minio"\n'
            f'minio_connection = "{minio}"\nledger = "{ledger}"\n'
            f'fabric_connection = "{fabric}"\nbatch_max_age_s = {anchor_age_s}\nbatch_max_records = 5000\n'
        )
        lines = [
            "[edge]",
            f'spool_dir = "{work / "spool"}"',
            f'public_params = "{self.public_params}"',
            f'subject = "{self.edge_subject}"',
            f"segment_max_age_s = {age_s}",
            "segment_max_readings = 2000",
            "[mqtt]",
            f'host = "{self.mqtt_host}"',
            f"port = {self.mqtt_port}",
            f'ca = "{self.ca}"',
            f'cert = "{tls / (self.edge_subject + ".crt")}"',
            f'key = "{tls / (self.edge_subject + ".key")}"',
            "[storage]",
            f'endpoint = "localhost:{self.port}"',
            f'ca = "{self.ca}"',
            f'cert = "{tls / (self.edge_subject + ".crt")}"',
            f'key = "{tls / (self.edge_subject + ".key")}"',
        ]
        for device_id, (dtype, patient) in devices.items():
            lines += [f'[devices."{device_id}"]', f'type = "{dtype}"', f'patient = "{patient}"']
        (work / "edge.toml").write_text("\n".join(lines) + "\n")
        self.server: subprocess.Popen[bytes] | None = None
        self.edge: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ, EHR_ABE_MASTER_PASSPHRASE=PASS)
        log = open(self.work / "server.log", "ab")  # noqa: SIM115
        self.server = subprocess.Popen(
            [sys.executable, "-m", "ehr_abe", "serve", "-c", str(self.work / "server.toml")],
            stdout=log,
            stderr=log,
            env=env,
        )
        wait_port(self.port)
        # the storage service takes a device's readings only while it is assigned
        self.assign({d: patient for d, (_, patient) in self.devices.items()})

    def assign(self, device_patients: dict[str, str]) -> None:
        """A nurse assigns devices to patients (before anything is timed)."""
        import grpc
        from google.protobuf.timestamp_pb2 import Timestamp

        from ehr_common.api.v1 import storage_pb2, storage_pb2_grpc

        until = Timestamp()
        until.FromDatetime(datetime.now(UTC) + timedelta(days=1))
        creds = grpc.ssl_channel_credentials(
            self.ca.read_bytes(),
            (self.tls / "bench-nurse.key").read_bytes(),
            (self.tls / "bench-nurse.crt").read_bytes(),
        )
        with grpc.secure_channel(f"localhost:{self.port}", creds) as ch:
            stub = storage_pb2_grpc.StorageServiceStub(ch)

            def one(item: tuple[str, str]) -> None:
                stub.AssignDevice(
                    storage_pb2.AssignDeviceRequest(
                        patient_id=item[1], device_id=item[0], expires_at=until
                    ),
                    timeout=120,
                )

            # one ledger transaction each: concurrent, so Fabric batches them in blocks
            with ThreadPoolExecutor(32) as pool:
                list(pool.map(one, device_patients.items()))

    def start_edge(self) -> None:
        log = open(self.work / "edge.log", "ab")  # noqa: SIM115
        self.edge = subprocess.Popen(
            [sys.executable, "-m", "ehr_abe", "edge", "-c", str(self.work / "edge.toml")],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 60
        while not (self.work / "spool" / "stats.json").exists():
            if time.monotonic() > deadline or self.edge.poll() is not None:
                raise SystemExit(f"the edge did not start; see {self.work / 'edge.log'}")
            time.sleep(0.1)
        # The edge opens every configured device's first window before it subscribes and
        # sends their window records ahead (2 000 devices: a few seconds). Nothing is
        # timed until they are stored, so no row counts the edge's cold start.
        t0 = time.monotonic()
        ready = False
        while not ready and time.monotonic() < t0 + 120:
            with contextlib.suppress(OSError, ValueError):
                stats = json.loads((self.work / "spool" / "stats.json").read_text())
                ready = stats.get("outbox_items") == 0 and bool(stats.get("storage_up"))
            if not ready:
                time.sleep(0.2)
        state = "ready" if ready else "NOT ready (windows still unsent)"
        print(f"# edge {state} {time.monotonic() - t0:.1f} s after start", file=sys.stderr)

    def stop_edge(self) -> None:
        _terminate(self.edge)

    def stop(self) -> None:
        _terminate(self.edge)
        _terminate(self.server)

    def pids(self) -> dict[str, int]:
        out = pids_by_marker()
        if self.server is not None:
            out["storage_service"] = self.server.pid
        if self.edge is not None and self.edge.poll() is None:
            out["edge"] = self.edge.pid
        return out

    def anchored(self, devices: set[str]) -> dict[str, list[tuple[int, int, float]]]:
        """device -> sorted (first seq, last seq, anchored at) of its anchored segments."""
        db = sqlite3.connect(f"file:{self.home / 'storage' / 'index.sqlite'}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT s.device_id, s.first_seq, s.last_seq, b.anchored_at FROM segments s "
                "JOIN records r ON r.record_id = s.record_id "
                "JOIN batches b ON b.batch_id = r.batch_id WHERE b.anchored_at IS NOT NULL"
            ).fetchall()
        finally:
            db.close()
        out: dict[str, list[tuple[int, int, float]]] = {}
        for qualified, first, last, at in rows:
            # the service stores devices as <MSP>/<id> (the edge's organisation)
            device = qualified.rpartition("/")[2]
            if device in devices:
                out.setdefault(device, []).append(
                    (int(first), int(last), datetime.fromisoformat(at).timestamp())
                )
        for v in out.values():
            v.sort()
        return out


def latencies(
    published: dict[str, list[float]], anchored: dict[str, list[tuple[int, int, float]]]
) -> tuple[list[tuple[float, float]], int]:
    """[(publish time, latency s)] of anchored readings, and how many are not anchored.
    published: device -> publish times of seq 1, 2, ..."""
    out: list[tuple[float, float]] = []
    missing = 0
    for device, times in published.items():
        segs = anchored.get(device, [])
        firsts = [s[0] for s in segs]
        for i, t in enumerate(times):
            seq = i + 1
            j = bisect.bisect_right(firsts, seq) - 1
            if j >= 0 and segs[j][0] <= seq <= segs[j][1]:
                out.append((t, segs[j][2] - t))
            else:
                missing += 1
    return out, missing


# -- MQTT clients (in their own processes) -----------------------------------------------------
def _client(
    tls_dir: Path, ca: Path, subject: str, client_id: str, cert: tuple[bytes, bytes] | None = None
) -> Any:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from ehr_abe.infra.mqtt import client_tls_context

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    if cert is None:
        cert = (
            (tls_dir / f"{subject}.crt").read_bytes(),
            (tls_dir / f"{subject}.key").read_bytes(),
        )
    c.tls_set_context(client_tls_context(ca, *cert))
    return c


def _payload(dtype: str, seq: int, t_ms: int) -> bytes:
    if dtype == "heart-rate":
        return b'{"seq":%d,"t":%d,"type":"heart-rate","hr":%d}' % (seq, t_ms, 60 + seq % 40)
    if dtype == "ecg":
        samples = ",".join(str((seq * 7 + i * 37) % 900 - 450) for i in range(25))
        return b'{"seq":%d,"t":%d,"fs":250,"samples":[%s]}' % (seq, t_ms, samples.encode())
    if dtype == "pulse-oximeter":
        return b'{"seq":%d,"t":%d,"spo2":%d,"hr":%d}' % (seq, t_ms, 94 + seq % 6, 60 + seq % 40)
    if dtype == "bp-cuff":
        return b'{"seq":%d,"t":%d,"sys":%d,"dia":%d,"hr":70}' % (
            seq,
            t_ms,
            110 + seq % 20,
            70 + seq % 10,
        )
    return b'{"seq":%d,"t":%d,"temp_c":36.8}' % (seq, t_ms)


def flood_publisher(spec: dict[str, Any]) -> None:
    """Publish as fast as the broker acknowledges, QoS 1, for spec['seconds']."""
    import paho.mqtt.client as mqtt

    tls_dir, ca = Path(spec["tls"]), Path(spec["ca"])
    clients = {}
    for device_id, (cert, key) in spec["certs"].items():
        c = _client(tls_dir, ca, device_id, f"pub-{device_id}", (cert.encode(), key.encode()))
        c.max_inflight_messages_set(100)
        c.connect(spec["host"], spec["port"], keepalive=60)
        c.loop_start()
        clients[device_id] = c
    for c in clients.values():
        while not c.is_connected():
            time.sleep(0.01)
    times: dict[str, list[float]] = {d: [] for d in clients}
    topic = spec["topic"]
    outstanding: deque[Any] = deque()
    end = time.time() + spec["seconds"]
    seq = 0
    while time.time() < end:
        seq += 1
        for device_id, c in clients.items():
            t = time.time()
            info = c.publish(
                topic.format(device=device_id), _payload("heart-rate", seq, int(t * 1000)), qos=1
            )
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise SystemExit(f"publish failed: {info.rc}")
            times[device_id].append(t)
            outstanding.append(info)
        while len(outstanding) > 400:
            outstanding.popleft().wait_for_publish(30)
    while outstanding:
        outstanding.popleft().wait_for_publish(30)
    for c in clients.values():
        c.disconnect()
        c.loop_stop()
    Path(spec["out"]).write_text(json.dumps(times))


def ward_publisher(spec: dict[str, Any]) -> None:
    """Many devices on one thread: paho clients driven by one selector loop."""
    tls_dir, ca = Path(spec["tls"]), Path(spec["ca"])
    sel = selectors.DefaultSelector()
    clients: dict[str, Any] = {}
    for device_id, (cert, key) in spec["certs"].items():
        c = _client(tls_dir, ca, device_id, f"pub-{device_id}", (cert.encode(), key.encode()))
        c.max_inflight_messages_set(200)
        c.connect(spec["host"], spec["port"], keepalive=60)
        clients[device_id] = c
        sel.register(c.socket(), selectors.EVENT_READ, c)

    def pump(timeout: float) -> None:
        for key, _ in sel.select(timeout):
            key.data.loop_read()

    deadline = time.monotonic() + 60
    while not all(c.is_connected() for c in clients.values()):
        pump(0.05)
        if time.monotonic() > deadline:
            raise SystemExit("ward devices did not all connect")
    types: dict[str, str] = spec["types"]
    period = {"ecg": 0.1}
    start = time.monotonic() + 0.5
    heap = [(start + random.random() * period.get(types[d], 1.0), d) for d in clients]
    heapq.heapify(heap)
    seqs = dict.fromkeys(clients, 0)
    times: dict[str, list[float]] = {d: [] for d in clients}
    end = start + spec["seconds"]
    last_misc = time.monotonic()
    late = 0
    while heap and heap[0][0] < end:
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            due, d = heapq.heappop(heap)
            if now - due > 1.0:
                late += 1
            seqs[d] += 1
            t = time.time()
            clients[d].publish(
                f"devices/{d}/readings", _payload(types[d], seqs[d], int(t * 1000)), qos=1
            )
            times[d].append(t)
            heapq.heappush(heap, (due + period.get(types[d], 1.0), d))
        if now - last_misc > 1.0:
            for c in clients.values():
                c.loop_misc()
                c.loop_write()
            last_misc = now
        pump(max(0.0, min(0.01, heap[0][0] - time.monotonic())) if heap else 0.01)
    drain_until = time.monotonic() + 10
    while time.monotonic() < drain_until and any(c._out_messages for c in clients.values()):
        pump(0.05)
        for c in clients.values():
            c.loop_write()
    for c in clients.values():
        with contextlib.suppress(Exception):
            c.disconnect()
    Path(spec["out"]).write_text(json.dumps({"times": times, "late": late}))


def raw_subscriber(spec: dict[str, Any]) -> None:
    """Counts messages (QoS 1, TLS): the baseline a subscriber that does nothing gets."""
    c = _client(Path(spec["tls"]), Path(spec["ca"]), spec["subject"], "raw-counter")
    lat: list[float] = []
    received_at: list[float] = []
    done = threading.Event()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        now = time.time()
        t = int(msg.payload.split(b'"t":', 1)[1].split(b",", 1)[0]) / 1000
        lat.append(now - t)
        received_at.append(now)
        if len(lat) >= spec["expect"]:
            done.set()

    c.on_message = on_message
    c.on_connect = lambda cl, *_a: cl.subscribe(spec["topic"], qos=1)
    c.connect(spec["host"], spec["port"], keepalive=60)
    c.loop_start()
    Path(spec["ready"]).write_text("1")
    done.wait(spec["timeout"])
    c.disconnect()
    c.loop_stop()
    Path(spec["out"]).write_text(json.dumps({"lat": lat, "received_at": received_at}))


# -- the measurements ----------------------------------------------------------------------------
def device_certs(system: System, device_ids: list[str]) -> dict[str, tuple[str, str]]:
    from ehr_abe.infra.mqtt import issue_identity

    out = {}
    for d in device_ids:
        c, k = issue_identity(system.mqtt_conn, d, ["device"])
        out[d] = (c.decode(), k.decode())
    return out


def run_proc(target: Any, spec: dict[str, Any]) -> Any:
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=target, args=(spec,))
    p.start()
    return p


def measure_ingest(system: System, devs: list[str], seconds: float, work: Path) -> None:
    spec = {
        "tls": str(system.tls),
        "ca": str(system.ca),
        "host": system.mqtt_host,
        "port": system.mqtt_port,
        "certs": device_certs(system, devs),
        "seconds": seconds,
        "topic": "devices/{device}/readings",
        "out": str(work / "ingest.json"),
    }
    cpu = Cpu(system.pids())
    p = run_proc(flood_publisher, spec)
    p.join()
    published: dict[str, list[float]] = json.loads((work / "ingest.json").read_text())
    total = sum(len(v) for v in published.values())
    lat, missing = _wait_anchored(system, published, timeout=120)
    used = cpu.used()
    first_pub = min(v[0] for v in published.values() if v)
    last_pub = max(v[-1] for v in published.values() if v)
    anchored_at = [t + d for t, d in lat]
    emit(
        op="ingest",
        per_s=round(completion_rate(anchored_at), 1),
        p50_ms=round(pct([d for _, d in lat], 50) * 1000, 1),
        p99_ms=round(pct([d for _, d in lat], 99) * 1000, 1),
        readings=total,
        not_anchored=missing,
        devices=len(devs),
        end_to_end_per_s=round(len(lat) / (max(anchored_at, default=first_pub) - first_pub), 1)
        if lat
        else 0.0,
        publish_per_s=round(total / (last_pub - first_pub), 1),
        payload="heart-rate ~70 B JSON",
        cpu=used,
    )


def measure_raw(system: System, devs: list[str], seconds: float, work: Path) -> None:
    certs = device_certs(system, devs)
    sub = run_proc(
        raw_subscriber,
        {
            "tls": str(system.tls),
            "ca": str(system.ca),
            "host": system.mqtt_host,
            "port": system.mqtt_port,
            "subject": system.edge_subject,
            "topic": "devices/+/raw",
            "expect": 10**9,
            "timeout": seconds + 8,
            "ready": str(work / "raw.ready"),
            "out": str(work / "raw-sub.json"),
        },
    )
    while not (work / "raw.ready").exists():
        time.sleep(0.05)
    time.sleep(1.0)
    cpu = Cpu({**pids_by_marker(), "subscriber": sub.pid})
    pub = run_proc(
        flood_publisher,
        {
            "tls": str(system.tls),
            "ca": str(system.ca),
            "host": system.mqtt_host,
            "port": system.mqtt_port,
            "certs": certs,
            "seconds": seconds,
            "topic": "devices/{device}/raw",
            "out": str(work / "raw-pub.json"),
        },
    )
    pub.join()
    used = cpu.used()  # before the subscriber exits: its CPU is read from /proc
    sub.join()
    got = json.loads((work / "raw-sub.json").read_text())
    published = sum(len(v) for v in json.loads((work / "raw-pub.json").read_text()).values())
    lat = got["lat"]
    emit(
        op="raw_mqtt",
        per_s=round(completion_rate(got["received_at"]), 1),
        p50_ms=round(pct(lat, 50) * 1000, 1),
        p99_ms=round(pct(lat, 99) * 1000, 1),
        received=len(lat),
        published=published,
        devices=len(devs),
        cpu=used,
    )


def _wait_anchored(
    system: System, published: dict[str, list[float]], timeout: float
) -> tuple[list[tuple[float, float]], int]:
    deadline = time.monotonic() + timeout
    devices = set(published)
    while True:
        lat, missing = latencies(published, system.anchored(devices))
        if missing == 0 or time.monotonic() > deadline:
            return lat, missing
        time.sleep(0.5)


def measure_ward(
    system: System, ward: dict[str, str], seconds: float, work: Path, tag: str
) -> None:
    spec = {
        "tls": str(system.tls),
        "ca": str(system.ca),
        "host": system.mqtt_host,
        "port": system.mqtt_port,
        "certs": device_certs(system, list(ward)),
        "seconds": seconds,
        "types": ward,
        "out": str(work / f"ward-{len(ward)}.json"),
    }
    cpu = Cpu(system.pids())
    p = run_proc(ward_publisher, spec)
    p.join()
    got = json.loads((work / f"ward-{len(ward)}.json").read_text())
    published: dict[str, list[float]] = got["times"]
    total = sum(len(v) for v in published.values())
    ended = max(max(v) for v in published.values() if v)
    lat, missing = _wait_anchored(system, published, timeout=60)
    used = cpu.used()
    first = min(min(v) for v in published.values() if v)
    warm = first + min(10.0, seconds / 3)
    thirds = [first + (ended - first) * k / 3 for k in (1, 2)]
    warm_lat = [d for t, d in lat if t >= warm]
    mid = [d for t, d in lat if thirds[0] <= t < thirds[1]]
    last3 = [d for t, d in lat if t >= thirds[1]]
    tail = max((t + d for t, d in lat), default=ended) - ended
    sustained = missing == 0 and tail < 10 and pct(last3, 99) <= pct(mid, 99) + 1.0
    common = {
        "devices": len(ward),
        "readings": total,
        "not_anchored": missing,
        "late_publishes": got["late"],
        "offered_per_s": round(total / (ended - first), 1),
        "sustained": sustained,
        "cpu": used,
        "samples_per_s": round(
            sum(len(v) for d, v in published.items() if ward[d] == "ecg") * 25 / (ended - first), 1
        ),
    }
    # per_s: readings anchored per second, timed like ingest and raw_mqtt (first to
    # last completion); the warm row counts the readings published after the warm-up
    emit(
        op=f"ward{tag}_cold",
        per_s=round(completion_rate([t + d for t, d in lat]), 1),
        p50_ms=round(pct([d for _, d in lat], 50) * 1000, 1),
        p99_ms=round(pct([d for _, d in lat], 99) * 1000, 1),
        **common,
    )
    emit(
        op=f"ward{tag}",
        per_s=round(completion_rate([t + d for t, d in lat if t >= warm]), 1),
        p50_ms=round(pct(warm_lat, 50) * 1000, 1),
        p99_ms=round(pct(warm_lat, 99) * 1000, 1),
        warmup_s=round(warm - first, 1),
        **common,
    )


def measure_put(system: System, n: int, workers: int, rounds: int = 6) -> None:
    """put and raw_minio_put side by side: `rounds` alternating slices of n/rounds
    calls each (8 clients), so both see the same machine load; per_s is calls over
    the time spent inside their own slices."""
    import io

    import grpc
    from minio import Minio

    from abe_service.envelope import AbeEncryptor
    from ehr_common.api.v1 import storage_pb2, storage_pb2_grpc
    from storage_service.records import record_context

    enc = AbeEncryptor.from_public_params(system.public_params.read_bytes())
    patient = f"p-put-{secrets.token_hex(3)}"
    system.assign({"bench-writer": patient})
    # envelopes are bound to the organisation-qualified patient id
    context = record_context(f"Hosp1MSP/{patient}")
    envelopes = [
        enc.encrypt("role:doctor or patient:" + patient, os.urandom(1024), context)
        for _ in range(n + 50)
    ]
    size = len(envelopes[0])
    creds = grpc.ssl_channel_credentials(
        system.ca.read_bytes(),
        (system.tls / "bench-writer.key").read_bytes(),
        (system.tls / "bench-writer.crt").read_bytes(),
    )
    channels = [grpc.secure_channel(f"localhost:{system.port}", creds) for _ in range(workers)]
    stubs = [storage_pb2_grpc.StorageServiceStub(c) for c in channels]
    stubs[0].FlushAnchors(storage_pb2.FlushAnchorsRequest(), timeout=60)  # warm

    def put(i: int) -> float:
        t = time.perf_counter()
        stubs[i % workers].PutRecord(
            storage_pb2.PutRecordRequest(
                patient_id=patient, record_type="vitals", envelope=envelopes[i]
            ),
            timeout=60,
        )
        return time.perf_counter() - t

    conn = json.loads((infra_dir() / "minio" / "connection.json").read_text())
    mcreds = json.loads(Path(conn["credentials_file"]).read_text())
    client = Minio(
        conn["endpoint"],
        access_key=mcreds["access_key"],
        secret_key=mcreds["secret_key"],
        secure=False,
    )
    prefix = f"bench/raw-{secrets.token_hex(4)}/"
    data = os.urandom(size)

    def raw(i: int) -> float:
        t = time.perf_counter()
        client.put_object(conn["bucket"], f"{prefix}{i}", io.BytesIO(data), size)
        return time.perf_counter() - t

    ops = {"put": (put, system.pids()), "raw_minio_put": (raw, pids_by_marker())}
    lat: dict[str, list[float]] = {k: [] for k in ops}
    took = dict.fromkeys(ops, 0.0)
    cpu: dict[str, dict[str, float]] = {k: {} for k in ops}
    for fn, _ in ops.values():  # warm: connections, first commits
        for i in range(50):
            fn(i)
    per_round = max(1, n // rounds)
    with ThreadPoolExecutor(workers) as pool:
        for r in range(rounds):
            ids = range(50 + r * per_round, 50 + (r + 1) * per_round)
            order = list(ops) if r % 2 == 0 else list(reversed(ops))
            for name in order:
                fn, pids = ops[name]
                meter = Cpu(pids)
                t0 = time.perf_counter()
                lat[name] += pool.map(fn, ids)
                took[name] += time.perf_counter() - t0
                for proc, sec in meter.used().items():
                    cpu[name][proc] = round(cpu[name].get(proc, 0.0) + sec, 2)
    for name in ops:
        emit(
            op=name,
            per_s=round(len(lat[name]) / took[name], 1),
            calls=len(lat[name]),
            seconds=round(took[name], 2),
            p50_ms=round(pct(lat[name], 50) * 1000, 1),
            p99_ms=round(pct(lat[name], 99) * 1000, 1),
            clients=workers,
            record_bytes=size,
            rounds=rounds,
            cpu=cpu[name],
        )
    ratio = (len(lat["put"]) / took["put"]) / (len(lat["raw_minio_put"]) / took["raw_minio_put"])
    emit(op="put_ratio", ratio=round(ratio, 2), note="put per_s / raw_minio_put per_s, same run")
    for c in channels:
        c.close()


def ward_devices(n: int, tag: str) -> dict[str, str]:
    kinds = ["pulse-oximeter", "bp-cuff", "thermometer"]
    return {f"w{tag}-{i:04d}": ("ecg" if i % 10 == 0 else kinds[i % 3]) for i in range(n)}


def plot(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ward = sorted(
        (r for r in rows if r["op"].startswith("ward") and not r["op"].endswith("_cold")),
        key=lambda r: r["devices"],
    )
    if not ward:
        return
    OUT.mkdir(exist_ok=True)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    xs = [r["devices"] for r in ward]
    a.plot(xs, [r["per_s"] for r in ward], "o-", label="anchored readings/s")
    a.plot(xs, [r["offered_per_s"] for r in ward], "x--", label="offered readings/s")
    a.set_xlabel("devices")
    a.set_ylabel("readings/s")
    a.legend()
    b.plot(xs, [r["p50_ms"] / 1000 for r in ward], "o-", label="p50")
    b.plot(xs, [r["p99_ms"] / 1000 for r in ward], "o-", label="p99")
    b.axhline(5, color="red", linestyle=":", label="5 s target")
    b.set_xlabel("devices")
    b.set_ylabel("publish -> anchored (s)")
    b.legend()
    fig.suptitle(
        "IoMT ward mix (10% ECG 10/s, 90% vitals 1/s): MQTT TLS QoS 1 -> edge -> MinIO + Fabric"
    )
    fig.tight_layout()
    fig.savefig(OUT / "ingest_devices.png", dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=float, default=60.0, help="ward run, seconds")
    ap.add_argument("--ingest-seconds", type=float, default=20.0)
    ap.add_argument("--ingest-devices", type=int, default=4)
    ap.add_argument("--ward-devices", type=int, default=1000)
    ap.add_argument("--sweep", default="", help="extra ward sizes for --plot, e.g. 100,300")
    ap.add_argument("--sweep-duration", type=float, default=20.0)
    ap.add_argument("--puts", type=int, default=6000)
    ap.add_argument("--segment-age", type=float, default=1.5)
    ap.add_argument("--anchor-age", type=float, default=0.1, help="storage batch_max_age_s")
    ap.add_argument("--ledger", choices=["fabric", "embedded"], default="fabric")
    ap.add_argument("--ops", default="ingest,raw_mqtt,ward,put")
    ap.add_argument("--plot", action="store_true")
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    for need in ["minio", "mqtt"] + (["fabric"] if args.ledger == "fabric" else []):
        if not (infra_dir() / need / "connection.json").exists():
            raise SystemExit(f"{need} is not up: run `ehr-abe infra up minio fabric mqtt`")
    ops = set(args.ops.split(","))
    run = secrets.token_hex(3)
    ingest = [f"hr{run}-{i}" for i in range(args.ingest_devices)]
    sizes = sorted(
        {int(s) for s in args.sweep.split(",") if s}
        | ({args.ward_devices} if "ward" in ops else set())
    )
    wards = {n: ward_devices(n, f"{run}{n}") for n in sizes}
    devices = {d: ("heart-rate", f"p-{d}") for d in ingest}
    for ward in wards.values():
        devices.update({d: (t, f"p-{d}") for d, t in ward.items()})
    work = Path(tempfile.mkdtemp(prefix="ehr-ingest-bench-"))
    system = System(work, devices, args.ledger, args.segment_age, args.anchor_age)
    try:
        system.start()
        if "raw_mqtt" in ops:
            measure_raw(system, ingest, args.ingest_seconds, work)
        system.start_edge()
        if "ingest" in ops:
            measure_ingest(system, ingest, args.ingest_seconds, work)
        for n in sizes:
            measure_ward(
                system,
                wards[n],
                args.duration if n == args.ward_devices else args.sweep_duration,
                work,
                "" if n == args.ward_devices else f"_{n}",
            )
        if "put" in ops:
            # the edge keeps the ward's devices' windows open: not put's work
            system.stop_edge()
            measure_put(system, args.puts, 8)
    finally:
        system.stop()
    if args.plot:
        plot(ROWS)
    print(f"# work dir {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
