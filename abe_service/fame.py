# ruff: noqa: RUF002, RUF003 - Greek letters are the paper's notation
"""FAME: Fast Attribute-based Message Encryption (Agrawal & Chase, CCS 2017,
ePrint 2017/807), the ciphertext-policy scheme of Section 3 with k = 2 (DLIN),
over BLS12-381. Used here as a key-encapsulation mechanism: encryption
returns the GT element T1^s1 · T2^s2 (from which `envelope` derives an
AES-256-GCM key) instead of multiplying it into a message.

Names follow the paper (G1 = 𝔾, G2 = ℍ, g and h their generators):

    setup:   a1, a2, b1, b2 ∈ Zp*, d1, d2, d3 ∈ Zp
             pk  = (H1 = h^a1, H2 = h^a2, T1 = e(g,h)^(d1·a1 + d3), T2 = e(g,h)^(d2·a2 + d3))
             msk = (a1, a2, b1, b2, g^d1, g^d2, g^d3)
    keygen:  r1, r2 ∈ Zp;  sk0 = (h^(b1·r1), h^(b2·r2), h^(r1+r2))
             for y ∈ S, t ∈ {1,2}: sk_{y,t} = H(y1t)^(b1r1/at) · H(y2t)^(b2r2/at) · H(y3t)^((r1+r2)/at) · g^(σy/at)
                                    sk_{y,3} = g^(-σy)
             sk'_t = g^dt · H(011t)^(b1r1/at) · H(012t)^(b2r2/at) · H(013t)^((r1+r2)/at) · g^(σ'/at)
             sk'_3 = g^d3 · g^(-σ')
    encrypt: s1, s2 ∈ Zp;  ct0 = (H1^s1, H2^s2, h^(s1+s2))
             ct_{i,l} = H(ρ(i) l 1)^s1 · H(ρ(i) l 2)^s2 · Π_j [H(0 j l 1)^s1 · H(0 j l 2)^s2]^(M_ij),  l ∈ {1,2,3}
             key element K = T1^s1 · T2^s2
    decrypt: with γ_i such that Σ_{i∈I} γ_i M_i = (1, 0, …, 0):
             K = Π_{l} e(sk'_l · Π_i sk_{ρ(i),l}^γi, ct0_l) / Π_{l} e(Π_i ct_{i,l}^γi, sk0_l)
             computed as ONE multi-pairing (six Miller loops, one final exponentiation).

H is a hash onto G1 (random oracle) with a domain-separation tag naming this
scheme; attribute hashes and column hashes are structurally separated so no
attribute can collide with a column index. Hashes are deterministic and cached.

How it is made fast (measure with bench/abe_bench.py):
  * encrypt regroups ct_{i,l} = B_{i,l,1}^s1 · B_{i,l,2}^s2 with the policy-only
    bases B_{i,l,t} = H(ρ(i) l t) · Π_j H(0 j l t)^(M_ij) (entries +-1 as
    additions, the others as ONE multi-scalar multiplication, reduced mod r),
    so a row costs three 2-point MSMs whatever the number of columns; the bases
    are cached per policy (bounded: ROW_BASES_CACHE policies of at most
    ROW_BASES_MAX_ROWS rows);
  * keygen computes each sk_{y,t} and sk'_t as one MSM;
  * decrypt uses the fewest rows (the compiler's reconstruction), sums with
    additions when every γ_i is 1, and one multi-pairing.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from abe_service.pairing.base import PairingBackend
from ehr_common.errors import DecodeError, InvalidArgument, PolicyNotSatisfied

SCHEME_ID = "fame-bls12381-v1"
HASH_DST = b"EHR-ABE-V01-CS01-with-BLS12381G1_XMD:SHA-256_SSWU_RO_FAME_"
ROW_BASES_CACHE = 128
ROW_BASES_MAX_ROWS = 64


@dataclass(frozen=True)
class PublicKey:
    h: Any  # G2 generator
    H1: Any  # h^a1
    H2: Any  # h^a2
    T1: Any  # e(g,h)^(d1·a1 + d3)
    T2: Any  # e(g,h)^(d2·a2 + d3)


# Secret-bearing classes print no secret (repr=False): a stray log line or a
# traceback's locals must not leak key material.
@dataclass(frozen=True, repr=False)
class MasterKey:
    a1: int
    a2: int
    b1: int
    b2: int
    g_d1: Any
    g_d2: Any
    g_d3: Any

    def __repr__(self) -> str:
        return "MasterKey(<secret>)"


@dataclass(frozen=True, repr=False)
class AttributeKey:
    sk1: Any
    sk2: Any
    sk3: Any

    def __repr__(self) -> str:
        return "AttributeKey(<secret>)"


@dataclass(frozen=True, repr=False)
class SecretKey:
    sk0: tuple[Any, Any, Any]  # G2
    sk: Mapping[str, AttributeKey]  # by attribute label
    sk_prime: tuple[Any, Any, Any]  # G1

    def __repr__(self) -> str:
        return f"SecretKey(<secret: {len(self.sk)} labels>)"


@dataclass(frozen=True)
class Ciphertext:
    """The FAME header: ct0 in G2 and three G1 elements per span-program row."""

    ct0: tuple[Any, Any, Any]
    ct: tuple[tuple[Any, Any, Any], ...]


class PolicyMatrix(Protocol):
    """What FAME needs of a compiled policy (abe_service.policy.CompiledPolicy)."""

    @property
    def matrix(self) -> tuple[tuple[int, ...], ...]: ...
    @property
    def row_labels(self) -> tuple[str, ...]: ...
    def reconstruction(self, labels: AbstractSet[str], modulus: int) -> dict[int, int] | None: ...


def _rand(group: PairingBackend) -> int:
    """Uniform non-zero scalar mod r."""
    while True:
        k = secrets.randbelow(group.order)
        if k:
            return k


def _u32(n: int) -> bytes:
    return struct.pack(">I", n)


class Fame:
    def __init__(self, group: PairingBackend):
        self.group = group
        self.g = group.g1_generator()
        self.h = group.g2_generator()
        self._hash_cached = lru_cache(maxsize=65536)(self._hash_uncached)
        # Bounded in memory: at most ROW_BASES_CACHE policies of at most
        # ROW_BASES_MAX_ROWS rows (6 G1 points per row) are kept.
        self._row_bases_cached = lru_cache(maxsize=ROW_BASES_CACHE)(self._row_bases_uncached)

    def _row_bases(
        self, labels: tuple[str, ...], matrix: tuple[tuple[int, ...], ...]
    ) -> tuple[tuple[tuple[Any, Any], tuple[Any, Any], tuple[Any, Any]], ...]:
        if len(labels) <= ROW_BASES_MAX_ROWS:
            return self._row_bases_cached(labels, matrix)
        return self._row_bases_uncached(labels, matrix)

    def _row_bases_uncached(
        self, labels: tuple[str, ...], matrix: tuple[tuple[int, ...], ...]
    ) -> tuple[tuple[tuple[Any, Any], tuple[Any, Any], tuple[Any, Any]], ...]:
        """B_{i,l,t} = H(ρ(i) l t) · Π_j H(0 j l t)^(M_ij), for every row i, l, t."""
        G, r = self.group, self.group.order

        def base(y: str, row: tuple[int, ...], l: int, t: int) -> Any:  # noqa: E741
            # Entries +-1 (and/or gates) are additions; the others (threshold rows
            # hold j, j^2, ..., reduced mod r here) go into ONE multi-scalar
            # multiplication, not one multiplication each.
            acc = self.H_attr(y, l, t)
            points, scalars = [], []
            for j, m_ij in enumerate(row, start=1):
                if m_ij == 1:
                    acc = G.g1_add(acc, self.H_col(j, l, t))
                elif m_ij == -1:
                    acc = G.g1_add(acc, G.g1_neg(self.H_col(j, l, t)))
                elif m_ij:
                    points.append(self.H_col(j, l, t))
                    scalars.append(m_ij % r)
            return G.g1_add(acc, G.g1_msm(points, scalars)) if points else acc

        return tuple(
            (
                (base(y, row, 1, 1), base(y, row, 1, 2)),
                (base(y, row, 2, 1), base(y, row, 2, 2)),
                (base(y, row, 3, 1), base(y, row, 3, 2)),
            )
            for y, row in zip(labels, matrix, strict=True)
        )

    # -- the random oracle H ---------------------------------------------------
    def clear_hash_cache(self) -> None:
        """Forget cached H(.) values (benchmarks: cold-cache timings)."""
        self._hash_cached.cache_clear()
        self._row_bases_cached.cache_clear()

    def _hash_uncached(self, msg: bytes) -> Any:
        return self.group.hash_to_g1(msg, HASH_DST)

    def H_attr(self, y: str, l: int, t: int) -> Any:  # noqa: E741 - paper notation
        """H(y l t): attribute y, l ∈ {1,2,3}, t ∈ {1,2}."""
        yb = y.encode()
        return self._hash_cached(b"A" + _u32(len(yb)) + yb + bytes((l, t)))

    def H_col(self, j: int, l: int, t: int) -> Any:  # noqa: E741
        """H(0 j l t): column j ≥ 1 of the span program."""
        return self._hash_cached(b"C" + _u32(j) + bytes((l, t)))

    # -- setup -------------------------------------------------------------------
    def setup(self) -> tuple[PublicKey, MasterKey]:
        G = self.group
        a1, a2, b1, b2 = (_rand(G) for _ in range(4))
        d1, d2, d3 = (_rand(G) for _ in range(3))
        e_gh = G.pairing(self.g, self.h)
        pk = PublicKey(
            h=self.h,
            H1=G.g2_mul(self.h, a1),
            H2=G.g2_mul(self.h, a2),
            T1=G.gt_pow(e_gh, d1 * a1 + d3),
            T2=G.gt_pow(e_gh, d2 * a2 + d3),
        )
        msk = MasterKey(
            a1, a2, b1, b2, G.g1_mul(self.g, d1), G.g1_mul(self.g, d2), G.g1_mul(self.g, d3)
        )
        return pk, msk

    # -- key generation ---------------------------------------------------------------
    def keygen(self, pk: PublicKey, msk: MasterKey, labels: Sequence[str]) -> SecretKey:
        G, g, r = self.group, self.g, self.group.order
        r1, r2 = _rand(G), _rand(G)
        br = (msk.b1 * r1 % r, msk.b2 * r2 % r, (r1 + r2) % r)
        sk0 = (G.g2_mul(pk.h, br[0]), G.g2_mul(pk.h, br[1]), G.g2_mul(pk.h, br[2]))
        inv_a = (pow(msk.a1, -1, r), pow(msk.a2, -1, r))

        sk: dict[str, AttributeKey] = {}
        for y in dict.fromkeys(labels):  # de-duplicated, order kept
            sigma_y = _rand(G)
            parts = []
            for t in (1, 2):
                ia = inv_a[t - 1]
                parts.append(
                    G.g1_msm(
                        [self.H_attr(y, 1, t), self.H_attr(y, 2, t), self.H_attr(y, 3, t), g],
                        [br[0] * ia, br[1] * ia, br[2] * ia, sigma_y * ia],
                    )
                )
            sk[y] = AttributeKey(parts[0], parts[1], G.g1_mul(g, -sigma_y))

        sigma_p = _rand(G)
        g_d = (msk.g_d1, msk.g_d2, msk.g_d3)
        sk_prime = []
        for t in (1, 2):
            ia = inv_a[t - 1]
            sk_prime.append(
                G.g1_msm(
                    [g_d[t - 1], self.H_col(1, 1, t), self.H_col(1, 2, t), self.H_col(1, 3, t), g],
                    [1, br[0] * ia, br[1] * ia, br[2] * ia, sigma_p * ia],
                )
            )
        sk_prime.append(G.g1_add(g_d[2], G.g1_mul(g, -sigma_p)))
        return SecretKey(sk0, sk, (sk_prime[0], sk_prime[1], sk_prime[2]))

    # -- encryption -----------------------------------------------------------------------
    def encrypt(self, pk: PublicKey, policy: PolicyMatrix) -> tuple[Ciphertext, Any]:
        """Returns the header and the encapsulated GT element K = T1^s1 · T2^s2."""
        G = self.group
        M = policy.matrix
        if len(M) != len(policy.row_labels) or not M:
            raise InvalidArgument("a policy matrix needs one label per row, and at least one row")
        s1, s2 = _rand(G), _rand(G)
        ct0 = (G.g2_mul(pk.H1, s1), G.g2_mul(pk.H2, s2), G.g2_mul(pk.h, s1 + s2))

        # ct_{i,l} = B_{i,l,1}^s1 · B_{i,l,2}^s2 with the policy-only bases
        # B_{i,l,t} = H(ρ(i) l t) · Π_j H(0 j l t)^(M_ij): two exponentiations per
        # (row, l) whatever the number of columns, and the bases are cached per policy.
        ct = tuple(
            (
                G.g1_msm(b[0], (s1, s2)),
                G.g1_msm(b[1], (s1, s2)),
                G.g1_msm(b[2], (s1, s2)),
            )
            for b in self._row_bases(policy.row_labels, policy.matrix)
        )
        K = G.gt_mul(G.gt_pow(pk.T1, s1), G.gt_pow(pk.T2, s2))
        return Ciphertext(ct0, ct), K

    # -- decryption -----------------------------------------------------------------------
    def decrypt(self, policy: PolicyMatrix, header: Ciphertext, key: SecretKey) -> Any:
        """Recover K. Raises PolicyNotSatisfied if the key's attributes do not satisfy
        the policy. A tampered header yields a wrong K (caught by the AEAD)."""
        if len(header.ct) != len(policy.row_labels):
            raise DecodeError("the header's rows do not match the policy")
        gammas = self.reconstruction(policy, key)
        return self.decrypt_rows(gammas, policy.row_labels, header.ct0, header.ct, key)

    def reconstruction(self, policy: PolicyMatrix, key: SecretKey) -> dict[int, int]:
        """The γ_i (row -> coefficient) of the fewest rows the key can use."""
        gammas = policy.reconstruction(frozenset(key.sk), self.group.order)
        if gammas is None:
            raise PolicyNotSatisfied("the key's attributes do not satisfy the envelope's policy")
        return gammas

    def decrypt_rows(
        self,
        gammas: Mapping[int, int],
        row_labels: Sequence[str],
        ct0: tuple[Any, Any, Any],
        ct: Mapping[int, tuple[Any, Any, Any]] | Sequence[tuple[Any, Any, Any]],
        key: SecretKey,
    ) -> Any:
        """Recover K from the header rows named in `gammas` only (`ct` needs no others:
        a decrypting client validates just the points it computes with)."""
        G = self.group
        rows = sorted(gammas)
        labels = row_labels
        ones = all(gammas[i] == 1 for i in rows)

        def combine(points: list[Any]) -> Any:
            if ones:  # common for and/or policies: additions only
                acc = points[0]
                for p in points[1:]:
                    acc = G.g1_add(acc, p)
                return acc
            return G.g1_msm(points, [gammas[i] for i in rows])

        pairs = []
        for l in range(3):  # noqa: E741
            ct_l = combine([ct[i][l] for i in rows])
            sk_l = combine(
                [
                    (key.sk[labels[i]].sk1, key.sk[labels[i]].sk2, key.sk[labels[i]].sk3)[l]
                    for i in rows
                ]
            )
            pairs.append((G.g1_add(key.sk_prime[l], sk_l), ct0[l]))
            pairs.append((G.g1_neg(ct_l), key.sk0[l]))
        return G.pairing_product(pairs)
