"""Fixed-base comb products in one numba call: no Python between group operations.

A comb table of window width w (mcl.py: `GTTable`, `G1Table`, `G2Table`) holds entry
2^w·i + d = base^(d·2^(w·i)) for the windows i of a 255-bit exponent (d = 0 unused).
A product Π base_j^(k_j) is then one group operation per nonzero w-bit window of
every k_j: 32 for w = 8, 22 for w = 12. Through ctypes each operation
costs about half a microsecond of call overhead on top of mcl's own work (a GT
multiplication is about 1.3 µs); `comb_products` runs every row's operations in
one compiled loop that calls mcl's C function directly.

The C function (`void f(T *out, const T *a, const T *b)`: mclBnGT_mul,
mclBnG1_add) arrives as an integer address at run time, never as a constant, so
the compiled kernel does not depend on where the library was loaded and numba's
on-disk cache (cache=True) is valid in every process.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_I8P = ir.IntType(8).as_pointer()
_BINARY_OP = ir.FunctionType(ir.VoidType(), [_I8P, _I8P, _I8P])

#: Exponents are reduced mod r (255 bits) and passed as 32 little-endian bytes.
SCALAR_BITS = 255
SCALAR_BYTES = 32
MAX_WINDOW_BITS = 16  # a window is read from at most three bytes


def windows(bits: int) -> int:
    """Windows of `bits` bits covering a scalar."""
    return -(-SCALAR_BITS // bits)


_windows = njit(cache=True, inline="always")(windows)


@intrinsic
def call_binary(typingctx: Any, fn: Any, out: Any, a: Any, b: Any) -> Any:
    """fn(out, a, b) for a C function `void fn(void *, const void *, const void *)`
    at address `fn`; every argument an integer address."""
    signature = types.void(types.intp, types.intp, types.intp, types.intp)

    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> Any:
        target = builder.inttoptr(args[0], _BINARY_OP.as_pointer())
        builder.call(target, [builder.inttoptr(x, _I8P) for x in args[1:]])
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def copy_bytes(typingctx: Any, dst: Any, src: Any, size: Any) -> Any:
    """memcpy(dst, src, size) on integer addresses."""
    signature = types.void(types.intp, types.intp, types.intp)

    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> Any:
        dst_ptr = builder.inttoptr(args[0], _I8P)
        src_ptr = builder.inttoptr(args[1], _I8P)
        cgutils.raw_memcpy(builder, dst_ptr, src_ptr, args[2], 1)  # type: ignore[no-untyped-call]
        return context.get_dummy_value()

    return signature, codegen


_I32 = ir.IntType(32)
_CACHE_LINE = 64
#: Entries fetched ahead: one group operation (0.3-1.4 µs) hides a memory fetch, and
#: the tables (1.2-4.7 MB each, several per call) do not all stay in cache.
PREFETCH_AHEAD = 2


@intrinsic
def prefetch_line(typingctx: Any, address: Any) -> Any:
    """A read prefetch of the cache line holding `address` (a hint: never faults)."""
    signature = types.void(types.intp)

    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> Any:
        fnty = ir.FunctionType(ir.VoidType(), [_I8P, _I32, _I32, _I32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [_I8P], fnty)
        ptr = builder.inttoptr(args[0], _I8P)
        # rw = 0 (read), locality = 3 (keep in all cache levels), data cache.
        builder.call(fn, [ptr, ir.Constant(_I32, 0), ir.Constant(_I32, 3), ir.Constant(_I32, 1)])
        return context.get_dummy_value()

    return signature, codegen


@njit(cache=True, nogil=True, inline="always")
def _prefetch(address: int, size: int) -> None:
    line = address - address % _CACHE_LINE
    while line < address + size:
        prefetch_line(line)  # type: ignore[call-arg]
        line += _CACHE_LINE


def products(
    op: int,
    elem_size: int,
    identity: int,
    out: int,
    rows: int,
    tables: list[int],
    bits: list[int],
    scalars: bytes,
) -> None:
    """comb_products from flat row-major lists: rows·terms table addresses and window
    widths, and as many 32-byte little-endian scalars, concatenated."""
    terms, extra = divmod(len(tables), rows)
    if extra or terms == 0 or len(bits) != len(tables) or len(scalars) != 32 * len(tables):
        raise ValueError("one table, window width and 32-byte scalar per term of each row")
    comb_products(
        op,
        elem_size,
        identity,
        out,
        np.array(tables, dtype=np.int64).reshape(rows, terms),
        np.array(bits, dtype=np.int64).reshape(rows, terms),
        np.frombuffer(scalars, dtype=np.uint8).reshape(rows, terms, SCALAR_BYTES),
    )


@njit(cache=True, nogil=True, inline="always")
def _window(scalars: Any, r: int, j: int, i: int, bits: int) -> int:
    """Window i (of `bits` bits) of the little-endian scalar scalars[r, j]."""
    offset = i * bits
    at = offset >> 3
    value = 0
    for b in range(3):
        if at + b < SCALAR_BYTES:
            value |= int(scalars[r, j, at + b]) << (8 * b)
    return (value >> (offset & 7)) & ((1 << bits) - 1)


@njit(cache=True, nogil=True)
def comb_products(
    op: int, elem_size: int, identity: int, out: int, tables: Any, bits: Any, scalars: Any
) -> None:
    """out[r] = Π_j table[r, j]^(scalars[r, j]) for every row r.

    op: address of the group operation; elem_size: bytes per element (table entry and
    output alike); identity: address of the group identity; out: address of
    rows·elem_size bytes; tables: int64 (rows, terms) addresses of comb tables, and
    bits: int64 (rows, terms) their window widths; scalars: uint8 (rows, terms, 32),
    the exponents' little-endian bytes (reduced mod r). The first two entries of a
    row are combined directly, so no operation involves the identity.
    """
    rows, terms = tables.shape
    # First the addresses of every entry to combine, row by row, so that the
    # second pass can prefetch ahead across row boundaries.
    most = 0
    for r in range(rows):
        for j in range(terms):
            most += _windows(bits[r, j])
    entries = np.empty(most, dtype=np.int64)
    ends = np.empty(rows, dtype=np.int64)
    n = 0
    for r in range(rows):
        for j in range(terms):
            base = tables[r, j]
            w = bits[r, j]
            for i in range(_windows(w)):
                d = _window(scalars, r, j, i, w)
                if d != 0:
                    entries[n] = base + ((i << w) + d) * elem_size
                    n += 1
        ends[r] = n
    for k in range(min(n, PREFETCH_AHEAD)):
        _prefetch(entries[k], elem_size)
    start = 0
    for r in range(rows):
        acc = out + r * elem_size
        end = ends[r]
        if end - start == 0:
            copy_bytes(acc, identity, elem_size)  # type: ignore[call-arg]
        elif end - start == 1:
            copy_bytes(acc, entries[start], elem_size)  # type: ignore[call-arg]
        for k in range(start, end):
            if k + PREFETCH_AHEAD < n:
                _prefetch(entries[k + PREFETCH_AHEAD], elem_size)
            if k == start + 1:
                call_binary(op, acc, entries[start], entries[k])  # type: ignore[call-arg]
            elif k > start + 1:
                call_binary(op, acc, acc, entries[k])  # type: ignore[call-arg]
        start = end


@njit(cache=True, nogil=True)
def comb_table(op: int, elem_size: int, base: int, table: int, bits: int, scratch: int) -> None:
    """Fill the comb table at `table` for the element at `base`: entry 2^bits·i + d =
    base^(d·2^(bits·i)), 1 <= d < 2^bits, for every window i (entry d = 0 untouched).
    scratch: elem_size bytes for the running power base^(2^(bits·i))."""
    per_window = 1 << bits
    copy_bytes(scratch, base, elem_size)  # type: ignore[call-arg]
    for i in range(_windows(bits)):
        row = table + i * per_window * elem_size
        copy_bytes(row + elem_size, scratch, elem_size)
        for d in range(2, per_window):
            at = row + d * elem_size
            call_binary(op, at, at - elem_size, scratch)
        call_binary(op, scratch, row + (per_window - 1) * elem_size, scratch)
