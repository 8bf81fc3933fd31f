"""Object store on MinIO (S3 API), for the medical centres' storage.

Two locks keep a stored record from being replaced:
- `put` is a conditional write (`If-None-Match: *`): MinIO refuses it with
  412 if the key exists, so a second version is never created by us;
- the bucket has versioning, object lock and a default retention
  (COMPLIANCE; set up by `ehr-abe infra up`), which MinIO applies to every
  new version, so MinIO refuses to delete a stored version before its
  retention ends, whoever asks.
The credentials are the service's own MinIO user (`ehr_abe.infra.minio.
service_policy`): it may put, get and list, and is denied deleting objects or
versions, bypassing governance and changing retention or legal holds. So a
client holding these credentials that skips the condition can only add a
newer version; the original stays readable by id and the anchored leaf hash
tells which is the record. (`put` sends no retention headers: setting one
needs s3:PutObjectRetention, which the service user is denied.)

Two S3 clients, one per direction. Writes, the hot path of PutRecord and
WriteSegments, go through obstore (Rust's object_store): its conditional
PUT (`mode="create"`) costs this process about 0.25 ms of CPU against
0.5-0.9 ms for minio-py's urllib3 request, and in an interleaved A/B of
PutRecord (`bench/ingest_bench.py --ops put`) the service's CPU per record
fell from 2.13 to 1.53 ms and MinIO's from 1.48 to 1.24 ms. Reads, listings,
stats and the lock configuration stay on minio-py, which the tests and the
operator tooling use too. Neither client retries a PUT (a retried
conditional PUT whose first try landed would come back 412).
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import obstore
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from ehr_common.errors import AlreadyExists, ConfigError, InvalidArgument, NotFound, Unavailable
from storage_service.objectstore.fs import validate_key, validate_metadata, validate_range

T = TypeVar("T")

#: One PUT carries at most 5 GiB (S3); records are far smaller.
MAX_OBJECT_SIZE = 5 * 1024**3
_MISSING = frozenset({"NoSuchKey", "NoSuchVersion", "NoSuchObject", "ResourceNotFound"})
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
        # informational: the bucket's default retention that `infra up` set (never sent)
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
        self._writer = S3Store(
            bucket,
            endpoint=f"{'https' if secure else 'http'}://{endpoint}",
            access_key_id=access_key,
            secret_access_key=secret_key,
            region="us-east-1",
            virtual_hosted_style_request=False,
            client_options={
                "allow_http": not secure,
                "connect_timeout": timedelta(seconds=timeout_s),
                "timeout": timedelta(seconds=timeout_s * 3),
            },
            retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=timeout_s * 3)},
        )

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

    def default_retention(self) -> tuple[str, int]:
        """(mode, days) of the bucket's default object-lock retention, read with our
        own credentials; ConfigError if the bucket has none (records could then be
        deleted by whoever holds delete rights)."""
        try:
            lock = self.client.get_object_lock_config(self.bucket)
        except S3Error as exc:
            if exc.code == "ObjectLockConfigurationNotFoundError":
                raise ConfigError(
                    f"MinIO bucket {self.bucket} has no object lock: records would not be "
                    "write-once (run `ehr-abe infra up minio`)"
                ) from None
            self._fail(exc, "read the lock configuration of", self.bucket)
        except (MinioException, *_NETWORK_ERRORS) as exc:
            self._fail(exc, "read the lock configuration of", self.bucket)
        if lock.mode is None or lock.duration is None:
            raise ConfigError(f"MinIO bucket {self.bucket} has no default retention")
        days = int(lock.duration) * (365 if str(lock.duration_unit).upper() == "YEARS" else 1)
        return str(lock.mode), days

    # -- errors -------------------------------------------------------------------
    def _fail(self, exc: Exception, action: str, key: str) -> NoReturn:
        """The typed error for a failure of either client: minio-py's S3Error and
        network errors, or obstore's (used only to put, so its NotFound is the bucket)."""
        code = exc.code if isinstance(exc, S3Error) else None
        if code in _MISSING:
            raise NotFound(f"no object {key}") from None
        if code == "NoSuchBucket" or isinstance(exc, NotFoundError):
            raise ConfigError(
                f"MinIO bucket {self.bucket} does not exist (run `ehr-abe infra up minio`)"
            ) from None
        if code in _CREDENTIALS or isinstance(exc, PermissionDeniedError | UnauthenticatedError):
            raise ConfigError(
                f"MinIO refused our credentials to {action} ({code or type(exc).__name__})"
            ) from None
        if code is not None:
            raise Unavailable(f"MinIO refused to {action} {key}: {code}") from None
        if isinstance(exc, MinioException | urllib3.exceptions.HTTPError | OSError | BaseError):
            # obstore's errors carry a multi-line debug dump after their first line
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
            raise Unavailable(
                f"MinIO at {self.endpoint} failed to {action} {key}: {reason}"
            ) from None
        raise exc

    # -- ObjectStore ------------------------------------------------------------------
    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        validate_key(key)
        body = bytes(data)
        if len(body) > MAX_OBJECT_SIZE:
            raise InvalidArgument(f"object {key} is larger than {MAX_OBJECT_SIZE} bytes")
        if not _FLAT_RECORD_KEY.fullmatch(key):
            self._refuse_prefix_conflict(key)
        attrs: dict[str, str] = {"Content-Type": "application/octet-stream"}
        attrs.update(validate_metadata(metadata or {}))  # sent as x-amz-meta-<name>
        try:
            # mode "create" is the conditional write (If-None-Match: *); never retried.
            obstore.put(
                self._writer, key, body, mode="create", attributes=attrs, use_multipart=False
            )
        except (AlreadyExistsError, PreconditionError):
            raise AlreadyExists(f"object {key} already exists") from None
        except BaseError as exc:
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

        return self._bounded(partial(fetch, validate_key(k)) for k in keys)

    def _bounded(self, calls: Iterable[Callable[[], T]]) -> Iterator[T]:
        """Runs `calls` on the pool, at most 2 x workers in flight, results in order."""
        window: deque[Future[T]] = deque()
        for call in calls:
            window.append(self._pool.submit(call))
            if len(window) >= 2 * self._workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()

    def get_ranges(self, refs: Iterable[tuple[str, int, int]]) -> Iterator[bytes | None]:
        """Ranged GETs, concurrently as get_many."""

        def fetch(key: str, offset: int, length: int) -> bytes | None:
            if length == 0:
                return b""
            try:
                response = self.client.get_object(self.bucket, key, offset=offset, length=length)
                try:
                    return bytes(response.read())
                finally:
                    response.close()
                    response.release_conn()
            except S3Error as exc:
                if exc.code == "InvalidRange":
                    return b""  # the object is shorter than the range: its hash says so
                if exc.code in _MISSING:
                    return None
                self._fail(exc, "read", key)
            except (MinioException, *_NETWORK_ERRORS) as exc:
                self._fail(exc, "read", key)

        return self._bounded(
            partial(fetch, validate_key(k), *validate_range(o, n)) for k, o, n in refs
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.clear()
