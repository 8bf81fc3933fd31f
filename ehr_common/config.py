"""Service configuration: one TOML file plus environment overrides.

Every key has a default, so `ehr-abe serve` runs with no file at all on the
embedded backends (filesystem object store, SQLite ledger). Environment
variables override the file: EHR_ABE_<SECTION>_<KEY>, e.g.
EHR_ABE_STORAGE_OBJECT_STORE=minio, EHR_ABE_SERVER_LISTEN=0.0.0.0:50051.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_type_hints

from ehr_common.errors import ConfigError
from ehr_common.paths import state_dir

ObjectStoreKind = Literal["filesystem", "minio"]
LedgerKind = Literal["embedded", "fabric"]


@dataclass
class ServerConfig:
    listen: str = "127.0.0.1:50051"
    #: Which services this process runs: "abe", "storage" or both.
    services: tuple[str, ...] = ("abe", "storage")
    #: Mutual TLS. All three set: TLS with client certificates required.
    #: None set: development mode without TLS (announced loudly at start-up).
    tls_cert: str = ""
    tls_key: str = ""
    client_ca: str = ""
    #: Where a separate StorageService finds AbeService ("" = in-process). It fetches
    #: the public parameters from there once (then from its cache) and encrypts
    #: locally: no plaintext travels to AbeService.
    abe_endpoint: str = ""
    #: The authority id (`ehr-abe authority info`) the fetched public parameters must
    #: have: required with abe_endpoint, so a spoofed AbeService is refused.
    abe_authority_id: str = ""
    max_message_mb: int = 64


@dataclass
class AuthorityConfig:
    dir: str = ""  # default: <state>/authority
    #: The master-key passphrase is read from this environment variable ...
    passphrase_env: str = "EHR_ABE_MASTER_PASSPHRASE"
    #: ... or from this key file (32+ random bytes), if set.
    key_file: str = ""


@dataclass
class StorageConfig:
    object_store: ObjectStoreKind = "filesystem"
    ledger: LedgerKind = "embedded"
    data_dir: str = ""  # default: <state>/storage (index, filesystem store, embedded ledger)
    #: connection files written by `ehr-abe infra up`
    minio_connection: str = ""  # default: <state>/infra/minio/connection.json
    fabric_connection: str = ""  # default: <state>/infra/fabric/connection.json
    #: the organisation this storage service belongs to (Fabric MSP id)
    msp_id: str = "Hosp1MSP"
    batch_max_records: int = 1000
    batch_max_age_s: float = 2.0
    #: retry interval while the ledger is unreachable
    ledger_retry_s: float = 1.0
    #: objects fetched at once by verification (the object store's read pool)
    fetch_concurrency: int = 16
    #: a record no anchor covers this long after its batch was due is an integrity failure
    anchor_grace_s: float = 300.0
    #: The storage secret (index MACs, receipt signatures; never stored beside the data)
    #: is read from this key file (16+ random bytes) ...
    secret_file: str = ""
    #: ... else from this environment variable, else from the master key's secret.
    secret_env: str = "EHR_ABE_STORAGE_SECRET"
    #: multi-authority records: AND `valid_until@<authority> >= <today>` into each new
    #: record's policy, per authority (abe_service/ma/validity.py)
    ma_validity: bool = True
    #: FAME records: AND `valid_until >= <today>` into each new record's policy. Off by
    #: default: FAME keys carry validity only when issued with `key issue --valid-days`.
    fame_validity: bool = False


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    authority: AuthorityConfig = field(default_factory=AuthorityConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    home: str = ""

    @property
    def home_dir(self) -> Path:
        return Path(self.home) if self.home else state_dir()

    @property
    def authority_dir(self) -> Path:
        return Path(self.authority.dir) if self.authority.dir else self.home_dir / "authority"

    def ma_authority_dir(self, org: str) -> Path:
        """Where `ehr-abe authority setup --org <org>` keeps that authority's keys."""
        return self.home_dir / "authorities" / org

    @property
    def storage_dir(self) -> Path:
        return Path(self.storage.data_dir) if self.storage.data_dir else self.home_dir / "storage"

    @property
    def infra_dir(self) -> Path:
        override = os.environ.get("EHR_ABE_INFRA_DIR")
        return Path(override) if override else self.home_dir / "infra"

    @property
    def minio_connection_path(self) -> Path:
        c = self.storage.minio_connection
        return Path(c) if c else self.infra_dir / "minio" / "connection.json"

    @property
    def fabric_connection_path(self) -> Path:
        c = self.storage.fabric_connection
        return Path(c) if c else self.infra_dir / "fabric" / "connection.json"

    @property
    def tls_enabled(self) -> bool:
        s = self.server
        given = [bool(s.tls_cert), bool(s.tls_key), bool(s.client_ca)]
        if any(given) and not all(given):
            raise ConfigError("server TLS needs tls_cert, tls_key and client_ca together")
        return all(given)


def _coerce(value: Any, typ: Any, where: str) -> Any:
    origin = getattr(typ, "__origin__", None)
    try:
        if typ is bool:
            if isinstance(value, str):
                return value.strip().lower() in {"1", "true", "yes", "on"}
            return bool(value)
        if typ is int:
            return int(value)
        if typ is float:
            return float(value)
        if origin is tuple:
            if isinstance(value, str):
                return tuple(v.strip() for v in value.split(",") if v.strip())
            return tuple(str(v) for v in value)
        if origin is Literal:
            if value not in typ.__args__:
                allowed = ", ".join(map(str, typ.__args__))
                raise ConfigError(f"{where}: {value!r} is not one of: {allowed}")
            return value
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot use {value!r}: {exc}") from None


def _apply(section: Any, values: dict[str, Any], where: str) -> None:
    hints = get_type_hints(type(section))
    names = {f.name for f in dataclasses.fields(section)}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(
                f"{where}: unknown setting {key!r} (known: {', '.join(sorted(names))})"
            )
        setattr(section, key, _coerce(value, hints[key], f"{where}.{key}"))


def load_config(path: Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Defaults, then the TOML file (if any), then EHR_ABE_<SECTION>_<KEY> variables."""
    env = dict(os.environ) if env is None else env
    cfg = Config()
    if path is None and env.get("EHR_ABE_CONFIG"):
        path = Path(env["EHR_ABE_CONFIG"])
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for key, value in data.items():
            if key == "home":
                cfg.home = str(value)
                continue
            section = getattr(cfg, key, None)
            if (
                section is None
                or not dataclasses.is_dataclass(section)
                or not isinstance(value, dict)
            ):
                raise ConfigError(f"{path}: unknown section [{key}]")
            _apply(section, value, f"{path}: [{key}]")
    if env.get("EHR_ABE_HOME"):
        cfg.home = env["EHR_ABE_HOME"]
    for section_name in ("server", "authority", "storage"):
        section = getattr(cfg, section_name)
        prefix = f"EHR_ABE_{section_name.upper()}_"
        overrides = {
            k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix) and v != ""
        }
        if overrides:
            _apply(section, overrides, f"environment {prefix}*")
    return cfg
