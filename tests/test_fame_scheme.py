"""FAME CP-ABE: decryption succeeds iff the attributes satisfy the policy; no collusion."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abe_service.fame import AttributeKey, Fame, SecretKey
from abe_service.pairing.base import get_backend
from abe_service.policy import compile_policy, expand_attributes
from ehr_abe.errors import PolicyNotSatisfied

UNIVERSE = ["a", "b", "c", "d", "e"]


@pytest.fixture(scope="module", params=["mcl", "pymcl"])
def fame(request: pytest.FixtureRequest) -> Fame:
    return Fame(get_backend(request.param))


@pytest.fixture(scope="module")
def keys(fame: Fame) -> tuple[object, object]:
    return fame.setup()


def _policy_strategy() -> st.SearchStrategy[str]:
    leaf = st.sampled_from(UNIVERSE + ["lvl >= 3", "lvl < 2"])

    def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        kids = st.lists(children, min_size=2, max_size=3)
        return st.one_of(
            kids.map(lambda k: "(" + " and ".join(k) + ")"),
            kids.map(lambda k: "(" + " or ".join(k) + ")"),
            kids.flatmap(lambda k: st.integers(1, len(k)).map(lambda t: f"{t} of ({', '.join(k)})")),
        )

    return st.recursive(leaf, extend, max_leaves=5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(policy=_policy_strategy(), attrs=st.sets(st.sampled_from(UNIVERSE)), lvl=st.integers(0, 7))
def test_decrypts_iff_attributes_satisfy(fame: Fame, keys: tuple, policy: str, attrs: set[str], lvl: int) -> None:
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


def test_wrong_key_gives_a_different_element(fame: Fame, keys: tuple) -> None:
    pk, msk = keys
    compiled = compile_policy("a and b")
    header, K = fame.encrypt(pk, compiled)
    other_pk, other_msk = fame.setup()
    foreign = fame.keygen(other_pk, other_msk, ["a", "b"])
    assert not fame.group.gt_eq(fame.decrypt(compiled, header, foreign), K)


def test_colluding_users_cannot_combine_keys(fame: Fame, keys: tuple) -> None:
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


def test_threshold_and_integer_policies(fame: Fame, keys: tuple) -> None:
    pk, msk = keys
    compiled = compile_policy("2 of (role:doctor, dept:cardiology, clearance > 2)")
    header, K = fame.encrypt(pk, compiled)
    ok = fame.keygen(pk, msk, sorted(expand_attributes(["dept:cardiology", "clearance=3"])))
    assert fame.group.gt_eq(fame.decrypt(compiled, header, ok), K)
    low = fame.keygen(pk, msk, sorted(expand_attributes(["dept:cardiology", "clearance=2"])))
    with pytest.raises(PolicyNotSatisfied):
        fame.decrypt(compiled, header, low)


def test_backends_are_interchangeable(keys: tuple) -> None:
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
    header_f = type(header)(
        tuple(fast.group.g2_from_bytes(slow.group.g2_to_bytes(p)) for p in header.ct0),  # type: ignore[arg-type]
        tuple(tuple(fast.group.g1_from_bytes(slow.group.g1_to_bytes(p)) for p in row) for row in header.ct),  # type: ignore[misc]
    )
    assert fast.group.gt_to_bytes(fast.decrypt(compiled, header_f, sk)) == slow.group.gt_to_bytes(K)
