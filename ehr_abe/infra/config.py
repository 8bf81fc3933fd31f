"""Settings of the local infrastructure, in one place (ports, timings, paths).

Defaults suit one development machine; every value can be overridden by a
TOML file (`ehr-abe infra --config FILE`, sections [minio] and [fabric]) or
environment variables EHR_ABE_MINIO_<KEY>.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ehr_abe.errors import ConfigError
from ehr_abe.paths import cache_dir, state_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
MINIO_TOOLS_DIR = REPO_ROOT / "tools" / "minio"


def pinned_minio_version(tools_dir: Path = MINIO_TOOLS_DIR) -> str:
    """The MinIO version pinned in tools/minio/go.mod (a Go pseudo-version)."""
    try:
        text = (tools_dir / "go.mod").read_text()
    except OSError:
        raise ConfigError(f"{tools_dir}/go.mod is missing: it pins the MinIO version") from None
    m = re.search(r"^\s*github\.com/minio/minio\s+(\S+)", text, re.M)
    if not m:
        raise ConfigError(f"{tools_dir}/go.mod does not require github.com/minio/minio")
    return m.group(1)


@dataclass
class MinioSettings:
    host: str = "127.0.0.1"
    port: int = 9700
    console_port: int = 9701
    bucket: str = "ehr-records"
    #: object-lock default retention: GOVERNANCE (an admin can lift it with a
    #: special permission) or COMPLIANCE (nobody can, until it expires)
    retention_mode: str = "GOVERNANCE"
    retention_days: int = 3650
    start_timeout_s: float = 60.0
    build_timeout_s: float = 1800.0

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class InfraConfig:
    state_dir: Path = field(default_factory=lambda: Path(os.environ.get("EHR_ABE_INFRA_DIR") or state_dir() / "infra"))
    minio: MinioSettings = field(default_factory=MinioSettings)
    fabric_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def minio_binary(self) -> Path:
        return cache_dir() / "minio" / pinned_minio_version() / "minio"


def load_infra_config(path: Path | None = None, env: dict[str, str] | None = None) -> InfraConfig:
    env = dict(os.environ) if env is None else env
    cfg = InfraConfig()
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read infra config {path}: {exc}") from None
    if "state_dir" in data:
        cfg.state_dir = Path(str(data["state_dir"]))
    names = {f.name: f.type for f in dataclasses.fields(MinioSettings)}
    values: dict[str, Any] = dict(data.get("minio", {}))
    prefix = "EHR_ABE_MINIO_"
    values.update({k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix)})
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"unknown MinIO setting {key!r} (known: {', '.join(sorted(names))})")
        current = getattr(cfg.minio, key)
        try:
            setattr(cfg.minio, key, type(current)(value))
        except (TypeError, ValueError):
            raise ConfigError(f"MinIO setting {key}: cannot use {value!r}") from None
    if cfg.minio.retention_mode not in ("GOVERNANCE", "COMPLIANCE"):
        raise ConfigError("minio.retention_mode must be GOVERNANCE or COMPLIANCE")
    cfg.fabric_overrides = dict(data.get("fabric", {}))
    return cfg
