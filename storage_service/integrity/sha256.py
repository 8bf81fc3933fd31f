"""Batch SHA-256 over many records packed in one buffer, in parallel with numba.

Records are packed in one contiguous uint8 buffer with an int64 offsets array
of n+1 entries: record i is ``buf[offsets[i]:offsets[i+1]]``. Padding and the
loop over records run in numba (`prange` over groups of records, GIL
released); the compression function is one of three engines:

* ``sha-ni``: the x86 SHA extensions, emitted inline by a numba intrinsic
  (`_shani`); neighbouring records of equal length are compressed two at a
  time, interleaved, because one message's rounds are a serial dependency
  chain that leaves the SHA unit idle. The fastest here (faster per core than
  OpenSSL's own single-buffer SHA-NI code); only on CPUs with the `sha` feature.
* ``openssl``: OpenSSL's `SHA256_Transform` called from nopython code through
  ctypes. Portable (OpenSSL picks SHA-NI, AVX2, ARMv8 or plain code itself)
  but a call per block, and numba cannot cache kernels that hold a ctypes
  pointer, so it is compiled in every process.
* ``portable``: the FIPS 180-4 compression function in plain numba. Slowest,
  runs anywhere, and is an implementation independent of both others.

The default is the first available of that list; `EHR_ABE_SHA256_ENGINE`
(``sha-ni`` | ``openssl`` | ``portable``) forces one, e.g. to test a fallback.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cache
from typing import Final, Literal

import numba
import numpy as np
import numpy.typing as npt

from ehr_common.errors import ConfigError, InvalidArgument
from storage_service.integrity import _kernels
from storage_service.integrity.constants import DIGEST_SIZE

Engine = Literal["sha-ni", "openssl", "portable"]
ENGINES: Final[tuple[Engine, ...]] = ("sha-ni", "openssl", "portable")
ENGINE_ENV: Final = "EHR_ABE_SHA256_ENGINE"

U8Array = npt.NDArray[np.uint8]
I64Array = npt.NDArray[np.int64]

_TAGS: Final[dict[Engine, npt.NDArray[np.generic]]] = {
    "sha-ni": _kernels.TAG_SHA_NI,
    "openssl": _kernels.TAG_OPENSSL,
    "portable": _kernels.TAG_PORTABLE,
}


@cache
def cpu_has_sha_ni() -> bool:
    """True if numba's code generator may emit the x86 SHA instructions.

    Uses LLVM's view of the host CPU (what numba compiles for); when numba is
    told to target another CPU (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, e.g. for
    portable caches) only an explicit `+sha` there counts.
    """
    from llvmlite import binding as llvm

    cpu_name = getattr(numba.config, "CPU_NAME", None)
    cpu_features = getattr(numba.config, "CPU_FEATURES", None)
    if cpu_name is not None or cpu_features is not None:
        features = str(cpu_features or "")
        return "+sha" in features.split(",")
    host = llvm.get_host_cpu_features()
    return bool(host.get("sha", False))


def available_engines() -> tuple[Engine, ...]:
    """Engines that work on this machine, fastest first."""
    usable: list[Engine] = []
    if cpu_has_sha_ni():
        usable.append("sha-ni")
    if _kernels.OPENSSL_TRANSFORM is not None:
        usable.append("openssl")
    usable.append("portable")
    return tuple(usable)


def default_engine() -> Engine:
    """The engine used when none is named: `EHR_ABE_SHA256_ENGINE`, else the fastest."""
    forced = os.environ.get(ENGINE_ENV, "").strip().lower()
    if not forced:
        return available_engines()[0]
    return check_engine(forced)


def check_engine(name: str) -> Engine:
    """`name` as an Engine if it is known and usable here; ConfigError otherwise."""
    if name not in ENGINES:
        raise ConfigError(f"{ENGINE_ENV} must be one of {', '.join(ENGINES)} (got {name!r})")
    engine: Engine = name
    if engine not in available_engines():
        why = "the CPU has no SHA-NI" if engine == "sha-ni" else "libcrypto has no SHA256_Transform"
        raise ConfigError(f"SHA-256 engine {engine!r} is unavailable on this machine: {why}")
    return engine


def engine_tag(engine: Engine | None) -> npt.NDArray[np.generic]:
    """The compile-time selector passed to the kernels (see `_kernels`)."""
    return _TAGS[check_engine(engine) if engine is not None else default_engine()]


def check_packed(buf: U8Array, offsets: I64Array) -> None:
    """InvalidArgument unless (buf, offsets) describe records inside buf."""
    if not isinstance(buf, np.ndarray) or buf.dtype != np.uint8 or buf.ndim != 1:
        raise InvalidArgument("records buffer must be a 1-d uint8 numpy array")
    if not buf.flags.c_contiguous:
        raise InvalidArgument("records buffer must be contiguous")
    if not isinstance(offsets, np.ndarray) or offsets.dtype != np.int64 or offsets.ndim != 1:
        raise InvalidArgument("offsets must be a 1-d int64 numpy array")
    if offsets.shape[0] < 1:
        raise InvalidArgument("offsets must have n+1 entries (at least one)")
    if offsets[0] < 0 or offsets[-1] > buf.shape[0]:
        raise InvalidArgument("offsets point outside the records buffer")
    if offsets.shape[0] > 1 and bool(np.any(offsets[1:] < offsets[:-1])):
        raise InvalidArgument("offsets must be non-decreasing")


def check_digests(digests: U8Array, n: int, what: str = "expected digests") -> None:
    if not isinstance(digests, np.ndarray) or digests.dtype != np.uint8:
        raise InvalidArgument(f"{what} must be a uint8 numpy array")
    if digests.shape != (n, DIGEST_SIZE):
        raise InvalidArgument(f"{what} must have shape ({n}, {DIGEST_SIZE}), not {digests.shape}")


def _nonempty(buf: U8Array) -> U8Array:
    # numba needs a real data pointer even when every record is empty.
    return buf if buf.shape[0] > 0 else np.zeros(1, dtype=np.uint8)


def sha256_packed(
    buf: U8Array, offsets: I64Array, *, prefix: int = -1, engine: Engine | None = None
) -> U8Array:
    """Digests (n x 32 uint8) of the n records packed in `buf` by `offsets`.

    `prefix` (0..255) is one byte hashed before each record (an RFC 6962 leaf
    hash is prefix=0); -1 means none.
    """
    check_packed(buf, offsets)
    if not -1 <= prefix <= 255:
        raise InvalidArgument("prefix must be a byte value (0..255) or -1 for none")
    tag = engine_tag(engine)
    out = np.empty((offsets.shape[0] - 1, DIGEST_SIZE), dtype=np.uint8)
    work = int(offsets[-1] - offsets[0]) + 64 * (offsets.shape[0] - 1)
    _kernels.run(_kernels.digest_records, work, tag, _nonempty(buf), offsets, prefix, out)
    return out


def mismatched_packed(
    buf: U8Array, offsets: I64Array, expected: U8Array, *, engine: Engine | None = None
) -> I64Array:
    """Indices i (ascending) where SHA-256(record i) differs from expected[i]."""
    check_packed(buf, offsets)
    n = offsets.shape[0] - 1
    check_digests(expected, n)
    bad = np.empty(n, dtype=np.uint8)
    work = int(offsets[-1] - offsets[0]) + 64 * n
    _kernels.run(
        _kernels.find_mismatches,
        work,
        engine_tag(engine),
        _nonempty(buf),
        offsets,
        np.ascontiguousarray(expected),
        bad,
    )
    return np.flatnonzero(bad).astype(np.int64)


def pack(records: Sequence[bytes]) -> tuple[U8Array, I64Array]:
    """Pack byte strings into (buffer, offsets)."""
    lengths = np.fromiter((len(r) for r in records), dtype=np.int64, count=len(records))
    offsets = np.zeros(len(records) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    joined = b"".join(records)
    buf = np.frombuffer(joined, dtype=np.uint8).copy() if joined else np.zeros(0, np.uint8)
    return buf, offsets


def sha256_many(
    records: Sequence[bytes], *, prefix: int = -1, engine: Engine | None = None
) -> U8Array:
    """Digests (n x 32 uint8) of byte strings; see `sha256_packed`."""
    buf, offsets = pack(records)
    return sha256_packed(buf, offsets, prefix=prefix, engine=engine)


def mismatches(digests: U8Array, expected: U8Array) -> I64Array:
    """Indices i where digests[i] != expected[i] (both n x 32)."""
    check_digests(digests, digests.shape[0] if digests.ndim == 2 else -1, "digests")
    check_digests(expected, digests.shape[0])
    return np.flatnonzero(np.any(digests != expected, axis=1)).astype(np.int64)


def threads() -> int:
    """Worker threads the kernels use (NUMBA_NUM_THREADS, default: all cores)."""
    return int(numba.get_num_threads())
