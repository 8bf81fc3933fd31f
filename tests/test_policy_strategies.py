"""Hypothesis strategies and a reference evaluator shared by the policy tests
(no tests here; imported by test_policy_language.py and test_policy_msp.py)."""

from __future__ import annotations

from hypothesis import strategies as st

from abe_service.policy import INT_BITS, INT_MAX, And, Attr, Compare, Or, PolicyNode, Threshold

STRING_ATTRS = ["a", "b", "c", "d", "role:doctor", "role:Doctor", "dept:cardiology"]
INT_NAMES = ["age", "level"]
OPS = {
    ">=": lambda x, c: x >= c,
    ">": lambda x, c: x > c,
    "<=": lambda x, c: x <= c,
    "<": lambda x, c: x < c,
    "==": lambda x, c: x == c,
}


def interesting_ints() -> st.SearchStrategy[int]:
    """Values near the places where bit formulas go wrong: 0, powers of two, the top."""
    powers = st.integers(0, INT_BITS - 1).flatmap(
        lambda k: st.sampled_from([(1 << k) - 1, 1 << k, (1 << k) + 1])
    )
    return st.one_of(
        st.integers(0, 300),
        powers.map(lambda v: min(v, INT_MAX)),
        st.integers(INT_MAX - 3, INT_MAX),
        st.integers(0, INT_MAX),
    )


def _attr(text: str) -> Attr:
    name, _, value = text.partition(":")
    return Attr(name, value or None)


def _satisfiable(cmp: Compare) -> bool:
    return not ((cmp.op == "<" and cmp.value == 0) or (cmp.op == ">" and cmp.value == INT_MAX))


def leaves() -> st.SearchStrategy[PolicyNode]:
    comparisons = st.builds(
        Compare, st.sampled_from(INT_NAMES), st.sampled_from(list(OPS)), interesting_ints()
    ).filter(_satisfiable)
    return st.one_of(st.sampled_from([_attr(a) for a in STRING_ATTRS]), comparisons)


def policy_trees(max_leaves: int = 10) -> st.SearchStrategy[PolicyNode]:
    def extend(children: st.SearchStrategy[PolicyNode]) -> st.SearchStrategy[PolicyNode]:
        kids = st.lists(children, min_size=2, max_size=4)
        return st.one_of(
            kids.map(lambda k: And(tuple(k))),
            kids.map(lambda k: Or(tuple(k))),
            kids.flatmap(lambda k: st.integers(1, len(k)).map(lambda t: Threshold(t, tuple(k)))),
        )

    return st.recursive(leaves(), extend, max_leaves=max_leaves)


def universe() -> st.SearchStrategy[tuple[set[str], dict[str, int]]]:
    """A key: some string attributes and, for some integer names, one value."""
    return st.tuples(
        st.sets(st.sampled_from(STRING_ATTRS)),
        st.dictionaries(st.sampled_from(INT_NAMES), interesting_ints()),
    )


def render_source(node: PolicyNode) -> str:
    """Fully parenthesised policy text (independent of the library's renderer)."""
    if isinstance(node, Attr):
        return node.label
    if isinstance(node, Compare):
        return f"{node.name} {node.op} {node.value}"
    if isinstance(node, And):
        return "(" + " and ".join(render_source(c) for c in node.children) + ")"
    if isinstance(node, Or):
        return "(" + " or ".join(render_source(c) for c in node.children) + ")"
    return f"{node.k} of (" + ", ".join(render_source(c) for c in node.children) + ")"


def evaluate(node: PolicyNode, attrs: set[str], ints: dict[str, int]) -> bool:
    """Direct semantics of the AST: a comparison holds iff the key has that integer
    attribute and the comparison is true of its value."""
    if isinstance(node, Attr):
        return node.label in attrs
    if isinstance(node, Compare):
        return node.name in ints and bool(OPS[node.op](ints[node.name], node.value))
    results = [evaluate(c, attrs, ints) for c in node.children]
    if isinstance(node, And):
        return all(results)
    if isinstance(node, Or):
        return any(results)
    return sum(results) >= node.k


def key_strings(attrs: set[str], ints: dict[str, int]) -> list[str]:
    return [*sorted(attrs), *(f"{n}={v}" for n, v in sorted(ints.items()))]


def policy_texts(leaf_texts: list[str], max_leaves: int = 5) -> st.SearchStrategy[str]:
    """Random policy texts over the given leaves: and, or and k-of-n gates."""

    def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        kids = st.lists(children, min_size=2, max_size=3)
        return st.one_of(
            kids.map(lambda k: "(" + " and ".join(k) + ")"),
            kids.map(lambda k: "(" + " or ".join(k) + ")"),
            kids.flatmap(
                lambda k: st.integers(1, len(k)).map(lambda t: f"{t} of ({', '.join(k)})")
            ),
        )

    return st.recursive(st.sampled_from(leaf_texts), extend, max_leaves=max_leaves)
