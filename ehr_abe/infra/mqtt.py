"""Mosquitto for the IoMT edge: TLS with client certificates on loopback.

Devices authenticate with certificates from the organisation's CA in the same
Fabric-CA convention as every other identity (`ehr_common.certificates`); the
certificate's common name is the MQTT username (`use_identity_as_username`),
so the ACL `pattern write devices/%u/#` lets a device publish only under its
own topic. Only the edge gateway's subject may read `devices/#`.

The CA: the Fabric network's Hosp1 identity CA when that network is up (one
trust root for ledger, services and devices); otherwise a development CA of
its own, generated once under `<state>/mqtt/ca/`. Files under `<state>/mqtt/`:
`mosquitto.conf`, `acl.conf`, `server.crt/key`, `data/` (persistence),
`mosquitto.log`, `mosquitto.pid` and `connection.json` (endpoint, CA paths).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ehr_abe.infra import process
from ehr_abe.infra.component import ComponentStatus, InfraError
from ehr_abe.infra.config import InfraConfig
from ehr_common.certificates import mint_client_identity, mint_tls_server_cert
from ehr_common.errors import ConfigError

NAME = "mqtt"
CONNECTION_FORMAT = 1
INSTALL_HINT = (
    "Mosquitto is not installed: `sudo apt-get install mosquitto` (Debian/Ubuntu), "
    "`sudo dnf install mosquitto` (Fedora), `brew install mosquitto` (macOS); "
    "or set EHR_ABE_MOSQUITTO to its path"
)
DEVICE_TOPIC_ROOT = "devices"


def mosquitto_binary() -> Path | None:
    override = os.environ.get("EHR_ABE_MOSQUITTO")
    if override:
        return Path(override) if Path(override).is_file() else None
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    for candidate in (
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/opt/homebrew/sbin/mosquitto",
    ):
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _self_signed_ca(common_name: str) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ehr-abe development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def mosquitto_config(
    *,
    host: str,
    port: int,
    ca: Path,
    cert: Path,
    key: Path,
    acl: Path,
    data_dir: Path,
    max_queued_messages: int,
    max_queued_mb: int,
    max_inflight_messages: int,
    max_packet_kb: int,
    run_as: str,
) -> str:
    """The broker's configuration (pure)."""
    return "\n".join(
        [
            "# written by `ehr-abe infra up mqtt`; edits are overwritten",
            f"user {run_as}",
            "per_listener_settings false",
            "persistence true",
            f"persistence_location {data_dir}/",
            # Mosquitto saves its in-memory store periodically, not per message:
            # a broker crash loses at most this many seconds of queued messages.
            "autosave_interval 10",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            f"max_queued_messages {max_queued_messages}",
            f"max_queued_bytes {max_queued_mb * 1024 * 1024}",
            f"max_inflight_messages {max_inflight_messages}",
            f"max_packet_size {max_packet_kb * 1024}",
            # A reading that can never be delivered must not stay queued forever.
            "persistent_client_expiration 14d",
            f"listener {port} {host}",
            f"cafile {ca}",
            f"certfile {cert}",
            f"keyfile {key}",
            "require_certificate true",
            "use_identity_as_username true",
            "allow_anonymous false",
            f"acl_file {acl}",
            "",
        ]
    )


def acl_text(edge_subject: str) -> str:
    """Devices write only below their own topic; only the edge reads them all (pure)."""
    return (
        f"user {edge_subject}\n"
        f"topic read {DEVICE_TOPIC_ROOT}/#\n"
        "\n"
        f"pattern write {DEVICE_TOPIC_ROOT}/%u/#\n"
    )


