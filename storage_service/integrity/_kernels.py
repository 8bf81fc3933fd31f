"""numba kernels of the integrity core: batch SHA-256, Merkle levels, proof checks.

Every kernel takes an *engine tag* first: an empty array whose dtype selects
the compression function at compile time (int8: SHA-NI, int16: OpenSSL,
int32: portable numba). A dtype, not a function argument, because numba can
cache specialisations on array types but not on function objects — and
because a SHA-NI specialisation must never be compiled on a CPU without SHA-NI
(LLVM cannot select the instructions), it is only built when that tag is passed.

Kernels are `nogil`, so the caller's I/O threads keep running while they hash.
The per-message helpers are inlined at numba IR level (`inline="always"`): left
to LLVM they stay calls taking every array as a dozen scalars, which cost as
much as the hashing for small records (measured: 10 -> 18 M records/s per core
at 64 B). Callers validate shapes and dtypes (see `sha256` and `merkle`); kernels trust them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import warnings
from typing import Any

import numpy as np
from numba import njit, prange, types
from numba.core.errors import NumbaWarning
from numba.extending import overload

from storage_service.integrity._shani import sha_ni_block, sha_ni_block2
from storage_service.integrity.constants import SHA256_IV, SHA256_K

TAG_SHA_NI = np.empty(0, dtype=np.int8)
TAG_OPENSSL = np.empty(0, dtype=np.int16)
TAG_PORTABLE = np.empty(0, dtype=np.int32)

RECORDS_PER_TASK = 256  # records per parallel work item: big enough to amortise scheduling
_STATE_WORDS = 28  # OpenSSL's SHA256_CTX is 112 bytes with h[8] first; the others use 8

_K = np.array(SHA256_K, dtype=np.uint32)
_IV = np.array(SHA256_IV, dtype=np.uint32)


def _load_openssl_transform() -> Any:
    """OpenSSL's one-block SHA256_Transform (deprecated in 3.0 but exported), or None."""
    name = ctypes.util.find_library("crypto")
    if not name:
        return None
    try:
        fn = ctypes.CDLL(name).SHA256_Transform
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    fn.restype = None
    return fn


OPENSSL_TRANSFORM = _load_openssl_transform()


# Under numba's `workqueue` threading layer (used where neither TBB nor OpenMP
# is available) two threads launching parallel kernels at once abort the
# process. Each launch already uses every core, so concurrent callers (gRPC
# worker threads) take turns.
_LAUNCH = threading.Lock()


def run(kernel: Any, work_bytes: int, tag: Any, *args: Any) -> None:
    """kernel(tag, *args), one launch at a time; its serial twin when the batch
    is under SERIAL_BELOW_BYTES of hashing. The OpenSSL specialisations embed a
    ctypes pointer, so numba cannot cache them and warns once per kernel;
    expected, so not shown."""
    if work_bytes < SERIAL_BELOW_BYTES:
        kernel = _SERIAL_TWIN[kernel]
    with _LAUNCH:
        if tag.dtype != np.int16:
            kernel(tag, *args)
            return
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="Cannot cache compiled function", category=NumbaWarning
            )
            kernel(tag, *args)


# -- portable compression function -------------------------------------------------------
@njit
def _rotr(x: Any, n: int) -> Any:
    return np.uint32((x >> np.uint32(n)) | (x << np.uint32(32 - n)))


