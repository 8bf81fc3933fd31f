"""The policy language: parsing, normal form, errors, integer comparisons, MSPs."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abe_service.pairing.base import BLS12_381_ORDER as R
from abe_service.policy import (
    And,
    Attr,
    Compare,
    Node,
    Or,
    Threshold,
    attributes,
    compile_policy,
    expand_attributes,
    normal_form,
    parse,
)
from abe_service.policy.language import INT_MAX
from ehr_abe.errors import InvalidArgument, PolicyError


def test_precedence_and_binds_tighter_than_or() -> None:
    assert parse("a or b and c") == Or((Attr("a"), And((Attr("b"), Attr("c")))))


def test_attributes_values_and_keywords_case() -> None:
    node = parse("Role:Doctor AND dept:cardiology Or patient:p-17")
    assert node == Or(
        (And((Attr("role", "Doctor"), Attr("dept", "cardiology"))), Attr("patient", "p-17"))
    )


def test_threshold_and_comparisons_parse() -> None:
    node = parse("2 of (role:doctor, age >= 18, clearance > 2)")
    assert isinstance(node, Threshold) and node.k == 2
    assert Compare("age", ">=", 18) in node.children


def test_normal_form_is_canonical_and_idempotent() -> None:
    a = normal_form("(role:doctor and dept:cardiology) or patient:p-17")
    b = normal_form("patient:p-17 OR (dept:cardiology AND role:doctor)")
    assert a == b == "(dept:cardiology and role:doctor) or patient:p-17"
    assert normal_form(a) == a


def test_attributes_lists_what_a_policy_mentions() -> None:
    assert attributes("(role:doctor and age >= 18) or patient:p-17") == (
        "age",
        "patient:p-17",
        "role:doctor",
    )


@pytest.mark.parametrize(
    ("policy", "message", "position"),
    [
        ("role:doctor and", "ends where an attribute", 15),
        ("(a or b", "expected ')'", 7),
        ("a or b)", "unbalanced ')'", 6),
        ("a and not b", "negation", 6),
        ("age != 3", "'!=' is not supported", 4),
        ("3 of (a, b)", "impossible", 0),
        ("a $ b", "unexpected character '$'", 2),
        ("dept:", "attribute value", 5),
        ("2 (a, b)", "expected 'of'", 2),
    ],
)
def test_syntax_errors_point_at_the_position(policy: str, message: str, position: int) -> None:
    with pytest.raises(PolicyError) as exc:
        compile_policy(policy)
    assert message in str(exc.value)
    assert exc.value.position == position
    assert isinstance(exc.value, InvalidArgument)


@pytest.mark.parametrize(
    "policy", ["", "   ", "age >= 0", "age < 0", f"age > {INT_MAX}", f"age >= {INT_MAX + 1}", "a" * 9000]
)
def test_unsatisfiable_trivial_or_oversized_policies_are_refused(policy: str) -> None:
    with pytest.raises(PolicyError):
        compile_policy(policy)


def test_depth_limit() -> None:
    with pytest.raises(PolicyError, match="nests deeper"):
        compile_policy("(" * 100 + "a" + ")" * 100)


@pytest.mark.parametrize(
    "attr", ["", "1abc", "role:", "role:doc tor", "and", "age=-1", "age=x", f"age={INT_MAX + 1}"]
)
def test_bad_key_attributes_are_refused(attr: str) -> None:
    with pytest.raises(PolicyError):
        expand_attributes([attr])


OPS = {
    ">=": lambda x, c: x >= c,
    ">": lambda x, c: x > c,
    "<=": lambda x, c: x <= c,
    "<": lambda x, c: x < c,
    "==": lambda x, c: x == c,
}


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("c", [1, 2, 17, 18, 2029, 2030, INT_MAX - 1])
def test_integer_comparisons_at_their_boundaries(op: str, c: int) -> None:
    if (op == ">" and c >= INT_MAX) or (op == "<=" and c >= INT_MAX):
        pytest.skip("always/never true at the top of the range")
    compiled = compile_policy(f"x {op} {c}")
    for x in {0, 1, c - 1, c, c + 1, INT_MAX} - {-1, INT_MAX + 1}:
        labels = expand_attributes([f"x={x}"])
        assert compiled.satisfied_by(labels) == OPS[op](x, c), (op, c, x)
        assert (compiled.reconstruction(labels, R) is not None) == OPS[op](x, c)


# -- property tests ----------------------------------------------------------------------
NAMES = ["a", "b", "c", "d", "role:doctor", "dept:cardiology"]


def leaves() -> st.SearchStrategy[Node]:
    return st.one_of(
        st.sampled_from([Attr(n.split(":")[0], n.split(":")[1] if ":" in n else None) for n in NAMES]),
        st.builds(Compare, st.just("age"), st.sampled_from([">=", ">", "<=", "<", "=="]), st.integers(1, 200)),
    )


def trees() -> st.SearchStrategy[Node]:
    def extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
        kids = st.lists(children, min_size=2, max_size=4)
        return st.one_of(
            kids.map(lambda k: And(tuple(k))),
            kids.map(lambda k: Or(tuple(k))),
            kids.flatmap(lambda k: st.integers(1, len(k)).map(lambda t: Threshold(t, tuple(k)))),
        )

    return st.recursive(leaves(), extend, max_leaves=8)


def render_source(node: Node) -> str:
    if isinstance(node, Attr):
        return node.label
    if isinstance(node, Compare):
        return f"{node.name} {node.op} {node.value}"
    inner = ", ".join(render_source(c) for c in node.children)
    if isinstance(node, And):
        return "(" + " and ".join(render_source(c) for c in node.children) + ")"
    if isinstance(node, Or):
        return "(" + " or ".join(render_source(c) for c in node.children) + ")"
    return f"{node.k} of ({inner})"


def evaluate(node: Node, attrs: set[str], age: int) -> bool:
    if isinstance(node, Attr):
        return node.label in attrs
    if isinstance(node, Compare):
        return bool(OPS[node.op](age, node.value))
    results = [evaluate(c, attrs, age) for c in node.children]
    if isinstance(node, And):
        return all(results)
    if isinstance(node, Or):
        return any(results)
    return sum(results) >= node.k


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees(), attrs=st.sets(st.sampled_from(NAMES)), age=st.integers(0, 255))
def test_compiled_span_program_agrees_with_the_formula(tree: Node, attrs: set[str], age: int) -> None:
    text = render_source(tree)
    try:
        compiled = compile_policy(text)
    except PolicyError as exc:
        assert "always true" in str(exc) or "never be satisfied" in str(exc)
        return
    labels = expand_attributes([*attrs, f"age={age}"])
    expected = evaluate(tree, attrs, age)
    assert compiled.satisfied_by(labels) == expected
    rec = compiled.reconstruction(labels, R)
    assert (rec is not None) == expected
    if rec is not None:
        cols = len(compiled.matrix[0])
        combo = [sum(c * compiled.matrix[i][j] for i, c in rec.items()) % R for j in range(cols)]
        assert combo == [1] + [0] * (cols - 1)
        assert all(compiled.row_labels[i] in labels for i in rec)
    # the normal form compiles to the same span program (envelopes store the normal form)
    again = compile_policy(compiled.normal_form)
    assert again.matrix == compiled.matrix and again.row_labels == compiled.row_labels
    assert normal_form(compiled.normal_form) == compiled.normal_form
