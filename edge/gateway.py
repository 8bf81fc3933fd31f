"""The edge gateway: MQTT in, durable spool, sealed segments out.

Three threads:
- paho's network loop hands each PUBLISH (QoS 1, manual acknowledgement) to
- the *writer*, which validates readings (schema, bounds, sequence), turns
  them into validated FHIR Observations, commits a batch to the spool in one
  transaction, and only then acknowledges the batch to the broker, in order.
  It also closes segments (by count, bytes or age) and seals them: a new
  stream window (one CP-ABE encapsulation) per device per `window_s`, AES-GCM
  per segment;
- the *sender*, which streams the spool's outbox to the StorageService in
  order (WriteSegments) and deletes an item only once the service answered
  that it is durable. While the service is unreachable it retries with backoff
  and the spool fills; when the spool is full the writer stops acknowledging,
  so the broker queues for the edge's persistent session (bounded there too),
  and the edge says so (log line, `stats.json`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import secrets
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from abe_service.envelope import AbeEncryptor
from abe_service.segments import SegmentHeader, new_window_key, seal_segment, window_context
from edge.config import Device, EdgeConfig
from edge.fhir import ObservationValidator, reading_belongs, to_ndjson
from edge.readings import Reason, Rejected, check_sequence, parse_reading
from edge.spool import OutboxItem, Spool, SpooledReading
from ehr_common.errors import (
    Aborted,
    ConfigError,
    DeadlineExceeded,
    EhrAbeError,
    InvalidArgument,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger(__name__)

TOPIC_ROOT = "devices"
SUBSCRIPTION = f"{TOPIC_ROOT}/+/readings"
WRITER_BATCH = 2000


class SegmentSink(Protocol):
    def write(self, items: list[OutboxItem]) -> list[bool]:
        """Store the items durably in order; duplicate flags. Unavailable or
        DeadlineExceeded when it may work later; another EhrAbeError for good."""
        ...


@dataclass
class _Open:
    """A device's readings accepted but not yet sealed (also in the spool)."""

    readings: list[SpooledReading] = field(default_factory=list)
    size: int = 0
    since: float = 0.0  # monotonic time of the first


@dataclass
class _Window:
    window_id: str
    key: bytes = field(repr=False)  # secret
    policy: str
    opened: float
    envelope: bytes = field(default=b"", repr=False)
    patient_id: str = ""  # bound into the envelope's context
    sent: bool = False  # its window item is already in the outbox


@dataclass
class Stats:
    received: int = 0
    accepted: int = 0
    acked: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    windows_opened: int = 0
    segments_sealed: int = 0
    delivered_segments: int = 0
    delivered_readings: int = 0
    duplicate_segments: int = 0
    storage_errors: int = 0
    dead_items: int = 0
    orphaned_readings: int = 0
    storage_up: bool = True
    spool_full: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__, rejected=dict(self.rejected))


def _retryable(exc: EhrAbeError) -> bool:
    """Errors that say nothing against the items sent: the service or the network is
    down or overloaded, the call was cancelled (a server restart), an internal error,
    or this edge's credentials. Retried with backoff (the spool fills and alerts),
    never buried: burying is for a refusal of the item itself."""
    return type(exc) is EhrAbeError or isinstance(
        exc, Unavailable | DeadlineExceeded | Unauthenticated | Aborted | ResourceExhausted
    )


