"""The span program itself, checked by linear algebra independent of the compiler.

`satisfied_by` and `reconstruction` both walk the compiler's own tree, so they can
agree with each other while the MATRIX is wrong. FAME only ever sees the matrix:
if an unsatisfying key's rows spanned (1, 0, ..., 0), that key would decrypt.
These tests rank the key's rows by Gaussian elimination mod r and compare with
the AST's direct semantics, and brute-force the smallest spanning row set to
check that `reconstruction` uses the fewest rows (decryption cost).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from abe_service.pairing.base import BLS12_381_ORDER as R
from abe_service.policy import (
    INT_MAX,
    And,
    Attr,
    Compare,
    Or,
    PolicyNode,
    Threshold,
    compile_policy,
    expand_attributes,
)

OPS: dict[str, Callable[[int, int], bool]] = {
    ">=": lambda x, c: x >= c,
    ">": lambda x, c: x > c,
    "<=": lambda x, c: x <= c,
    "<": lambda x, c: x < c,
    "==": lambda x, c: x == c,
}
STRINGS = ["a", "b", "c", "role:doctor", "dept:cardiology"]


# -- linear algebra mod r, written here so it shares nothing with the compiler ----------
def rank_mod(rows: Sequence[Sequence[int]], p: int) -> int:
    m = [[x % p for x in row] for row in rows]
    rank, cols = 0, len(m[0]) if m else 0
    for col in range(cols):
        pivot = next((i for i in range(rank, len(m)) if m[i][col]), None)
        if pivot is None:
            continue
        m[rank], m[pivot] = m[pivot], m[rank]
        inv = pow(m[rank][col], -1, p)
        m[rank] = [x * inv % p for x in m[rank]]
        for i in range(len(m)):
            if i != rank and m[i][col]:
                f = m[i][col]
                m[i] = [(x - f * y) % p for x, y in zip(m[i], m[rank], strict=True)]
        rank += 1
    return rank


def spans_target(rows: Sequence[Sequence[int]], width: int, p: int = R) -> bool:
    """Is (1, 0, ..., 0) in the row span of `rows` (mod p)?"""
    target = [1] + [0] * (width - 1)
    if not rows:
        return False
    return rank_mod([*rows, target], p) == rank_mod(rows, p)


# -- random policies ------------------------------------------------------------------------
def leaves() -> st.SearchStrategy[PolicyNode]:
    attrs = st.sampled_from([Attr(*s.split(":")) if ":" in s else Attr(s) for s in STRINGS])
    comparisons = st.builds(
        Compare,
        st.just("age"),
        st.sampled_from(list(OPS)),
        st.one_of(st.integers(1, 40), st.sampled_from([0, 255, 256, INT_MAX - 1])),
    ).filter(lambda c: not (c.op == "<" and c.value == 0))
    return st.one_of(attrs, attrs, comparisons)


def trees(max_leaves: int) -> st.SearchStrategy[PolicyNode]:
    def extend(children: st.SearchStrategy[PolicyNode]) -> st.SearchStrategy[PolicyNode]:
        kids = st.lists(children, min_size=2, max_size=4)
        return st.one_of(
            kids.map(lambda k: And(tuple(k))),
            kids.map(lambda k: Or(tuple(k))),
            kids.flatmap(lambda k: st.integers(1, len(k)).map(lambda t: Threshold(t, tuple(k)))),
        )

    return st.recursive(leaves(), extend, max_leaves=max_leaves)


def source(node: PolicyNode) -> str:
    if isinstance(node, Attr):
        return node.name if node.value is None else f"{node.name}:{node.value}"
    if isinstance(node, Compare):
        return f"{node.name} {node.op} {node.value}"
    inner = [source(c) for c in node.children]
    if isinstance(node, And):
        return "(" + " and ".join(inner) + ")"
    if isinstance(node, Or):
        return "(" + " or ".join(inner) + ")"
    return f"{node.k} of ({', '.join(inner)})"


def holds(node: PolicyNode, attrs: set[str], age: int | None) -> bool:
    if isinstance(node, Attr):
        return (node.name if node.value is None else f"{node.name}:{node.value}") in attrs
    if isinstance(node, Compare):
        return age is not None and bool(OPS[node.op](age, node.value))
    results = [holds(c, attrs, age) for c in node.children]
    if isinstance(node, And):
        return all(results)
    if isinstance(node, Or):
        return any(results)
    return sum(results) >= node.k


def key_labels(attrs: set[str], age: int | None) -> frozenset[str]:
    return expand_attributes([*attrs, *([f"age={age}"] if age is not None else [])])


ages = st.one_of(st.none(), st.integers(0, 300), st.sampled_from([INT_MAX - 1, INT_MAX]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(max_leaves=7), attrs=st.sets(st.sampled_from(STRINGS)), age=ages)
def test_owned_rows_span_the_target_iff_the_policy_holds(
    tree: PolicyNode, attrs: set[str], age: int | None
) -> None:
    compiled = compile_policy(source(tree))
    labels = key_labels(attrs, age)
    width = len(compiled.matrix[0])
    assert all(len(row) == width for row in compiled.matrix)
    assert len(compiled.row_labels) == len(compiled.matrix)
    owned = [
        row
        for row, label in zip(compiled.matrix, compiled.row_labels, strict=True)
        if label in labels
    ]
    expected = holds(tree, attrs, age)
    # soundness (no rows of a non-satisfying key combine to the target) and completeness
    assert spans_target(owned, width) == expected
    rec = compiled.reconstruction(labels, R)
    assert (rec is not None) == expected
    if rec is not None:
        assert all(compiled.row_labels[i] in labels and 0 < c < R for i, c in rec.items())
        combo = [sum(c * compiled.matrix[i][j] for i, c in rec.items()) % R for j in range(width)]
        assert combo == [1] + [0] * (width - 1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tree=trees(max_leaves=5).filter(lambda t: not isinstance(t, Compare)),
    attrs=st.sets(st.sampled_from(STRINGS), min_size=1),
)
def test_reconstruction_uses_the_fewest_rows(tree: PolicyNode, attrs: set[str]) -> None:
    """Brute force over subsets of the owned rows: none smaller than the
    reconstruction's support spans the target."""
    compiled = compile_policy(source(tree))
    labels = key_labels(attrs, 42)
    owned = [i for i, label in enumerate(compiled.row_labels) if label in labels]
    if len(owned) > 10:
        return
    rec = compiled.reconstruction(labels, R)
    if rec is None:
        return
    width = len(compiled.matrix[0])
    for size in range(1, len(rec)):
        for subset in itertools.combinations(owned, size):
            assert not spans_target([compiled.matrix[i] for i in subset], width), subset


