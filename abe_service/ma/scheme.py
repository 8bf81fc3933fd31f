# ruff: noqa: RUF002, RUF003 - Greek letters are the paper's notation
"""Decentralised multi-authority CP-ABE: Rouselakis & Waters, "Efficient
Statically-Secure Large-Universe Multi-Authority Attribute-Based Encryption"
(FC 2015, ePrint 2015/016), Section 5, in an asymmetric pairing over BLS12-381.
Used as a key-encapsulation mechanism like FAME: encryption returns
K = e(g,h)^z, from which the envelope derives its AES key.

Why this scheme. Authorities are independent: each runs its own setup with no
coordination and no central authority, a user's keys from several authorities
are tied together only by the global identifier GID, any string is an
attribute (large universe: no per-attribute public keys on the ledger, just one
key pair per authority), it works in prime-order groups, and its costs are
linear in the policy with small constants.

Security (the paper's Theorem): selective (static) security against an adversary
that statically corrupts authorities (chosen, with their keys, before it sees the
public parameters; a corrupt authority's key may be adversarial) under a q-type
assumption ("q-DPBDHE2"), in the random oracle model for H and F. Both oracles
here are RFC 9380 hash-to-curve onto G2 with scheme-specific DSTs, so H(GID) has
no known discrete logarithm. (rabe's AW11 uses g^sha3(gid): two users holding
the same attribute u get K_A = g^α·g^(h_A·y), K_B = g^α·g^(h_B·y) with h_A, h_B
public, from which g^y and then u's key for ANY gid follow; see
tests/test_ma_scheme.py::test_why_gid_needs_hash_to_curve.)

Group placement (𝔾 = G1 with g, ℍ = G2 with h; e: G1 × G2 → GT). The pairing
in decryption fixes that K and C4 lie with H and F, and C2, C3 on the other
side; putting H, F and K in G2 leaves one G2 element per ciphertext row instead
of two:

    authority θ:  α, y ∈ Zp;   pk_θ = (E_θ = e(g,h)^α,  Y_θ = g^y)
    key for (GID, u) from θ, t ∈ Zp:
                  K_u  = h^α · H(GID)^y · F(u)^t   ∈ G2,    K'_u = g^t  ∈ G1
    encrypt, policy (A, ρ), δ(x) = authority of ρ(x):
                  z, v_2..v_m, w_2..w_m ∈ Zp;  λ_x = A_x·(z, v),  ω_x = A_x·(0, w)
                  per row x, t_x ∈ Zp:
                  C1_x = e(g,h)^λ_x · E_δ(x)^t_x ∈ GT
                  C2_x = g^(-t_x),  C3_x = Y_δ(x)^t_x · g^ω_x   ∈ G1
                  C4_x = F(ρ(x))^t_x                            ∈ G2
                  K = e(g,h)^z
    decrypt with c_x (Σ c_x A_x = (1, 0, …, 0)):
                  K = Π C1_x^c_x · Π e(C2_x^c_x, K_ρ(x)) · e(Π C3_x^c_x, H(GID)) · Π e(K'_ρ(x)^c_x, C4_x)
                  as ONE multi-pairing of 2|I| + 1 Miller loops and one final exponentiation.

Costs (rows n, rows used k): encrypt 2n GT exponentiations with fixed bases
(comb tables: e(g,h) and each authority's E), 3n fixed-base G1 exponentiations
(g and each authority's Y), n G2 exponentiations F(u)^t (fixed-base too for labels
in steady use: LABEL_TABLES); keygen per attribute one G2 and one fixed-base G1
exponentiation (h^α·H(GID)^y once per authority and key); decrypt 2k + 1 Miller
loops. Every fixed-base exponentiation of a call is batched into one backend call
per group (mcl, after prepare(): one compiled loop, no Python between group
operations). Ciphertext per row: 576 + 2·48 + 96 = 768 bytes. Key per attribute
144 bytes.

Attributes are labels qualified by their authority (`role:doctor@hosp1`,
`age@hosp1#>>3=5`; see abe_service.ma.labels): F hashes the whole label, so the
same name at two authorities is two attributes, and an authority can only issue
keys for its own labels.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar, Protocol

from abe_service.ma.hot import HotTables
from abe_service.ma.labels import authority_of_label
from abe_service.pairing.base import PairingBackend
from ehr_common.errors import DecodeError, InvalidArgument, PolicyNotSatisfied

SCHEME_ID = "ma-rw15-bls12381-v1"
GID_DST = b"EHR-ABE-V01-CS02-with-BLS12381G2_XMD:SHA-256_SSWU_RO_MA-RW15-GID_"
ATTRIBUTE_DST = b"EHR-ABE-V01-CS02-with-BLS12381G2_XMD:SHA-256_SSWU_RO_MA-RW15-ATTR_"
#: Comb tables kept for authorities' E and Y (4.7 + 1.2 MB each): as many as one policy
#: may name (labels.MAX_AUTHORITIES_PER_POLICY), so one encryption never evicts its own.
#: Only authorities registered on the ledger reach encryption: a consortium's handful.
GT_TABLES_CACHE = 16
#: G2 comb tables for attribute labels in steady use (abe_service.ma.hot): F(u)^t then
#: costs 32 mixed additions instead of a full multiplication (about 26 instead of 86 µs).
#: 2.4 MB each, so at most 75 MB; a table costs about 20 ms to build, the saving of
#: some 330 uses, so one is built only for a label used LABEL_TABLE_AFTER times.
LABEL_TABLES = 32
LABEL_TABLE_AFTER = 16
#: Comb window width, after prepare(), for the two bases every row uses, e(g,h) and g:
#: one table each per process, so wider than the authorities' (8 bits): 22 instead of
#: 32 operations per exponent, for 52 MB (GT) and 13 MB (G1) instead of 4.7 and 1.2 MB.
GLOBAL_WINDOW_BITS = 12


@dataclass(frozen=True)
class AuthorityPublicKey:
    authority: str
    e_alpha: Any  # GT: e(g,h)^α
    g_y: Any  # G1: g^y


@dataclass(frozen=True)
class AuthoritySecretKey:
    authority: str
    alpha: int = field(repr=False)  # secret: never in a repr, log or traceback
    y: int = field(repr=False)


@dataclass(frozen=True, repr=False)
class AttributeKey:  # secret: no repr
    k: Any  # G2: h^α · H(GID)^y · F(u)^t
    kp: Any  # G1: g^t


@dataclass(frozen=True)
class UserKey:
    """Attribute keys for one GID, from one or several authorities (labels are
    qualified by authority, so keys from several authorities merge by label)."""

    gid: str
    parts: Mapping[str, AttributeKey] = field(repr=False)


@dataclass(frozen=True)
class CiphertextRow:
    c1: Any  # GT
    c2: Any  # G1
    c3: Any  # G1
    c4: Any  # G2


@dataclass(frozen=True)
class Ciphertext:
    rows: tuple[CiphertextRow, ...]


class PolicyMatrix(Protocol):
    @property
    def matrix(self) -> tuple[tuple[int, ...], ...]: ...
    @property
    def row_labels(self) -> tuple[str, ...]: ...
    def reconstruction(self, labels: AbstractSet[str], modulus: int) -> dict[int, int] | None: ...


def _rand(group: PairingBackend) -> int:
    while True:
        k = secrets.randbelow(group.order)
        if k:
            return k


def _rands(group: PairingBackend, count: int) -> list[int]:
    """`count` independent uniform scalars in [1, r), from one read of the OS CSPRNG:
    255-bit candidates (r > 2^254, so nine in ten are accepted), the rest redrawn."""
    r = group.order
    bits = r.bit_length()
    size = (bits + 7) // 8
    mask = (1 << bits) - 1
    data = secrets.token_bytes(size * count)
    out = []
    for i in range(count):
        k = int.from_bytes(data[i * size : (i + 1) * size], "little") & mask
        out.append(k if 0 < k < r else _rand(group))
    return out


def check_gid(gid: str) -> bytes:
    if not isinstance(gid, str) or not 1 <= len(gid) <= 256 or not gid.isprintable():
        raise InvalidArgument("a global identifier (GID) is 1-256 printable characters")
    return gid.encode()


class MultiAuthority:
    """The RW15 algorithms over one pairing backend (pure: no I/O)."""

    _shared: ClassVar[dict[int, MultiAuthority]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def shared(cls, group: PairingBackend) -> MultiAuthority:
        """One instance per backend and process: its comb tables (about 6 MB for
        e(g,h) and g, built in about 25 ms; 65 MB after prepare()) and hash caches
        are reused."""
        with cls._shared_lock:
            inst = cls._shared.get(id(group))
            if inst is None or inst.group is not group:
                inst = cls._shared[id(group)] = cls(group)
            return inst

    def __init__(
        self,
        group: PairingBackend,
        *,
        label_tables: int = LABEL_TABLES,
        label_table_after: int = LABEL_TABLE_AFTER,
    ):
        """label_tables: how many hot labels get a G2 comb table (0: none), each once
        it has been used label_table_after times (encryption rows and keys issued)."""
        self.group = group
        self.g = group.g1_generator()
        self.h = group.g2_generator()
        self.e_gh = group.pairing(self.g, self.h)
        self._e_gh_table = group.gt_fixed_base(self.e_gh)
        self._g_table = group.g1_fixed_base(self.g)
        self._prepared = False
        self._prepare_lock = threading.Lock()
        self._F_cached = lru_cache(maxsize=65536)(self._F_uncached)
        self._H_cached = lru_cache(maxsize=4096)(self._H_uncached)
        self._tables = lru_cache(maxsize=GT_TABLES_CACHE)(self._table_uncached)
        self._label_tables: HotTables[str, Any] = HotTables(
            label_tables, label_table_after, lambda label: group.g2_fixed_base(self.F(label))
        )

    def prepare(self) -> MultiAuthority:
        """For long-lived processes (the services, benchmarks): load the backend's
        accelerators (mcl: the numba comb kernels) and rebuild the tables of e(g,h) and g
        with GLOBAL_WINDOW_BITS-wide windows. About 1.5 s and 65 MB, once per process;
        one-shot commands skip it (results are the same, encryption about 1.5x slower).
        Safe while other threads encrypt: they use the old tables until the new are in."""
        with self._prepare_lock:
            if not self._prepared:
                G = self.group
                G.prepare()
                e_table = G.gt_fixed_base(self.e_gh, GLOBAL_WINDOW_BITS)
                g_table = G.g1_fixed_base(self.g, GLOBAL_WINDOW_BITS)
                self._e_gh_table, self._g_table = e_table, g_table
                self._prepared = True
        return self

    def prepare_in_background(self) -> MultiAuthority:
        """prepare() on a daemon thread: services start without waiting for numba."""
        if not self._prepared:
            threading.Thread(target=self.prepare, name="ma-prepare", daemon=True).start()
        return self

    # -- the random oracles ------------------------------------------------------------
    def _F_uncached(self, label: str) -> Any:
        return self.group.hash_to_g2(label.encode(), ATTRIBUTE_DST)

    def _H_uncached(self, gid: str) -> Any:
        return self.group.hash_to_g2(check_gid(gid), GID_DST)

    def F(self, label: str) -> Any:
        """F(u): the attribute label onto G2."""
        return self._F_cached(label)

    def H(self, gid: str) -> Any:
        """H(GID): the global identifier onto G2 (RFC 9380, no known discrete log)."""
        return self._H_cached(gid)

    def _table_uncached(self, e_alpha: bytes, g_y: bytes) -> tuple[Any, Any]:
        G = self.group
        return G.gt_fixed_base(G.gt_from_bytes(e_alpha)), G.g1_fixed_base(G.g1_from_bytes(g_y))

    def _authority_tables(self, pk: AuthorityPublicKey) -> tuple[Any, Any]:
        """Comb tables for E and Y of an authority (cached: built on first use)."""
        G = self.group
        return self._tables(G.gt_to_bytes(pk.e_alpha), G.g1_to_bytes(pk.g_y))

    def clear_caches(self, *, tables: bool = True) -> None:
        """Forget hashes and what derives from them (label tables), and authority comb
        tables unless tables=False (benchmarks)."""
        self._F_cached.cache_clear()
        self._H_cached.cache_clear()
        self._label_tables.clear()
        if tables:
            self._tables.cache_clear()

    # -- authority setup and key issue -----------------------------------------------------
    def authority_setup(self, authority: str) -> tuple[AuthorityPublicKey, AuthoritySecretKey]:
        G = self.group
        alpha, y = _rand(G), _rand(G)
        return (
            AuthorityPublicKey(authority, G.gt_pow(self.e_gh, alpha), G.g1_mul(self.g, y)),
            AuthoritySecretKey(authority, alpha, y),
        )

    def keygen(self, sk: AuthoritySecretKey, gid: str, labels: Sequence[str]) -> UserKey:
        """Keys for `labels` (all qualified by sk's authority) bound to `gid`."""
        G = self.group
        for label in labels:
            if authority_of_label(label) != sk.authority:
                raise InvalidArgument(
                    f"authority {sk.authority!r} cannot issue {label!r}: "
                    f"its attributes end in @{sk.authority}"
                )
        # h^α · H(GID)^y is shared by every attribute of this key.
        base = G.g2_msm([self.h, self.H(gid)], [sk.alpha, sk.y])
        unique = list(dict.fromkeys(labels))
        ts = _rands(G, len(unique))
        f_t = self._label_powers(unique, ts)
        kps = G.g1_fixed_products([(self._g_table,)] * len(ts), [(t,) for t in ts])
        parts = {
            label: AttributeKey(G.g2_add(base, f), kp)
            for label, f, kp in zip(unique, f_t, kps, strict=True)
        }
        return UserKey(gid, parts)

    def _label_powers(self, labels: Sequence[str], ts: Sequence[int]) -> list[Any]:
        """F(label_i)^t_i: fixed-base (one batched call) for labels with a table."""
        G = self.group
        tables = [self._label_tables.use(label) for label in labels]
        hot = [i for i, table in enumerate(tables) if table is not None]
        out: list[Any] = [
            None if table is not None else G.g2_mul(self.F(label), t)
            for label, t, table in zip(labels, ts, tables, strict=True)
        ]
        if hot:
            powers = G.g2_fixed_products([(tables[i],) for i in hot], [(ts[i],) for i in hot])
            for i, p in zip(hot, powers, strict=True):
                out[i] = p
        return out

    # -- encryption ----------------------------------------------------------------------
    def encrypt(
        self, authorities: Mapping[str, AuthorityPublicKey], policy: PolicyMatrix
    ) -> tuple[Ciphertext, Any]:
        """The header and K = e(g,h)^z. Every row's authority must be in `authorities`."""
        G, r = self.group, self.group.order
        M, labels = policy.matrix, policy.row_labels
        if not M or len(M) != len(labels):
            raise InvalidArgument("a policy matrix needs one label per row, and at least one row")
        tables: dict[str, tuple[Any, Any]] = {}
        row_tables = []
        for label in labels:
            auth = authority_of_label(label)
            pk = authorities.get(auth) if auth is not None else None
            if pk is None or pk.authority != auth:
                raise InvalidArgument(
                    f"the policy attribute {label!r} needs the public key of its authority"
                    + (f" {auth!r}" if auth else " (qualify it: name:value@authority)")
                )
            if auth not in tables:
                tables[auth] = self._authority_tables(pk)
            row_tables.append(tables[auth])
        m = len(M[0])
        n = len(M)
        # z, v_2..v_m, w_2..w_m and every row's t_x: independent and uniform in [1, r).
        randoms = _rands(G, 2 * m - 1 + n)
        z = randoms[0]
        v = randoms[:m]
        w = [0, *randoms[m : 2 * m - 1]]
        ts = randoms[2 * m - 1 :]
        e_table, g_table = self._e_gh_table, self._g_table
        lams = [sum(a * b for a, b in zip(row, v, strict=True) if a) % r for row in M]
        omegas = [sum(a * b for a, b in zip(row, w, strict=True) if a) % r for row in M]
        # Every row's fixed-base work in one batched call per group:
        # C1_x = e(g,h)^λ_x · E^t_x, and K = e(g,h)^z as one more row;
        # C2_x = g^(-t_x) and C3_x = Y^t_x · g^ω_x; C4_x = F(ρ(x))^t_x (_label_powers).
        gts = G.gt_fixed_products(
            [(e_table, pk_e) for pk_e, _ in row_tables] + [(e_table,)],
            [(lam, t) for lam, t in zip(lams, ts, strict=True)] + [(z,)],
        )
        g1s = G.g1_fixed_products(
            [(g_table,)] * n + [(pk_y, g_table) for _, pk_y in row_tables],
            [(-t,) for t in ts] + [(t, omega) for t, omega in zip(ts, omegas, strict=True)],
        )
        c4s = self._label_powers(labels, ts)
        rows = tuple(CiphertextRow(gts[x], g1s[x], g1s[n + x], c4s[x]) for x in range(n))
        return Ciphertext(rows), gts[n]

    # -- decryption ----------------------------------------------------------------------
    def reconstruction(self, policy: PolicyMatrix, key: UserKey) -> dict[int, int]:
        gammas = policy.reconstruction(frozenset(key.parts), self.group.order)
        if gammas is None:
            raise PolicyNotSatisfied("the key's attributes do not satisfy the envelope's policy")
        return gammas

    def decrypt(self, policy: PolicyMatrix, header: Ciphertext, key: UserKey) -> Any:
        if len(header.rows) != len(policy.row_labels):
            raise DecodeError("the header's rows do not match the policy")
        gammas = self.reconstruction(policy, key)
        return self.decrypt_rows(gammas, policy.row_labels, header.rows, key)

    def decrypt_rows(
        self,
        gammas: Mapping[int, int],
        row_labels: Sequence[str],
        rows: Mapping[int, CiphertextRow] | Sequence[CiphertextRow],
        key: UserKey,
    ) -> Any:
        """K from the rows named in `gammas` only."""
        G = self.group
        used = sorted(gammas)
        ones = all(gammas[i] == 1 for i in used)
        pairs: list[tuple[Any, Any]] = []
        c1 = None
        c3 = None
        for i in used:
            row, part, c = rows[i], key.parts[row_labels[i]], gammas[i]
            c1_i = row.c1 if ones else G.gt_pow(row.c1, c)
            c1 = c1_i if c1 is None else G.gt_mul(c1, c1_i)
            c3_i = row.c3 if ones else G.g1_mul(row.c3, c)
            c3 = c3_i if c3 is None else G.g1_add(c3, c3_i)
            pairs.append((row.c2 if ones else G.g1_mul(row.c2, c), part.k))
            pairs.append((part.kp if ones else G.g1_mul(part.kp, c), row.c4))
        if c1 is None or c3 is None:
            raise PolicyNotSatisfied("no rows to decrypt with")
        pairs.append((c3, self.H(key.gid)))
        return G.gt_mul(c1, G.pairing_product(pairs))


def merge_keys(keys: Sequence[UserKey]) -> UserKey:
    """One key from several authorities' keys for the same GID (a client keyring).
    Keys of different GIDs never combine: that is the collusion resistance."""
    if not keys:
        raise InvalidArgument("no keys to combine")
    gid = keys[0].gid
    parts: dict[str, AttributeKey] = {}
    for k in keys:
        if k.gid != gid:
            raise InvalidArgument(
                f"keys of different global identifiers cannot be combined ({gid!r}, {k.gid!r})"
            )
        parts.update(k.parts)
    return UserKey(gid, parts)
