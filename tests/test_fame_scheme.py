"""FAME CP-ABE: decryption succeeds iff the attributes satisfy the policy; no collusion."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_policy_strategies import policy_texts

from abe_service.fame import AttributeKey, Ciphertext, Fame, MasterKey, PublicKey, SecretKey
from abe_service.pairing.base import get_backend
from abe_service.policy import compile_policy, expand_attributes
from ehr_common.errors import InvalidArgument, PolicyNotSatisfied

Keys = tuple[PublicKey, MasterKey]

UNIVERSE = ["a", "b", "c", "d", "e"]


@pytest.fixture(scope="module", params=["mcl", "pymcl"])
def fame(request: pytest.FixtureRequest) -> Fame:
    return Fame(get_backend(request.param))


@pytest.fixture(scope="module")
def keys(fame: Fame) -> Keys:
    return fame.setup()


def _policy_strategy() -> st.SearchStrategy[str]:
    return policy_texts([*UNIVERSE, "lvl >= 3", "lvl < 2", "lvl == 5", "lvl > 6"])


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(policy=_policy_strategy(), attrs=st.sets(st.sampled_from(UNIVERSE)), lvl=st.integers(0, 7))
def test_decrypts_iff_attributes_satisfy(
    fame: Fame, keys: Keys, policy: str, attrs: set[str], lvl: int
) -> None:
    pk, msk = keys
    compiled = compile_policy(policy)
    labels = sorted(expand_attributes([*attrs, f"lvl={lvl}"]))
    sk = fame.keygen(pk, msk, labels)
    header, K = fame.encrypt(pk, compiled)
    if compiled.satisfied_by(frozenset(labels)):
        assert fame.group.gt_eq(fame.decrypt(compiled, header, sk), K)
    else:
        with pytest.raises(PolicyNotSatisfied):
            fame.decrypt(compiled, header, sk)


def test_wrong_key_gives_a_different_element(fame: Fame, keys: Keys) -> None:
    pk, _ = keys
    compiled = compile_policy("a and b")
    header, K = fame.encrypt(pk, compiled)
    other_pk, other_msk = fame.setup()
    foreign = fame.keygen(other_pk, other_msk, ["a", "b"])
    assert not fame.group.gt_eq(fame.decrypt(compiled, header, foreign), K)


def test_colluding_users_cannot_combine_keys(fame: Fame, keys: Keys) -> None:
    """Alice holds role:doctor, Bob holds dept:cardiology; neither alone satisfies
    'role:doctor and dept:cardiology'. Splicing their attribute components into one
    key (with either user's sk0 and sk') must not recover the encapsulated element."""
    pk, msk = keys
    compiled = compile_policy("role:doctor and dept:cardiology")
    header, K = fame.encrypt(pk, compiled)
    alice = fame.keygen(pk, msk, ["role:doctor", "ward:7"])
    bob = fame.keygen(pk, msk, ["dept:cardiology"])
    parts: dict[str, AttributeKey] = {**alice.sk, **bob.sk}
    for base in (alice, bob):
        spliced = SecretKey(base.sk0, parts, base.sk_prime)
        assert not fame.group.gt_eq(fame.decrypt(compiled, header, spliced), K)
    # and mixing sk0 of one with sk' of the other
    mixed = dataclasses.replace(alice, sk=parts, sk_prime=bob.sk_prime)
    assert not fame.group.gt_eq(fame.decrypt(compiled, header, mixed), K)
    # sanity: a legitimate key does decrypt
    carol = fame.keygen(pk, msk, ["role:doctor", "dept:cardiology"])
    assert fame.group.gt_eq(fame.decrypt(compiled, header, carol), K)


def test_threshold_and_integer_policies(fame: Fame, keys: Keys) -> None:
    pk, msk = keys
    compiled = compile_policy("2 of (role:doctor, dept:cardiology, clearance > 2)")
    header, K = fame.encrypt(pk, compiled)
    ok = fame.keygen(pk, msk, sorted(expand_attributes(["dept:cardiology", "clearance=3"])))
    assert fame.group.gt_eq(fame.decrypt(compiled, header, ok), K)
    low = fame.keygen(pk, msk, sorted(expand_attributes(["dept:cardiology", "clearance=2"])))
    with pytest.raises(PolicyNotSatisfied):
        fame.decrypt(compiled, header, low)


def test_backends_are_interchangeable(keys: Keys) -> None:
    """A ciphertext made with one backend decrypts with the other (same encodings)."""
    from abe_service.serialization import public_params_from_bytes, public_params_to_bytes

    fast, slow = Fame(get_backend("mcl")), Fame(get_backend("pymcl"))
    pk_f, msk_f = fast.setup()
    pp = public_params_to_bytes(fast.group, pk_f)
    pk_s = public_params_from_bytes(slow.group, pp)
    assert public_params_to_bytes(slow.group, pk_s) == pp
    compiled = compile_policy("a or b")
    header, K = slow.encrypt(pk_s, compiled)
    sk = fast.keygen(pk_f, msk_f, ["b"])
    header_f = Ciphertext(
        (
            fast.group.g2_from_bytes(slow.group.g2_to_bytes(header.ct0[0])),
            fast.group.g2_from_bytes(slow.group.g2_to_bytes(header.ct0[1])),
            fast.group.g2_from_bytes(slow.group.g2_to_bytes(header.ct0[2])),
        ),
        tuple(
            (
                fast.group.g1_from_bytes(slow.group.g1_to_bytes(row[0])),
                fast.group.g1_from_bytes(slow.group.g1_to_bytes(row[1])),
                fast.group.g1_from_bytes(slow.group.g1_to_bytes(row[2])),
            )
            for row in header.ct
        ),
    )
    assert fast.group.gt_to_bytes(fast.decrypt(compiled, header_f, sk)) == slow.group.gt_to_bytes(K)


def test_public_key_matches_the_paper_equations(fame: Fame, keys: Keys) -> None:
    """T_t = e(g,h)^(d_t·a_t + d3) = e(g^d_t, H_t) · e(g^d3, h), and H_t = h^a_t."""
    pk, msk = keys
    G = fame.group
    assert G.g2_eq(pk.H1, G.g2_mul(pk.h, msk.a1))
    assert G.g2_eq(pk.H2, G.g2_mul(pk.h, msk.a2))
    assert G.gt_eq(pk.T1, G.pairing_product([(msk.g_d1, pk.H1), (msk.g_d3, pk.h)]))
    assert G.gt_eq(pk.T2, G.pairing_product([(msk.g_d2, pk.H2), (msk.g_d3, pk.h)]))
    assert not G.gt_eq(pk.T1, pk.T2)


def test_key_components_match_the_paper_equations(fame: Fame, keys: Keys) -> None:
    """The decryption equation written out by hand for a one-row policy, and the
    relation ct0_3 = ct0_1^(1/a1) · ct0_2^(1/a2) between the header's G2 elements."""
    pk, msk = keys
    G = fame.group
    compiled = compile_policy("a")
    header, K = fame.encrypt(pk, compiled)
    sk = fame.keygen(pk, msk, ["a"])
    # For the single-row policy: K = Π_l e(sk'_l · sk_{a,l}, ct0_l) / Π_l e(ct_{1,l}, sk0_l).
    pairs = []
    for l in range(3):  # noqa: E741
        part = (sk.sk["a"].sk1, sk.sk["a"].sk2, sk.sk["a"].sk3)[l]
        pairs.append((G.g1_add(sk.sk_prime[l], part), header.ct0[l]))
        pairs.append((G.g1_neg(header.ct[0][l]), sk.sk0[l]))
    assert G.gt_eq(G.pairing_product(pairs), K)
    # ct0_3 = h^(s1+s2) = ct0_1^(1/a1) · ct0_2^(1/a2)
    r = G.order
    assert G.g2_eq(
        header.ct0[2],
        G.g2_add(
            G.g2_mul(header.ct0[0], pow(msk.a1, -1, r)),
            G.g2_mul(header.ct0[1], pow(msk.a2, -1, r)),
        ),
    )


