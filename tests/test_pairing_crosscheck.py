"""Cross-checks of the BLS12-381 backends against an independent implementation.

py-arkworks-bls12381 (Rust arkworks, a dev dependency) shares no code with
herumi mcl, which both of our backends (`mcl` through ctypes, `pymcl` through
its Python objects) use. Agreement on encodings, arithmetic, hashing and
pairings therefore checks our backends, their flags (ETH serialization,
subgroup checks) and our ctypes glue, not just mcl against itself.

Encoding conversions (measured, and pinned by the tests below):

* G1 / G2 compressed points: NO conversion. py-arkworks 0.5.0 emits and
  parses the zcash/IETF encoding, exactly as mcl does with
  `mclBn_setETHserialization(1)`: x big-endian (G2: x.c1 then x.c0), and the
  three flag bits in the top of byte 0: 0x80 compressed, 0x40 infinity,
  0x20 "y is the lexicographically larger root". (arkworks' *native*
  ark-serialize format differs — little-endian with the flags in the last
  byte — but the Python binding converts for us.)
* GT: py-arkworks has no byte serializer; `str(gt)` is the hex of arkworks'
  native form: twelve 48-byte little-endian Fp values in the order
  (c0, c1) of each Fp2 coefficient. mcl writes each Fp big-endian and each
  Fp2 as (c1, c0). So mcl's 576 bytes are arkworks' bytes with every 96-byte
  (Fp2) block reversed: `mcl = b"".join(ark[i:i+96][::-1] for i in 0, 96, …)`.
* py-arkworks GT: `*` is the group operation and `GT.one()` its identity
  (`+` is Fp12 addition, not a group operation); there is no exponentiation,
  so the tests raise to a power by square-and-multiply.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import py_arkworks_bls12381 as ark
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abe_service.fame import HASH_DST
from abe_service.pairing.base import BLS12_381_ORDER as R
from abe_service.pairing.base import PairingBackend, get_backend

G1_GENERATOR = bytes.fromhex(
    "97f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac586c55e83ff97a1aeffb3af00adb22c6bb"
)
G2_GENERATOR = bytes.fromhex(
    "93e02b6052719f607dacd3a088274f65596bd0d09920b61ab5da61bbdc7f5049334cf11213945d57"
    "e5ac7d055d042b7e024aa2b2f08f0a91260805272dc51051c6e47ad4fa403b02b4510b647ae3d177"
    "0bac0326a805bbefd48056c8c121bdb8"
)
SIGN_FLAG = 0x20

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
scalars = st.one_of(st.integers(0, R - 1), st.sampled_from([0, 1, 2, R - 1, R, R + 1, 2**256 - 1]))


@pytest.fixture(scope="module", params=["mcl", "pymcl"])
def group(request: pytest.FixtureRequest) -> PairingBackend:
    return get_backend(request.param)


# -- conversions between the two libraries --------------------------------------------
def ark_scalar(k: int) -> ark.Scalar:
    return ark.Scalar(k % R)


def ark_g1(data: bytes) -> ark.G1Point:
    return ark.G1Point.from_compressed_bytes(data)  # same encoding: see the module doc


def ark_g2(data: bytes) -> ark.G2Point:
    return ark.G2Point.from_compressed_bytes(data)


def gt_bytes_from_ark(element: ark.GT) -> bytes:
    native = bytes.fromhex(str(element))
    assert len(native) == 576
    return b"".join(native[i : i + 96][::-1] for i in range(0, 576, 96))


def ark_gt_pow(base: ark.GT, k: int) -> ark.GT:
    out, k = ark.GT.one(), k % R
    while k:
        if k & 1:
            out = out * base
        base, k = base * base, k >> 1
    return out


def ark_gen1() -> ark.G1Point:
    return ark.G1Point()


def ark_gen2() -> ark.G2Point:
    return ark.G2Point()


# -- encodings -------------------------------------------------------------------------------
def test_generators_are_the_standard_ones(group: PairingBackend) -> None:
    assert group.g1_to_bytes(group.g1_generator()) == G1_GENERATOR
    assert group.g2_to_bytes(group.g2_generator()) == G2_GENERATOR
    assert ark_gen1().to_compressed_bytes() == G1_GENERATOR
    assert ark_gen2().to_compressed_bytes() == G2_GENERATOR
    assert ark_g1(G1_GENERATOR) == ark_gen1() and ark_g2(G2_GENERATOR) == ark_gen2()


def test_identity_encodings_agree(group: PairingBackend) -> None:
    g1_zero = group.g1_mul(group.g1_generator(), 0)
    g2_zero = group.g2_mul(group.g2_generator(), 0)
    assert group.g1_is_identity(g1_zero)
    assert group.g1_to_bytes(g1_zero) == ark.G1Point.identity().to_compressed_bytes()
    assert group.g1_to_bytes(g1_zero) == b"\xc0" + bytes(47)
    assert group.g2_to_bytes(g2_zero) == ark.G2Point.identity().to_compressed_bytes()
    assert group.g2_to_bytes(g2_zero) == b"\xc0" + bytes(95)


def test_gt_encoding_conversion(group: PairingBackend) -> None:
    ours = group.gt_to_bytes(group.pairing(group.g1_generator(), group.g2_generator()))
    theirs = gt_bytes_from_ark(ark.GT.pairing(ark_gen1(), ark_gen2()))
    assert ours == theirs
    assert group.gt_to_bytes(group.pairing_product([])) == gt_bytes_from_ark(ark.GT.one())


def test_known_answer_hash_to_g1(group: PairingBackend) -> None:
    """RFC 9380, J.9.1 (BLS12381G1_XMD:SHA-256_SSWU_RO_), msg = "": P.x = 0x052926…79a1,
    P.y < (p-1)/2, so the compressed encoding is x with only the 0x80 flag."""
    dst = b"QUUX-V01-CS02-with-BLS12381G1_XMD:SHA-256_SSWU_RO_"
    expected = bytes.fromhex(
        "852926add2207b76ca4fa57a8734416c8dc95e24501772c814278700eed6d1e4e8cf62d9c09db0fac349612b759e79a1"
    )
    assert group.g1_to_bytes(group.hash_to_g1(b"", dst)) == expected
    assert ark.G1Point.hash_to_curve(b"", dst).to_compressed_bytes() == expected


@SETTINGS
@given(msg=st.binary(max_size=80))
def test_hash_to_g1_agrees_with_arkworks(group: PairingBackend, msg: bytes) -> None:
    """FAME's random oracle is the standard hash-to-curve, with our DST."""
    ours = group.g1_to_bytes(group.hash_to_g1(msg, HASH_DST))
    assert ours == ark.G1Point.hash_to_curve(msg, HASH_DST).to_compressed_bytes()