@njit
def _compress_portable(state: Any, src: Any, offset: int, w: Any) -> None:
    for t in range(16):
        o = offset + 4 * t
        w[t] = (
            (np.uint32(src[o]) << np.uint32(24))
            | (np.uint32(src[o + 1]) << np.uint32(16))
            | (np.uint32(src[o + 2]) << np.uint32(8))
            | np.uint32(src[o + 3])
        )
    for t in range(16, 64):
        x = w[t - 15]
        y = w[t - 2]
        s0 = _rotr(x, 7) ^ _rotr(x, 18) ^ (x >> np.uint32(3))
        s1 = _rotr(y, 17) ^ _rotr(y, 19) ^ (y >> np.uint32(10))
        w[t] = np.uint32(w[t - 16] + s0 + w[t - 7] + s1)
    a = state[0]
    b = state[1]
    c = state[2]
    d = state[3]
    e = state[4]
    f = state[5]
    g = state[6]
    h = state[7]
    for t in range(64):
        big_s1 = _rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)
        ch = (e & f) ^ (~e & g)
        t1 = np.uint32(h + big_s1 + ch + _K[t] + w[t])
        big_s0 = _rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)
        maj = (a & b) ^ (a & c) ^ (b & c)
        t2 = np.uint32(big_s0 + maj)
        h = g
        g = f
        f = e
        e = np.uint32(d + t1)
        d = c
        c = b
        b = a
        a = np.uint32(t1 + t2)
    state[0] += a
    state[1] += b
    state[2] += c
    state[3] += d
    state[4] += e
    state[5] += f
    state[6] += g
    state[7] += h


# -- engine dispatch ---------------------------------------------------------------------
def _compress(tag: Any, state: Any, src: Any, offset: Any, w: Any) -> Any:
    """Compress the 64-byte block src[offset:offset+64] into state (numba only)."""
    raise NotImplementedError("numba-only function")


@overload(_compress)
def _compress_overload(tag: Any, state: Any, src: Any, offset: Any, w: Any) -> Any:
    if tag.dtype == types.int8:

        def sha_ni(tag: Any, state: Any, src: Any, offset: Any, w: Any) -> Any:
            sha_ni_block(state.ctypes.data, src.ctypes.data + offset)  # type: ignore[call-arg]

        return sha_ni
    if tag.dtype == types.int16:
        transform = OPENSSL_TRANSFORM

        def openssl(tag: Any, state: Any, src: Any, offset: Any, w: Any) -> Any:
            transform(state.ctypes.data, src.ctypes.data + offset)

        return openssl

    def portable(tag: Any, state: Any, src: Any, offset: Any, w: Any) -> Any:
        _compress_portable(state, src, offset, w)

    return portable


def _compress2(
    tag: Any, state_a: Any, src_a: Any, off_a: Any, state_b: Any, src_b: Any, off_b: Any, w: Any
) -> Any:
    """Two independent compressions; SHA-NI interleaves them (numba only)."""
    raise NotImplementedError("numba-only function")


@overload(_compress2)
def _compress2_overload(
    tag: Any, state_a: Any, src_a: Any, off_a: Any, state_b: Any, src_b: Any, off_b: Any, w: Any
) -> Any:
    if tag.dtype == types.int8:

        def sha_ni(
            tag: Any,
            state_a: Any,
            src_a: Any,
            off_a: Any,
            state_b: Any,
            src_b: Any,
            off_b: Any,
            w: Any,
        ) -> Any:
            sha_ni_block2(  # type: ignore[call-arg]
                state_a.ctypes.data,
                src_a.ctypes.data + off_a,
                state_b.ctypes.data,
                src_b.ctypes.data + off_b,
            )

        return sha_ni

    def one_by_one(
        tag: Any,
        state_a: Any,
        src_a: Any,
        off_a: Any,
        state_b: Any,
        src_b: Any,
        off_b: Any,
        w: Any,
    ) -> Any:
        _compress(tag, state_a, src_a, off_a, w)
        _compress(tag, state_b, src_b, off_b, w)

    return one_by_one