def test_encryption_is_randomised_and_caches_do_not_change_results(fame: Fame, keys: Keys) -> None:
    pk, msk = keys
    compiled = compile_policy("2 of (a, b, c) and (d or e)")
    sk = fame.keygen(pk, msk, ["a", "c", "e"])
    h1, k1 = fame.encrypt(pk, compiled)
    h2, k2 = fame.encrypt(pk, compiled)  # cached row bases
    fame.clear_hash_cache()
    h3, k3 = fame.encrypt(pk, compiled)  # recomputed from scratch
    G = fame.group
    assert not G.gt_eq(k1, k2) and not G.gt_eq(k2, k3)
    assert G.g1_to_bytes(h1.ct[0][0]) != G.g1_to_bytes(h2.ct[0][0])
    for header, K in ((h1, k1), (h2, k2), (h3, k3)):
        assert G.gt_eq(fame.decrypt(compiled, header, sk), K)


def test_hashes_are_deterministic_and_domain_separated(fame: Fame) -> None:
    G = fame.group
    enc = G.g1_to_bytes
    assert enc(fame.H_attr("a", 1, 1)) == enc(fame.H_attr("a", 1, 1))
    points = {
        enc(fame.H_attr(y, i, t)) for y in ("a", "b", "0") for i in (1, 2, 3) for t in (1, 2)
    } | {enc(fame.H_col(j, i, t)) for j in (1, 2) for i in (1, 2, 3) for t in (1, 2)}
    assert len(points) == 3 * 6 + 2 * 6
    # An attribute named like a column index still hashes elsewhere than the column.
    assert enc(fame.H_attr("\x00\x00\x00\x01", 1, 1)) != enc(fame.H_col(1, 1, 1))


