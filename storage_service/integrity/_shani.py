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


def _declare(module: Any, name: str, fnty: Any) -> Any:
    existing = module.globals.get(name)
    return existing if existing is not None else ir.Function(module, fnty, name)


def _emit_blocks(builder: ir.IRBuilder, lanes: list[tuple[Any, Any]]) -> None:
    """Compress one block per (state_addr, block_addr) lane, the lanes interleaved
    round by round: the rounds of one message are a serial chain, so independent
    messages side by side fill the SHA unit's pipeline."""
    module = builder.module
    rnds2 = _declare(module, "llvm.x86.sha256rnds2", ir.FunctionType(_V4, [_V4, _V4, _V4]))
    msg1 = _declare(module, "llvm.x86.sha256msg1", ir.FunctionType(_V4, [_V4, _V4]))
    msg2 = _declare(module, "llvm.x86.sha256msg2", ir.FunctionType(_V4, [_V4, _V4]))
    undef16 = ir.Constant(_V16, ir.Undefined)
    undef4 = ir.Constant(_V4, ir.Undefined)
    low_ptrs, high_ptrs, abefs, cdghs, inputs, schedules = [], [], [], [], [], []
    for state_addr, block_addr in lanes:
        state_ptr = builder.inttoptr(state_addr, _V4.as_pointer())
        block_ptr = builder.inttoptr(block_addr, _V16.as_pointer())
        high_ptr = builder.gep(state_ptr, [ir.Constant(_I32, 1)])
        abcd = builder.load(state_ptr, align=4)
        efgh = builder.load(high_ptr, align=4)
        # Lane 0 is the lowest: ABEF holds (F, E, B, A), CDGH holds (H, G, D, C).
        abef = _shuffle(builder, abcd, efgh, [5, 4, 1, 0])
        cdgh = _shuffle(builder, abcd, efgh, [7, 6, 3, 2])
        low_ptrs.append(state_ptr)
        high_ptrs.append(high_ptr)
        abefs.append(abef)
        cdghs.append(cdgh)
        inputs.append((abef, cdgh))
        words = []
        for i in range(4):
            raw = builder.load(builder.gep(block_ptr, [ir.Constant(_I32, i)]), align=1)
            words.append(builder.bitcast(_shuffle(builder, raw, undef16, _BSWAP_WORDS), _V4))
        schedules.append(words)
    for i in range(16):
        k = ir.Constant(_V4, [_signed32(x) for x in SHA256_K[4 * i : 4 * i + 4]])
        for lane, w in enumerate(schedules):
            if i >= 4:
                # W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16], four words at a time.
                partial = builder.call(msg1, [w[i - 4], w[i - 3]])
                w_minus_7 = _shuffle(builder, w[i - 2], w[i - 1], [1, 2, 3, 4])
                partial = builder.add(partial, w_minus_7)
                w.append(builder.call(msg2, [partial, w[i - 1]]))
            wk = builder.add(w[i], k)
            cdghs[lane] = builder.call(rnds2, [cdghs[lane], abefs[lane], wk])
            wk_high = _shuffle(builder, wk, undef4, [2, 3, 0, 0])
            abefs[lane] = builder.call(rnds2, [abefs[lane], cdghs[lane], wk_high])
    for lane in range(len(lanes)):
        abef = builder.add(abefs[lane], inputs[lane][0])
        cdgh = builder.add(cdghs[lane], inputs[lane][1])
        builder.store(_shuffle(builder, abef, cdgh, [3, 2, 7, 6]), low_ptrs[lane], align=4)
        builder.store(_shuffle(builder, abef, cdgh, [1, 0, 5, 4]), high_ptrs[lane], align=4)


@intrinsic
def sha_ni_block(typingctx: Any, state_addr: Any, block_addr: Any) -> Any:
    signature = types.void(types.intp, types.intp)

    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> Any:
        _emit_blocks(builder, [(args[0], args[1])])
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def sha_ni_block2(typingctx: Any, state_a: Any, block_a: Any, state_b: Any, block_b: Any) -> Any:
    """Two independent compressions, interleaved (see `_emit_blocks`)."""
    signature = types.void(types.intp, types.intp, types.intp, types.intp)

    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> Any:
        _emit_blocks(builder, [(args[0], args[1]), (args[2], args[3])])
        return context.get_dummy_value()

    return signature, codegen