class Gateway:
    def __init__(
        self,
        cfg: EdgeConfig,
        sink: SegmentSink,
        *,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ):
        cfg.check()
        self.cfg = cfg
        self.sink = sink
        self.clock_ms = clock_ms
        self.spool = Spool(cfg.spool_dir / "spool.sqlite", cfg.spool_max_mb * 1024 * 1024)
        self.stats = Stats()
        try:
            params = cfg.public_params.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read public parameters {cfg.public_params}: {exc.strerror}"
            ) from None
        self.encryptor = AbeEncryptor.from_public_params(params)
        self.validator = ObservationValidator(cfg.fhir_validation)
        self._inbox: queue.SimpleQueue[tuple[int, int, str, bytes] | None] = queue.SimpleQueue()
        self._submitted = 0
        self._handled = 0  # messages the writer finished with (spooled and acknowledged)
        self._last = self.spool.last_seqs()
        self._open: dict[str, _Open] = {}
        #: (since, device) of each open segment in the order they opened (since only
        #: grows), so the writer finds segments due by age without scanning every
        #: device; an entry whose segment has since been sealed is skipped lazily
        self._ages: deque[tuple[float, str]] = deque()
        #: devices given readings since the last _seal_due (count and size triggers)
        self._touched: set[str] = set()
        self._windows: dict[str, _Window] = {}
        #: windows opened ahead by the window keeper (device -> next window), so the
        #: writer never pays a CP-ABE encapsulation on the reading path
        self._ready: dict[str, _Window] = {}
        self._ready_lock = threading.Lock()
        for r in self.spool.pending_readings():  # accepted before a restart, not yet sealed
            device = cfg.devices.get(r.device_id)
            if device is None or not reading_belongs(r.body, device.device_type, device.patient_id):
                # The configuration changed under spooled readings (device removed, or now
                # another patient's or type): sealing them now would file them under the
                # wrong patient or policy, or crash. They stay in the spool for an operator.
                self.stats.orphaned_readings += 1
                continue
            o = self._open.get(r.device_id) or self._open_segment(r.device_id, time.monotonic())
            o.readings.append(r)
            o.size += len(r.body)
            self._touched.add(r.device_id)  # may already be full by count or size
        if self.stats.orphaned_readings:
            log.error(
                "ALERT: %d spooled readings belong to devices no longer configured as they "
                "were (removed, or another patient or type): kept in the spool, not sent",
                self.stats.orphaned_readings,
            )
        self._stop = threading.Event()
        self._outbox_ready = threading.Event()
        self._threads: list[threading.Thread] = []
        self._client: Any = None
        self.ack: Callable[[int, int], None] = lambda mid, qos: None
        #: set when the writer or sender met an error it cannot go on from (a spool
        #: that cannot be written): the edge stops taking messages; the CLI exits
        self.fatal = ""

    # -- lifecycle -------------------------------------------------------------
    def _guarded(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception as exc:  # nothing unacknowledged is lost: the broker keeps it
                log.critical("edge %s stopped: %s", target.__name__, exc)
                self.fatal = f"{target.__name__}: {exc}"
                self._stop.set()
                if self._client is not None:
                    with contextlib.suppress(Exception):
                        self._client.disconnect()

        return run

    def start_workers(self) -> None:
        for target, name in ((self._writer, "edge-writer"), (self._sender, "edge-sender")):
            t = threading.Thread(target=self._guarded(target), name=name, daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._stats_loop, name="edge-stats", daemon=True)
        t.start()
        self._threads.append(t)

    def connect_mqtt(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from ehr_abe.infra.mqtt import client_tls_context

        c = self.cfg
        if not (c.mqtt_ca and c.mqtt_cert and c.mqtt_key):
            raise InvalidArgument("the edge needs the broker's CA and its own certificate and key")
        # MQTT 3.1.1 for the subscriber: a persistent session (clean_session off,
        # fixed client id) is all it needs, and paho builds no properties object per
        # message (~30% less CPU than v5). Devices use v5 to see refusals.
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=c.subject,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        client.tls_set_context(
            client_tls_context(c.mqtt_ca, c.mqtt_cert.read_bytes(), c.mqtt_key.read_bytes())
        )
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(1, 5)

        def on_connect(cl: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
            if rc == 0:
                cl.subscribe(SUBSCRIPTION, qos=1)
                log.info("edge connected to MQTT %s:%d", c.mqtt_host, c.mqtt_port)
            else:
                log.error("MQTT connection refused: %s", rc)

        def on_message(_cl: Any, _u: Any, msg: Any) -> None:
            self.submit(msg.mid, msg.qos, msg.topic, msg.payload)

        client.on_connect = on_connect
        client.on_message = on_message

        def ack(mid: int, qos: int) -> None:
            client.ack(mid, qos)

        self.ack = ack
        client.connect(c.mqtt_host, c.mqtt_port, keepalive=30)
        client.loop_start()
        self._client = client

    def start(self) -> None:
        t0 = time.monotonic()
        n = self.open_windows_ahead()  # every configured device, before the first reading
        log.info("opened %d stream windows ahead in %.1f s", n, time.monotonic() - t0)
        self.start_workers()
        t = threading.Thread(
            target=self._guarded(self._window_keeper), name="edge-windows", daemon=True
        )
        t.start()
        self._threads.append(t)
        self.connect_mqtt()

    def _new_window(self, device_id: str, device: Device) -> _Window:
        policy = self.cfg.policy_for(device)
        window_id = f"{device_id}.{uuid.uuid4().hex[:16]}"
        key = new_window_key()
        envelope = self.encryptor.encrypt(
            policy, key, window_context(device.patient_id, device_id, window_id)
        )
        return _Window(window_id, key, policy, time.monotonic(), envelope, device.patient_id)

    def open_windows_ahead(self, *, lead_s: float | None = None) -> int:
        """Open the next window of every device whose current one ends within `lead_s`
        (default a tenth of window_s, at least 1 s) and has none ready. mcl releases
        the GIL, so two threads encapsulate while the writer goes on."""
        lead = max(1.0, self.cfg.window_s / 10) if lead_s is None else lead_s
        now = time.monotonic()
        due = []
        with self._ready_lock:
            for device_id, device in self.cfg.devices.items():
                if device_id in self._ready:
                    continue
                w = self._windows.get(device_id)
                if w is None or w.opened + self.cfg.window_s - now <= lead:
                    due.append((device_id, device))
        if not due:
            return 0
        first = not self._windows and not self._ready
        with ThreadPoolExecutor(2, thread_name_prefix="edge-window") as pool:
            opened = list(pool.map(lambda d: (d[0], self._new_window(*d)), due))
        if first:
            # The first windows all open at once; backdating each by up to half a period
            # spreads their renewals (and the window records they send) over time.
            for _, w in opened:
                w.opened -= secrets.randbelow(1000) / 2000 * self.cfg.window_s
        # Their window records go out now, ahead of any segment (same lane, earlier in
        # the outbox), so a thousand devices' first windows are not stored in one burst
        # in front of their first readings.
        items = [self._window_item(device_id, w) for device_id, w in opened]
        self.spool.add_outbox(items, [])
        self._outbox_ready.set()
        with self._ready_lock:
            for device_id, w in opened:
                w.sent, w.envelope = True, b""
                self._ready.setdefault(device_id, w)
        return len(opened)

    def _window_item(self, device_id: str, w: _Window) -> OutboxItem:
        return OutboxItem(
            0,
            "window",
            w.window_id,
            "window-key",
            w.patient_id,
            device_id,
            w.envelope,
            0,
            self.clock_ms(),
        )

    def _window_keeper(self) -> None:
        while not self._stop.wait(1.0):
            self.open_windows_ahead()

    def stop(self) -> None:
        """Stop taking messages; what is spooled stays spooled (sent on the next start)."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.disconnect()
                self._client.loop_stop()
        self._stop.set()
        self._inbox.put(None)
        self._outbox_ready.set()
        for t in self._threads:
            t.join(timeout=10)
        self._write_stats()
        self.spool.close()

    # -- the writer -------------------------------------------------------------
    def submit(self, mid: int, qos: int, topic: str, payload: bytes) -> None:
        """Hand a message to the writer (the MQTT callback's job; tests use it too)."""
        self._submitted += 1  # one producer (paho's loop, or a test)
        self._inbox.put((mid, qos, topic, payload))

    def _reject(self, reason: Reason) -> None:
        self.stats.rejected[reason.value] = self.stats.rejected.get(reason.value, 0) + 1

    def _accept(self, topic: str, payload: bytes, now_ms: int) -> SpooledReading | None:
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] != TOPIC_ROOT or parts[2] != "readings":
            self._reject(Reason.MALFORMED)
            return None
        device_id = parts[1]
        device = self.cfg.devices.get(device_id)
        if device is None:
            self._reject(Reason.UNKNOWN_DEVICE)
            return None
        try:
            reading = parse_reading(device_id, device.device_type, payload, now_ms)
            check_sequence(self._last.get(device_id), reading.seq)
            body = to_ndjson(reading, device.patient_id, self.validator)
        except Rejected as exc:
            self._reject(exc.reason)
            return None
        except InvalidArgument:  # FHIR validation refused it
            self._reject(Reason.MALFORMED)
            return None
        self._last[device_id] = reading.seq
        return SpooledReading(device_id, reading.seq, reading.t_ms, body)

    def _writer(self) -> None:
        while not self._stop.is_set():
            timeout = self._next_deadline()
            try:
                first = self._inbox.get(timeout=timeout)
            except queue.Empty:
                first = None
                self._seal_due(force=False)
                continue
            if first is None:
                break
            batch = [first]
            while len(batch) < WRITER_BATCH:
                try:
                    nxt = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._stop.set()
                    break
                batch.append(nxt)
            self._write_batch(batch)
            self._seal_due(force=False)

    def _write_batch(self, batch: list[tuple[int, int, str, bytes]]) -> None:
        now_ms = self.clock_ms()
        results: list[SpooledReading | None] = []
        for _mid, _qos, topic, payload in batch:
            self.stats.received += 1
            try:
                r = self._accept(topic, payload, now_ms)
            except Exception as exc:  # one poison message must not stop the edge: the
                # broker would redeliver it to every restart. Counted, never its content.
                log.error("reading on %r refused by an unexpected %s", topic[:200], type(exc))
                self._reject(Reason.MALFORMED)
                r = None
            results.append(r)
        done = 0
        while done < len(batch):
            # The longest run of messages from `done` whose readings fit the spool now: a
            # batch larger than the whole spool goes in parts instead of waiting forever.
            end, size = done, 0
            while end < len(batch):
                r = results[end]
                more = len(r.body) if r is not None else 0
                if not self.spool.has_room(size + more):
                    break
                size += more
                end += 1
            if end == done:
                # Full spool: hold these messages unacknowledged (the broker stops sending
                # at its in-flight limit and queues the rest) until the sender frees space.
                if self._stop.is_set():
                    return  # not acknowledged: the broker redelivers them to the next run
                if not self.stats.spool_full:
                    log.error(
                        "ALERT: edge spool full (%d bytes): not acknowledging MQTT messages "
                        "until the StorageService takes segments",
                        self.spool.used_bytes,
                    )
                self.stats.spool_full = True
                self._seal_due(force=False)
                time.sleep(0.2)
                continue
            self.stats.spool_full = False
            accepted = [r for r in results[done:end] if r is not None]
            self.spool.accept(accepted)  # durable before any acknowledgement
            self.stats.accepted += len(accepted)
            for mid, qos, _t, _p in batch[done:end]:  # in arrival order, as MQTT requires
                self.ack(mid, qos)
            self.stats.acked += end - done
            self._handled += end - done
            done = end
            mono = time.monotonic()
            for r in accepted:
                o = self._open.get(r.device_id)
                if o is None or not o.readings:
                    o = self._open_segment(r.device_id, mono)
                o.readings.append(r)
                o.size += len(r.body)
                self._touched.add(r.device_id)

    def _open_segment(self, device_id: str, since: float) -> _Open:
        """A new open segment for the device, aged from `since` (in the age queue)."""
        o = self._open[device_id] = _Open(since=since)
        self._ages.append((since, device_id))
        return o

    def _oldest_open(self) -> float | None:
        """`since` of the oldest open segment (stale entries dropped on the way)."""
        ages = self._ages
        while ages:
            since, device_id = ages[0]
            o = self._open.get(device_id)
            if o is not None and o.readings and o.since == since:
                return since
            ages.popleft()
        return None

    def _next_deadline(self) -> float:
        oldest = self._oldest_open()
        if oldest is None:
            return 0.2
        return max(0.005, min(0.2, oldest + self.cfg.segment_max_age_s - time.monotonic()))

    def _seal_due(self, *, force: bool) -> None:
        """Seal every segment due: by age (from the front of `_ages`), by count or size
        (only devices given readings since the last call can have reached either), or
        all of them (`force`)."""
        c = self.cfg
        mono = time.monotonic()
        if force:
            due = list(self._open)
        else:
            due = [d for d in self._touched if d in self._open]
            while (oldest := self._oldest_open()) is not None and (
                mono - oldest >= c.segment_max_age_s
            ):
                due.append(self._ages.popleft()[1])
        self._touched.clear()
        items: list[OutboxItem] = []
        consumed: list[tuple[str, int, int]] = []
        for device_id in dict.fromkeys(due):  # each once, in order
            o = self._open[device_id]
            while o.readings and (
                force
                or len(o.readings) >= c.segment_max_readings
                or o.size >= c.segment_max_bytes
                or mono - o.since >= c.segment_max_age_s
            ):
                take: list[SpooledReading] = []
                size = 0
                for r in o.readings:
                    if take and (
                        len(take) >= c.segment_max_readings
                        or size + len(r.body) > c.segment_max_bytes
                    ):
                        break
                    take.append(r)
                    size += len(r.body)
                o.readings = o.readings[len(take) :]
                o.size -= size
                items.extend(self._seal(device_id, take))
                consumed.append((device_id, take[0].seq, take[-1].seq))
                if not o.readings:
                    break
                o.since = mono  # the rest starts a segment of its own, aged from now
                self._ages.append((mono, device_id))
            if not o.readings:
                del self._open[device_id]
        if items:
            self.spool.add_outbox(items, consumed)
            self._outbox_ready.set()

    def _window(self, device_id: str, device: Device) -> tuple[_Window, OutboxItem | None]:
        policy = self.cfg.policy_for(device)
        now = time.monotonic()

        def fits(w: _Window) -> bool:
            return (w.policy, w.patient_id) == (policy, device.patient_id) and (
                now - w.opened < self.cfg.window_s
            )

        current = self._windows.get(device_id)
        if current is not None and fits(current):
            return current, None
        with self._ready_lock:
            ready = self._ready.pop(device_id, None)
        # the one opened ahead, unless there is none or it no longer fits
        w = ready if ready is not None and fits(ready) else self._new_window(device_id, device)
        self._windows[device_id] = w
        self.stats.windows_opened += 1
        if w.sent:
            return w, None
        item = self._window_item(device_id, w)
        w.envelope = b""  # queued with the segment; not kept in memory twice
        return w, item

    def _seal(self, device_id: str, readings: list[SpooledReading]) -> list[OutboxItem]:
        device = self.cfg.devices[device_id]
        window, window_item = self._window(device_id, device)
        header = SegmentHeader(
            window_id=window.window_id,
            patient_id=device.patient_id,
            device_id=device_id,
            device_type=device.device_type,
            first_seq=readings[0].seq,
            last_seq=readings[-1].seq,
            first_time_ms=min(r.t_ms for r in readings),
            last_time_ms=max(r.t_ms for r in readings),
            count=len(readings),
        )
        sealed = seal_segment(window.key, header, b"".join(r.body for r in readings))
        self.stats.segments_sealed += 1
        seg = OutboxItem(
            0,
            "segment",
            f"{device_id}/{header.first_seq}-{header.last_seq}",
            f"segment.{device.device_type}",
            device.patient_id,
            device_id,
            sealed,
            len(readings),
            self.clock_ms(),
        )
        return [window_item, seg] if window_item is not None else [seg]

    # -- the sender ---------------------------------------------------------------
    def _sender(self) -> None:
        c = self.cfg
        lanes = c.send_streams
        backoff = 0.2
        busy_said = False
        with ThreadPoolExecutor(lanes, thread_name_prefix="edge-send") as pool:
            while True:
                items = self.spool.outbox(c.send_max_items * lanes, c.send_max_bytes * lanes)
                if not items:
                    if self._stop.is_set():
                        return
                    self._outbox_ready.wait(timeout=0.5)
                    self._outbox_ready.clear()
                    continue
                calls = split_lanes(items, lanes, c.send_max_items, c.send_max_bytes)
                outcomes = list(pool.map(self._send_lane, calls))
                retry: EhrAbeError | None = None
                for sent, failure in outcomes:
                    for chunk, dups in sent:
                        self.spool.delivered(chunk)
                        self._count_delivered(chunk, dups)
                    if failure is None:
                        continue
                    chunk, exc = failure
                    self.stats.storage_errors += 1
                    if _retryable(exc):
                        retry = exc  # this lane's later calls were not sent: order kept
                    else:
                        self._isolate(chunk, exc)
                if retry is not None:
                    if isinstance(retry, ResourceExhausted):
                        # up but at its stream cap (other callers, or our own calls
                        # of a previous run not yet ended): not an outage
                        if not busy_said:
                            log.warning("StorageService busy; retrying: %s", retry)
                        busy_said = True
                    else:
                        if self.stats.storage_up:
                            log.warning("StorageService unavailable; buffering on disk: %s", retry)
                        self.stats.storage_up = False
                    if self._stop.wait(backoff):
                        return
                    backoff = min(5.0, backoff * 2)
                    continue
                backoff = 0.2
                busy_said = False
                if not self.stats.storage_up:
                    log.warning("StorageService back; draining the spool")
                self.stats.storage_up = True

    def _send_lane(
        self, calls: list[list[OutboxItem]]
    ) -> tuple[
        list[tuple[list[OutboxItem], list[bool]]],
        tuple[list[OutboxItem], EhrAbeError] | None,
    ]:
        """One lane's calls in order, stopping at the first failure (a later call could
        name a window the failed one carried)."""
        sent: list[tuple[list[OutboxItem], list[bool]]] = []
        for chunk in calls:
            try:
                sent.append((chunk, self.sink.write(chunk)))
            except EhrAbeError as exc:
                return sent, (chunk, exc)
        return sent, None

    def _count_delivered(self, items: list[OutboxItem], dups: list[bool]) -> None:
        for item, dup in zip(items, dups, strict=False):
            if item.kind == "segment":
                self.stats.delivered_segments += 1
                self.stats.delivered_readings += item.readings
                self.stats.duplicate_segments += int(dup)

    def _isolate(self, items: list[OutboxItem], exc: EhrAbeError) -> None:
        """A refusal for good: find the item(s) refused, one by one, and set them aside."""
        for item in items:
            try:
                dups = self.sink.write([item])
            except EhrAbeError as one:
                if _retryable(one):
                    return  # not a refusal after all: the main loop retries
                log.error("StorageService refused %s %s for good: %s", item.kind, item.key, one)
                self.spool.bury(item, str(one))
                self.stats.dead_items += 1
                continue
            self.spool.delivered([item])
            self._count_delivered([item], dups)
        del exc

    # -- visibility -----------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {**self.stats.as_dict(), **self.spool.counts()}

    def _write_stats(self) -> None:
        path = self.cfg.spool_dir / "stats.json"
        tmp = path.with_name(".stats.json.tmp")
        with contextlib.suppress(OSError, Exception):
            tmp.write_text(json.dumps(self.snapshot()))
            os.replace(tmp, path)

    def _stats_loop(self) -> None:
        while not self._stop.wait(1.0):
            self._write_stats()

    def drain(self, timeout_s: float) -> bool:
        """Seal everything open and wait until the outbox is empty (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # Every message handled (an empty inbox says nothing of the batch in the
            # writer's hands), and the spool empty: sealing moves readings to the outbox
            # in one transaction, so between the two tables nothing is missed.
            counts = self.spool.counts()
            if (
                self._handled >= self._submitted
                and counts["spooled_readings"] == 0
                and counts["outbox_items"] == 0
            ):
                return True
            time.sleep(0.05)
        return False


def split_lanes(
    items: list[OutboxItem], lanes: int, max_items: int, max_bytes: int
) -> list[list[list[OutboxItem]]]:
    """The outbox's items (oldest first) as `lanes` lists of calls: a device's items
    all in one lane (crc32 of its id), in their order, each call within the limits."""
    by_lane: list[list[OutboxItem]] = [[] for _ in range(lanes)]
    for item in items:
        by_lane[zlib.crc32(item.device_id.encode()) % lanes].append(item)
    return [list(chunks(lane, max_items, max_bytes)) for lane in by_lane if lane]


#: items and bytes in one WriteSegments stream message: many items per message
#: (each message costs a round through both processes' gRPC threads), well below
#: the server's bound on a batch message (BATCH_MESSAGE_MAX_BYTES, 2 MiB)
MESSAGE_MAX_ITEMS = 64
MESSAGE_MAX_BYTES = 1024 * 1024


def chunks(items: list[OutboxItem], max_items: int, max_bytes: int) -> Iterator[list[OutboxItem]]:
    """`items` in order, in runs of at most `max_items` items and `max_bytes` bytes of
    payload (an item larger than `max_bytes` alone in its run): a lane's calls, a
    call's stream messages."""
    run: list[OutboxItem] = []
    size = 0
    for item in items:
        if run and (len(run) >= max_items or size + len(item.payload) > max_bytes):
            yield run
            run, size = [], 0
        run.append(item)
        size += len(item.payload)
    if run:
        yield run


class GrpcSegmentSink:
    """WriteSegments over gRPC: mutual TLS with the edge's certificate, or the
    development headers when no TLS material is given."""

    def __init__(
        self,
        endpoint: str,
        *,
        subject: str,
        tls: tuple[Path, Path, Path] | None = None,
        timeout_s: float = 30.0,
    ):
        import grpc

        from ehr_common.api.v1 import storage_pb2_grpc

        opts = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
        if tls is None:
            channel = grpc.insecure_channel(endpoint, options=opts)
            self._md: tuple[tuple[str, str], ...] = (
                ("x-ehr-subject", subject),
                ("x-ehr-roles", "edge-gateway"),
            )
        else:
            ca, cert, key = (p.read_bytes() for p in tls)
            creds = grpc.ssl_channel_credentials(ca, key, cert)
            channel = grpc.secure_channel(endpoint, creds, options=opts)
            self._md = ()
        self._channel = channel
        self._stub = storage_pb2_grpc.StorageServiceStub(channel)
        self._timeout = timeout_s

    def write(self, items: list[OutboxItem]) -> list[bool]:
        import grpc

        from ehr_common.api.v1 import storage_pb2 as pb
        from ehr_common.grpc_errors import error_from_rpc

        def fields(i: OutboxItem) -> dict[str, Any]:
            if i.kind == "window":
                return {
                    "window": pb.WindowKey(
                        window_id=i.key,
                        patient_id=i.patient_id,
                        device_id=i.device_id,
                        envelope=i.payload,
                    )
                }
            return {
                "segment": pb.Segment(
                    idempotency_key=i.key, record_type=i.record_type, sealed=i.payload
                )
            }

        def messages() -> Iterator[pb.SegmentWrite]:
            # a message's first item is its own, the rest its batch: an item too large
            # for a batch message is alone in its run, so it always goes as the own one
            for run in chunks(items, MESSAGE_MAX_ITEMS, MESSAGE_MAX_BYTES):
                yield pb.SegmentWrite(
                    **fields(run[0]), items=[pb.SegmentItem(**fields(i)) for i in run[1:]]
                )

        try:
            resp = self._stub.WriteSegments(messages(), timeout=self._timeout, metadata=self._md)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return [r.duplicate for r in resp.receipts]

    def close(self) -> None:
        self._channel.close()