# -- group arithmetic -------------------------------------------------------------------------
@SETTINGS
@given(k=scalars)
def test_scalar_multiplication_agrees(group: PairingBackend, k: int) -> None:
    p = group.g1_mul(group.g1_generator(), k)
    q = group.g2_mul(group.g2_generator(), k)
    assert group.g1_to_bytes(p) == (ark_gen1() * ark_scalar(k)).to_compressed_bytes()
    assert group.g2_to_bytes(q) == (ark_gen2() * ark_scalar(k)).to_compressed_bytes()
    # and decoding our bytes gives arkworks the same point
    assert ark_g1(group.g1_to_bytes(p)) == ark_gen1() * ark_scalar(k)


@SETTINGS
@given(a=scalars, b=scalars)
def test_addition_and_negation_agree(group: PairingBackend, a: int, b: int) -> None:
    pa, pb = group.g1_mul(group.g1_generator(), a), group.g1_mul(group.g1_generator(), b)
    qa, qb = group.g2_mul(group.g2_generator(), a), group.g2_mul(group.g2_generator(), b)
    xa, xb = ark_gen1() * ark_scalar(a), ark_gen1() * ark_scalar(b)
    ya, yb = ark_gen2() * ark_scalar(a), ark_gen2() * ark_scalar(b)
    assert group.g1_to_bytes(group.g1_add(pa, pb)) == (xa + xb).to_compressed_bytes()
    assert group.g2_to_bytes(group.g2_add(qa, qb)) == (ya + yb).to_compressed_bytes()
    assert group.g1_to_bytes(group.g1_add(pa, pb)) == group.g1_to_bytes(
        group.g1_mul(group.g1_generator(), a + b)
    )
    neg = group.g1_to_bytes(group.g1_neg(pa))
    assert neg == (-xa).to_compressed_bytes()
    if a % R:  # -P differs from P exactly in the sign flag
        assert (
            neg[0] ^ group.g1_to_bytes(pa)[0] == SIGN_FLAG and neg[1:] == group.g1_to_bytes(pa)[1:]
        )


