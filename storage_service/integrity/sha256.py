"""Batch SHA-256 for the integrity core, in parallel with numba.

Records are packed in one uint8 buffer with an int64 offsets array
(record i = buf[offsets[i]:offsets[i+1]]). Padding and block scheduling are
done in numba (`prange` over chunks of records); the compression function is
one of two engines, chosen once at import:

* ``openssl``: OpenSSL's `SHA256_Transform`, called from nopython code as a
  ctypes function (no Python, no GIL in the loop). OpenSSL picks the fastest
  implementation the CPU offers — the SHA-NI instructions here, AVX2/SSSE3 or
  plain x86-64 elsewhere — so this engine is both the fastest and portable
  across x86 CPUs. (Measured here against a pure-numba compression function:
  see bench/verify_bench.py --engines.)
* ``numba``: a pure-numba compression function, used where libcrypto does not
  export `SHA256_Transform` (it is deprecated in OpenSSL 3), and in tests as an
  independent implementation. Force it with EHR_ABE_SHA256_ENGINE=numba.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Sequence

import numba
import numpy as np
from numba import njit, prange

from ehr_abe.errors import ConfigError

_K = np.array(
    [
        0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
        0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
        0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
        0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
        0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
        0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
        0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
        0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
    ],
    dtype=np.uint32,
)  # fmt: skip
_IV = np.array(
    [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19],
    dtype=np.uint32,
)
CHUNK = 256  # records per parallel work item


# -- engine 1: pure numba ---------------------------------------------------------------
@njit(inline="always")
def _rotr(x: np.uint32, n: int) -> np.uint32:
    return np.uint32((x >> np.uint32(n)) | (x << np.uint32(32 - n)))


@njit(cache=True)
def _compress_numba(state: np.ndarray, block: np.ndarray, w: np.ndarray) -> None:
    for t in range(16):
        w[t] = (
            (np.uint32(block[4 * t]) << np.uint32(24))
            | (np.uint32(block[4 * t + 1]) << np.uint32(16))
            | (np.uint32(block[4 * t + 2]) << np.uint32(8))
            | np.uint32(block[4 * t + 3])
        )
    for t in range(16, 64):
        x, y = w[t - 15], w[t - 2]
        s0 = _rotr(x, 7) ^ _rotr(x, 18) ^ (x >> np.uint32(3))
        s1 = _rotr(y, 17) ^ _rotr(y, 19) ^ (y >> np.uint32(10))
        w[t] = np.uint32(w[t - 16] + s0 + w[t - 7] + s1)
    a, b, c, d, e, f, g, h = (state[0], state[1], state[2], state[3], state[4], state[5], state[6], state[7])
    for t in range(64):
        S1 = _rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)
        ch = (e & f) ^ (~e & g)
        t1 = np.uint32(h + S1 + ch + _K[t] + w[t])
        S0 = _rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)
        maj = (a & b) ^ (a & c) ^ (b & c)
        t2 = np.uint32(S0 + maj)
        h, g, f, e, d, c, b, a = g, f, e, np.uint32(d + t1), c, b, a, np.uint32(t1 + t2)
    state[0] += a
    state[1] += b
    state[2] += c
    state[3] += d
    state[4] += e
    state[5] += f
    state[6] += g
    state[7] += h


# -- engine 2: OpenSSL's SHA256_Transform --------------------------------------------------
def _load_transform() -> object | None:
    name = ctypes.util.find_library("crypto")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
        fn = lib.SHA256_Transform
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    fn.restype = None
    return fn


_ssl_transform = _load_transform()


def _make_kernels(use_openssl: bool):  # type: ignore[no-untyped-def]
    """Compile the batch kernels for one engine (the compression call is baked in)."""
    transform = _ssl_transform

    if use_openssl:

        @njit(inline="always")
        def compress(ctx: np.ndarray, block_ptr: int, w: np.ndarray, block: np.ndarray) -> None:
            transform(ctx.ctypes.data, block_ptr)  # type: ignore[operator]

    else:

        @njit(inline="always")
        def compress(ctx: np.ndarray, block_ptr: int, w: np.ndarray, block: np.ndarray) -> None:
            _compress_numba(ctx[:8], block, w)

    @njit(inline="always")
    def hash_one(
        buf: np.ndarray, start: int, length: int, prefix: int, ctx: np.ndarray,
        blk: np.ndarray, w: np.ndarray, out: np.ndarray, row: int,
    ) -> None:
        """SHA-256(prefix? || buf[start:start+length]) into out[row]; prefix < 0 means none."""
        for j in range(8):
            ctx[j] = _IV[j]
        plen = 1 if prefix >= 0 else 0
        total = length + plen
        pos = 0  # bytes of the (virtual) message consumed
        # Whole blocks straight from the buffer when there is no prefix (zero copy).
        if plen == 0:
            nfull = length // 64
            base = buf.ctypes.data + start
            for k in range(nfull):
                if use_openssl:
                    compress(ctx, base + 64 * k, w, blk)
                else:
                    compress(ctx, 0, w, buf[start + 64 * k : start + 64 * k + 64])
            pos = nfull * 64
        # The rest goes through the block buffer: copy, pad, length.
        fill = 0
        while pos < total:
            b = np.uint8(prefix) if (plen == 1 and pos == 0) else buf[start + pos - plen]
            blk[fill] = b
            fill += 1
            pos += 1
            if fill == 64:
                compress(ctx, blk.ctypes.data, w, blk)
                fill = 0
        blk[fill] = 0x80
        fill += 1
        if fill > 56:
            for j in range(fill, 64):
                blk[j] = 0
            compress(ctx, blk.ctypes.data, w, blk)
            fill = 0
        for j in range(fill, 56):
            blk[j] = 0
        bits = np.uint64(total) * np.uint64(8)
        for j in range(8):
            blk[63 - j] = np.uint8((bits >> np.uint64(8 * j)) & np.uint64(0xFF))
        compress(ctx, blk.ctypes.data, w, blk)
        for j in range(8):
            v = ctx[j]
            out[row, 4 * j] = np.uint8(v >> np.uint32(24))
            out[row, 4 * j + 1] = np.uint8((v >> np.uint32(16)) & np.uint32(0xFF))
            out[row, 4 * j + 2] = np.uint8((v >> np.uint32(8)) & np.uint32(0xFF))
            out[row, 4 * j + 3] = np.uint8(v & np.uint32(0xFF))

    @njit(parallel=True)
    def batch(buf: np.ndarray, offsets: np.ndarray, prefix: int, out: np.ndarray) -> None:
        n = offsets.shape[0] - 1
        nchunks = (n + CHUNK - 1) // CHUNK
        for c in prange(nchunks):
            ctx = np.zeros(28, dtype=np.uint32)  # SHA256_CTX is 112 bytes; h[8] first
            blk = np.zeros(64, dtype=np.uint8)
            w = np.zeros(64, dtype=np.uint32)
            for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
                hash_one(buf, offsets[i], offsets[i + 1] - offsets[i], prefix, ctx, blk, w, out, i)

    @njit(parallel=True)
    def node_level(children: np.ndarray, out: np.ndarray) -> None:
        """out[i] = SHA-256(0x01 || children[2i] || children[2i+1]) (RFC 6962 interior nodes)."""
        m = out.shape[0]
        nchunks = (m + CHUNK - 1) // CHUNK
        for c in prange(nchunks):
            ctx = np.zeros(28, dtype=np.uint32)
            blk = np.zeros(64, dtype=np.uint8)
            w = np.zeros(64, dtype=np.uint32)
            msg = np.empty(65, dtype=np.uint8)
            offs = np.array([0, 65], dtype=np.int64)
            for i in range(c * CHUNK, min(m, (c + 1) * CHUNK)):
                msg[0] = 1
                for j in range(32):
                    msg[1 + j] = children[2 * i, j]
                    msg[33 + j] = children[2 * i + 1, j]
                hash_one(msg, 0, 65, -1, ctx, blk, w, out, i)

    return batch, node_level


def _select_engine() -> str:
    forced = os.environ.get("EHR_ABE_SHA256_ENGINE", "").strip().lower()
    if forced and forced not in ("openssl", "numba"):
        raise ConfigError("EHR_ABE_SHA256_ENGINE must be 'openssl' or 'numba'")
    if forced == "openssl" and _ssl_transform is None:
        raise ConfigError("EHR_ABE_SHA256_ENGINE=openssl but libcrypto has no SHA256_Transform")
    if forced:
        return forced
    return "openssl" if _ssl_transform is not None else "numba"


ENGINE = _select_engine()
_kernels: dict[str, tuple[object, object]] = {}


def kernels(engine: str = ENGINE) -> tuple[object, object]:
    if engine not in _kernels:
        if engine == "openssl" and _ssl_transform is None:
            raise ConfigError("the openssl engine is unavailable on this machine")
        _kernels[engine] = _make_kernels(engine == "openssl")
    return _kernels[engine]


def sha256_packed(
    buf: np.ndarray, offsets: np.ndarray, *, prefix: int = -1, engine: str = ENGINE
) -> np.ndarray:
    """Digests (n × 32 uint8) of the n records packed in `buf` by `offsets`.
    `prefix` (0..255) is hashed before each record (RFC 6962 leaf: prefix=0)."""
    if buf.dtype != np.uint8 or buf.ndim != 1 or not buf.flags.c_contiguous:
        raise ValueError("buf must be a contiguous 1-d uint8 array")
    if offsets.dtype != np.int64 or offsets.ndim != 1 or offsets.shape[0] < 1:
        raise ValueError("offsets must be a 1-d int64 array of n+1 entries")
    if offsets[0] < 0 or offsets[-1] > buf.shape[0] or np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must be non-decreasing and inside the buffer")
    out = np.empty((offsets.shape[0] - 1, 32), dtype=np.uint8)
    batch, _ = kernels(engine)
    batch(buf, offsets, prefix, out)  # type: ignore[operator]
    return out


def pack(records: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Pack byte strings into (buffer, offsets)."""
    lengths = np.fromiter((len(r) for r in records), dtype=np.int64, count=len(records))
    offsets = np.zeros(len(records) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    buf = np.frombuffer(b"".join(records), dtype=np.uint8) if records else np.zeros(0, np.uint8)
    if buf.shape[0] == 0:
        buf = np.zeros(1, dtype=np.uint8)  # a valid pointer even for empty input
    return np.ascontiguousarray(buf), offsets


def sha256_many(records: Sequence[bytes], *, prefix: int = -1, engine: str = ENGINE) -> np.ndarray:
    buf, offsets = pack(records)
    return sha256_packed(buf, offsets, prefix=prefix, engine=engine)


def mismatches(digests: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Indices i where digests[i] != expected[i]."""
    if digests.shape != expected.shape:
        raise ValueError("digest arrays differ in shape")
    return np.nonzero(np.any(digests != expected, axis=1))[0]


def threads() -> int:
    return int(numba.get_num_threads())
