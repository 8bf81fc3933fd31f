"""MinIO for development and tests.

Built with the Go toolchain from the Go module proxy at the version pinned in
tools/minio/go.mod, cached outside the repository by version (a second `up`
builds nothing), started on loopback with generated root credentials (a 0600
file, never printed), and given a records bucket with versioning and object
lock plus a default retention, so MinIO itself refuses to delete or replace a
stored record version.

The storage service never gets the root credentials: `up` creates a service
user whose policy (`service_policy`) allows only what the service does (put,
get and list objects, read the bucket's lock configuration) and explicitly
denies deleting objects or versions, bypassing governance retention and
changing retention, legal holds, versioning or the lock configuration. The
connection file names that user's credentials file; the root credentials
stay in `credentials.json` for `infra` itself.

Files under `<state>/minio/`: `data/`, `minio.log`, `minio.pid`, `build.log`,
`credentials.json` (root, 0600), `service-credentials.json` (the service
user, 0600) and `connection.json` (endpoint, bucket, path of the service
credentials file) for clients and tests.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ehr_abe.infra import process
from ehr_abe.infra.component import ComponentStatus, InfraError
from ehr_abe.infra.config import MINIO_TOOLS_DIR, InfraConfig, pinned_minio_version

NAME = "minio"
CONNECTION_FORMAT = 2
SERVICE_POLICY_NAME = "ehr-storage-service"

#: What the storage service does on the bucket, and nothing else.
_SERVICE_BUCKET_ACTIONS = [
    "s3:GetBucketLocation",
    "s3:ListBucket",
    "s3:ListBucketVersions",
    "s3:GetBucketVersioning",
    "s3:GetBucketObjectLockConfiguration",
]
_SERVICE_OBJECT_ACTIONS = [
    "s3:PutObject",
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:GetObjectRetention",
]
#: Denied explicitly, so no later "allow" (another policy, a group) can grant them.
SERVICE_DENIED_ACTIONS = [
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "s3:BypassGovernanceRetention",
    "s3:PutObjectRetention",
    "s3:PutObjectLegalHold",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutBucketVersioning",
    "s3:PutBucketPolicy",
    "s3:DeleteBucketPolicy",
    "s3:PutLifecycleConfiguration",
    "s3:DeleteBucket",
]

GOVERNANCE_NOTE = (
    "MinIO retention mode is GOVERNANCE (development only): the root user can lift it "
    "and delete stored record versions. Use COMPLIANCE (the default) for real records."
)


def service_policy(bucket: str) -> dict[str, Any]:
    """The IAM policy of the storage service's MinIO user."""
    arn = f"arn:aws:s3:::{bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": _SERVICE_BUCKET_ACTIONS, "Resource": [arn]},
            {"Effect": "Allow", "Action": _SERVICE_OBJECT_ACTIONS, "Resource": [f"{arn}/*"]},
            {"Effect": "Deny", "Action": SERVICE_DENIED_ACTIONS, "Resource": [arn, f"{arn}/*"]},
        ],
    }


def build_minio(
    binary: Path,
    *,
    tools_dir: Path = MINIO_TOOLS_DIR,
    log_file: Path,
    timeout_s: float,
) -> Path:
    """`go build` the MinIO pinned in `tools_dir` into `binary` (atomically).

    The module graph is read-only (`-mod=readonly`): go.mod and go.sum are the
    whole truth, and the checksum database vouches for every module.
    """
    if shutil.which("go") is None:
        raise InfraError(NAME, "the Go toolchain is needed to build MinIO (install Go >= 1.24)")
    binary.parent.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".minio-build-", dir=binary.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    env = dict(
        os.environ,
        CGO_ENABLED="0",
        GOFLAGS="-mod=readonly",  # a user's GOFLAGS must not change what we build
        GOTOOLCHAIN="local",  # never download another toolchain behind the user's back
        GOWORK="off",
    )
    try:
        with open(log_file, "wb") as log:
            rc = subprocess.call(
                ["go", "build", "-trimpath", "-o", str(tmp), "github.com/minio/minio"],
                cwd=tools_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=timeout_s,
            )
        if rc != 0:
            raise InfraError(NAME, f"the MinIO build failed (go build exit {rc})", log_file)
        tmp.chmod(0o755)
        os.replace(tmp, binary)  # concurrent builders: the last rename wins, both complete
    except subprocess.TimeoutExpired:
        raise InfraError(NAME, f"the MinIO build took over {timeout_s:.0f} s", log_file) from None
    finally:
        tmp.unlink(missing_ok=True)
    return binary


