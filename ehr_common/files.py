"""Writing files that may hold secrets (keys, plaintext, sealed master keys).

`write_file_atomic` writes to a fresh temporary file in the target's directory
(created with O_EXCL | O_NOFOLLOW and its final mode from the start), fsyncs
it, and only then publishes it under the target name:
  * never through a symbolic link (a link at the target is refused, not followed;
    a planted link cannot redirect a key or a plaintext elsewhere);
  * an existing file is replaced only with `overwrite=True`, by rename, so the new
    file has the new mode whatever the old one had (a 0644 file does not stay
    0644 when a key is written over it) and readers see old or new, never half;
  * without `overwrite`, publication is a hard link, which fails if the name
    appeared meanwhile: no check-then-write race.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from ehr_common.errors import AlreadyExists, ConfigError, InvalidArgument

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


def _fsync_dir(directory: Path) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_file_atomic(path: Path, data: bytes, mode: int, *, overwrite: bool) -> None:
    """Publish `data` at `path` with exactly `mode`; see the module docstring."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise ConfigError(f"cannot inspect {path}: {exc.strerror}") from None
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise InvalidArgument(f"{path} is a symbolic link; refusing to write through it")
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArgument(f"{path} exists and is not a regular file")
        if not overwrite:
            raise AlreadyExists(f"{path} exists; not overwritten (use --force to replace it)")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except OSError as exc:
        raise ConfigError(f"cannot write in {path.parent}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # exactly `mode`, not `mode & ~umask`
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)  # replaces a name (a link is not followed)
        else:
            try:
                os.link(tmp, path, follow_symlinks=False)
            except FileExistsError:
                raise AlreadyExists(
                    f"{path} appeared while it was being written; not overwritten"
                ) from None
            tmp.unlink()
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