class MosquittoBroker:
    """The MQTT component of `ehr-abe infra` (see ehr_abe.infra.component.Component)."""

    name = NAME

    def __init__(self, cfg: InfraConfig, progress: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.settings = cfg.mqtt
        self.dir = cfg.state_dir / "mqtt"
        self.data_dir = self.dir / "data"
        self.ca_dir = self.dir / "ca"
        self.conf = self.dir / "mosquitto.conf"
        self.acl = self.dir / "acl.conf"
        self.server_cert = self.dir / "server.crt"
        self.server_key = self.dir / "server.key"
        self.pid_file = self.dir / "mosquitto.pid"
        self.log = self.dir / "mosquitto.log"
        self.connection_file = self.dir / "connection.json"
        self._progress = progress or (lambda _msg: None)

    # -- CA -----------------------------------------------------------------
    def _ca_paths(self) -> tuple[Path, Path, str]:
        """(ca cert, ca key, which) — the Fabric org CA if that network is up."""
        try:
            from ehr_abe.infra.fabric.identities import org_ca_paths

            cert, key = org_ca_paths(self.cfg.state_dir, "Hosp1MSP")
            if cert.is_file() and key.is_file():
                return cert, key, "the Fabric network's Hosp1 identity CA"
        except (ImportError, ConfigError, OSError, KeyError, TypeError, ValueError):
            pass  # no Fabric network here: a CA of our own
        cert, key = self.ca_dir / "ca.crt", self.ca_dir / "ca.key"
        if not (cert.is_file() and key.is_file()):
            self.ca_dir.mkdir(parents=True, exist_ok=True)
            cert_pem, key_pem = _self_signed_ca("ehr-abe development device CA")
            _write_private(key, key_pem)
            cert.write_bytes(cert_pem)
        return cert, key, "a development device CA"

    def _prepare(self) -> tuple[Path, Path]:
        s = self.settings
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ca_cert, ca_key, which = self._ca_paths()
        self._progress(f"MQTT device certificates come from {which} ({ca_cert})")
        cert_pem, key_pem = mint_tls_server_cert(
            ca_cert.read_bytes(), ca_key.read_bytes(), "mosquitto", [s.host, "localhost"]
        )
        _write_private(self.server_key, key_pem)
        self.server_cert.write_bytes(cert_pem)
        self.acl.write_text(acl_text(s.edge_subject))
        import pwd

        run_as = pwd.getpwuid(os.getuid()).pw_name  # never drop to a user who cannot read the key
        self.conf.write_text(
            mosquitto_config(
                host=s.host,
                port=s.port,
                ca=ca_cert,
                cert=self.server_cert,
                key=self.server_key,
                acl=self.acl,
                data_dir=self.data_dir,
                max_queued_messages=s.max_queued_messages,
                max_queued_mb=s.max_queued_mb,
                max_inflight_messages=s.max_inflight_messages,
                max_packet_kb=s.max_packet_kb,
                run_as=run_as,
            )
        )
        return ca_cert, ca_key

    # -- lifecycle --------------------------------------------------------------
    def _pid(self) -> int | None:
        return process.running(self.pid_file, str(self.conf))

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.settings.host, self.settings.port), timeout=0.5):
                return True
        except OSError:
            return False

    def up(self) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise InfraError(NAME, INSTALL_HINT)
        if self._pid() is None:
            if self._answers():
                raise InfraError(
                    NAME,
                    f"{self.settings.endpoint} is taken by another process "
                    "(set [mqtt] port or EHR_ABE_MQTT_PORT)",
                )
            ca = self._prepare()
            self._progress(f"starting Mosquitto on {self.settings.endpoint}")
            process.start(
                [str(binary), "-c", str(self.conf)], pid_file=self.pid_file, log_file=self.log
            )
        else:
            doc = self._read_connection()
            if doc.get("ca_cert") and doc.get("ca_key"):
                ca = Path(doc["ca_cert"]), Path(doc["ca_key"])
            else:  # running, connection file lost: the CA it was configured with
                ca = self._ca_paths()[:2]
        deadline = time.monotonic() + self.settings.start_timeout_s
        while not self._answers():
            if self._pid() is None:
                raise InfraError(NAME, "exited during start-up", self.log)
            if time.monotonic() > deadline:
                raise InfraError(NAME, "not listening in time", self.log)
            time.sleep(0.05)
        self._write_connection_file(*ca)

    def _read_connection(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.connection_file.read_text())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def _write_connection_file(self, ca_cert: Path, ca_key: Path) -> None:
        doc = {
            "format": CONNECTION_FORMAT,
            "host": self.settings.host,
            "port": self.settings.port,
            "ca_cert": str(ca_cert.resolve()),
            # Development only: who may mint device identities for tests and the demo.
            "ca_key": str(ca_key.resolve()),
            "edge_subject": self.settings.edge_subject,
            "topic_root": DEVICE_TOPIC_ROOT,
        }
        tmp = self.connection_file.with_name(f".{self.connection_file.name}.tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        os.replace(tmp, self.connection_file)

    def down(self) -> None:
        self.connection_file.unlink(missing_ok=True)
        process.stop(self.pid_file, str(self.conf))

    def status(self) -> list[ComponentStatus]:
        if mosquitto_binary() is None:
            return [ComponentStatus(NAME, "not-installed", detail=INSTALL_HINT)]
        pid = self._pid()
        if pid is None:
            return [ComponentStatus(NAME, "stopped", log=self.log)]
        return [
            ComponentStatus(
                NAME,
                "running" if self._answers() else "unhealthy",
                pid,
                self.settings.endpoint,
                self.log,
                detail="TLS, client certificates, per-device ACL",
            )
        ]


# -- clients: identities and TLS contexts from connection.json ------------------------
def load_connection(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"unreadable MQTT connection file {path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != CONNECTION_FORMAT:
        raise ConfigError(f"{path} is not an MQTT connection file of format {CONNECTION_FORMAT}")
    return doc


def issue_identity(connection: Path, subject: str, roles: Sequence[str]) -> tuple[bytes, bytes]:
    """A device (or edge) identity from the broker's CA: (cert_pem, key_pem). Development
    tooling: in a hospital the organisation's CA enrolls devices."""
    doc = load_connection(connection)
    try:
        ca_cert = Path(doc["ca_cert"]).read_bytes()
        ca_key = Path(doc["ca_key"]).read_bytes()
    except (OSError, KeyError) as exc:
        raise ConfigError(f"cannot read the device CA named in {connection}: {exc}") from None
    return mint_client_identity(ca_cert, ca_key, subject, roles)


def client_tls_context(ca_pem_path: Path, cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A TLS client context that verifies the broker and presents a client certificate."""
    import tempfile

    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_pem_path))
    ctx.check_hostname = False  # loopback broker; its certificate chain is still verified
    # load_cert_chain reads files: a private temporary directory, removed at once.
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        cert_file.write_bytes(cert_pem)
        _write_private(key_file, key_pem)
        ctx.load_cert_chain(str(cert_file), str(key_file))
    return ctx
