"""MinIO for development and tests: built from the Go module proxy at the
version pinned in tools/minio/go.mod, cached outside the repository by
version, started on loopback, with a records bucket that has versioning and
object lock (so the store itself refuses to delete a stored record version).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ehr_abe.infra import process
from ehr_abe.infra.component import ComponentStatus, InfraError
from ehr_abe.infra.config import MINIO_TOOLS_DIR, InfraConfig, pinned_minio_version

NAME = "minio"


class MinioServer:
    name = NAME

    def __init__(self, cfg: InfraConfig, progress: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.s = cfg.minio
        self.dir = cfg.state_dir / "minio"
        self.pid_file = self.dir / "minio.pid"
        self.log = self.dir / "minio.log"
        self.creds_file = self.dir / "credentials.json"
        self.connection_file = self.dir / "connection.json"
        self._progress = progress or (lambda _msg: None)

    # -- binary -----------------------------------------------------------------
    def ensure_binary(self) -> Path:
        """Build MinIO once per pinned version; later calls return the cached binary."""
        binary = self.cfg.minio_binary
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
        if shutil.which("go") is None:
            raise InfraError(NAME, "the Go toolchain is needed to build MinIO (install Go ≥ 1.24)")
        version = pinned_minio_version()
        binary.parent.mkdir(parents=True, exist_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        build_log = self.dir / "build.log"
        self._progress(f"building MinIO {version} from the Go module proxy (once; ~3 minutes)")
        fd, tmp = tempfile.mkstemp(prefix=".minio-", dir=binary.parent)
        os.close(fd)
        env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod")
        try:
            with open(build_log, "wb") as log:
                rc = subprocess.call(
                    ["go", "build", "-trimpath", "-o", tmp, "github.com/minio/minio"],
                    cwd=MINIO_TOOLS_DIR,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    timeout=self.s.build_timeout_s,
                )
        except subprocess.TimeoutExpired:
            Path(tmp).unlink(missing_ok=True)
            raise InfraError(NAME, "the MinIO build timed out", build_log) from None
        if rc != 0:
            Path(tmp).unlink(missing_ok=True)
            raise InfraError(NAME, f"the MinIO build failed (exit {rc})", build_log)
        os.chmod(tmp, 0o755)
        os.replace(tmp, binary)
        return binary

    # -- credentials ---------------------------------------------------------------
    def credentials(self) -> tuple[str, str]:
        if not self.creds_file.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            data = {"access_key": "ehr-" + secrets.token_hex(8), "secret_key": secrets.token_urlsafe(30)}
            fd = os.open(self.creds_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
        data = json.loads(self.creds_file.read_text())
        return str(data["access_key"]), str(data["secret_key"])

    # -- lifecycle -----------------------------------------------------------------
    def _alive(self) -> int | None:
        return process.running(self.pid_file, str(self.cfg.minio_binary))

    def _health(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.s.endpoint}{path}", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def up(self) -> None:
        binary = self.ensure_binary()
        access, secret = self.credentials()
        if self._alive() is None:
            data = self.dir / "data"
            data.mkdir(parents=True, exist_ok=True)
            env = dict(
                os.environ,
                MINIO_ROOT_USER=access,
                MINIO_ROOT_PASSWORD=secret,
                MINIO_BROWSER="off",
                MINIO_UPDATE="off",
            )
            process.start(
                [
                    str(binary), "server", str(data),
                    "--address", self.s.endpoint,
                    "--console-address", f"{self.s.host}:{self.s.console_port}",
                    "--quiet",
                ],
                pid_file=self.pid_file,
                log_file=self.log,
                env=env,
            )
        deadline = time.monotonic() + self.s.start_timeout_s
        while not self._health("/minio/health/ready"):
            if self._alive() is None:
                raise InfraError(NAME, "exited during start-up (port in use?)", self.log)
            if time.monotonic() > deadline:
                raise InfraError(NAME, f"not ready after {self.s.start_timeout_s:.0f} s", self.log)
            time.sleep(0.2)
        self._ensure_bucket(access, secret)
        tmp = self.connection_file.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "endpoint": self.s.endpoint,
                    "secure": False,
                    "bucket": self.s.bucket,
                    "credentials_file": str(self.creds_file),
                    "retention_mode": self.s.retention_mode,
                    "retention_days": self.s.retention_days,
                },
                indent=2,
            )
        )
        os.replace(tmp, self.connection_file)

    def _ensure_bucket(self, access: str, secret: str) -> None:
        from minio import Minio
        from minio.commonconfig import GOVERNANCE, COMPLIANCE
        from minio.error import S3Error
        from minio.objectlockconfig import DAYS, ObjectLockConfig

        client = Minio(self.s.endpoint, access_key=access, secret_key=secret, secure=False)
        try:
            if not client.bucket_exists(self.s.bucket):
                client.make_bucket(self.s.bucket, object_lock=True)  # implies versioning
            mode = GOVERNANCE if self.s.retention_mode == "GOVERNANCE" else COMPLIANCE
            client.set_object_lock_config(
                self.s.bucket, ObjectLockConfig(mode, self.s.retention_days, DAYS)
            )
        except S3Error as exc:
            raise InfraError(NAME, f"cannot set up bucket {self.s.bucket}: {exc.code}", self.log) from None

    def down(self) -> None:
        process.stop(self.pid_file, str(self.cfg.minio_binary))

    def status(self) -> list[ComponentStatus]:
        if not self.cfg.minio_binary.exists():
            return [ComponentStatus(NAME, "not-installed", detail="built on first `infra up`")]
        pid = self._alive()
        if pid is None:
            return [ComponentStatus(NAME, "stopped", log=self.log)]
        state = "running" if self._health("/minio/health/ready") else "unhealthy"
        return [ComponentStatus(NAME, state, pid, self.s.endpoint, self.log)]  # type: ignore[arg-type]