def test_a_wide_and_costs_one_column_per_extra_child_and_entries_stay_small() -> None:
    leaves_ = [f"a{i}" for i in range(50)]
    compiled = compile_policy(" and ".join(leaves_))
    assert len(compiled.matrix) == 50
    assert len(compiled.matrix[0]) == 50
    assert all(abs(x) <= 1 for row in compiled.matrix for x in row)
    labels = expand_attributes(leaves_)
    rec = compiled.reconstruction(labels, R)
    assert rec is not None and len(rec) == 50
    assert compiled.reconstruction(expand_attributes(leaves_[:-1]), R) is None


def test_threshold_reconstruction_is_lagrange_on_the_cheapest_children() -> None:
    compiled = compile_policy("2 of (a and b, c, d)")
    rec = compiled.reconstruction(expand_attributes(["a", "b", "c", "d"]), R)
    assert rec is not None
    assert sorted(compiled.row_labels[i] for i in rec) == ["c", "d"]
    assert compiled.reconstruction(expand_attributes(["a", "c"]), R) is None


def test_every_comparison_is_sound_on_the_matrix_at_its_boundaries() -> None:
    """Row-span check (not the tree) for every operator around c and at the ends."""
    for op, check in OPS.items():
        for c in (1, 2, 18, 255, 256, 2030, 1 << 31, INT_MAX - 1):
            compiled = compile_policy(f"age {op} {c}")
            width = len(compiled.matrix[0])
            for x in {0, 1, c - 1, c, c + 1, INT_MAX}:
                labels = key_labels(set(), x)
                owned = [
                    row
                    for row, label in zip(compiled.matrix, compiled.row_labels, strict=True)
                    if label in labels
                ]
                assert spans_target(owned, width) == check(x, c), (op, c, x)