# -- one message ---------------------------------------------------------------------------
@njit(inline="always")
def _hash_into(
    tag: Any,
    src: Any,
    start: int,
    length: int,
    prefix: int,
    state: Any,
    block: Any,
    w: Any,
    out: Any,
    row: int,
) -> None:
    """out[row] = SHA-256(prefix || src[start:start+length]); prefix < 0 means no prefix byte."""
    for j in range(8):
        state[j] = _IV[j]
    pos = 0  # record bytes consumed
    fill = 0  # bytes waiting in `block`
    if prefix < 0:
        # Whole blocks straight from the record: no copy.
        whole = length // 64
        for k in range(whole):
            _compress(tag, state, src, start + 64 * k, w)
        pos = 64 * whole
    else:
        block[0] = np.uint8(prefix)
        fill = 1
        while length - pos >= 64 - fill:
            take = 64 - fill
            for j in range(take):
                block[fill + j] = src[start + pos + j]
            _compress(tag, state, block, 0, w)
            pos += take
            fill = 0
    rest = length - pos
    for j in range(rest):
        block[fill + j] = src[start + pos + j]
    fill += rest
    block[fill] = 0x80
    fill += 1
    if fill > 56:
        for j in range(fill, 64):
            block[j] = 0
        _compress(tag, state, block, 0, w)
        fill = 0
    for j in range(fill, 56):
        block[j] = 0
    total = length + (1 if prefix >= 0 else 0)
    bits = np.uint64(total) * np.uint64(8)
    for j in range(8):
        block[63 - j] = np.uint8((bits >> np.uint64(8 * j)) & np.uint64(0xFF))
    _compress(tag, state, block, 0, w)
    for j in range(8):
        v = state[j]
        out[row, 4 * j] = np.uint8(v >> np.uint32(24))
        out[row, 4 * j + 1] = np.uint8((v >> np.uint32(16)) & np.uint32(0xFF))
        out[row, 4 * j + 2] = np.uint8((v >> np.uint32(8)) & np.uint32(0xFF))
        out[row, 4 * j + 3] = np.uint8(v & np.uint32(0xFF))


@njit(inline="always")
def _node_into(
    tag: Any,
    left: Any,
    left_row: int,
    right: Any,
    right_row: int,
    pair: Any,
    state: Any,
    block: Any,
    w: Any,
    out: Any,
    row: int,
) -> None:
    """out[row] = SHA-256(0x01 || left[left_row] || right[right_row]) (RFC 6962 node)."""
    for j in range(32):
        pair[j] = left[left_row, j]
        pair[32 + j] = right[right_row, j]
    _hash_into(tag, pair, 0, 64, 1, state, block, w, out, row)


@njit(inline="always")
def _store_digest(state: Any, out: Any, row: int) -> None:
    for j in range(8):
        v = state[j]
        out[row, 4 * j] = np.uint8(v >> np.uint32(24))
        out[row, 4 * j + 1] = np.uint8((v >> np.uint32(16)) & np.uint32(0xFF))
        out[row, 4 * j + 2] = np.uint8((v >> np.uint32(8)) & np.uint32(0xFF))
        out[row, 4 * j + 3] = np.uint8(v & np.uint32(0xFF))


@njit(inline="always")
def _padded_tail(src: Any, start: int, length: int, block: Any) -> int:
    """Write the last, padded block(s) of message src[start:start+length] into
    block (128 bytes); returns how many (1 or 2). Whole blocks are not copied."""
    whole = length // 64
    rest = length - 64 * whole
    for j in range(rest):
        block[j] = src[start + 64 * whole + j]
    block[rest] = 0x80
    blocks = 1 if rest < 56 else 2
    end = 64 * blocks
    for j in range(rest + 1, end - 8):
        block[j] = 0
    bits = np.uint64(length) * np.uint64(8)
    for j in range(8):
        block[end - 1 - j] = np.uint8((bits >> np.uint64(8 * j)) & np.uint64(0xFF))
    return blocks


