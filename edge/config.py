"""The edge gateway's configuration: devices, policies, segment and window sizes."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.readings import DEVICE_TYPES
from ehr_common.errors import ConfigError
from storage_service.records import validate_id

#: Default policies per device type; `{patient}` becomes the reading's patient id.
DEFAULT_POLICIES = {
    "ecg": "(role:doctor and dept:cardiology) or role:nurse or patient:{patient}",
    "pulse-oximeter": "role:doctor or role:nurse or patient:{patient}",
    "bp-cuff": "role:doctor or role:nurse or patient:{patient}",
    "thermometer": "role:doctor or role:nurse or patient:{patient}",
    "heart-rate": "role:doctor or role:nurse or patient:{patient}",
}


@dataclass(frozen=True)
class Device:
    device_type: str
    patient_id: str


@dataclass
class EdgeConfig:
    spool_dir: Path
    #: The authority's public parameters (the edge encrypts window keys locally).
    public_params: Path
    subject: str = "edge-gateway"
    devices: dict[str, Device] = field(default_factory=dict)
    policies: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_POLICIES))
    #: Bound of the on-disk spool. When full the edge stops acknowledging MQTT
    #: messages (the broker queues them for its persistent session) and alerts.
    spool_max_mb: int = 512
    #: One CP-ABE encapsulation per device per window.
    window_s: float = 300.0
    segment_max_readings: int = 500
    segment_max_bytes: int = 256 * 1024
    segment_max_age_s: float = 1.0
    #: "shape" (each Observation structure validated once by fhir.resources) or
    #: "every" (each Observation; ~330 µs each). See edge.fhir.ObservationValidator.
    fhir_validation: str = "shape"
    send_max_items: int = 128  # small calls: an item waits less for the call before it
    send_max_bytes: int = 8 * 1024 * 1024
    #: WriteSegments calls in flight at once, devices split between them by a hash of
    #: their id (a device's window and segments stay in one lane, in order): the
    #: service's object writes and index commits of several calls then overlap.
    send_streams: int = 4
    # MQTT (from `ehr-abe infra up mqtt`'s connection.json unless given)
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 8883
    mqtt_ca: Path | None = None
    mqtt_cert: Path | None = None
    mqtt_key: Path | None = None
    # StorageService
    storage_endpoint: str = "127.0.0.1:50051"
    storage_ca: Path | None = None
    storage_cert: Path | None = None
    storage_key: Path | None = None

    def policy_for(self, device: Device) -> str:
        template = self.policies.get(device.device_type)
        if template is None:
            raise ConfigError(f"no policy configured for device type {device.device_type!r}")
        return template.replace("{patient}", device.patient_id)

    def check(self) -> None:
        validate_id("edge subject", self.subject)
        if self.spool_max_mb < 1:
            raise ConfigError("spool_max_mb must be at least 1")
        for device_id, d in self.devices.items():
            validate_id("device id", device_id)
            if device_id == self.subject:  # the broker's ACL would let the edge speak for it
                raise ConfigError(f"device id {device_id!r} is the edge's own subject")
            validate_id("patient id", d.patient_id)
            if d.device_type not in DEVICE_TYPES:
                raise ConfigError(f"device {device_id}: unknown type {d.device_type!r}")
            self.policy_for(d)
        if self.segment_max_readings < 1 or self.segment_max_bytes < 1024:
            raise ConfigError("segments need at least one reading and 1 KiB")
        if not 1 <= self.send_streams <= 4:
            # the StorageService refuses a caller's fifth open stream
            raise ConfigError("send_streams must be 1-4 (the StorageService's cap per caller)")
        if self.fhir_validation not in ("shape", "every"):
            raise ConfigError("fhir_validation must be 'shape' or 'every'")
        if not (0 < self.segment_max_age_s < math.inf and 0 < self.window_s < math.inf):
            # nan passes "<= 0" and would open a CP-ABE window for every segment
            raise ConfigError("segment age and window period must be positive and finite")


def _path(v: Any) -> Path | None:
    return Path(str(v)).expanduser() if v else None


def load_edge_config(path: Path) -> EdgeConfig:
    """`edge.toml`: [edge] settings, [mqtt], [storage], [policies], [devices.<id>]."""
    try:
        return _load_edge_config(path)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # a value of the wrong kind ("port = 'x'", "edge = 1"), a broken connection.json
        raise ConfigError(f"edge config {path}: {type(exc).__name__}: {exc}") from None
    except OSError as exc:
        raise ConfigError(
            f"edge config {path}: cannot read {exc.filename}: {exc.strerror}"
        ) from None


def _load_edge_config(path: Path) -> EdgeConfig:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read edge config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"edge config {path} is not valid TOML: {exc}") from None
    e, m, s = data.get("edge", {}), data.get("mqtt", {}), data.get("storage", {})
    try:
        cfg = EdgeConfig(
            spool_dir=Path(str(e["spool_dir"])).expanduser(),
            public_params=Path(str(e["public_params"])).expanduser(),
        )
    except KeyError as exc:
        raise ConfigError(f"edge config {path}: [edge] needs {exc}") from None
    for key in (
        "subject",
        "spool_max_mb",
        "window_s",
        "segment_max_readings",
        "segment_max_bytes",
        "segment_max_age_s",
        "send_max_items",
        "send_max_bytes",
        "send_streams",
        "fhir_validation",
    ):
        if key in e:
            setattr(cfg, key, type(getattr(cfg, key))(e[key]))
    if "connection" in m:
        import json

        doc = json.loads(Path(str(m["connection"])).expanduser().read_text())
        cfg.mqtt_host, cfg.mqtt_port = str(doc["host"]), int(doc["port"])
        cfg.mqtt_ca = Path(str(doc["ca_cert"]))
    cfg.mqtt_host = str(m.get("host", cfg.mqtt_host))
    cfg.mqtt_port = int(m.get("port", cfg.mqtt_port))
    cfg.mqtt_ca = _path(m.get("ca")) or cfg.mqtt_ca
    cfg.mqtt_cert, cfg.mqtt_key = _path(m.get("cert")), _path(m.get("key"))
    cfg.storage_endpoint = str(s.get("endpoint", cfg.storage_endpoint))
    cfg.storage_ca, cfg.storage_cert, cfg.storage_key = (
        _path(s.get("ca")),
        _path(s.get("cert")),
        _path(s.get("key")),
    )
    cfg.policies.update({str(k): str(v) for k, v in data.get("policies", {}).items()})
    for device_id, d in data.get("devices", {}).items():
        try:
            cfg.devices[str(device_id)] = Device(str(d["type"]), str(d["patient"]))
        except (KeyError, TypeError):
            raise ConfigError(
                f"edge config {path}: [devices.{device_id}] needs type and patient"
            ) from None
    cfg.check()
    return cfg
