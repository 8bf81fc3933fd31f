"""The pairing-backend seam: the few BLS12-381 operations FAME needs.

Scalars are plain Python ints (reduced mod `order` by the backend), which keeps
the scheme code readable next to the paper. Points and target-group elements
are opaque backend objects. Encodings are the standard compressed ones
(zcash/IETF: 48-byte G1, 96-byte G2, big-endian, flag bits in the first byte);
deserializers validate length, encoding, curve membership and prime-order
subgroup membership, and raise `DecodeError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

#: The prime order r of G1, G2 and GT on BLS12-381.
BLS12_381_ORDER = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001

G1 = Any
G2 = Any
GT = Any
GTTable = Any
G1Table = Any
G2Table = Any


@runtime_checkable
class PairingBackend(Protocol):
    name: str
    order: int
    g1_bytes: int
    g2_bytes: int

    def prepare(self) -> None:
        """Load optional accelerators (mcl: numba kernels for fixed-base products; about
        1 s once per process). Long-lived processes call it; everything works without it."""
        return None

    def g1_generator(self) -> G1: ...
    def g2_generator(self) -> G2: ...
    def hash_to_g1(self, data: bytes, dst: bytes) -> G1: ...
    def hash_to_g2(self, data: bytes, dst: bytes) -> G2:
        """RFC 9380 hash_to_curve (BLS12381G2_XMD:SHA-256_SSWU_RO_) with the caller's DST."""
        ...

    def g1_mul(self, p: G1, k: int) -> G1: ...
    def g1_add(self, p: G1, q: G1) -> G1: ...
    def g1_neg(self, p: G1) -> G1: ...
    def g1_msm(self, points: Sequence[G1], scalars: Sequence[int]) -> G1: ...
    def g1_fixed_base(self, p: G1, window_bits: int = 8) -> G1Table:
        """Precomputation for many multiples of one point (g1_mul_fixed)."""
        ...

    def g1_mul_fixed(self, table: G1Table, k: int) -> G1:
        """k·p for the point of `table`; equal to g1_mul(p, k)."""
        ...

    def g1_fixed_products(
        self, tables: Sequence[Sequence[G1Table]], exps: Sequence[Sequence[int]]
    ) -> list[G1]:
        """Per row Σ_j k_j·p_j over the row's comb tables (rows may differ in length,
        none may be empty). Backends batch this (mcl: every row in one compiled loop);
        this default loops over g1_mul_fixed."""
        return _products(self.g1_mul_fixed, self.g1_add, tables, exps)

    def g1_is_identity(self, p: G1) -> bool: ...
    def g1_eq(self, p: G1, q: G1) -> bool: ...

    def g2_mul(self, p: G2, k: int) -> G2: ...
    def g2_add(self, p: G2, q: G2) -> G2: ...
    def g2_neg(self, p: G2) -> G2: ...
    def g2_msm(self, points: Sequence[G2], scalars: Sequence[int]) -> G2: ...
    def g2_fixed_base(self, p: G2, window_bits: int = 8) -> G2Table:
        """Precomputation for many multiples of one point (g2_mul_fixed)."""
        ...

    def g2_mul_fixed(self, table: G2Table, k: int) -> G2:
        """k·p for the point of `table`; equal to g2_mul(p, k)."""
        ...

    def g2_fixed_products(
        self, tables: Sequence[Sequence[G2Table]], exps: Sequence[Sequence[int]]
    ) -> list[G2]:
        """As g1_fixed_products, in G2."""
        return _products(self.g2_mul_fixed, self.g2_add, tables, exps)

    def g2_is_identity(self, p: G2) -> bool: ...
    def g2_eq(self, p: G2, q: G2) -> bool: ...

    def pairing(self, p: G1, q: G2) -> GT: ...
    def pairing_product(self, pairs: Sequence[tuple[G1, G2]]) -> GT:
        """prod e(P_i, Q_i), with one final exponentiation."""
        ...

    def gt_mul(self, a: GT, b: GT) -> GT: ...
    def gt_pow(self, a: GT, k: int) -> GT: ...
    def gt_eq(self, a: GT, b: GT) -> bool: ...
    def gt_fixed_base(self, a: GT, window_bits: int = 8) -> GTTable:
        """Precomputation for many powers of one base (gt_pow_fixed); window_bits
        trades memory (2^bits per window) for operations (255/bits per power)."""
        ...

    def gt_pow_fixed(self, table: GTTable, k: int) -> GT:
        """a^k for the base of `table`; equal to gt_pow(a, k)."""
        ...

    def gt_fixed_products(
        self, tables: Sequence[Sequence[GTTable]], exps: Sequence[Sequence[int]]
    ) -> list[GT]:
        """Per row Π_j a_j^(k_j) over the row's comb tables (see g1_fixed_products)."""
        return _products(self.gt_pow_fixed, self.gt_mul, tables, exps)

    def g1_to_bytes(self, p: G1) -> bytes: ...
    def g1_from_bytes(self, data: bytes, *, allow_identity: bool = False) -> G1: ...
    def g2_to_bytes(self, p: G2) -> bytes: ...
    def g2_from_bytes(self, data: bytes, *, allow_identity: bool = False) -> G2: ...
    def gt_to_bytes(self, a: GT) -> bytes: ...
    def gt_from_bytes(self, data: bytes, *, check_subgroup: bool = True) -> GT:
        """A GT element. check_subgroup=False parses the Fp12 element only (about a
        thousand times cheaper): for elements that are only multiplied, or raised to
        public exponents, on their way into a KDF (see abe_service/ma/serialization.py)."""
        ...


def _products(
    power: Callable[[Any, int], Any],
    combine: Callable[[Any, Any], Any],
    tables: Sequence[Sequence[Any]],
    exps: Sequence[Sequence[int]],
) -> list[Any]:
    """The portable fixed_products: one power per term, combined row by row."""
    if len(tables) != len(exps):
        raise ValueError("tables and exponents differ in length")
    out = []
    for row_tables, row_exps in zip(tables, exps, strict=True):
        if len(row_tables) != len(row_exps) or not row_tables:
            raise ValueError("each row needs one exponent per table, and a table")
        acc = power(row_tables[0], row_exps[0])
        for table, k in zip(row_tables[1:], row_exps[1:], strict=True):
            acc = combine(acc, power(table, k))
        out.append(acc)
    return out


def get_backend(name: str = "auto") -> PairingBackend:
    """`mcl` (herumi mcl through ctypes: MSM, multi-pairing), `pymcl` (pymcl's
    Python objects, portable), or `auto`: the fastest available."""
    from ehr_common.errors import ConfigError

    if name in ("auto", "mcl"):
        try:
            from abe_service.pairing.mcl import MclBackend

            return MclBackend.instance()
        except OSError as exc:
            if name == "mcl":
                raise ConfigError(f"the mcl backend is unavailable: {exc}") from None
    if name in ("auto", "pymcl"):
        from abe_service.pairing.pymcl_backend import PymclBackend

        return PymclBackend.instance()
    raise ConfigError(f"unknown pairing backend {name!r} (known: auto, mcl, pymcl)")
