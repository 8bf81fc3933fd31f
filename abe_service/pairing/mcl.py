"""BLS12-381 through herumi mcl's C API, called with ctypes.

The pymcl wheel ships mcl compiled into its extension module and exports the
whole `mclBn*` C API. pymcl's own Python objects expose neither multi-scalar
multiplication nor multi-pairing, which FAME needs to be fast, so this backend
calls the C functions directly on ctypes buffers. `import pymcl` initialises
the library for BLS12-381; we then switch on the standard (zcash/IETF)
compressed encoding and subgroup checks on deserialization.

Fixed-base exponentiations use comb tables; their products run either one ctypes
call per group operation or, after `prepare()`, in numba kernels that call mcl's C
functions by address (abe_service.pairing._comb). Both give the same results.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Any, ClassVar

from abe_service.pairing.base import BLS12_381_ORDER
from ehr_common.errors import DecodeError

_FR_WORDS, _G1_WORDS, _G2_WORDS, _GT_WORDS = 4, 18, 36, 72
MCL_BLS12_381 = 5
_SIZE_32, _SIZE_48, _SIZE_96 = ctypes.c_size_t(32), ctypes.c_size_t(48), ctypes.c_size_t(96)


class _Fr(ctypes.Structure):
    _fields_ = [("d", ctypes.c_uint64 * _FR_WORDS)]


class G1Point(ctypes.Structure):
    _fields_ = [("d", ctypes.c_uint64 * _G1_WORDS)]


class G2Point(ctypes.Structure):
    _fields_ = [("d", ctypes.c_uint64 * _G2_WORDS)]


class GTElement(ctypes.Structure):
    _fields_ = [("d", ctypes.c_uint64 * _GT_WORDS)]


_G1_SIZE = ctypes.sizeof(G1Point)
_G2_SIZE = ctypes.sizeof(G2Point)
_GT_SIZE = ctypes.sizeof(GTElement)
#: Comb window width (bits) unless a table is asked for with another.
DEFAULT_WINDOW_BITS = 8
_SCALAR_BITS = 255  # scalars are reduced mod r < 2^255
#: A C group operation `void f(T *out, const T *a, const T *b)` called with raw addresses.
_RAW_BINARY_OP = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)


class _CombTable:
    """Fixed-base comb table (see abe_service.pairing._comb): windows·2^bits entries,
    entry 2^bits·i + d = base^(d·2^(bits·i)); G1/G2 entries affine (normalized)."""

    __slots__ = ("address", "bits", "entries")
    element: ClassVar[type[ctypes.Structure]]

    def __init__(self, bits: int):
        if not 1 <= bits <= 16:
            raise ValueError("comb windows are 1 to 16 bits wide")
        self.bits = bits
        count = -(-_SCALAR_BITS // bits) << bits
        self.entries = (self.element * count)()
        self.address = ctypes.addressof(self.entries)

    @property
    def nbytes(self) -> int:
        return ctypes.sizeof(self.entries)


class G1Table(_CombTable):
    __slots__ = ()
    element = G1Point


class G2Table(_CombTable):
    __slots__ = ()
    element = G2Point


class GTTable(_CombTable):
    __slots__ = ()
    element = GTElement


#: What the fast backend adds: MSM and Miller loops with one final exponentiation.
FAST_SYMBOLS = (
    "mclBnG1_mulVec",
    "mclBnG2_mulVec",
    "mclBn_millerLoopVec",
    "mclBn_finalExp",
    "mclBnG1_normalizeVec",
    "mclBnG2_normalizeVec",
)
#: What every backend needs from the library (our DST, encodings, GT validation).
BASIC_SYMBOLS = (
    "mclBnG1_hashAndMapToWithDst",
    "mclBnG2_hashAndMapToWithDst",
    "mclBn_setETHserialization",
    "mclBn_verifyOrderG1",
    "mclBn_verifyOrderG2",
    "mclBnGT_powGeneric",
    "mclBnGT_isValid",
    "mclBnFr_setBigEndianMod",
)


def _load(required: tuple[str, ...]) -> ctypes.CDLL:
    try:
        import pymcl
    except ImportError as exc:
        raise OSError(f"pymcl is not installed: {exc}") from None
    lib = ctypes.CDLL(pymcl._pymcl.__file__)
    for sym in required:
        if not hasattr(lib, sym):
            raise OSError(f"pymcl's library does not export {sym}")
    if lib.mclBn_getCurveType() != MCL_BLS12_381:
        raise OSError("pymcl is not initialised for BLS12-381")
    if lib.mclBn_getFrByteSize() != 32 or lib.mclBn_getG1ByteSize() != 48:
        raise OSError("unexpected mcl build (field sizes)")
    # size_t results (lengths read or written); arguments of type size_t are
    # passed as c_size_t at each call site.
    for fn in (
        "mclBnG1_serialize",
        "mclBnG2_serialize",
        "mclBnGT_serialize",
        "mclBnG1_deserialize",
        "mclBnG2_deserialize",
        "mclBnGT_deserialize",
    ):
        getattr(lib, fn).restype = ctypes.c_size_t
    lib.mclBn_setETHserialization(1)
    # With these on, G1/G2 deserialization checks the prime-order subgroup itself
    # (and the curve equation, by decompression), so no second isValid pass is needed.
    lib.mclBn_verifyOrderG1(1)
    lib.mclBn_verifyOrderG2(1)
    return lib


def _address(lib: ctypes.CDLL, name: str) -> int:
    address = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
    if address is None:
        raise OSError(f"pymcl's library has no address for {name}")
    return address


class MclBackend:
    name = "mcl"
    order = BLS12_381_ORDER
    g1_bytes = 48
    g2_bytes = 96
    gt_bytes = 576
    _instance: ClassVar[MclBackend | None] = None
    _codec: ClassVar[MclBackend | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def instance(cls) -> MclBackend:
        """The fast backend; OSError if the library lacks MSM or multi-pairing."""
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls(_load(BASIC_SYMBOLS + FAST_SYMBOLS))
            return cls._instance

    @classmethod
    def codec(cls) -> MclBackend:
        """Hashing, encodings and validation only (needs just BASIC_SYMBOLS): what the
        pymcl backend borrows, so it still works where the fast symbols are missing.
        Calling g1_msm/pairing_product on it may fail."""
        with cls._lock:
            if cls._instance is not None:
                return cls._instance
            if cls._codec is None:
                cls._codec = cls(_load(BASIC_SYMBOLS))
            return cls._codec

    def __init__(self, lib: ctypes.CDLL):
        self._lib = lib
        self._gt_mul_addr = _address(lib, "mclBnGT_mul")
        self._g1_add_addr = _address(lib, "mclBnG1_add")
        self._g2_add_addr = _address(lib, "mclBnG2_add")
        self._gt_one = GTElement()
        lib.mclBnGT_setInt(ctypes.byref(self._gt_one), 1)
        self._g1_zero = G1Point()  # zero-filled: the identity
        self._g2_zero = G2Point()
        self._comb_module: ModuleType | None = None  # see prepare()
        self._kernel_lock = threading.Lock()
        self._raw_ops: dict[int, ctypes._CFunctionType] = {}
        # The standard generators (zcash/IETF compressed encodings).
        self._g1 = self.g1_from_bytes(
            bytes.fromhex(
                "97f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac586c55e83ff97a1aeffb3af00adb22c6bb"
            )
        )
        self._g2 = self.g2_from_bytes(
            bytes.fromhex(
                "93e02b6052719f607dacd3a088274f65596bd0d09920b61ab5da61bbdc7f5049334cf11213945d57"
                "e5ac7d055d042b7e024aa2b2f08f0a91260805272dc51051c6e47ad4fa403b02b4510b647ae3d177"
                "0bac0326a805bbefd48056c8c121bdb8"
            )
        )

    # -- scalars ----------------------------------------------------------------
    def _fr(self, k: int) -> _Fr:
        fr = _Fr()
        data = (k % self.order).to_bytes(32, "big")
        if self._lib.mclBnFr_setBigEndianMod(ctypes.byref(fr), data, _SIZE_32) != 0:
            raise ValueError("scalar conversion failed")
        return fr

    def _fr_array(self, scalars: Sequence[int]) -> ctypes.Array[_Fr]:
        arr = (_Fr * len(scalars))()
        lib = self._lib
        r = self.order
        for i, k in enumerate(scalars):
            lib.mclBnFr_setBigEndianMod(ctypes.byref(arr[i]), (k % r).to_bytes(32, "big"), _SIZE_32)
        return arr

    # -- G1 -----------------------------------------------------------------------
    def g1_generator(self) -> G1Point:
        return self._g1

    def hash_to_g1(self, data: bytes, dst: bytes) -> G1Point:
        p = G1Point()
        if (
            self._lib.mclBnG1_hashAndMapToWithDst(
                ctypes.byref(p), data, ctypes.c_size_t(len(data)), dst, ctypes.c_size_t(len(dst))
            )
            != 0
        ):
            raise ValueError("hash to G1 failed")
        return p

    def g1_mul(self, p: G1Point, k: int) -> G1Point:
        out = G1Point()
        self._lib.mclBnG1_mul(ctypes.byref(out), ctypes.byref(p), ctypes.byref(self._fr(k)))
        return out

    def g1_add(self, p: G1Point, q: G1Point) -> G1Point:
        out = G1Point()
        self._lib.mclBnG1_add(ctypes.byref(out), ctypes.byref(p), ctypes.byref(q))
        return out

    def g1_neg(self, p: G1Point) -> G1Point:
        out = G1Point()
        self._lib.mclBnG1_neg(ctypes.byref(out), ctypes.byref(p))
        return out

    def g1_msm(self, points: Sequence[G1Point], scalars: Sequence[int]) -> G1Point:
        n = len(points)
        if n != len(scalars):
            raise ValueError("points and scalars differ in length")
        out = G1Point()
        if n == 0:
            return out
        pts = (G1Point * n)(*points)
        self._lib.mclBnG1_mulVec(
            ctypes.byref(out), pts, self._fr_array(scalars), ctypes.c_size_t(n)
        )
        return out

    def g1_fixed_base(self, p: G1Point, window_bits: int = DEFAULT_WINDOW_BITS) -> G1Table:
        """A comb table for `p` (8-bit windows: 8192 affine points, 1.2 MB, about 5 ms to
        build): g1_mul_fixed then costs at most 32 mixed additions, about 3x faster than
        g1_mul. 12-bit windows: 22 additions, 13 MB."""
        table = G1Table(window_bits)
        self._build_table(self._g1_add_addr, p, table)
        self._lib.mclBnG1_normalizeVec(
            table.entries, table.entries, ctypes.c_size_t(len(table.entries))
        )
        return table

    def g1_mul_fixed(self, table: G1Table, k: int) -> G1Point:
        return self.g1_fixed_products([[table]], [[k]])[0]

    def g1_fixed_products(
        self, tables: Sequence[Sequence[G1Table]], exps: Sequence[Sequence[int]]
    ) -> list[G1Point]:
        """Per row Σ k_j·p_j for the points p_j of the row's comb tables: every row in
        one compiled loop (at most 32 mixed additions per term)."""
        out = (G1Point * len(tables))()
        self._comb(self._g1_add_addr, _G1_SIZE, self._g1_zero, out, tables, exps)
        return list(out)

    def g1_is_identity(self, p: G1Point) -> bool:
        return bool(self._lib.mclBnG1_isZero(ctypes.byref(p)))

    def g1_eq(self, p: G1Point, q: G1Point) -> bool:
        return bool(self._lib.mclBnG1_isEqual(ctypes.byref(p), ctypes.byref(q)))

    # -- G2 -------------------------------------------------------------------------
    def g2_generator(self) -> G2Point:
        return self._g2

    def hash_to_g2(self, data: bytes, dst: bytes) -> G2Point:
        p = G2Point()
        if (
            self._lib.mclBnG2_hashAndMapToWithDst(
                ctypes.byref(p), data, ctypes.c_size_t(len(data)), dst, ctypes.c_size_t(len(dst))
            )
            != 0
        ):
            raise ValueError("hash to G2 failed")
        return p

    def g2_mul(self, p: G2Point, k: int) -> G2Point:
        out = G2Point()
        self._lib.mclBnG2_mul(ctypes.byref(out), ctypes.byref(p), ctypes.byref(self._fr(k)))
        return out

    def g2_add(self, p: G2Point, q: G2Point) -> G2Point:
        out = G2Point()
        self._lib.mclBnG2_add(ctypes.byref(out), ctypes.byref(p), ctypes.byref(q))
        return out

    def g2_neg(self, p: G2Point) -> G2Point:
        out = G2Point()
        self._lib.mclBnG2_neg(ctypes.byref(out), ctypes.byref(p))
        return out

    def g2_msm(self, points: Sequence[G2Point], scalars: Sequence[int]) -> G2Point:
        n = len(points)
        if n != len(scalars):
            raise ValueError("points and scalars differ in length")
        out = G2Point()
        if n == 0:
            return out
        pts = (G2Point * n)(*points)
        self._lib.mclBnG2_mulVec(
            ctypes.byref(out), pts, self._fr_array(scalars), ctypes.c_size_t(n)
        )
        return out

    def g2_fixed_base(self, p: G2Point, window_bits: int = DEFAULT_WINDOW_BITS) -> G2Table:
        """A comb table for `p` (8-bit windows: 8192 affine points, 2.4 MB, about 10 ms to
        build): g2_mul_fixed then costs at most 32 mixed additions, about 3x faster than g2_mul."""
        table = G2Table(window_bits)
        self._build_table(self._g2_add_addr, p, table)
        self._lib.mclBnG2_normalizeVec(
            table.entries, table.entries, ctypes.c_size_t(len(table.entries))
        )
        return table

    def g2_mul_fixed(self, table: G2Table, k: int) -> G2Point:
        return self.g2_fixed_products([[table]], [[k]])[0]

    def g2_fixed_products(
        self, tables: Sequence[Sequence[G2Table]], exps: Sequence[Sequence[int]]
    ) -> list[G2Point]:
        """As g1_fixed_products, in G2."""
        out = (G2Point * len(tables))()
        self._comb(self._g2_add_addr, _G2_SIZE, self._g2_zero, out, tables, exps)
        return list(out)

    def g2_is_identity(self, p: G2Point) -> bool:
        return bool(self._lib.mclBnG2_isZero(ctypes.byref(p)))

    def g2_eq(self, p: G2Point, q: G2Point) -> bool:
        return bool(self._lib.mclBnG2_isEqual(ctypes.byref(p), ctypes.byref(q)))

    # -- pairings and GT --------------------------------------------------------------
    def pairing(self, p: G1Point, q: G2Point) -> GTElement:
        out = GTElement()
        self._lib.mclBn_pairing(ctypes.byref(out), ctypes.byref(p), ctypes.byref(q))
        return out

    def pairing_product(self, pairs: Sequence[tuple[G1Point, G2Point]]) -> GTElement:
        n = len(pairs)
        out = GTElement()
        if n == 0:
            self._lib.mclBnGT_setInt(ctypes.byref(out), 1)
            return out
        ps = (G1Point * n)(*(p for p, _ in pairs))
        qs = (G2Point * n)(*(q for _, q in pairs))
        self._lib.mclBn_millerLoopVec(ctypes.byref(out), ps, qs, ctypes.c_size_t(n))
        self._lib.mclBn_finalExp(ctypes.byref(out), ctypes.byref(out))
        return out

    def gt_mul(self, a: GTElement, b: GTElement) -> GTElement:
        out = GTElement()
        self._lib.mclBnGT_mul(ctypes.byref(out), ctypes.byref(a), ctypes.byref(b))
        return out

    def gt_pow(self, a: GTElement, k: int) -> GTElement:
        out = GTElement()
        self._lib.mclBnGT_pow(ctypes.byref(out), ctypes.byref(a), ctypes.byref(self._fr(k)))
        return out

    def gt_eq(self, a: GTElement, b: GTElement) -> bool:
        return bool(self._lib.mclBnGT_isEqual(ctypes.byref(a), ctypes.byref(b)))

    def gt_fixed_base(self, a: GTElement, window_bits: int = DEFAULT_WINDOW_BITS) -> GTTable:
        """A comb table for `a` (8-bit windows: 8192 elements, 4.7 MB, about 12 ms to
        build): gt_pow_fixed then costs at most 32 GT multiplications instead of a full
        exponentiation (about 3x faster). 12-bit windows: 22 multiplications, 52 MB."""
        table = GTTable(window_bits)
        self._build_table(self._gt_mul_addr, a, table)
        return table

    def gt_pow_fixed(self, table: GTTable, k: int) -> GTElement:
        return self.gt_fixed_products([[table]], [[k]])[0]

    def gt_fixed_products(
        self, tables: Sequence[Sequence[GTTable]], exps: Sequence[Sequence[int]]
    ) -> list[GTElement]:
        """Per row Π a_j^(k_j) for the bases a_j of the row's comb tables: every row in
        one compiled loop (at most 32 GT multiplications per term)."""
        out = (GTElement * len(tables))()
        self._comb(self._gt_mul_addr, _GT_SIZE, self._gt_one, out, tables, exps)
        return list(out)

    def prepare(self) -> None:
        """Load the numba comb kernels (abe_service.pairing._comb): every fixed-base
        product then runs in one compiled loop instead of one ctypes call per group
        operation. About 1 s once per process (numba's import and its on-disk cache;
        a first compile takes a few seconds more), so long-lived processes call it and
        one-shot commands need not. Thread-safe; results are the same either way."""
        with self._kernel_lock:
            if self._comb_module is not None:
                return
            from abe_service.pairing import _comb

            # Compile (or load) both kernels before publishing the module, so that no
            # concurrent caller waits on numba.
            table = G1Table(8)
            scratch = G1Point()
            _comb.comb_table(
                self._g1_add_addr, _G1_SIZE, ctypes.addressof(self._g1), table.address, 8,
                ctypes.addressof(scratch),
            )  # fmt: skip
            _comb.products(
                self._g1_add_addr, _G1_SIZE, ctypes.addressof(self._g1_zero),
                ctypes.addressof(scratch), 1, [table.address], [8], bytes(32),
            )  # fmt: skip
            self._comb_module = _comb

    def _raw_op(self, op: int) -> ctypes._CFunctionType:
        fn = self._raw_ops.get(op)
        if fn is None:
            fn = self._raw_ops[op] = _RAW_BINARY_OP(op)
        return fn

    def _build_table(self, op: int, base: ctypes.Structure, table: _CombTable) -> None:
        size = ctypes.sizeof(table.element)
        scratch = table.element()
        kernels = self._comb_module
        if kernels is not None:
            kernels.comb_table(
                op,
                size,
                ctypes.addressof(base),
                table.address,
                table.bits,
                ctypes.addressof(scratch),
            )
            return
        # Without the kernels: the same loop, one ctypes call per operation.
        call = self._raw_op(op)
        per_window = 1 << table.bits
        cur = ctypes.addressof(scratch)
        ctypes.memmove(cur, ctypes.addressof(base), size)
        for i in range(-(-_SCALAR_BITS // table.bits)):
            row = table.address + i * per_window * size
            ctypes.memmove(row + size, cur, size)
            for d in range(2, per_window):
                call(row + d * size, row + (d - 1) * size, cur)
            call(cur, row + (per_window - 1) * size, cur)

    def _comb(
        self,
        op: int,
        size: int,
        identity: ctypes.Structure,
        out: ctypes.Array[Any],
        tables: Sequence[Sequence[Any]],
        exps: Sequence[Sequence[int]],
    ) -> None:
        """The kernel reads table memory by address: tables of the wrong kind would
        be read out of bounds, so every table's type is checked here."""
        rows = len(tables)
        if len(exps) != rows:
            raise ValueError("tables and exponents differ in length")
        if rows == 0:
            return
        table_type: type[Any] = {_G1_SIZE: G1Table, _G2_SIZE: G2Table, _GT_SIZE: GTTable}[size]
        terms = max(len(row) for row in tables)
        addresses: list[int] = []
        bits: list[int] = []
        digits: list[bytes] = []
        r = self.order
        for row_tables, row_exps in zip(tables, exps, strict=True):
            n = len(row_tables)
            if n != len(row_exps) or n == 0:
                raise ValueError("each row needs one exponent per table, and a table")
            for table in row_tables:
                if type(table) is not table_type:
                    raise TypeError(f"expected a {table_type.__name__}")
                addresses.append(table.address)
                bits.append(table.bits)
            digits += [(k % r).to_bytes(32, "little") for k in row_exps]
            if n < terms:  # padding: exponent 0, never read
                addresses += [row_tables[0].address] * (terms - n)
                bits += [row_tables[0].bits] * (terms - n)
                digits.append(bytes(32 * (terms - n)))
        digits_flat = b"".join(digits)
        kernels = self._comb_module
        if kernels is not None:
            kernels.products(
                op,
                size,
                ctypes.addressof(identity),
                ctypes.addressof(out),
                rows,
                addresses,
                bits,
                digits_flat,
            )
            return
        # Without the kernels: the same combination, one ctypes call per operation.
        call = self._raw_op(op)
        base_out = ctypes.addressof(out)
        for row_i in range(rows):
            acc = base_out + row_i * size
            entries = []
            for j in range(row_i * terms, (row_i + 1) * terms):
                k = int.from_bytes(digits_flat[32 * j : 32 * j + 32], "little")
                w, at = bits[j], addresses[j]
                mask, i = (1 << w) - 1, 0
                while k:
                    if k & mask:
                        entries.append(at + ((i << w) + (k & mask)) * size)
                    k >>= w
                    i += 1
            if len(entries) < 2:
                src = entries[0] if entries else ctypes.addressof(identity)
                ctypes.memmove(acc, src, size)
                continue
            call(acc, entries[0], entries[1])
            for entry in entries[2:]:
                call(acc, acc, entry)

    # -- encodings ------------------------------------------------------------------------
    def _ser(self, fn: str, obj: ctypes.Structure, size: int) -> bytes:
        buf = ctypes.create_string_buffer(size)
        n = getattr(self._lib, fn)(buf, ctypes.c_size_t(size), ctypes.byref(obj))
        if n != size:
            raise ValueError(f"{fn} wrote {n} bytes")
        return buf.raw

    def g1_to_bytes(self, p: G1Point) -> bytes:
        return self._ser("mclBnG1_serialize", p, 48)

    def g2_to_bytes(self, p: G2Point) -> bytes:
        return self._ser("mclBnG2_serialize", p, 96)

    def gt_to_bytes(self, a: GTElement) -> bytes:
        return self._ser("mclBnGT_serialize", a, 576)

    def g1_from_bytes(self, data: bytes, *, allow_identity: bool = False) -> G1Point:
        if not isinstance(data, bytes | bytearray) or len(data) != 48:
            raise DecodeError("a G1 point is 48 bytes")
        p = G1Point()
        read = self._lib.mclBnG1_deserialize(ctypes.byref(p), bytes(data), _SIZE_48)
        if read != 48:
            raise DecodeError("not a valid G1 point (encoding, curve or subgroup)")
        if not allow_identity and self._lib.mclBnG1_isZero(ctypes.byref(p)):
            raise DecodeError("the G1 identity is not allowed here")
        return p

    def g2_from_bytes(self, data: bytes, *, allow_identity: bool = False) -> G2Point:
        if not isinstance(data, bytes | bytearray) or len(data) != 96:
            raise DecodeError("a G2 point is 96 bytes")
        p = G2Point()
        read = self._lib.mclBnG2_deserialize(ctypes.byref(p), bytes(data), _SIZE_96)
        if read != 96:
            raise DecodeError("not a valid G2 point (encoding, curve or subgroup)")
        if not allow_identity and self._lib.mclBnG2_isZero(ctypes.byref(p)):
            raise DecodeError("the G2 identity is not allowed here")
        return p

    def gt_from_bytes(self, data: bytes, *, check_subgroup: bool = True) -> GTElement:
        if not isinstance(data, bytes | bytearray) or len(data) != 576:
            raise DecodeError("a GT element is 576 bytes")
        a = GTElement()
        read = self._lib.mclBnGT_deserialize(ctypes.byref(a), bytes(data), ctypes.c_size_t(576))
        if read != 576:
            raise DecodeError("not a valid Fp12 element")
        if not check_subgroup:
            return a
        if not self._lib.mclBnGT_isValid(ctypes.byref(a)):
            raise DecodeError("not a valid GT element")
        # Subgroup check with the generic (non-GLV) power: a^(r-1) * a == 1, and a != 1.
        lib = self._lib
        check = GTElement()
        lib.mclBnGT_powGeneric(ctypes.byref(check), ctypes.byref(a), ctypes.byref(self._fr(-1)))
        lib.mclBnGT_mul(ctypes.byref(check), ctypes.byref(check), ctypes.byref(a))
        if not lib.mclBnGT_isOne(ctypes.byref(check)) or lib.mclBnGT_isOne(ctypes.byref(a)):
            raise DecodeError("GT element is not in the order-r subgroup, or is the identity")
        return a
