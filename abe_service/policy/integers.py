"""Integer comparisons as monotone formulas over key labels (BSW07 / OpenABE bit
decomposition, plus a power-of-two ladder that keeps the formulas short).

A key for the integer attribute `age = x` (0 <= x < 2^W, W = INT_BITS) holds
    - W bit labels          `age#b<i>=<bit i of x>`          for i in 0..W-1
    - W ladder labels       `age#<2^<k>` if x < 2^k, else `age#>=2^<k>`, for k in 0..W-1
`#`, `<`, `>`, `=` and `^` cannot occur in policy attributes, so these labels
never collide with user attributes. The ladder replaces the long chains over the
high bits (for `age >= 18`: `b31=1 or ... or b5=1`) by one label: `age >= 18`
compiles to 5 rows instead of 31, `age == 42` to 7 instead of 32.

Every formula is read-once (each label at most once), so rows <= W + 1.
"""

from __future__ import annotations

from abe_service.policy.language import (
    INT_BITS,
    INT_MAX,
    And,
    Attr,
    Compare,
    Or,
    PolicyNode,
    render,
)
from ehr_abe.errors import PolicyError


def bit_label(name: str, bit: int, value: int) -> str:
    return f"{name}#b{bit}={value}"


def below_label(name: str, k: int) -> str:
    """Held iff the value is < 2^k."""
    return f"{name}#<2^{k}"


def at_least_label(name: str, k: int) -> str:
    """Held iff the value is >= 2^k."""
    return f"{name}#>=2^{k}"


def integer_labels(name: str, value: int) -> list[str]:
    """All key labels for `name = value` (name already validated and lower-cased)."""
    if not 0 <= value <= INT_MAX:
        raise PolicyError(f"integer attribute {name}={value} does not fit in {INT_BITS} bits")
    bits = [bit_label(name, i, (value >> i) & 1) for i in range(INT_BITS)]
    ladder = [
        below_label(name, k) if value < (1 << k) else at_least_label(name, k)
        for k in range(INT_BITS)
    ]
    return bits + ladder


def _leaf(label: str) -> PolicyNode:
    return Attr(label)


def _and(a: PolicyNode | None, b: PolicyNode | None) -> PolicyNode | None:
    """None stands for `true`."""
    if a is None:
        return b
    if b is None:
        return a
    return And(
        (
            *(a.children if isinstance(a, And) else (a,)),
            *(b.children if isinstance(b, And) else (b,)),
        )
    )


def _or(a: PolicyNode, b: PolicyNode) -> PolicyNode:
    return Or(
        (*(a.children if isinstance(a, Or) else (a,)), *(b.children if isinstance(b, Or) else (b,)))
    )


def _low_bits(name: str, c: int, width: int, at_least: bool) -> PolicyNode | None:
    """x mod 2^width >= c (at_least) or <= c, over bit labels; None means always true.

    Built from the least significant bit up: for `>=`, a 1 in c requires the bit
    and the rest; a 0 in c is satisfied by the bit or by the rest. `<=` is the
    mirror image with 0 and 1 swapped."""
    want = 1 if at_least else 0
    node: PolicyNode | None = None
    for i in range(width):
        leaf = _leaf(bit_label(name, i, want))
        if (c >> i) & 1 == want:
            node = _and(leaf, node)
        elif node is not None:
            node = _or(leaf, node)
    return node


def _holds_any_value(name: str) -> PolicyNode:
    # Exactly one of the two is in every key with an integer `name`.
    top = INT_BITS - 1
    return Or((_leaf(bit_label(name, top, 0)), _leaf(bit_label(name, top, 1))))


def _at_least(name: str, c: int) -> PolicyNode:
    if c == 0:
        return _holds_any_value(name)
    h = c.bit_length()  # 2^(h-1) <= c < 2^h
    if c == 1 << (h - 1):
        return _leaf(at_least_label(name, h - 1))
    low = _low_bits(name, c, h, at_least=True)
    assert low is not None  # c has a 1 bit
    return low if h == INT_BITS else _or(_leaf(at_least_label(name, h)), low)


def _at_most(name: str, c: int) -> PolicyNode:
    if c == INT_MAX:
        return _holds_any_value(name)
    h = c.bit_length()  # c < 2^h
    if c == (1 << h) - 1:
        return _leaf(below_label(name, h))
    low = _low_bits(name, c, h, at_least=False)
    assert low is not None  # c has a 0 bit below h
    result = low if h == INT_BITS else _and(_leaf(below_label(name, h)), low)
    assert result is not None
    return result


def _equal(name: str, c: int) -> PolicyNode:
    h = c.bit_length()
    bits: list[PolicyNode] = [_leaf(bit_label(name, i, (c >> i) & 1)) for i in reversed(range(h))]
    if h < INT_BITS:
        bits.insert(0, _leaf(below_label(name, h)))
    return bits[0] if len(bits) == 1 else And(tuple(bits))


def compile_comparison(cmp: Compare) -> PolicyNode:
    """The monotone formula over key labels equivalent to `cmp` for every key
    holding an integer `cmp.name`. Unsatisfiable comparisons are refused."""
    name, op, c = cmp.name, cmp.op, cmp.value
    if op == "==":
        return _equal(name, c)
    if op == ">=":
        return _at_least(name, c)
    if op == ">":
        if c >= INT_MAX:
            raise PolicyError(
                f"'{render(cmp)}' can never be satisfied: {INT_BITS}-bit integers stop at {INT_MAX}"
            )
        return _at_least(name, c + 1)
    if op == "<=":
        return _at_most(name, c)
    if op == "<":
        if c == 0:
            raise PolicyError(f"'{render(cmp)}' can never be satisfied: integers are non-negative")
        return _at_most(name, c - 1)
    raise PolicyError(f"unknown comparison operator {op!r}")
