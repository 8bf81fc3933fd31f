"""The SHA-256 compression function on the x86 SHA extensions (SHA-NI), for numba.

`sha_ni_block(state_addr, block_addr)` is a numba intrinsic: it emits
`llvm.x86.sha256rnds2/msg1/msg2` straight into the calling nopython function,
so a batch kernel runs the whole compression in registers with no call. It
updates the eight big-endian-word state (A..H, uint32, host order) at
`state_addr` with the 64-byte block at `block_addr` (any alignment).

Only compile code that uses it on a CPU with the `sha` feature: LLVM cannot
select these instructions otherwise (the engine choice in `sha256` guards it).
The lane layout follows Intel's reference implementation: the rounds work on
the state as ABEF / CDGH vectors, and the message schedule four words at a time.
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from storage_service.integrity.constants import SHA256_K

_I32 = ir.IntType(32)
_V4 = ir.VectorType(_I32, 4)
_V16 = ir.VectorType(ir.IntType(8), 16)
# Byte order of each 32-bit word reversed: the message is big-endian.
_BSWAP_WORDS = [3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12]


def _signed32(x: int) -> int:
    return x - (1 << 32) if x >= 1 << 31 else x


def _shuffle(builder: ir.IRBuilder, x: Any, y: Any, lanes: list[int]) -> Any:
    mask = ir.Constant(ir.VectorType(_I32, len(lanes)), lanes)
    return builder.shuffle_vector(x, y, mask)


def _emit_block(builder: ir.IRBuilder, state_addr: Any, block_addr: Any) -> None:
    module = builder.module
    rnds2 = cgutils.get_or_insert_function(
        module, ir.FunctionType(_V4, [_V4, _V4, _V4]), "llvm.x86.sha256rnds2"
    )
    msg1 = cgutils.get_or_insert_function(
        module, ir.FunctionType(_V4, [_V4, _V4]), "llvm.x86.sha256msg1"
    )
    msg2 = cgutils.get_or_insert_function(
        module, ir.FunctionType(_V4, [_V4, _V4]), "llvm.x86.sha256msg2"
    )
    state_ptr = builder.inttoptr(state_addr, _V4.as_pointer())
    block_ptr = builder.inttoptr(block_addr, _V16.as_pointer())
    low_ptr = state_ptr
    high_ptr = builder.gep(state_ptr, [ir.Constant(_I32, 1)])
    abcd = builder.load(low_ptr, align=4)
    efgh = builder.load(high_ptr, align=4)
    # Lane 0 is the lowest: ABEF holds (F, E, B, A), CDGH holds (H, G, D, C).
    abef = _shuffle(builder, abcd, efgh, [5, 4, 1, 0])
    cdgh = _shuffle(builder, abcd, efgh, [7, 6, 3, 2])
    abef_in, cdgh_in = abef, cdgh

    undef16 = ir.Constant(_V16, ir.Undefined)
    undef4 = ir.Constant(_V4, ir.Undefined)
    schedule: list[Any] = []
    for i in range(4):
        raw = builder.load(builder.gep(block_ptr, [ir.Constant(_I32, i)]), align=1)
        schedule.append(builder.bitcast(_shuffle(builder, raw, undef16, _BSWAP_WORDS), _V4))
    for i in range(16):
        if i >= 4:
            # W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16], four words at a time.
            partial = builder.call(msg1, [schedule[i - 4], schedule[i - 3]])
            w_minus_7 = _shuffle(builder, schedule[i - 2], schedule[i - 1], [1, 2, 3, 4])
            partial = builder.add(partial, w_minus_7)
            schedule.append(builder.call(msg2, [partial, schedule[i - 1]]))
        k = ir.Constant(_V4, [_signed32(x) for x in SHA256_K[4 * i : 4 * i + 4]])
        wk = builder.add(schedule[i], k)
        cdgh = builder.call(rnds2, [cdgh, abef, wk])
        wk_high = _shuffle(builder, wk, undef4, [2, 3, 0, 0])
        abef = builder.call(rnds2, [abef, cdgh, wk_high])
    abef = builder.add(abef, abef_in)
    cdgh = builder.add(cdgh, cdgh_in)
    builder.store(_shuffle(builder, abef, cdgh, [3, 2, 7, 6]), low_ptr, align=4)
    builder.store(_shuffle(builder, abef, cdgh, [1, 0, 5, 4]), high_ptr, align=4)


@intrinsic
def sha_ni_block(typingctx: Any, state_addr: Any, block_addr: Any) -> Any:
    signature = types.void(types.intp, types.intp)

    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> Any:
        _emit_block(builder, args[0], args[1])
        return context.get_dummy_value()

    return signature, codegen