@njit(inline="always")
def _hash_pair_into(
    tag: Any,
    src: Any,
    start_a: int,
    start_b: int,
    length: int,
    state_a: Any,
    state_b: Any,
    block_a: Any,
    block_b: Any,
    pad: Any,
    pad_length: Any,
    w: Any,
    out: Any,
    row_a: int,
    row_b: int,
) -> None:
    """SHA-256 of two records of the same length, side by side.

    When the length is a multiple of 64 the final block is the same for both
    records (0x80, zeros, bit length): it lives in `pad`, which nothing else
    writes, rebuilt only when the length changes (pad_length[0] says for which).
    """
    for j in range(8):
        state_a[j] = _IV[j]
        state_b[j] = _IV[j]
    for k in range(length // 64):
        _compress2(tag, state_a, src, start_a + 64 * k, state_b, src, start_b + 64 * k, w)
    if length % 64 == 0:
        if pad_length[0] != length:
            _padded_tail(src, start_a, length, pad)
            pad_length[0] = length
        _compress2(tag, state_a, pad, 0, state_b, pad, 0, w)
    else:
        blocks = _padded_tail(src, start_a, length, block_a)
        _padded_tail(src, start_b, length, block_b)
        for k in range(blocks):
            _compress2(tag, state_a, block_a, 64 * k, state_b, block_b, 64 * k, w)
    _store_digest(state_a, out, row_a)
    _store_digest(state_b, out, row_b)


@njit(inline="always")
def _node_blocks(left: Any, left_row: int, right: Any, right_row: int, block: Any) -> None:
    """The two padded blocks (128 bytes) of 0x01 || left || right: 65 bytes, 520 bits."""
    block[0] = 1
    for j in range(32):
        block[1 + j] = left[left_row, j]
        block[33 + j] = right[right_row, j]
    block[65] = 0x80
    for j in range(66, 126):
        block[j] = 0
    block[126] = 0x02  # 520 = 0x0208
    block[127] = 0x08


@njit(inline="always")
def _node_pair_into(
    tag: Any,
    children: Any,
    row_a: int,
    row_b: int,
    state_a: Any,
    state_b: Any,
    block_a: Any,
    block_b: Any,
    w: Any,
    out: Any,
) -> None:
    """out[row_a] and out[row_b] from children (2*row, 2*row+1), side by side."""
    _node_blocks(children, 2 * row_a, children, 2 * row_a + 1, block_a)
    _node_blocks(children, 2 * row_b, children, 2 * row_b + 1, block_b)
    for j in range(8):
        state_a[j] = _IV[j]
        state_b[j] = _IV[j]
    _compress2(tag, state_a, block_a, 0, state_b, block_b, 0, w)
    _compress2(tag, state_a, block_a, 64, state_b, block_b, 64, w)
    _store_digest(state_a, out, row_a)
    _store_digest(state_b, out, row_b)


# -- batch kernels -------------------------------------------------------------------------
# Each kernel is a span function (records [first, stop), inlined) run two ways: in
# parallel over tasks of RECORDS_PER_TASK, or serially for small batches, where
# waking the worker threads would cost more than the hashing (milliseconds on a
# busy machine, for microseconds of work). `run` picks one.
@njit(inline="always")
def _digest_span(
    tag: Any, buf: Any, offsets: Any, prefix: int, out: Any, first: int, stop: int
) -> None:
    state = np.zeros(_STATE_WORDS, dtype=np.uint32)
    state_b = np.zeros(_STATE_WORDS, dtype=np.uint32)
    block = np.zeros(128, dtype=np.uint8)
    block_b = np.zeros(128, dtype=np.uint8)
    pad = np.zeros(128, dtype=np.uint8)
    pad_length = np.full(1, -1, dtype=np.int64)
    w = np.zeros(64, dtype=np.uint32)
    i = first
    while i < stop:
        start = offsets[i]
        length = offsets[i + 1] - start
        if prefix < 0 and i + 1 < stop and offsets[i + 2] - offsets[i + 1] == length:
            _hash_pair_into(
                tag, buf, start, start + length, length,
                state, state_b, block, block_b, pad, pad_length, w, out, i, i + 1,
            )  # fmt: skip
            i += 2
        else:
            _hash_into(tag, buf, start, length, prefix, state, block, w, out, i)
            i += 1


@njit(cache=True, nogil=True, parallel=True)
def digest_records(tag: Any, buf: Any, offsets: Any, prefix: int, out: Any) -> None:
    """out[i] = SHA-256(prefix? || buf[offsets[i]:offsets[i+1]]) for every record i."""
    n = offsets.shape[0] - 1
    for task in prange((n + RECORDS_PER_TASK - 1) // RECORDS_PER_TASK):
        first = task * RECORDS_PER_TASK
        _digest_span(tag, buf, offsets, prefix, out, first, min(n, first + RECORDS_PER_TASK))


@njit(cache=True, nogil=True)
def digest_records_serial(tag: Any, buf: Any, offsets: Any, prefix: int, out: Any) -> None:
    _digest_span(tag, buf, offsets, prefix, out, 0, offsets.shape[0] - 1)


@njit(inline="always")
def _mismatch_span(
    tag: Any, buf: Any, offsets: Any, expected: Any, bad: Any, first: int, stop: int
) -> None:
    state = np.zeros(_STATE_WORDS, dtype=np.uint32)
    state_b = np.zeros(_STATE_WORDS, dtype=np.uint32)
    block = np.zeros(128, dtype=np.uint8)
    block_b = np.zeros(128, dtype=np.uint8)
    pad = np.zeros(128, dtype=np.uint8)
    pad_length = np.full(1, -1, dtype=np.int64)
    w = np.zeros(64, dtype=np.uint32)
    digests = np.empty((2, 32), dtype=np.uint8)
    i = first
    while i < stop:
        start = offsets[i]
        length = offsets[i + 1] - start
        count = 1
        if i + 1 < stop and offsets[i + 2] - offsets[i + 1] == length:
            _hash_pair_into(
                tag, buf, start, start + length, length,
                state, state_b, block, block_b, pad, pad_length, w, digests, 0, 1,
            )  # fmt: skip
            count = 2
        else:
            _hash_into(tag, buf, start, length, -1, state, block, w, digests, 0)
        for r in range(count):
            differs = 0
            for j in range(32):
                differs |= digests[r, j] ^ expected[i + r, j]
            bad[i + r] = 1 if differs != 0 else 0
        i += count


@njit(cache=True, nogil=True, parallel=True)
def find_mismatches(tag: Any, buf: Any, offsets: Any, expected: Any, bad: Any) -> None:
    """bad[i] = 1 where SHA-256(record i) != expected[i], else 0."""
    n = offsets.shape[0] - 1
    for task in prange((n + RECORDS_PER_TASK - 1) // RECORDS_PER_TASK):
        first = task * RECORDS_PER_TASK
        _mismatch_span(tag, buf, offsets, expected, bad, first, min(n, first + RECORDS_PER_TASK))


@njit(cache=True, nogil=True)
def find_mismatches_serial(tag: Any, buf: Any, offsets: Any, expected: Any, bad: Any) -> None:
    _mismatch_span(tag, buf, offsets, expected, bad, 0, offsets.shape[0] - 1)


@njit(inline="always")
def _node_span(tag: Any, children: Any, out: Any, first: int, stop: int) -> None:
    state = np.zeros(_STATE_WORDS, dtype=np.uint32)
    state_b = np.zeros(_STATE_WORDS, dtype=np.uint32)
    block = np.zeros(128, dtype=np.uint8)
    block_b = np.zeros(128, dtype=np.uint8)
    w = np.zeros(64, dtype=np.uint32)
    i = first
    while i + 1 < stop:
        _node_pair_into(tag, children, i, i + 1, state, state_b, block, block_b, w, out)
        i += 2
    if i < stop:
        _node_blocks(children, 2 * i, children, 2 * i + 1, block)
        for j in range(8):
            state[j] = _IV[j]
        _compress(tag, state, block, 0, w)
        _compress(tag, state, block, 64, w)
        _store_digest(state, out, i)


@njit(cache=True, nogil=True, parallel=True)
def node_level(tag: Any, children: Any, out: Any) -> None:
    """out[i] = SHA-256(0x01 || children[2i] || children[2i+1]) for i < len(out)."""
    m = out.shape[0]
    for task in prange((m + RECORDS_PER_TASK - 1) // RECORDS_PER_TASK):
        first = task * RECORDS_PER_TASK
        _node_span(tag, children, out, first, min(m, first + RECORDS_PER_TASK))


@njit(cache=True, nogil=True)
def node_level_serial(tag: Any, children: Any, out: Any) -> None:
    _node_span(tag, children, out, 0, out.shape[0])


@njit(inline="always")
def _proof_span(
    tag: Any,
    leaves: Any,
    indices: Any,
    sizes: Any,
    nodes: Any,
    proof_offsets: Any,
    roots: Any,
    ok: Any,
    first: int,
    stop: int,
) -> None:
    state = np.zeros(_STATE_WORDS, dtype=np.uint32)
    block = np.zeros(64, dtype=np.uint8)
    w = np.zeros(64, dtype=np.uint32)
    pair = np.empty(64, dtype=np.uint8)
    acc = np.empty((1, 32), dtype=np.uint8)
    for i in range(first, stop):
        ok[i] = 0
        index = indices[i]
        size = sizes[i]
        if index < 0 or index >= size:
            continue
        fn = index
        sn = size - 1
        for j in range(32):
            acc[0, j] = leaves[i, j]
        valid = True
        for p in range(proof_offsets[i], proof_offsets[i + 1]):
            if sn == 0:
                valid = False
                break
            if (fn & 1) == 1 or fn == sn:
                _node_into(tag, nodes, p, acc, 0, pair, state, block, w, acc, 0)
                if (fn & 1) == 0:
                    while (fn & 1) == 0 and fn != 0:
                        fn >>= 1
                        sn >>= 1
            else:
                _node_into(tag, acc, 0, nodes, p, pair, state, block, w, acc, 0)
            fn >>= 1
            sn >>= 1
        if not valid or sn != 0:
            continue
        differs = 0
        for j in range(32):
            differs |= acc[0, j] ^ roots[i, j]
        if differs == 0:
            ok[i] = 1


@njit(cache=True, nogil=True, parallel=True)
def verify_proofs(
    tag: Any,
    leaves: Any,
    indices: Any,
    sizes: Any,
    nodes: Any,
    proof_offsets: Any,
    roots: Any,
    ok: Any,
) -> None:
    """ok[i] = 1 iff proof i (nodes[proof_offsets[i]:proof_offsets[i+1]]) takes leaves[i]
    at indices[i] in a tree of sizes[i] to roots[i] (RFC 9162 §2.1.3.2), else 0."""
    n = leaves.shape[0]
    for task in prange((n + RECORDS_PER_TASK - 1) // RECORDS_PER_TASK):
        first = task * RECORDS_PER_TASK
        stop = min(n, first + RECORDS_PER_TASK)
        _proof_span(tag, leaves, indices, sizes, nodes, proof_offsets, roots, ok, first, stop)


@njit(cache=True, nogil=True)
def verify_proofs_serial(
    tag: Any,
    leaves: Any,
    indices: Any,
    sizes: Any,
    nodes: Any,
    proof_offsets: Any,
    roots: Any,
    ok: Any,
) -> None:
    n = leaves.shape[0]
    _proof_span(tag, leaves, indices, sizes, nodes, proof_offsets, roots, ok, 0, n)


#: Below this many bytes of SHA-256 input (about a millisecond on one core) a
#: batch runs on the calling thread: on a busy host, waking the worker threads
#: was measured at 5-15 ms.
SERIAL_BELOW_BYTES = 2 << 20

_SERIAL_TWIN: dict[Any, Any] = {
    digest_records: digest_records_serial,
    find_mismatches: find_mismatches_serial,
    node_level: node_level_serial,
    verify_proofs: verify_proofs_serial,
}
