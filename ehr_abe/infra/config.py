"""Settings of the local infrastructure, in one place (state dir, ports, retention).

Defaults suit one development machine. Every value can be overridden by a TOML
file (`ehr-abe infra --config FILE`: top-level `state_dir`, sections `[minio]`
and `[fabric]`) and then by the environment (`EHR_ABE_INFRA_DIR`,
`EHR_ABE_MINIO_<SETTING>`, e.g. `EHR_ABE_MINIO_PORT=9800`). The `[fabric]` table
is handed as-is to the Fabric network's own settings (`FabricSettings.from_env`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ehr_common.errors import ConfigError
from ehr_common.paths import cache_dir, state_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
MINIO_TOOLS_DIR = REPO_ROOT / "tools" / "minio"
MINIO_ENV_PREFIX = "EHR_ABE_MINIO_"
MQTT_ENV_PREFIX = "EHR_ABE_MQTT_"

RetentionMode = Literal["GOVERNANCE", "COMPLIANCE"]

# A go.mod line requiring MinIO, in block form or single-line `require` form.
_MINIO_REQUIRE = re.compile(r"^\s*(?:require\s+)?github\.com/minio/minio\s+(v\S+)", re.M)
# S3 bucket naming rules (lower case, digits, dots, hyphens; 3-63 characters).
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def pinned_minio_version(tools_dir: Path = MINIO_TOOLS_DIR) -> str:
    """The MinIO version pinned in tools/minio/go.mod (a Go pseudo-version)."""
    try:
        text = (tools_dir / "go.mod").read_text()
    except OSError:
        raise ConfigError(f"{tools_dir}/go.mod is missing: it pins the MinIO version") from None
    match = _MINIO_REQUIRE.search(text)
    if match is None:
        raise ConfigError(f"{tools_dir}/go.mod does not require github.com/minio/minio")
    return match.group(1)


def minio_binary_path(version: str) -> Path:
    """Where the MinIO binary built at `version` is cached (outside the repository)."""
    return cache_dir() / "minio" / version / "minio"


@dataclass
class MinioSettings:
    host: str = "127.0.0.1"
    # Away from Fabric's 7050/7051/8051/9443/9444/... and MinIO's usual 9000.
    port: int = 9700
    console_port: int = 9701
    bucket: str = "ehr-records"
    #: Default object-lock retention of every stored record version:
    #: GOVERNANCE (lifted only with the bypass-governance permission) or
    #: COMPLIANCE (nobody can lift it until it expires).
    retention_mode: RetentionMode = "GOVERNANCE"
    retention_days: int = 3650
    start_timeout_s: float = 60.0
    build_timeout_s: float = 1800.0

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class MqttSettings:
    """Mosquitto for the IoMT edge (see ehr_abe.infra.mqtt)."""

    host: str = "127.0.0.1"
    port: int = 8883
    #: Subject (certificate CN) of the edge gateway: the one client that reads devices/#.
    edge_subject: str = "edge-gateway"
    #: Per-client queue while a persistent-session client (the edge) is away or
    #: behind. Mosquitto's default (1000) silently drops QoS 1 messages beyond it;
    #: these hold ~10 minutes of a 1,000-device ward (~1,900 messages/s).
    max_queued_messages: int = 1_200_000
    max_queued_mb: int = 512
    #: QoS 1 messages in flight to one client before its PUBACKs: the edge acks
    #: only after a durable commit, so this must cover what arrives during one
    #: commit and its fsync (2,000 left the edge idle between commits under load).
    max_inflight_messages: int = 10_000
    #: Largest accepted MQTT packet: a reading or an ECG block is far smaller.
    max_packet_kb: int = 64
    start_timeout_s: float = 20.0

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


def _default_state_dir() -> Path:
    override = os.environ.get("EHR_ABE_INFRA_DIR")
    return Path(override) if override else state_dir() / "infra"


@dataclass
class InfraConfig:
    state_dir: Path = field(default_factory=_default_state_dir)
    minio: MinioSettings = field(default_factory=MinioSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    #: The `[fabric]` table of the config file, for `FabricSettings.from_env`.
    fabric_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def minio_binary(self) -> Path:
        return minio_binary_path(pinned_minio_version())


def _coerce(key: str, current: object, value: object, what: str = "MinIO") -> object:
    """`value` (from TOML or an env string) as the type of the default `current`."""
    try:
        if isinstance(current, bool):
            raise TypeError  # no boolean settings today; refuse rather than guess
        if isinstance(current, int):
            if isinstance(value, (float, bool)):
                raise TypeError
            return int(str(value))
        if isinstance(current, float):
            return float(str(value))
        if isinstance(value, str):
            return value
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"{what} setting {key}: cannot use {value!r}")


def _validate(s: MinioSettings) -> None:
    s.retention_mode = s.retention_mode.upper()  # type: ignore[assignment]
    if s.retention_mode not in ("GOVERNANCE", "COMPLIANCE"):
        raise ConfigError("minio.retention_mode must be GOVERNANCE or COMPLIANCE")
    if not 1 <= s.retention_days <= 36500:
        raise ConfigError("minio.retention_days must be between 1 and 36500")
    for name in ("port", "console_port"):
        if not 1 <= getattr(s, name) <= 65535:
            raise ConfigError(f"minio.{name} must be a TCP port (1-65535)")
    if s.port == s.console_port:
        raise ConfigError("minio.port and minio.console_port must differ")
    if not _BUCKET_NAME.fullmatch(s.bucket) or ".." in s.bucket:
        raise ConfigError(f"minio.bucket {s.bucket!r} is not a valid S3 bucket name")
    if s.start_timeout_s <= 0 or s.build_timeout_s <= 0:
        raise ConfigError("minio timeouts must be positive")


def load_infra_config(
    path: Path | None = None, env: Mapping[str, str] | None = None
) -> InfraConfig:
    """Defaults, then the TOML file at `path` (if any), then the environment."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read infra config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"infra config {path} is not valid TOML: {exc}") from None
    unknown_sections = set(data) - {"state_dir", "minio", "fabric", "mqtt"}
    if unknown_sections:
        raise ConfigError(
            f"infra config {path}: unknown keys {', '.join(sorted(unknown_sections))}"
        )

    cfg = InfraConfig(state_dir=Path(env.get("EHR_ABE_INFRA_DIR") or state_dir() / "infra"))
    if "state_dir" in data and not env.get("EHR_ABE_INFRA_DIR"):
        cfg.state_dir = Path(str(data["state_dir"])).expanduser()

    minio_table = data.get("minio", {})
    fabric_table = data.get("fabric", {})
    if not isinstance(minio_table, dict) or not isinstance(fabric_table, dict):
        raise ConfigError(f"infra config {path}: [minio] and [fabric] must be tables")
    values: dict[str, object] = dict(minio_table)
    values.update(
        {
            k[len(MINIO_ENV_PREFIX) :].lower(): v
            for k, v in env.items()
            if k.startswith(MINIO_ENV_PREFIX)
        }
    )
    known = {f.name for f in dataclasses.fields(MinioSettings)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown MinIO setting {key!r} (known: {', '.join(sorted(known))})")
        setattr(cfg.minio, key, _coerce(key, getattr(cfg.minio, key), value))
    _validate(cfg.minio)
    cfg.fabric_overrides = dict(fabric_table)
    mqtt_table = data.get("mqtt", {})
    if not isinstance(mqtt_table, dict):
        raise ConfigError(f"infra config {path}: [mqtt] must be a table")
    _apply_mqtt(cfg.mqtt, mqtt_table, env)
    return cfg


def _apply_mqtt(s: MqttSettings, table: Mapping[str, Any], env: Mapping[str, str]) -> None:
    values: dict[str, object] = dict(table)
    values.update(
        {
            k[len(MQTT_ENV_PREFIX) :].lower(): v
            for k, v in env.items()
            if k.startswith(MQTT_ENV_PREFIX)
        }
    )
    known = {f.name for f in dataclasses.fields(MqttSettings)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown MQTT setting {key!r} (known: {', '.join(sorted(known))})")
        setattr(s, key, _coerce(key, getattr(s, key), value, "MQTT"))
    if not 1 <= s.port <= 65535:
        raise ConfigError("mqtt.port must be a TCP port (1-65535)")
    for name in ("max_queued_messages", "max_queued_mb", "max_inflight_messages", "max_packet_kb"):
        if getattr(s, name) < 1:
            raise ConfigError(f"mqtt.{name} must be at least 1")
    if not s.edge_subject or any(c in s.edge_subject for c in "+#/ "):
        raise ConfigError("mqtt.edge_subject must be a plain subject (no + # / or spaces)")
