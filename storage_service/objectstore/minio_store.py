"""Object store on MinIO (S3 API), for the medical centers' storage.

The bucket has versioning and object lock with a default retention, so a
stored record version can be neither deleted nor overwritten in place, even
by someone holding this client's credentials. On top of that, `put` is a
conditional write (`If-None-Match: *`), so an existing key is refused before
a second version is ever created.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import urllib3
from minio import Minio
from minio.error import S3Error

from ehr_abe.errors import AlreadyExists, ConfigError, NotFound, Unavailable
from storage_service.objectstore.fs import validate_key

_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, OSError)


class MinioStore:
    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = False,
        workers: int = 16,
        timeout_s: float = 10.0,
    ):
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s * 3),
            maxsize=workers,
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, http_client=http)
        self.bucket = bucket
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="minio-get")

    @staticmethod
    def from_connection_file(path: Path) -> MinioStore:
        """From the connection.json that `ehr-abe infra up` writes."""
        try:
            conn = json.loads(path.read_text())
            creds = json.loads(Path(conn["credentials_file"]).read_text())
            return MinioStore(
                conn["endpoint"], creds["access_key"], creds["secret_key"], conn["bucket"],
                secure=bool(conn.get("secure", False)),
            )
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"cannot use MinIO connection file {path}: {exc}") from None

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        validate_key(key)
        headers: dict[str, str | list[str] | tuple[str]] = {
            "Content-Type": "application/octet-stream",
            "If-None-Match": "*",  # never create a second version of a record
        }
        for k, v in (metadata or {}).items():
            headers[f"x-amz-meta-{k}"] = v
        try:
            # _put_object sends our headers as they are (put_object would turn
            # If-None-Match into user metadata); pinned minio version in uv.lock.
            self.client._put_object(self.bucket, key, bytes(data), headers)
        except S3Error as exc:
            if exc.code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise AlreadyExists(f"object {key} already exists") from None
            raise Unavailable(f"MinIO refused to store {key}: {exc.code}") from None
        except _NETWORK_ERRORS as exc:
            raise Unavailable(f"MinIO at {self.client._base_url.host} is unreachable: {exc}") from None

    def get(self, key: str) -> bytes:
        validate_key(key)
        try:
            resp = self.client.get_object(self.bucket, key)
            try:
                return bytes(resp.read())
            finally:
                resp.close()
                resp.release_conn()
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchVersion"):
                raise NotFound(f"no object {key}") from None
            raise Unavailable(f"MinIO refused to read {key}: {exc.code}") from None
        except _NETWORK_ERRORS as exc:
            raise Unavailable(f"MinIO is unreachable: {exc}") from None

    def exists(self, key: str) -> bool:
        validate_key(key)
        try:
            self.client.stat_object(self.bucket, key)
            return True
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchVersion", "NoSuchObject"):
                return False
            raise Unavailable(f"MinIO refused to stat {key}: {exc.code}") from None
        except _NETWORK_ERRORS as exc:
            raise Unavailable(f"MinIO is unreachable: {exc}") from None

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        try:
            for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
                if obj.object_name is not None:
                    yield obj.object_name
        except S3Error as exc:
            raise Unavailable(f"MinIO refused to list: {exc.code}") from None
        except _NETWORK_ERRORS as exc:
            raise Unavailable(f"MinIO is unreachable: {exc}") from None

    def get_many(self, keys: Iterable[str]) -> Iterator[tuple[str, bytes | None]]:
        def one(k: str) -> tuple[str, bytes | None]:
            try:
                return k, self.get(k)
            except NotFound:
                return k, None

        yield from self._pool.map(one, list(keys))

    def close(self) -> None:
        self._pool.shutdown(wait=False)
