"""Integer comparisons (bit decomposition + power-of-two ladder) and key attributes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_policy_strategies import OPS, interesting_ints

from abe_service.pairing.base import BLS12_381_ORDER as R
from abe_service.policy import (
    INT_BITS,
    INT_MAX,
    KeyAttribute,
    compile_policy,
    expand_attributes,
    parse_attribute,
)
from ehr_common.errors import InvalidArgument, PolicyError

CONSTANTS = sorted(
    {0, 1, 2, 3, 17, 18, 42, 127, 128, 129, 2029, 2030, 1 << 16, (1 << 16) - 1, 1 << 31}
    | {(1 << 31) - 1, (1 << 31) + 1, INT_MAX - 1, INT_MAX}
)


def holds(op: str, x: int, c: int) -> bool:
    return bool(OPS[op](x, c))


def key(x: int, name: str = "x") -> frozenset[str]:
    return expand_attributes([f"{name}={x}"])


def check(op: str, c: int, x: int) -> None:
    compiled = compile_policy(f"x {op} {c}")
    labels = key(x)
    expected = holds(op, x, c)
    assert compiled.satisfied_by(labels) == expected, (op, c, x)
    rec = compiled.reconstruction(labels, R)
    assert (rec is not None) == expected, (op, c, x)
    if rec is not None:
        cols = compiled.columns
        combo = [
            sum(coef * compiled.matrix[i][j] for i, coef in rec.items()) % R for j in range(cols)
        ]
        assert combo == [1] + [0] * (cols - 1)


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("c", CONSTANTS)
def test_every_operator_at_its_boundaries(op: str, c: int) -> None:
    if (op == "<" and c == 0) or (op == ">" and c == INT_MAX):
        with pytest.raises(PolicyError, match="never be satisfied"):
            compile_policy(f"x {op} {c}")
        return
    for x in {0, 1, c - 1, c, c + 1, INT_MAX} - {-1, INT_MAX + 1}:
        check(op, c, x)


@settings(max_examples=400, deadline=None)
@given(op=st.sampled_from(list(OPS)), c=interesting_ints(), x=interesting_ints())
def test_comparisons_agree_with_integers(op: str, c: int, x: int) -> None:
    if (op == "<" and c == 0) or (op == ">" and c == INT_MAX):
        return
    check(op, c, x)


def test_exhaustive_small_range() -> None:
    # every constant and value below 70 (covers all bit patterns of 6 bits + carries)
    for op in OPS:
        for c in range(70):
            if op == "<" and c == 0:
                continue
            compiled = compile_policy(f"x {op} {c}")
            for x in range(70):
                assert compiled.satisfied_by(key(x)) == holds(op, x, c), (op, c, x)


def test_always_true_comparisons_mean_holding_the_attribute() -> None:
    for policy in ("x >= 0", f"x <= {INT_MAX}"):
        compiled = compile_policy(policy)
        assert compiled.rows == 1
        assert compiled.satisfied_by(key(0)) and compiled.satisfied_by(key(INT_MAX))
        assert not compiled.satisfied_by(expand_attributes(["x", "x:5", "y=3"]))


def test_comparisons_are_small() -> None:
    sizes = {
        p: compile_policy(p).rows for p in ("age >= 18", "year < 2030", "age == 42", "level == 0")
    }
    assert sizes == {"age >= 18": 4, "year < 2030": 9, "age == 42": 1, "level == 0": 1}
    for c in CONSTANTS:
        for op in OPS:
            if (op == "<" and c == 0) or (op == ">" and c == INT_MAX):
                continue
            compiled = compile_policy(f"x {op} {c}")
            # an OR of range labels: no extra column, at most W rows
            assert compiled.rows <= INT_BITS and compiled.columns == 1


def test_string_and_integer_attributes_are_distinct() -> None:
    assert not compile_policy("age == 42").satisfied_by(expand_attributes(["age:42"]))
    assert not compile_policy("age:42").satisfied_by(expand_attributes(["age=42"]))
    assert compile_policy("age:42").satisfied_by(expand_attributes({"age": "42"}))


def test_key_labels_cannot_be_written_as_user_attributes() -> None:
    labels = key(42, "age")
    # W + 1 prefix labels and one ladder label per power of two <= 42
    assert len(labels) == INT_BITS + 1 + (42).bit_length()
    for label in labels:
        with pytest.raises(PolicyError):
            parse_attribute(label)
        with pytest.raises(PolicyError):
            compile_policy(label)


def test_parse_attribute() -> None:
    assert parse_attribute("Role:Doctor") == KeyAttribute("role", "Doctor")
    assert parse_attribute(" admin ") == KeyAttribute("admin")
    assert parse_attribute("AGE=042") == KeyAttribute("age", 42)
    assert parse_attribute(f"x={INT_MAX}") == KeyAttribute("x", INT_MAX)
    assert parse_attribute("email:a@b.example") == KeyAttribute("email", "a@b.example")


@pytest.mark.parametrize(
    "attr",
    [
        "",
        "  ",
        "1abc",
        "-x",
        "role:",
        "role:doc tor",
        "role doctor",
        "and",
        "Or:x",
        "not",
        "age=-1",
        "age=x",
        "age==3",
        "age=",
        "age=٣",
        f"age={INT_MAX + 1}",
        "age=" + "9" * 5000,
        "=3",
        ":x",
        "dépt:x",
        "x" * 300,
    ],
)
def test_malformed_key_attributes_are_refused(attr: str) -> None:
    with pytest.raises(PolicyError) as exc:
        expand_attributes([attr])
    assert isinstance(exc.value, InvalidArgument)


def test_expand_attributes_forms_agree() -> None:
    from_strings = expand_attributes(["role:doctor", "admin", "age=42"])
    from_mapping = expand_attributes({"role": "doctor", "admin": True, "nurse": False, "age": 42})
    assert from_strings == from_mapping
    assert {"role:doctor", "admin"} <= from_strings
    assert "nurse" not in from_mapping


def test_an_integer_attribute_has_one_value() -> None:
    # one value per key keeps the meaning simple (the range labels could not be
    # mixed into a value neither has anyway: test_policy_soundness)
    with pytest.raises(PolicyError, match="two values"):
        expand_attributes(["x=40", "x=7"])
    assert expand_attributes(["x=40", "x=040"]) == key(40)


@pytest.mark.parametrize(
    "bad",
    [
        "role:doctor",
        b"role:doctor",
        {"age": -1},
        {"age": INT_MAX + 1},
        {"age": 10**5000},
        {"age": 1.5},
        {"age": None},
        {3: True},
        {"ro le": "x"},
        {"role": "doc tor"},
    ],
)
def test_malformed_attribute_collections(bad: object) -> None:
    with pytest.raises(PolicyError):
        expand_attributes(bad)  # type: ignore[arg-type]