def test_collusion_by_combining_rows_of_a_threshold(fame: Fame, keys: Keys) -> None:
    """2-of-3: each colluder holds one attribute; every splice of their components
    (each user's sk0/sk' with the other's attribute part) fails."""
    pk, msk = keys
    G = fame.group
    compiled = compile_policy("2 of (a, b, c)")
    header, K = fame.encrypt(pk, compiled)
    users = [fame.keygen(pk, msk, [y]) for y in ("a", "b", "c")]
    for base in users:
        for other in users:
            if other is base:
                continue
            spliced = SecretKey(base.sk0, {**base.sk, **other.sk}, base.sk_prime)
            assert not G.gt_eq(fame.decrypt(compiled, header, spliced), K)
            # each user's own half-key alone is refused outright
            with pytest.raises(PolicyNotSatisfied):
                fame.decrypt(compiled, header, base)


def test_encrypt_rejects_an_inconsistent_policy_matrix(fame: Fame, keys: Keys) -> None:
    pk, _ = keys

    class Broken:
        matrix = ((1,), (1,))
        row_labels = ("a",)

        def reconstruction(self, labels: object, modulus: int) -> dict[int, int] | None:
            return None

    with pytest.raises(InvalidArgument):
        fame.encrypt(pk, Broken())


def test_policies_too_large_for_the_row_cache_still_work(fame: Fame, keys: Keys) -> None:
    from abe_service.fame import ROW_BASES_MAX_ROWS

    pk, msk = keys
    n = ROW_BASES_MAX_ROWS + 6
    compiled = compile_policy(" or ".join(f"ward:{i}" for i in range(n)))
    assert len(compiled.row_labels) > ROW_BASES_MAX_ROWS
    header, K = fame.encrypt(pk, compiled)
    sk = fame.keygen(pk, msk, [f"ward:{n - 1}"])
    assert fame.group.gt_eq(fame.decrypt(compiled, header, sk), K)


def test_header_with_the_wrong_number_of_rows_is_a_decode_error(fame: Fame, keys: Keys) -> None:
    from ehr_common.errors import DecodeError

    pk, msk = keys
    compiled = compile_policy("a and b")
    header, _ = fame.encrypt(pk, compiled)
    short = Ciphertext(header.ct0, header.ct[:1])
    with pytest.raises(DecodeError):
        fame.decrypt(compiled, short, fame.keygen(pk, msk, ["a", "b"]))