def test_scalars_are_reduced_mod_r(group: PairingBackend) -> None:
    g = group.g1_generator()
    for k in (5, 123456789):
        assert group.g1_to_bytes(group.g1_mul(g, k + R)) == group.g1_to_bytes(group.g1_mul(g, k))
        assert group.g1_to_bytes(group.g1_mul(g, -k)) == group.g1_to_bytes(
            group.g1_neg(group.g1_mul(g, k))
        )
    assert group.g1_is_identity(group.g1_mul(g, R))


# -- pairings -----------------------------------------------------------------------------------
@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(a=st.integers(1, R - 1), b=st.integers(1, R - 1))
def test_bilinearity_on_both_libraries(group: PairingBackend, a: int, b: int) -> None:
    """e(aP, bQ) == e(P, Q)^(ab), in our backend and in arkworks, and the values agree."""
    g, h = group.g1_generator(), group.g2_generator()
    lhs = group.pairing(group.g1_mul(g, a), group.g2_mul(h, b))
    rhs = group.gt_pow(group.pairing(g, h), a * b)
    assert group.gt_eq(lhs, rhs)
    assert not group.gt_eq(lhs, group.gt_pow(group.pairing(g, h), a * b + 1))

    ark_lhs = ark.GT.pairing(ark_gen1() * ark_scalar(a), ark_gen2() * ark_scalar(b))
    ark_rhs = ark_gt_pow(ark.GT.pairing(ark_gen1(), ark_gen2()), a * b)
    assert ark_lhs == ark_rhs
    assert group.gt_to_bytes(lhs) == gt_bytes_from_ark(ark_lhs)


def test_pairing_is_non_degenerate_and_of_order_r(group: PairingBackend) -> None:
    e = group.pairing(group.g1_generator(), group.g2_generator())
    one = group.pairing_product([])
    assert not group.gt_eq(e, one)
    assert group.gt_eq(group.gt_pow(e, R), one)
    assert group.gt_eq(group.gt_mul(e, group.gt_pow(e, -1)), one)


def test_gt_bytes_round_trip(group: PairingBackend) -> None:
    e = group.gt_pow(
        group.pairing(group.g1_generator(), group.g2_generator()), secrets.randbelow(R)
    )
    assert group.gt_to_bytes(group.gt_from_bytes(group.gt_to_bytes(e))) == group.gt_to_bytes(e)


# -- MSM and multi-pairing -------------------------------------------------------------------------
def _random_points(group: PairingBackend, n: int) -> tuple[list[Any], list[int]]:
    points = [group.hash_to_g1(i.to_bytes(4, "big"), b"crosscheck-msm") for i in range(n)]
    ks = [secrets.randbelow(R) for _ in range(n)]
    return points, ks


@pytest.mark.parametrize("n", [0, 1, 2, 7, 33])
def test_msm_equals_sum_of_multiplications(group: PairingBackend, n: int) -> None:
    points, ks = _random_points(group, n)
    if n >= 2:
        ks[0] = 0  # a zero scalar and one that needs reducing
        ks[1] = R + 3
    expected = group.g1_mul(group.g1_generator(), 0)
    for p, k in zip(points, ks, strict=True):
        expected = group.g1_add(expected, group.g1_mul(p, k))
    got = group.g1_msm(points, ks)
    assert group.g1_to_bytes(got) == group.g1_to_bytes(expected)
    if n:
        theirs = ark.G1Point.multiexp_unchecked(
            [ark_g1(group.g1_to_bytes(p)) for p in points], [ark_scalar(k) for k in ks]
        )
        assert group.g1_to_bytes(got) == theirs.to_compressed_bytes()