def port_in_use(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


class MinioServer:
    """The MinIO component of `ehr-abe infra` (see ehr_abe.infra.component.Component)."""

    name = NAME

    def __init__(self, cfg: InfraConfig, progress: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.settings = cfg.minio
        self.dir = cfg.state_dir / "minio"
        self.data_dir = self.dir / "data"
        self.pid_file = self.dir / "minio.pid"
        self.log = self.dir / "minio.log"
        self.build_log = self.dir / "build.log"
        self.credentials_file = self.dir / "credentials.json"
        self.service_credentials_file = self.dir / "service-credentials.json"
        self.connection_file = self.dir / "connection.json"
        self._progress = progress or (lambda _msg: None)

    # -- binary -----------------------------------------------------------------
    def ensure_binary(self) -> Path:
        """The cached binary of the pinned version; builds it the first time."""
        binary = self.cfg.minio_binary
        if _executable(binary):
            return binary
        binary.parent.mkdir(parents=True, exist_ok=True)
        # One build per version on this machine: a second `up` waits for the first.
        with open(binary.parent / ".build.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _executable(binary):
                return binary
            self._progress(
                f"building MinIO {pinned_minio_version()} from the Go module proxy "
                f"(once per version, a few minutes; log {self.build_log})"
            )
            return build_minio(
                binary, log_file=self.build_log, timeout_s=self.settings.build_timeout_s
            )

    # -- credentials ------------------------------------------------------------
    def credentials(self) -> tuple[str, str]:
        """The root user's (access key, secret key), generated once, kept 0600."""
        return self._credentials(self.credentials_file, "ehr-")

    def service_credentials(self) -> tuple[str, str]:
        """The storage service user's (access key, secret key), generated once, kept 0600."""
        return self._credentials(self.service_credentials_file, "ehr-svc-")

    def _credentials(self, path: Path, prefix: str) -> tuple[str, str]:
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            generated = {
                "access_key": prefix + secrets.token_hex(8),
                "secret_key": secrets.token_urlsafe(30),
            }
            with os.fdopen(fd, "w") as f:
                json.dump(generated, f)
                f.flush()
                os.fsync(f.fileno())
        try:
            stored = json.loads(path.read_text())
            return str(stored["access_key"]), str(stored["secret_key"])
        except (OSError, ValueError, KeyError, TypeError):
            raise InfraError(
                NAME, f"credentials file {path} is unreadable; remove it to regenerate"
            ) from None

    # -- lifecycle --------------------------------------------------------------
    def _pid(self) -> int | None:
        """Our MinIO's pid, if the pid file names a live process running our binary."""
        return process.running(self.pid_file, str(self.cfg.minio_binary))

    def _health(self, path: str) -> bool:
        url = f"http://{self.settings.endpoint}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _start(self, binary: Path, access_key: str, secret_key: str) -> None:
        s = self.settings
        for port in (s.port, s.console_port):
            if port_in_use(s.host, port):
                raise InfraError(
                    NAME,
                    f"{s.host}:{port} is taken by another process "
                    f"(set [minio] port/console_port or EHR_ABE_MINIO_PORT)",
                )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ,
            MINIO_ROOT_USER=access_key,
            MINIO_ROOT_PASSWORD=secret_key,
            MINIO_BROWSER="off",
            MINIO_UPDATE="off",
        )
        process.start(
            [
                str(binary),
                "server",
                str(self.data_dir),
                "--address",
                s.endpoint,
                "--console-address",
                f"{s.host}:{s.console_port}",
                "--quiet",
                "--anonymous",
            ],
            pid_file=self.pid_file,
            log_file=self.log,
            env=env,
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.start_timeout_s
        while not (self._health("/minio/health/live") and self._health("/minio/health/ready")):
            if self._pid() is None:
                raise InfraError(NAME, "exited during start-up", self.log)
            if time.monotonic() > deadline:
                raise InfraError(
                    NAME, f"not ready after {self.settings.start_timeout_s:.0f} s", self.log
                )
            time.sleep(0.2)

    def up(self) -> None:
        binary = self.ensure_binary()
        access_key, secret_key = self.credentials()
        if self._pid() is None:
            self._progress(f"starting MinIO on {self.settings.endpoint}")
            self._start(binary, access_key, secret_key)
        self._wait_ready()
        self._ensure_bucket(access_key, secret_key)
        self._ensure_service_user(access_key, secret_key)
        if self.settings.retention_mode == "GOVERNANCE":
            self._progress("WARNING: " + GOVERNANCE_NOTE)
        self._write_connection_file()

    def _ensure_service_user(self, access_key: str, secret_key: str) -> None:
        """The service's own user with `service_policy` attached (idempotent)."""
        from minio.credentials.providers import StaticProvider
        from minio.error import MinioAdminException
        from minio.minioadmin import MinioAdmin

        s = self.settings
        user, password = self.service_credentials()
        admin = MinioAdmin(
            endpoint=s.endpoint, credentials=StaticProvider(access_key, secret_key), secure=False
        )
        try:
            admin.user_add(user, password)  # sets the password again if the user exists
            admin.policy_add(SERVICE_POLICY_NAME, policy=service_policy(s.bucket))
            try:
                admin.attach_policy([SERVICE_POLICY_NAME], user=user)
            except MinioAdminException as exc:
                # attaching an already attached policy is refused; anything else is real
                if "already" not in str(exc).lower():
                    raise
        except MinioAdminException as exc:
            raise InfraError(
                NAME, f"cannot create the storage service's MinIO user: {exc}", self.log
            ) from None
        except OSError as exc:
            raise InfraError(NAME, f"cannot reach MinIO's admin API: {exc}", self.log) from None

    def _ensure_bucket(self, access_key: str, secret_key: str) -> None:
        from minio import Minio
        from minio.commonconfig import COMPLIANCE, GOVERNANCE
        from minio.error import MinioException
        from minio.objectlockconfig import DAYS, ObjectLockConfig

        s = self.settings
        client = Minio(s.endpoint, access_key=access_key, secret_key=secret_key, secure=False)
        try:
            if not client.bucket_exists(s.bucket):
                # Object lock can only be enabled at creation; it implies versioning.
                client.make_bucket(s.bucket, object_lock=True)
            lock = client.get_object_lock_config(s.bucket)  # raises if the bucket has none
            mode = GOVERNANCE if s.retention_mode == "GOVERNANCE" else COMPLIANCE
            if (lock.mode, lock.duration, lock.duration_unit) != (mode, s.retention_days, DAYS):
                client.set_object_lock_config(
                    s.bucket, ObjectLockConfig(mode, s.retention_days, DAYS)
                )
        except MinioException as exc:
            code = getattr(exc, "code", type(exc).__name__)
            raise InfraError(
                NAME, f"cannot set up bucket {s.bucket} with object lock: {code}", self.log
            ) from None
        except OSError as exc:
            raise InfraError(
                NAME, f"cannot reach MinIO to set up the bucket: {exc}", self.log
            ) from None

    def connection_document(self) -> dict[str, Any]:
        """What clients need to connect (no secrets: the credentials stay in their own file)."""
        s = self.settings
        return {
            "format": CONNECTION_FORMAT,
            "endpoint": s.endpoint,
            "secure": False,
            "bucket": s.bucket,
            # the service user's, never root's
            "credentials_file": str(self.service_credentials_file.resolve()),
            "retention_mode": s.retention_mode,
            "retention_days": s.retention_days,
        }

    def _write_connection_file(self) -> None:
        tmp = self.connection_file.with_name(f".{self.connection_file.name}.tmp")
        tmp.write_text(json.dumps(self.connection_document(), indent=2) + "\n")
        os.replace(tmp, self.connection_file)

    def down(self) -> None:
        # The connection file goes first: a client that finds it may rely on a live server.
        self.connection_file.unlink(missing_ok=True)
        pid = self._pid()
        process.stop(self.pid_file, str(self.cfg.minio_binary))
        if pid is not None:
            self._wait_exited(pid)

    def _wait_exited(self, pid: int, timeout_s: float = 15.0) -> None:
        """Until the process is gone and its ports are free: its command line
        empties while it is still exiting, and a `down` followed at once by `up`
        must not find the port taken. Our own child is reaped here: a
        multi-threaded process shows as a zombie while its threads still exit,
        and reaping it then fails, so "zombie" alone does not mean done."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                gone = os.waitpid(pid, os.WNOHANG)[0] == pid
            except ChildProcessError:  # not our child: its own parent reaps it
                gone = not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
            if gone and not port_in_use(self.settings.host, self.settings.port):
                return
            time.sleep(0.05)

    def status(self) -> list[ComponentStatus]:
        if not self.cfg.minio_binary.exists():
            return [ComponentStatus(NAME, "not-installed", detail="built on the first `infra up`")]
        pid = self._pid()
        if pid is None:
            return [ComponentStatus(NAME, "stopped", log=self.log)]
        ready = self._health("/minio/health/ready")
        return [
            ComponentStatus(
                NAME,
                "running" if ready else "unhealthy",
                pid,
                self.settings.endpoint,
                self.log,
                detail=f"bucket {self.settings.bucket}",
            )
        ]
