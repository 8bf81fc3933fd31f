"""Embedded object store on the local filesystem (single machine).

Write-once: an existing key is never overwritten. Every write goes to a
temporary file in the same directory, is fsynced, renamed into place with a
no-replace link, and the directory is fsynced, so a crash leaves either the
whole object or nothing. Stored files are made read-only.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ehr_abe.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*(/[A-Za-z0-9][A-Za-z0-9._\-]*)*$")
MAX_KEY = 512


def validate_key(key: str) -> str:
    if not isinstance(key, str) or len(key) > MAX_KEY or not _KEY_RE.fullmatch(key) or ".." in key:
        raise InvalidArgument(f"invalid object key {key!r}")
    if key.endswith(".meta~"):
        raise InvalidArgument(f"object keys may not end in '.meta~': {key!r}")
    return key


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemStore:
    def __init__(self, root: Path, *, workers: int = 8):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fs-get")

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def _write_once(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # fails if the key exists: never replaces
            except FileExistsError:
                raise AlreadyExists(f"object {path.relative_to(self.root)} already exists") from None
            _fsync_dir(path.parent)
        except OSError as exc:
            raise Unavailable(f"filesystem store: cannot write: {exc.strerror}") from None
        finally:
            tmp.unlink(missing_ok=True)

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        path = self._path(key)
        if metadata:
            meta_path = path.with_name(path.name + ".meta~")
            if not path.exists():
                meta_path.unlink(missing_ok=True)  # left by a crash before the object landed
                self._write_once(meta_path, json.dumps(dict(metadata), sort_keys=True).encode())
        self._write_once(path, bytes(data))

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no object {key}") from None
        except OSError as exc:
            raise Unavailable(f"filesystem store: cannot read {key}: {exc.strerror}") from None

    def metadata(self, key: str) -> dict[str, str]:
        path = self._path(key)
        try:
            return dict(json.loads(path.with_name(path.name + ".meta~").read_text()))
        except FileNotFoundError:
            return {}

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        keys = []
        for p in self.root.rglob("*"):
            if p.is_file() and not p.name.startswith(".") and not p.name.endswith(".meta~"):
                k = p.relative_to(self.root).as_posix()
                if k.startswith(prefix):
                    keys.append(k)
        yield from sorted(keys)

    def get_many(self, keys: Iterable[str]) -> Iterator[tuple[str, bytes | None]]:
        def one(k: str) -> tuple[str, bytes | None]:
            try:
                return k, self.get(k)
            except NotFound:
                return k, None

        yield from self._pool.map(one, list(keys))

    def close(self) -> None:
        self._pool.shutdown(wait=False)
