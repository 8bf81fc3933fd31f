"""Embedded object store on the local filesystem (single machine).

Write-once: an existing key is never overwritten. Each object is written to a
temporary file in its final directory, fsynced, and then hard-linked to its
name, which fails if the name exists (unlike rename, link never replaces); the
directory is fsynced after. A crash therefore leaves the whole object or no
object, and a second writer of the same key gets AlreadyExists while the first
object stays intact. Stored files are read-only.

Metadata lives in a JSON sidecar `<key>.meta~` written the same way, after
the object: only the writer that won the object's name writes it, so two
writers can never mix their metadata. (A crash between the two leaves the
object without metadata, never metadata without an object.)
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import stat
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ehr_common.errors import (
    AlreadyExists,
    IntegrityError,
    InvalidArgument,
    NotFound,
    Unavailable,
)

MAX_KEY_LENGTH = 512
META_SUFFIX = ".meta~"
# Path segments of letters, digits, '.', '_', '-', each starting with a letter or
# digit (so no '.', '..', hidden or temporary names), joined by single '/'.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._\-]*"
_KEY = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")


def validate_key(key: object) -> str:
    """`key` if it is a safe object key, else InvalidArgument. Shared by all stores
    so a key valid in one store is valid in every other."""
    if not isinstance(key, str):
        raise InvalidArgument(f"object key must be a string, not {type(key).__name__}")
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidArgument(f"object key must be 1-{MAX_KEY_LENGTH} characters long")
    if not _KEY.fullmatch(key) or ".." in key:
        raise InvalidArgument(
            f"invalid object key {key!r}: use segments of letters, digits, '.', '_', '-' "
            "separated by '/', each starting with a letter or digit"
        )
    if any(segment.endswith(META_SUFFIX) for segment in key.split("/")):
        raise InvalidArgument(f"object keys may not end in {META_SUFFIX!r}: {key!r}")
    return key


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(directory: Path, name: str, data: bytes) -> Path:
    """A durable read-only temporary file next to its final name."""
    tmp = directory / f".{name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


class FilesystemStore:
    """ObjectStore on a directory tree (see storage_service.objectstore.base)."""

    def __init__(self, root: Path, *, workers: int = 8):
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Unavailable(
                f"filesystem store: cannot create {self.root}: {exc.strerror}"
            ) from None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fs-store")

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _make_parents(self, key: str, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise InvalidArgument(
                f"object key {key!r}: a prefix of it is an existing object"
            ) from None

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> None:
        path = self._path(key)
        meta_bytes = _encode_metadata(metadata) if metadata else None
        if path.is_dir():
            raise InvalidArgument(f"object key {key!r} is a prefix of existing objects")
        tmp_files: list[Path] = []
        try:
            self._make_parents(key, path)
            tmp_object = _write_temp(path.parent, path.name, bytes(data))
            tmp_files.append(tmp_object)
            tmp_meta = None
            if meta_bytes is not None:
                tmp_meta = _write_temp(path.parent, path.name + META_SUFFIX, meta_bytes)
                tmp_files.append(tmp_meta)
            try:
                os.link(tmp_object, path)  # the commit point; never replaces
            except FileExistsError:
                raise AlreadyExists(f"object {key} already exists") from None
            if tmp_meta is not None:
                meta_path = path.with_name(path.name + META_SUFFIX)
                # Only the winner of the object's name gets here; a sidecar left
                # by an earlier crashed writer of this key is not this object's.
                os.replace(tmp_meta, meta_path)
            _fsync_dir(path.parent)
        except OSError as exc:
            raise Unavailable(f"filesystem store: cannot write {key}: {exc.strerror}") from None
        finally:
            for tmp in tmp_files:
                tmp.unlink(missing_ok=True)

    def get(self, key: str) -> bytes:
        return self._read(key, 0, None)

    def _read(self, key: str, offset: int, length: int | None) -> bytes:
        path = self._path(key)
        try:
            # Objects are regular files written by link(): a symbolic link, a FIFO or a
            # device in their place is damage, not data (and a FIFO would block a read).
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no object {key}") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EACCES, errno.EPERM, errno.ENXIO):
                raise IntegrityError(f"object {key} cannot be read: {exc.strerror}") from None
            raise Unavailable(f"filesystem store: cannot read {key}: {exc.strerror}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise IntegrityError(f"object {key} is not a regular file")
            with os.fdopen(fd, "rb", closefd=False) as f:
                if offset:
                    f.seek(offset)
                return f.read() if length is None else f.read(length)
        except OSError as exc:
            raise Unavailable(f"filesystem store: cannot read {key}: {exc.strerror}") from None
        finally:
            os.close(fd)

    def metadata(self, key: str) -> dict[str, str]:
        """The metadata stored with `key` ({} if none). Raises NotFound."""
        path = self._path(key)
        if not path.is_file():
            raise NotFound(f"no object {key}")
        try:
            raw = path.with_name(path.name + META_SUFFIX).read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise Unavailable(
                f"filesystem store: cannot read metadata of {key}: {exc.strerror}"
            ) from None
        decoded = json.loads(raw)
        return {str(k): str(v) for k, v in decoded.items()}

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        # Walk only the deepest directory the prefix names, not the whole tree.
        directory, _, _ = prefix.rpartition("/")
        start = self.root.joinpath(*directory.split("/")) if directory else self.root
        if ".." in prefix or not start.is_dir():
            return
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith(".") or name.endswith(META_SUFFIX):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        yield from sorted(keys)

    def get_many(self, keys: Iterable[str]) -> Iterator[tuple[str, bytes | None]]:
        wanted = [validate_key(k) for k in keys]  # bad keys fail before any read

        def fetch(key: str) -> tuple[str, bytes | None]:
            try:
                return key, self.get(key)
            except NotFound:
                return key, None

        yield from self._pool.map(fetch, wanted)

    def get_ranges(self, refs: Iterable[tuple[str, int, int]]) -> Iterator[bytes | None]:
        wanted = [(validate_key(k), *validate_range(o, n)) for k, o, n in refs]

        def fetch(ref: tuple[str, int, int]) -> bytes | None:
            try:
                return self._read(*ref)
            except NotFound:
                return None

        yield from self._pool.map(fetch, wanted)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def validate_range(offset: int, length: int) -> tuple[int, int]:
    """(offset, length) if both are 0 or more, else InvalidArgument. Shared by all stores."""
    if offset < 0 or length < 0:
        raise InvalidArgument("a byte range starts and extends at 0 or more")
    return offset, length


def validate_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Metadata both stores can keep as given: names in lower case (S3 folds them),
    of letters, digits and '-'; values printable ASCII (they travel as HTTP headers)."""
    for name, value in metadata.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidArgument("object metadata must map strings to strings")
        if not re.fullmatch(r"[A-Za-z0-9\-]{1,64}", name):
            raise InvalidArgument(f"invalid metadata name {name!r} (letters, digits, '-')")
        if not value.isascii() or not value.isprintable():
            raise InvalidArgument(f"metadata {name!r} must be printable ASCII")
    return {name.lower(): value for name, value in metadata.items()}


def _encode_metadata(metadata: Mapping[str, str]) -> bytes:
    return json.dumps(validate_metadata(metadata), sort_keys=True).encode()
