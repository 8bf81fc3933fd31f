"""BLS12-381 through pymcl's Python objects: the portable fallback.

Same library (herumi mcl) and encodings as `mcl.py`, but only the operations
pymcl exposes: MSM is a loop of multiplications and a pairing product a
product of full pairings (about 1.5-2.5x slower in FAME). Hashing with our DST,
the standard encodings and GT validation still go through mcl's C API
(`MclBackend.codec()`, which needs only the basic symbols), so this backend
works where the MSM / multi-pairing symbols are missing, and cross-checks the
fast backend in tests.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, ClassVar

from abe_service.pairing.base import BLS12_381_ORDER, PairingBackend
from ehr_common.errors import DecodeError


class PymclBackend(PairingBackend):
    """Inherits the portable *_fixed_products loops from PairingBackend."""

    name = "pymcl"
    order = BLS12_381_ORDER
    g1_bytes = 48
    g2_bytes = 96
    _instance: ClassVar[PymclBackend | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def instance(cls) -> PymclBackend:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def __init__(self) -> None:
        import pymcl

        # Same encodings and subgroup checks as the ctypes backend (shared library state).
        from abe_service.pairing.mcl import MclBackend

        fast = self._codec = MclBackend.codec()
        self._m = pymcl
        self._g1 = pymcl.G1.deserialize(fast.g1_to_bytes(fast.g1_generator()))
        self._g2 = pymcl.G2.deserialize(fast.g2_to_bytes(fast.g2_generator()))

    def _fr(self, k: int) -> Any:
        return self._m.Fr(str(k % self.order))

    def g1_generator(self) -> Any:
        return self._g1

    def g2_generator(self) -> Any:
        return self._g2

    def hash_to_g1(self, data: bytes, dst: bytes) -> Any:
        # pymcl's hash uses mcl's default DST; ours must match the fast backend's,
        # so hashing is delegated to the shared library.
        fast = self._codec
        return self._m.G1.deserialize(fast.g1_to_bytes(fast.hash_to_g1(data, dst)))

    def hash_to_g2(self, data: bytes, dst: bytes) -> Any:
        fast = self._codec
        return self._m.G2.deserialize(fast.g2_to_bytes(fast.hash_to_g2(data, dst)))

    def g1_mul(self, p: Any, k: int) -> Any:
        return p * self._fr(k)

    def g1_add(self, p: Any, q: Any) -> Any:
        return p + q

    def g1_neg(self, p: Any) -> Any:
        return -p

    def g1_msm(self, points: Sequence[Any], scalars: Sequence[int]) -> Any:
        if len(points) != len(scalars):
            raise ValueError("points and scalars differ in length")
        acc = self._m.G1()
        for p, k in zip(points, scalars, strict=True):
            acc = acc + p * self._fr(k)
        return acc

    def g1_fixed_base(self, p: Any, window_bits: int = 8) -> Any:
        return p  # no precomputation here: g1_mul_fixed is g1_mul

    def g1_mul_fixed(self, table: Any, k: int) -> Any:
        return self.g1_mul(table, k)

    def g1_is_identity(self, p: Any) -> bool:
        return bool(p.is_zero())

    def g1_eq(self, p: Any, q: Any) -> bool:
        return bool(p == q)

    def g2_mul(self, p: Any, k: int) -> Any:
        return p * self._fr(k)

    def g2_add(self, p: Any, q: Any) -> Any:
        return p + q

    def g2_neg(self, p: Any) -> Any:
        return -p

    def g2_msm(self, points: Sequence[Any], scalars: Sequence[int]) -> Any:
        if len(points) != len(scalars):
            raise ValueError("points and scalars differ in length")
        acc = self._m.G2()
        for p, k in zip(points, scalars, strict=True):
            acc = acc + p * self._fr(k)
        return acc

    def g2_fixed_base(self, p: Any, window_bits: int = 8) -> Any:
        return p  # no precomputation here: g2_mul_fixed is g2_mul

    def g2_mul_fixed(self, table: Any, k: int) -> Any:
        return self.g2_mul(table, k)

    def g2_is_identity(self, p: Any) -> bool:
        return bool(p.is_zero())

    def g2_eq(self, p: Any, q: Any) -> bool:
        return bool(p == q)

    def pairing(self, p: Any, q: Any) -> Any:
        return self._m.pairing(p, q)

    def pairing_product(self, pairs: Sequence[tuple[Any, Any]]) -> Any:
        acc = self._m.GT()
        for p, q in pairs:
            acc = acc * self._m.pairing(p, q)
        return acc

    def gt_mul(self, a: Any, b: Any) -> Any:
        return a * b

    def gt_pow(self, a: Any, k: int) -> Any:
        return a ** self._fr(k)

    def gt_eq(self, a: Any, b: Any) -> bool:
        return bool(a == b)

    def gt_fixed_base(self, a: Any, window_bits: int = 8) -> Any:
        return a  # no precomputation here: gt_pow_fixed is gt_pow

    def gt_pow_fixed(self, table: Any, k: int) -> Any:
        return self.gt_pow(table, k)

    def g1_to_bytes(self, p: Any) -> bytes:
        return bytes(p.serialize())

    def g2_to_bytes(self, p: Any) -> bytes:
        return bytes(p.serialize())

    def gt_to_bytes(self, a: Any) -> bytes:
        return bytes(a.serialize())

    def _point(self, cls: Any, data: bytes, size: int, allow_identity: bool, what: str) -> Any:
        if not isinstance(data, bytes | bytearray) or len(data) != size:
            raise DecodeError(f"a {what} point is {size} bytes")
        try:
            p = cls.deserialize(bytes(data))
        except (ValueError, RuntimeError):
            raise DecodeError(f"not a valid {what} point (encoding, curve or subgroup)") from None
        if not allow_identity and p.is_zero():
            raise DecodeError(f"the {what} identity is not allowed here")
        return p

    def g1_from_bytes(self, data: bytes, *, allow_identity: bool = False) -> Any:
        return self._point(self._m.G1, data, 48, allow_identity, "G1")

    def g2_from_bytes(self, data: bytes, *, allow_identity: bool = False) -> Any:
        return self._point(self._m.G2, data, 96, allow_identity, "G2")

    def gt_from_bytes(self, data: bytes, *, check_subgroup: bool = True) -> Any:
        fast = self._codec
        fast.gt_from_bytes(data, check_subgroup=check_subgroup)  # validates
        return self._m.GT.deserialize(bytes(data))
