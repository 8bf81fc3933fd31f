"""The policy language: parser, error positions, normal form, attributes, limits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_policy_strategies import evaluate, policy_trees, render_source, universe

from abe_service.policy import (
    INT_MAX,
    MAX_DEPTH,
    MAX_LEAVES,
    MAX_POLICY_CHARS,
    And,
    Attr,
    Compare,
    Or,
    PolicyNode,
    Threshold,
    attributes,
    compile_policy,
    normal_form,
    parse,
)
from abe_service.policy.integers import compile_comparison
from ehr_common.errors import InvalidArgument, PolicyError


def test_precedence_and_binds_tighter_than_or() -> None:
    assert parse("a or b and c") == Or((Attr("a"), And((Attr("b"), Attr("c")))))
    assert parse("(a or b) and c") == And((Or((Attr("a"), Attr("b"))), Attr("c")))


def test_keywords_and_names_are_case_insensitive_values_are_not() -> None:
    node = parse("Role:Doctor AND dept:cardiology Or PATIENT:p-17")
    assert node == Or(
        (And((Attr("role", "Doctor"), Attr("dept", "cardiology"))), Attr("patient", "p-17"))
    )


def test_value_character_set() -> None:
    assert parse("email:nurse@hospital.example") == Attr("email", "nurse@hospital.example")
    assert parse("unit:icu/north-2") == Attr("unit", "icu/north-2")
    assert parse("code:A+B_1.0") == Attr("code", "A+B_1.0")
    assert parse("x.y-z_1") == Attr("x.y-z_1")


def test_threshold_and_comparisons_parse_as_written() -> None:
    node = parse("2 of (role:doctor, age >= 18, clearance>2, year = 2029)")
    assert node == Threshold(
        2,
        (
            Attr("role", "doctor"),
            Compare("age", ">=", 18),
            Compare("clearance", ">", 2),
            Compare("year", "==", 2029),
        ),
    )
    # parse keeps what was written; normal form simplifies
    assert parse("1 of (a, b)") == Threshold(1, (Attr("a"), Attr("b")))
    assert normal_form("1 of (b, a)") == "a or b"
    assert normal_form("2 OF (b, a)") == "a and b"


def test_threshold_children_may_be_expressions() -> None:
    node = parse("2 of (a and b, c or d, (e))")
    assert node == Threshold(
        2, (And((Attr("a"), Attr("b"))), Or((Attr("c"), Attr("d"))), Attr("e"))
    )


@pytest.mark.parametrize("op", ["<", "<=", ">", ">=", "==", "="])
def test_all_comparison_operators(op: str) -> None:
    node = parse(f"level {op} 7")
    assert node == Compare("level", "==" if op == "=" else op, 7)


def test_normal_form_is_canonical_and_idempotent() -> None:
    a = normal_form("(role:doctor and dept:cardiology) or patient:p-17")
    b = normal_form("patient:p-17 OR (dept:cardiology AND role:doctor)")
    assert a == b == "(dept:cardiology and role:doctor) or patient:p-17"
    assert normal_form(a) == a


def test_normal_form_flattens_deduplicates_and_sorts() -> None:
    assert normal_form("c and (b and (a and c))") == "a and b and c"
    assert normal_form("(a or b) or (a or c)") == "a or b or c"
    assert normal_form("a or a") == "a"
    # threshold children are sorted but never de-duplicated (that would change the count)
    assert normal_form("2 of (b, a, a)") == "2 of (a, a, b)"
    assert normal_form("x = 3 and y>=4") == "x == 3 and y >= 4"
    assert normal_form("(a or b) and c") == "(a or b) and c"
    assert normal_form("2 of (c, a or b, d and e)") == "2 of (a or b, c, d and e)"


def test_normal_form_accepts_a_node() -> None:
    assert normal_form(Or((Attr("b"), Attr("a")))) == "a or b"


def test_attributes_lists_what_a_policy_mentions() -> None:
    assert attributes("(role:doctor and age >= 18) or patient:p-17 or Age < 90") == (
        "age",
        "patient:p-17",
        "role:doctor",
    )
    assert attributes(parse("2 of (x, y, z:1)")) == ("x", "y", "z:1")


@pytest.mark.parametrize(
    ("policy", "message", "position"),
    [
        ("role:doctor and", "ends where an attribute", 15),
        ("(a or b", "expected ')'", 7),
        ("a or b)", "unbalanced ')'", 6),
        ("a and not b", "negation is not supported", 6),
        ("NOT a", "negation is not supported", 0),
        ("age != 3", "negation is not supported", 4),
        ("!a", "negation is not supported", 0),
        ("age <> 3", "negation is not supported", 4),
        ("3 of (a, b)", "impossible", 0),
        ("0 of (a, b)", "impossible", 0),
        ("a $ b", "unexpected character '$'", 2),
        ("role:doctor or dépt", "unexpected character 'é'", 16),
        ("age >= ²", "unexpected character", 7),
        ("dept:", "attribute value", 5),
        ("dept: cardiology", "attribute value", 5),
        ("2 (a, b)", "expected 'of'", 2),
        ("of (a, b)", "'of' needs a number", 0),
        ("or a", "'or' needs an attribute", 0),
        ("a and and b", "'and' needs an attribute", 6),
        ("a b", "expected 'and', 'or'", 2),
        ("age >= x", "non-negative integer", 7),
        ("age >= -1", "unexpected character '-'", 7),
        (">= 3", "needs an attribute name", 0),
        ("2of(a,b", "expected ')' or ','", 7),
        ("()", "expected an attribute", 1),
        ("1abc", "cannot start with a digit", 0),
        ("a:b:c", "expected 'and', 'or'", 3),
        (f"age > {INT_MAX + 1}", "does not fit in 32 bits", 6),
        ("age == " + "9" * 5000, "does not fit in 32 bits", 7),
        ("9" * 5000 + " of (a, b)", "does not fit in 32 bits", 0),
    ],
)
def test_syntax_errors_point_at_the_position(policy: str, message: str, position: int) -> None:
    with pytest.raises(PolicyError) as exc:
        parse(policy)
    assert message in str(exc.value)
    assert exc.value.position == position
    assert exc.value.text == policy
    assert isinstance(exc.value, InvalidArgument)
    # the message draws a caret under the offending character
    assert str(exc.value).endswith("\n  " + " " * position + "^")


@pytest.mark.parametrize("policy", ["", "   ", "\n\t"])
def test_empty_policy(policy: str) -> None:
    with pytest.raises(PolicyError, match="empty"):
        parse(policy)


def test_non_text_policy() -> None:
    with pytest.raises(PolicyError, match="text"):
        parse(b"a or b")  # type: ignore[arg-type]


def test_length_limit() -> None:
    with pytest.raises(PolicyError, match=f"longer than {MAX_POLICY_CHARS}"):
        parse("a" * (MAX_POLICY_CHARS + 1))


def test_depth_limit() -> None:
    ok = "(" * (MAX_DEPTH - 1) + "a" + ")" * (MAX_DEPTH - 1)
    assert parse(ok) == Attr("a")
    with pytest.raises(PolicyError, match="nests deeper") as exc:
        parse("(" * 100 + "a" + ")" * 100)
    assert exc.value.position is not None and exc.value.position < 100
    with pytest.raises(PolicyError, match="nests deeper"):
        parse("1 of (" * 40 + "a" + ")" * 40)


def test_leaf_limit() -> None:
    names = [f"a{i}" for i in range(MAX_LEAVES + 1)]
    assert len(attributes(" or ".join(names[:MAX_LEAVES]))) == MAX_LEAVES
    with pytest.raises(PolicyError, match=f"more than {MAX_LEAVES} attributes") as exc:
        parse(" or ".join(names))
    assert exc.value.position == len(" or ".join(names[:MAX_LEAVES])) + len(" or ")


def test_unsatisfiable_comparisons_are_named() -> None:
    with pytest.raises(PolicyError, match="never be satisfied: integers are non-negative") as exc:
        compile_policy("role:doctor or age < 0")
    assert exc.value.position == 15
    with pytest.raises(PolicyError, match="never be satisfied: 32-bit"):
        compile_policy(f"age > {INT_MAX}")
    # trees built in code are checked again when their comparisons are compiled
    for cmp in (Compare("age", "<", 0), Compare("age", ">", INT_MAX)):
        with pytest.raises(PolicyError, match="never be satisfied"):
            compile_comparison(cmp)


@settings(max_examples=300, deadline=None)
@given(tree=policy_trees(), data=st.data())
def test_normal_form_is_idempotent_and_preserves_meaning(
    tree: PolicyNode, data: st.DataObject
) -> None:
    text = render_source(tree)
    assert parse(text) == tree
    nf = normal_form(text)
    assert normal_form(nf) == nf
    reparsed = parse(nf)
    attrs, ints = data.draw(universe())
    assert evaluate(reparsed, attrs, ints) == evaluate(tree, attrs, ints)
    assert attributes(nf) == attributes(text)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab:()<>=!, 0123of anor\t.-@é")), max_size=40))
def test_arbitrary_text_parses_or_raises_policy_error(text: str) -> None:
    try:
        node = parse(text)
    except PolicyError as exc:
        if exc.position is not None:
            assert 0 <= exc.position <= len(text)
        return
    assert normal_form(normal_form(node)) == normal_form(node)