def test_the_span_checker_itself_can_say_no() -> None:
    # an AND compiled wrongly as two copies of (1) would let either half decrypt
    assert spans_target([[1, 1], [0, -1]], 2)
    assert not spans_target([[1, 1]], 2)
    assert not spans_target([[0, -1]], 2)
    assert not spans_target([], 2)
    assert spans_target([[2, 0]], 2)  # half of it, mod r
    assert not spans_target([[2, 4], [1, 2]], 2)  # collinear rows
    assert spans_target([[1, 2, 3], [0, 1, 1], [0, 0, 1]], 3)


values = st.one_of(st.integers(0, 300), st.integers(0, INT_MAX), st.sampled_from([0, INT_MAX]))


@settings(max_examples=300, deadline=None)
@given(op=st.sampled_from(list(OPS)), c=values, x=values, y=values)
def test_labels_of_two_values_cannot_be_mixed_into_a_third(op: str, c: int, x: int, y: int) -> None:
    """Keys are refused two values for one integer, but even the union of both
    label sets only satisfies comparisons that x or y satisfies (each label
    stands for one set of values). Plain bit labels fail this: 40 and 7 give 47."""
    if (op == "<" and c == 0) or (op == ">" and c == INT_MAX):
        return
    compiled = compile_policy(f"age {op} {c}")
    union = expand_attributes([f"age={x}"]) | expand_attributes([f"age={y}"])
    owned = [
        row
        for row, label in zip(compiled.matrix, compiled.row_labels, strict=True)
        if label in union
    ]
    expected = OPS[op](x, c) or OPS[op](y, c)
    assert spans_target(owned, len(compiled.matrix[0])) == expected
    assert compiled.satisfied_by(union) == expected


def test_comparisons_in_one_and_become_one_range() -> None:
    compiled = compile_policy("age >= 18 and role:doctor and age <= 65")
    # [18, 65] = [18,20) + [20,24) + [24,32) + [32,64) + [64,66): 5 rows, one AND column
    assert len(compiled.matrix) == 6 and len(compiled.matrix[0]) == 2
    for age, ok in ((0, False), (17, False), (18, True), (40, True), (65, True), (66, False)):
        labels = key_labels({"role:doctor"}, age)
        owned = [
            r for r, lb in zip(compiled.matrix, compiled.row_labels, strict=True) if lb in labels
        ]
        assert spans_target(owned, 2) == ok, age
        rec = compiled.reconstruction(labels, R)
        assert (rec is not None) == ok and (rec is None or len(rec) == 2)
    assert compile_policy("age >= 0 and age <= 4294967295").row_labels == ("age#>>32=0",)


def test_a_contradiction_compiles_to_a_policy_no_key_satisfies() -> None:
    compiled = compile_policy("a or (age < 18 and age >= 18)")
    for age in (0, 17, 18, 19, INT_MAX):
        labels = key_labels(set(), age)
        owned = [
            r for r, lb in zip(compiled.matrix, compiled.row_labels, strict=True) if lb in labels
        ]
        assert not spans_target(owned, len(compiled.matrix[0]))
    assert compiled.satisfied_by(key_labels({"a"}, None))


@settings(max_examples=300, deadline=None)
@given(
    first=st.tuples(st.sampled_from(list(OPS)), values),
    second=st.tuples(st.sampled_from(list(OPS)), values),
    x=values,
)
def test_a_merged_range_is_sound_on_the_matrix(
    first: tuple[str, int], second: tuple[str, int], x: int
) -> None:
    (op1, c1), (op2, c2) = first, second
    for op, c in first, second:  # refused on their own (test_policy_integers)
        assume(not ((op == "<" and c == 0) or (op == ">" and c == INT_MAX)))
    satisfiable = any(
        OPS[op1](v, c1) and OPS[op2](v, c2)
        for v in {0, INT_MAX, c1 - 1, c1, c1 + 1, c2 - 1, c2, c2 + 1}
        if 0 <= v <= INT_MAX
    )  # the ends of both ranges are the only candidates that matter
    compiled = compile_policy(f"age {op1} {c1} and age {op2} {c2}")
    # a non-empty range is one OR of range labels (one column)
    assert (len(compiled.matrix[0]) == 1) == satisfiable
    labels = key_labels(set(), x)
    owned = [r for r, lb in zip(compiled.matrix, compiled.row_labels, strict=True) if lb in labels]
    assert spans_target(owned, len(compiled.matrix[0])) == (OPS[op1](x, c1) and OPS[op2](x, c2))