@pytest.mark.parametrize("n", [0, 1, 3, 9])
def test_g2_msm_and_negation_agree_with_arkworks(group: PairingBackend, n: int) -> None:
    h = group.g2_generator()
    points = [group.g2_mul(h, secrets.randbelow(R)) for _ in range(n)]
    ks = [secrets.randbelow(R) for _ in range(n)]
    got = group.g2_msm(points, ks)
    expected = group.g2_mul(h, 0)
    assert group.g2_is_identity(expected)
    for p, k in zip(points, ks, strict=True):
        expected = group.g2_add(expected, group.g2_mul(p, k))
    assert group.g2_eq(got, expected)
    theirs = ark.G2Point.identity()
    for p, k in zip(points, ks, strict=True):
        theirs = theirs + ark_g2(group.g2_to_bytes(p)) * ark_scalar(k)
    assert group.g2_to_bytes(got) == theirs.to_compressed_bytes()
    # P + (-P) is the identity, and -P encodes as arkworks' negation does.
    if n:
        neg = group.g2_neg(points[0])
        assert group.g2_is_identity(group.g2_add(points[0], neg))
        assert (
            group.g2_to_bytes(neg) == (-ark_g2(group.g2_to_bytes(points[0]))).to_compressed_bytes()
        )
    with pytest.raises(ValueError):
        group.g2_msm(points, [*ks, 1])


def test_msm_rejects_mismatched_lengths(group: PairingBackend) -> None:
    points, ks = _random_points(group, 3)
    with pytest.raises(ValueError):
        group.g1_msm(points, ks[:2])


def _pairs(group: PairingBackend, n: int) -> list[tuple[Any, Any]]:
    g, h = group.g1_generator(), group.g2_generator()
    return [
        (group.g1_mul(g, secrets.randbelow(R)), group.g2_mul(h, secrets.randbelow(R)))
        for _ in range(n)
    ]


@pytest.mark.parametrize("n", [0, 1, 2, 6])
def test_pairing_product_equals_product_of_pairings(group: PairingBackend, n: int) -> None:
    pairs = _pairs(group, n)
    expected = group.pairing_product([])
    for p, q in pairs:
        expected = group.gt_mul(expected, group.pairing(p, q))
    got = group.pairing_product(pairs)
    assert group.gt_eq(got, expected)
    if n:
        theirs = ark.GT.multi_pairing(
            [ark_g1(group.g1_to_bytes(p)) for p, _ in pairs],
            [ark_g2(group.g2_to_bytes(q)) for _, q in pairs],
        )
        assert group.gt_to_bytes(got) == gt_bytes_from_ark(theirs)


def test_pairing_product_of_inverse_pairs_is_one(group: PairingBackend) -> None:
    """e(P, Q) · e(-P, Q) = 1: what FAME's decryption relies on to cancel terms."""
    ((p, q),) = _pairs(group, 1)
    assert group.gt_eq(
        group.pairing_product([(p, q), (group.g1_neg(p), q)]), group.pairing_product([])
    )


# -- the two backends against each other ----------------------------------------------------------------
def _both() -> tuple[PairingBackend, PairingBackend]:
    return get_backend("mcl"), get_backend("pymcl")


@SETTINGS
@given(k=scalars)
def test_mcl_and_pymcl_serialize_identically(k: int) -> None:
    fast, slow = _both()
    for name in ("g1", "g2"):
        gen_f = getattr(fast, f"{name}_generator")()
        gen_s = getattr(slow, f"{name}_generator")()
        enc_f = getattr(fast, f"{name}_to_bytes")(getattr(fast, f"{name}_mul")(gen_f, k))
        enc_s = getattr(slow, f"{name}_to_bytes")(getattr(slow, f"{name}_mul")(gen_s, k))
        assert enc_f == enc_s
        # each decodes the other's encoding to the same point
        back: bytes = getattr(slow, f"{name}_to_bytes")(
            getattr(slow, f"{name}_from_bytes")(enc_f, allow_identity=True)
        )
        assert back == enc_f
    e_f = fast.gt_pow(fast.pairing(fast.g1_generator(), fast.g2_generator()), k)
    e_s = slow.gt_pow(slow.pairing(slow.g1_generator(), slow.g2_generator()), k)
    assert fast.gt_to_bytes(e_f) == slow.gt_to_bytes(e_s)


