"""Monotone span programs: shape, agreement with the formula, reconstruction,
and (brute force) that exactly the authorised row sets span (1, 0, ..., 0)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_policy_strategies import (
    evaluate,
    key_strings,
    policy_trees,
    render_source,
    universe,
)

from abe_service.pairing.base import BLS12_381_ORDER as R
from abe_service.policy import (
    INT_MAX,
    MAX_ROWS,
    And,
    Attr,
    CompiledPolicy,
    Or,
    PolicyNode,
    Threshold,
    compile_policy,
    expand_attributes,
    normal_form,
)
from ehr_common.errors import InvalidArgument, PolicyError


def combination(compiled: CompiledPolicy, coefficients: dict[int, int]) -> list[int]:
    return [
        sum(c * compiled.matrix[i][j] for i, c in coefficients.items()) % R
        for j in range(compiled.columns)
    ]


def target(compiled: CompiledPolicy) -> list[int]:
    return [1] + [0] * (compiled.columns - 1)


def in_row_span(rows: list[tuple[int, ...]], goal: list[int], p: int) -> bool:
    """Is `goal` a combination of `rows` mod p? (Gaussian elimination; tests only.)"""
    basis: list[list[int]] = []  # each with a distinct pivot column, normalised to 1

    def reduce(v: list[int]) -> list[int]:
        v = [x % p for x in v]
        for b in basis:
            pivot = next(j for j, x in enumerate(b) if x)
            if v[pivot]:
                f = v[pivot]
                v = [(x - f * y) % p for x, y in zip(v, b, strict=True)]
        return v

    for row in rows:
        v = reduce(list(row))
        if any(v):
            pivot = next(j for j, x in enumerate(v) if x)
            inv = pow(v[pivot], -1, p)
            v = [x * inv % p for x in v]
            basis = [
                [(x - b[pivot] * y) % p for x, y in zip(b, v, strict=True)] if b[pivot] else b
                for b in basis
            ]
            basis.append(v)
    return not any(reduce(goal))


# -- shape -------------------------------------------------------------------------------------
def test_and_of_n_leaves_has_n_columns() -> None:
    compiled = compile_policy("a and b and c and d and e")
    assert (compiled.rows, compiled.columns) == (5, 5)
    assert compiled.row_labels == ("a", "b", "c", "d", "e")
    assert compiled.matrix[0] == (1, 1, 0, 0, 0)
    assert compiled.matrix[-1] == (0, 0, 0, 0, -1)
    assert all(abs(m) <= 1 for row in compiled.matrix for m in row)


def test_or_keeps_one_column() -> None:
    compiled = compile_policy("a or b or c")
    assert compiled.matrix == ((1,), (1,), (1,))


def test_threshold_rows_are_vandermonde() -> None:
    compiled = compile_policy("3 of (a, b, c, d)")
    assert compiled.matrix == ((1, 1, 1), (1, 2, 4), (1, 3, 9), (1, 4, 16))


def test_and_gives_the_parent_vector_to_its_smallest_child() -> None:
    # the parent's vector goes to `a`, not to every leaf of the big or-group
    compiled = compile_policy("x and (a or b or c or d)")
    assert compiled.nonzero_entries == 1 + 1 + 4
    assert compiled.satisfied_by({"x", "c"})


def test_labels_may_repeat() -> None:
    compiled = compile_policy("(a and b) or (a and c)")
    assert compiled.row_labels.count("a") == 2
    rec = compiled.reconstruction({"a", "c"}, R)
    assert rec is not None and combination(compiled, rec) == target(compiled)


def test_example_policy() -> None:
    compiled = compile_policy("(role:doctor and dept:cardiology and age >= 18) or patient:p-17")
    assert compiled.normal_form == "(age >= 18 and dept:cardiology and role:doctor) or patient:p-17"
    doctor = expand_attributes({"role": "doctor", "dept": "cardiology", "age": 40})
    minor = expand_attributes({"role": "doctor", "dept": "cardiology", "age": 17})
    patient = expand_attributes(["patient:p-17"])
    assert compiled.satisfied_by(doctor) and compiled.satisfied_by(patient)
    assert not compiled.satisfied_by(minor)
    rec = compiled.reconstruction(patient, R)
    assert rec is not None and len(rec) == 1
    rec = compiled.reconstruction(doctor, R)
    assert rec is not None and combination(compiled, rec) == target(compiled)
    assert compiled.reconstruction(minor, R) is None


def test_reconstruction_uses_the_fewest_rows() -> None:
    compiled = compile_policy("(a and b and c) or (d and e) or 2 of (f, g, h)")
    everything = {"a", "b", "c", "d", "e", "f", "g", "h"}
    rec = compiled.reconstruction(everything, R)
    assert rec is not None and len(rec) == 2
    rec = compiled.reconstruction({"a", "b", "c", "g", "h"}, R)
    assert rec is not None and {compiled.row_labels[i] for i in rec} == {"g", "h"}


def test_threshold_coefficients_are_lagrange() -> None:
    compiled = compile_policy("2 of (a, b, c)")
    rec = compiled.reconstruction({"b", "c"}, R)
    # points 2 and 3: lambda_2 = 3/(3-2) = 3, lambda_3 = 2/(2-3) = -2
    assert rec == {1: 3, 2: R - 2}


def test_reconstruction_needs_a_large_modulus() -> None:
    compiled = compile_policy("2 of (a, b, c)")
    with pytest.raises(InvalidArgument):
        compiled.reconstruction({"a", "b"}, 2)


def test_row_limit() -> None:
    many = " and ".join(f"x{i} <= {INT_MAX - 1}" for i in range(40))  # 32 rows each
    with pytest.raises(PolicyError, match=f"more than {MAX_ROWS} span-program rows"):
        compile_policy(many)


def test_compilation_is_deterministic_and_normal_form_compiles_alike() -> None:
    text = "2 of (role:nurse, dept:icu and level >= 3, patient:p-1) or admin"
    a, b = compile_policy(text), compile_policy(text)
    assert (a.matrix, a.row_labels) == (b.matrix, b.row_labels)
    c = compile_policy(a.normal_form)
    assert (c.matrix, c.row_labels, c.normal_form) == (a.matrix, a.row_labels, a.normal_form)
    assert a.source == text


# -- properties --------------------------------------------------------------------------------
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=policy_trees(), key=universe())
def test_compiled_span_program_agrees_with_the_formula(
    tree: PolicyNode, key: tuple[set[str], dict[str, int]]
) -> None:
    attrs, ints = key
    compiled = compile_policy(render_source(tree))
    labels = expand_attributes(key_strings(attrs, ints))
    expected = evaluate(tree, attrs, ints)
    assert compiled.satisfied_by(labels) == expected
    rec = compiled.reconstruction(labels, R)
    assert (rec is not None) == expected
    if rec is not None:
        assert combination(compiled, rec) == target(compiled)
        assert all(compiled.row_labels[i] in labels for i in rec)
        assert all(0 < c < R for c in rec.values())
    # envelopes store the normal form: it must compile to the same span program
    again = compile_policy(compiled.normal_form)
    assert (again.matrix, again.row_labels) == (compiled.matrix, compiled.row_labels)
    assert normal_form(compiled.normal_form) == compiled.normal_form
    assert all(len(row) == compiled.columns for row in compiled.matrix)


NAMES = [f"v{i}" for i in range(8)]


@st.composite
def read_once_trees(draw: st.DrawFn) -> PolicyNode:
    """Trees over distinct attributes, so every row has its own label."""
    shape = draw(policy_trees_of_leaves())
    names = iter(NAMES)

    def relabel(node: PolicyNode) -> PolicyNode:
        if isinstance(node, Attr):
            return Attr(next(names))
        kids = tuple(relabel(c) for c in node.children)  # type: ignore[union-attr]
        if isinstance(node, And):
            return And(kids)
        if isinstance(node, Or):
            return Or(kids)
        assert isinstance(node, Threshold)
        return Threshold(node.k, kids)

    return relabel(shape)


def policy_trees_of_leaves() -> st.SearchStrategy[PolicyNode]:
    def extend(children: st.SearchStrategy[PolicyNode]) -> st.SearchStrategy[PolicyNode]:
        kids = st.lists(children, min_size=2, max_size=4)
        return st.one_of(
            kids.map(lambda k: And(tuple(k))),
            kids.map(lambda k: Or(tuple(k))),
            kids.flatmap(lambda k: st.integers(1, len(k)).map(lambda t: Threshold(t, tuple(k)))),
        )

    return st.recursive(st.just(Attr("leaf")), extend, max_leaves=len(NAMES)).filter(
        lambda t: render_source(t).count("leaf") <= len(NAMES)
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=read_once_trees())
def test_exactly_the_authorised_row_sets_span_the_target(tree: PolicyNode) -> None:
    """The security property of an MSP, by brute force over every row subset:
    e1 is in the span of the rows of S iff S satisfies the policy; and the
    reconstruction uses a smallest satisfying set."""
    compiled = compile_policy(render_source(tree))
    n = compiled.rows
    goal = target(compiled)
    smallest_satisfying = n + 1
    for size in range(n + 1):
        for subset in itertools.combinations(range(n), size):
            labels = {compiled.row_labels[i] for i in subset}
            authorised = evaluate(tree, labels, {})
            assert compiled.satisfied_by(labels) == authorised
            assert in_row_span([compiled.matrix[i] for i in subset], goal, R) == authorised, labels
            if authorised:
                smallest_satisfying = min(smallest_satisfying, size)
    everything = set(compiled.row_labels)
    if evaluate(tree, everything, {}):
        rec = compiled.reconstruction(everything, R)
        assert rec is not None and len(rec) == smallest_satisfying
