"""Object store on MinIO (S3 API), for the medical centres' storage.

Two locks keep a stored record from being replaced:
- `put` is a conditional write (`If-None-Match: *`): MinIO refuses it with
  412 if the key exists, so a second version is never created by us;
- the bucket has versioning and object lock (set up by `ehr-abe infra up`),
  and `put` gives each version an explicit retention, so MinIO refuses to
  delete or shorten the retention of a stored version even for a client that
  holds these credentials and skips the condition (it can only add a newer
  version or a delete marker; the original version stays readable by id).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from ehr_common.errors import AlreadyExists, ConfigError, InvalidArgument, NotFound, Unavailable
from storage_service.objectstore.fs import validate_key, validate_metadata

#: One PUT carries at most 5 GiB (S3); records are far smaller.
MAX_OBJECT_SIZE = 5 * 1024**3
_MISSING = frozenset({"NoSuchKey", "NoSuchVersion", "NoSuchObject", "ResourceNotFound"})
_EXISTS = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_CREDENTIALS = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"})
_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, OSError)
#: The storage service's own keys: one flat level under records/ (no '/' in a
#: name), so none can be a path prefix of another and the two requests of the
#: prefix check below are not needed for them.
_FLAT_RECORD_KEY = re.compile(r"records/[A-Za-z0-9._-]+")


class MinioStore:
    """ObjectStore on a MinIO bucket (see storage_service.objectstore.base)."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = False,
        retention_mode: str | None = None,
        retention_days: int | None = None,
        workers: int = 8,
        timeout_s: float = 10.0,
    ):
        if (retention_mode is None) != (retention_days is None):
            raise ConfigError("MinIO retention needs both a mode and a number of days")
        if retention_mode not in (None, "GOVERNANCE", "COMPLIANCE"):
            raise ConfigError("MinIO retention mode must be GOVERNANCE or COMPLIANCE")
        self.endpoint = endpoint
        self.bucket = bucket
        self.retention_mode = retention_mode
        self.retention_days = retention_days
        self._workers = workers
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s * 3),
            maxsize=max(workers, 64),  # segment streams write up to 48 objects at once
            # Only reads are retried: a retried conditional PUT whose first try
            # landed would come back 412 and look like someone else's object.
            retries=urllib3.Retry(
                total=2,
                backoff_factor=0.2,
                status_forcelist=[500, 502, 503, 504],
                allowed_methods=frozenset({"GET", "HEAD"}),
            ),
        )
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            http_client=self._http,
        )
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="minio-store")

    @staticmethod
    def from_connection_file(path: Path, **options: Any) -> MinioStore:
        """From the connection.json that `ehr-abe infra up` writes (credentials are
        read from the file it names)."""
        try:
            conn = json.loads(Path(path).read_text())
            creds = json.loads(Path(conn["credentials_file"]).read_text())
            return MinioStore(
                str(conn["endpoint"]),
                str(creds["access_key"]),
                str(creds["secret_key"]),
                str(conn["bucket"]),
                secure=bool(conn.get("secure", False)),
                retention_mode=conn.get("retention_mode"),
                retention_days=conn.get("retention_days"),
                **options,
            )
        except OSError as exc:
            raise ConfigError(f"cannot read MinIO connection {path}: {exc.strerror}") from None
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"MinIO connection {path} is malformed ({exc!r})") from None

    # -- errors -------------------------------------------------------------------
    def _fail(self, exc: Exception, action: str, key: str) -> NoReturn:
        if isinstance(exc, S3Error):
            if exc.code in _MISSING:
                raise NotFound(f"no object {key}") from None
            if exc.code == "NoSuchBucket":
                raise ConfigError(
                    f"MinIO bucket {self.bucket} does not exist (run `ehr-abe infra up minio`)"
                ) from None
            if exc.code in _CREDENTIALS:
                raise ConfigError(
                    f"MinIO refused our credentials to {action} ({exc.code})"
                ) from None
            raise Unavailable(f"MinIO refused to {action} {key}: {exc.code}") from None
        if isinstance(exc, MinioException | urllib3.exceptions.HTTPError | OSError):
            raise Unavailable(f"MinIO at {self.endpoint} failed to {action} {key}: {exc}") from None
        raise exc

    # -- ObjectStore ------------------------------------------------------------------
    def _retention_headers(self) -> dict[str, str]:
        if self.retention_mode is None or self.retention_days is None:
            return {}  # the bucket's default retention applies
        until = dt.datetime.now(dt.UTC) + dt.timedelta(days=self.retention_days)
        return {
            "x-amz-object-lock-mode": self.retention_mode,
            "x-amz-object-lock-retain-until-date": until.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        }

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        validate_key(key)
        body = bytes(data)
        if len(body) > MAX_OBJECT_SIZE:
            raise InvalidArgument(f"object {key} is larger than {MAX_OBJECT_SIZE} bytes")
        headers: dict[str, str | list[str] | tuple[str]] = {
            "Content-Type": "application/octet-stream",
            "If-None-Match": "*",  # refuse, not version, an existing key
            **self._retention_headers(),
        }
        for name, value in validate_metadata(metadata or {}).items():
            headers[f"x-amz-meta-{name}"] = value
        if not _FLAT_RECORD_KEY.fullmatch(key):
            self._refuse_prefix_conflict(key)
        try:
            # The public put_object would turn If-None-Match into user metadata;
            # _put_object sends headers as given (minio is pinned in uv.lock, and
            # a test checks the condition is honoured).
            self.client._put_object(self.bucket, key, body, headers)
        except S3Error as exc:
            if exc.code in _EXISTS:
                raise AlreadyExists(f"object {key} already exists") from None
            self._fail(exc, "store", key)
        except (MinioException, *_NETWORK_ERRORS) as exc:
            self._fail(exc, "store", key)

    def _refuse_prefix_conflict(self, key: str) -> None:
        """InvalidArgument if `key` and a stored key are path prefixes of one another.

        MinIO on a single drive stores both `a` and `a/b`, but then lists only
        `a`: an audit walking the listing would silently miss `a/b`. The
        filesystem store cannot hold both at all; both stores refuse alike.
        (Costs one HEAD per parent segment and one LIST per put; two concurrent
        puts of `a` and `a/b` can still both pass.)"""
        segments = key.split("/")
        parents = ["/".join(segments[:i]) for i in range(1, len(segments))]
        if any(self.exists(parent) for parent in parents):
            raise InvalidArgument(f"object key {key!r}: a prefix of it is an existing object")
        try:
            below = self.client.list_objects(self.bucket, prefix=key + "/", recursive=False)
            taken = next(iter(below), None) is not None
        except (MinioException, *_NETWORK_ERRORS) as exc:
            self._fail(exc, "list", key + "/")
        if taken:
            raise InvalidArgument(f"object key {key!r} is a prefix of existing objects")

    def get(self, key: str) -> bytes:
        validate_key(key)
        try:
            response = self.client.get_object(self.bucket, key)
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()
        except (MinioException, *_NETWORK_ERRORS) as exc:
            self._fail(exc, "read", key)

    def metadata(self, key: str) -> dict[str, str]:
        """The user metadata stored with `key` (names in lower case). Raises NotFound."""
        validate_key(key)
        try:
            stat = self.client.stat_object(self.bucket, key)
        except (MinioException, *_NETWORK_ERRORS) as exc:
            self._fail(exc, "stat", key)
        prefix = "x-amz-meta-"
        return {
            name.lower()[len(prefix) :]: str(value)
            for name, value in (stat.metadata or {}).items()
            if name.lower().startswith(prefix)
        }

    def exists(self, key: str) -> bool:
        try:
            self.metadata(key)
            return True
        except NotFound:
            return False

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        try:
            for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
                if obj.object_name is not None and not obj.is_delete_marker:
                    yield obj.object_name
        except (MinioException, *_NETWORK_ERRORS) as exc:
            self._fail(exc, "list", prefix or "/")

    def get_many(self, keys: Iterable[str]) -> Iterator[tuple[str, bytes | None]]:
        """Fetches concurrently, at most 2 x workers in flight, results in key order."""

        def fetch(key: str) -> tuple[str, bytes | None]:
            try:
                return key, self.get(key)
            except NotFound:
                return key, None

        window: deque[Future[tuple[str, bytes | None]]] = deque()
        for key in keys:
            validate_key(key)
            window.append(self._pool.submit(fetch, key))
            if len(window) >= 2 * self._workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.clear()