def test_mcl_and_pymcl_agree_on_msm_hash_and_multi_pairing() -> None:
    fast, slow = _both()
    points_f, ks = _random_points(fast, 5)
    points_s = [slow.g1_from_bytes(fast.g1_to_bytes(p)) for p in points_f]
    assert fast.g1_to_bytes(fast.g1_msm(points_f, ks)) == slow.g1_to_bytes(
        slow.g1_msm(points_s, ks)
    )
    assert fast.g1_to_bytes(fast.hash_to_g1(b"role:doctor", HASH_DST)) == slow.g1_to_bytes(
        slow.hash_to_g1(b"role:doctor", HASH_DST)
    )
    pairs_f = _pairs(fast, 4)
    pairs_s: Sequence[tuple[Any, Any]] = [
        (slow.g1_from_bytes(fast.g1_to_bytes(p)), slow.g2_from_bytes(fast.g2_to_bytes(q)))
        for p, q in pairs_f
    ]
    assert fast.gt_to_bytes(fast.pairing_product(pairs_f)) == slow.gt_to_bytes(
        slow.pairing_product(pairs_s)
    )


def test_pymcl_backend_does_not_need_the_fast_symbols() -> None:
    """The fallback borrows only hashing/encoding/validation from the C API."""
    import subprocess
    import sys

    code = (
        "import abe_service.pairing.mcl as m\n"
        "m.FAST_SYMBOLS = ('mclBn_noSuchSymbol',)\n"
        "from abe_service.pairing.base import get_backend\n"
        "g = get_backend('auto')\n"
        "assert g.name == 'pymcl', g.name\n"
        "from abe_service.fame import Fame\n"
        "from abe_service.policy import compile_policy\n"
        "f = Fame(g); pk, msk = f.setup(); p = compile_policy('a and b')\n"
        "h, K = f.encrypt(pk, p)\n"
        "assert g.gt_eq(f.decrypt(p, h, f.keygen(pk, msk, ['a', 'b'])), K)\n"
        "try:\n"
        "    get_backend('mcl')\n"
        "except Exception as e:\n"
        "    assert type(e).__name__ == 'ConfigError', e\n"
        "else:\n"
        "    raise AssertionError('mcl should be unavailable')\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


# -- hash to G2 and fixed-base exponentiation (the multi-authority scheme) ---------------
def test_known_answer_hash_to_g2(group: PairingBackend) -> None:
    """RFC 9380, J.10.1 (BLS12381G2_XMD:SHA-256_SSWU_RO_), msg = "": P.x = x0 + I·x1 with
    x1 = 0x05cb84…a03d, x0 = 0x0141eb…b78a; compressed as x1 || x0 with flags 0x80 | sign."""
    dst = b"QUUX-V01-CS02-with-BLS12381G2_XMD:SHA-256_SSWU_RO_"
    expected = bytes.fromhex(
        "a5cb8437535e20ecffaef7752baddf98034139c38452458baeefab379ba13dff5bf5dd71b72418717047f5b0f37da03d"
        "0141ebfbdca40eb85b87142e130ab689c673cf60f1a3e98d69335266f30d9b8d4ac44c1038e9dcdd5393faf5c41fb78a"
    )
    assert group.g2_to_bytes(group.hash_to_g2(b"", dst)) == expected
    assert ark.G2Point.hash_to_curve(b"", dst).to_compressed_bytes() == expected


@SETTINGS
@given(msg=st.binary(max_size=80))
def test_hash_to_g2_agrees_with_arkworks(group: PairingBackend, msg: bytes) -> None:
    from abe_service.ma.scheme import GID_DST

    ours = group.g2_to_bytes(group.hash_to_g2(msg, GID_DST))
    assert ours == ark.G2Point.hash_to_curve(msg, GID_DST).to_compressed_bytes()


@pytest.fixture(scope="module", params=["mcl-kernel", "mcl-ctypes", "pymcl"])
def comb_group(request: pytest.FixtureRequest) -> PairingBackend:
    """Fixed-base products three ways: mcl with its numba kernels (prepared), mcl without
    (a separate, unprepared instance: one ctypes call per operation), pymcl (no tables)."""
    if request.param == "mcl-kernel":
        group = get_backend("mcl")
        group.prepare()
        return group
    if request.param == "mcl-ctypes":
        from abe_service.pairing import mcl

        unprepared = mcl.MclBackend(mcl._load(mcl.BASIC_SYMBOLS + mcl.FAST_SYMBOLS))
        assert unprepared._comb_module is None
        return unprepared
    return get_backend("pymcl")


@pytest.fixture(scope="module")
def fixed_tables(comb_group: PairingBackend) -> FixedTables:
    group = comb_group
    base_gt = group.pairing(group.g1_mul(group.g1_generator(), 7), group.g2_generator())
    base_g1 = group.hash_to_g1(b"fixed base", b"EHR-ABE-TEST")
    base_g2 = group.hash_to_g2(b"fixed base", b"EHR-ABE-TEST")
    return FixedTables(
        (base_gt, group.gt_fixed_base(base_gt)),
        (base_g1, group.g1_fixed_base(base_g1)),
        (base_g2, group.g2_fixed_base(base_g2)),
    )


@dataclass(frozen=True)
class FixedTables:
    """(base, comb table) in each group."""

    gt: tuple[Any, Any]
    g1: tuple[Any, Any]
    g2: tuple[Any, Any]


@SETTINGS
@given(k=scalars)
def test_fixed_base_powers_agree(
    comb_group: PairingBackend, fixed_tables: FixedTables, k: int
) -> None:
    """The comb tables give exactly gt_pow / g1_mul / g2_mul, for every scalar
    (0, r-1, r, >r too) and its negation."""
    group = comb_group
    (base_gt, table_gt), (base_g1, table_g1) = fixed_tables.gt, fixed_tables.g1
    base_g2, table_g2 = fixed_tables.g2
    for e in (k, -k):
        assert group.gt_eq(group.gt_pow_fixed(table_gt, e), group.gt_pow(base_gt, e))
        assert group.g1_eq(group.g1_mul_fixed(table_g1, e), group.g1_mul(base_g1, e))
        assert group.g2_eq(group.g2_mul_fixed(table_g2, e), group.g2_mul(base_g2, e))


#: Exponents that take each path of the comb kernel: no nonzero byte (the identity is
#: copied), exactly one (the entry is copied), two (the first operation combines two
#: entries), and the extremes.
EDGE_EXPONENTS = [0, 1, 255, 256, 5 * 256**3, 2**248, R - 1, R, R + 1, -1, -256, 2**256 - 1]
products_rows = st.lists(
    st.lists(st.one_of(scalars, st.sampled_from(EDGE_EXPONENTS)), min_size=1, max_size=3),
    min_size=1,
    max_size=5,
)


def unbatched(power: Any, combine: Any, bases: Sequence[Any], exps: Sequence[int]) -> Any:
    acc = power(bases[0], exps[0])
    for base, k in zip(bases[1:], exps[1:], strict=True):
        acc = combine(acc, power(base, k))
    return acc


@SETTINGS
@given(rows=products_rows, data=st.data())
def test_fixed_products_equal_the_plain_primitives(
    comb_group: PairingBackend,
    fixed_tables: FixedTables,
    rows: list[list[int]],
    data: st.DataObject,
) -> None:
    """Batched products (rows of different lengths, one kernel call per group) equal the
    unbatched primitives row by row. A second base per group (a power of the first, with
    its own table, and for mcl 12-bit windows) makes rows mix tables and widths."""
    group = comb_group
    cases = [
        (fixed_tables.gt, group.gt_pow, group.gt_mul, group.gt_eq, group.gt_fixed_base,
         group.gt_fixed_products),
        (fixed_tables.g1, group.g1_mul, group.g1_add, group.g1_eq, group.g1_fixed_base,
         group.g1_fixed_products),
        (fixed_tables.g2, group.g2_mul, group.g2_add, group.g2_eq, group.g2_fixed_base,
         group.g2_fixed_products),
    ]  # fmt: skip
    for (base, table), power, combine, eq, fixed_base, products in cases:
        other = power(base, 3)
        pool = [(base, table), (other, _other_table(group, fixed_base, other, table))]
        picks = [[data.draw(st.sampled_from(pool)) for _ in row] for row in rows]
        got = products([[t for _, t in p] for p in picks], rows)
        assert len(got) == len(rows)
        for out, p, exps in zip(got, picks, rows, strict=True):
            assert eq(out, unbatched(power, combine, [b for b, _ in p], exps))


_OTHER_TABLES: dict[int, Any] = {}


def _other_table(group: PairingBackend, fixed_base: Any, other: Any, table: Any) -> Any:
    """One second table per first table (building one takes tens of milliseconds); on
    mcl the GT and G1 ones with 12-bit windows, as MultiAuthority.prepare() builds."""
    if id(table) not in _OTHER_TABLES:
        wide = group.name == "mcl" and fixed_base != group.g2_fixed_base
        _OTHER_TABLES[id(table)] = (table, fixed_base(other, 12) if wide else fixed_base(other))
    return _OTHER_TABLES[id(table)][1]


def test_fixed_products_reject_malformed_batches(
    comb_group: PairingBackend, fixed_tables: FixedTables
) -> None:
    group = comb_group
    table = fixed_tables.gt[1]
    assert group.gt_fixed_products([], []) == []
    with pytest.raises(ValueError):
        group.gt_fixed_products([[table]], [])
    with pytest.raises(ValueError):
        group.gt_fixed_products([[table]], [[1, 2]])
    with pytest.raises(ValueError):
        group.gt_fixed_products([[]], [[]])


def test_kernel_refuses_a_table_of_another_group() -> None:
    """The kernel reads tables by address, so a G1 table passed as a GT table would be
    read far out of bounds: the backend checks every table's type first."""
    group = get_backend("mcl")
    g1_table = group.g1_fixed_base(group.g1_generator())
    gt_table = group.gt_fixed_base(group.pairing(group.g1_generator(), group.g2_generator()))
    with pytest.raises(TypeError):
        group.gt_fixed_products([[g1_table]], [[5]])
    with pytest.raises(TypeError):
        group.g1_fixed_products([[g1_table, gt_table]], [[5, 6]])
    with pytest.raises(TypeError):
        group.g2_mul_fixed(g1_table, 5)
    with pytest.raises(TypeError):
        group.g1_mul_fixed(group.g1_generator(), 5)  # a point is not a table
    with pytest.raises(ValueError):
        group.gt_fixed_base(group.pairing(group.g1_generator(), group.g2_generator()), 17)


def test_comb_kernel_cache_is_valid_in_a_fresh_process(tmp_path: Path) -> None:
    """cache=True: the kernel takes mcl's function addresses as arguments, so a kernel
    compiled in one process (its library at one address) is loaded from numba's
    on-disk cache by the next (library elsewhere: ASLR) and still computes correctly."""
    code = (
        "import json, secrets\n"
        "from abe_service.pairing.base import get_backend\n"
        "from abe_service.pairing._comb import comb_products, comb_table\n"
        "g = get_backend('mcl')\n"
        "g.prepare()\n"
        "e = g.pairing(g.g1_generator(), g.g2_generator())\n"
        "t = g.gt_fixed_base(e)\n"
        "k = secrets.randbelow(g.order)\n"
        "ok = g.gt_eq(g.gt_pow_fixed(t, k), g.gt_pow(e, k))\n"
        "s = [comb_products.stats, comb_table.stats]\n"
        "hits = sum(sum(x.cache_hits.values()) for x in s)\n"
        "misses = sum(sum(x.cache_misses.values()) for x in s)\n"
        "print(json.dumps([ok, hits, misses]))\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    results = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
        )
        assert out.returncode == 0, out.stderr[-2000:]
        results.append(json.loads(out.stdout))
    assert results[0][0] and results[1][0]
    assert results[0][2] == 2, results  # both kernels compiled in the first process
    assert results[1][1] == 2 and results[1][2] == 0, results  # loaded, not recompiled
