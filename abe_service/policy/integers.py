"""Integer comparisons as ORs of range labels (dyadic intervals).

A key for the integer attribute `age = x` (0 <= x < 2^W, W = INT_BITS) holds
    - W + 1 prefix labels `age#>><j>=<x >> j>`   for j in 0..W   (j = W: `age#>>W=0`, "has an age")
    - ladder labels       `age#>=2^<k>`          for every k with 2^k <= x
Each label stands for a set of values: `age#>>j=v` for the aligned block
[v*2^j, (v+1)*2^j), `age#>=2^k` for [2^k, 2^W). A comparison is an interval,
and every interval is a disjoint union of a few such sets, so a comparison
compiles to an OR of labels: no span-program columns at all, and decryption
uses exactly one row per comparison. `==` is one label; `<= c` is popcount(c+1)
labels; `>= c` is at most bitlen(c) labels (the aligned blocks up to the next
power of two, then one ladder label). Comparisons on one attribute inside an
`and` are merged into one range (compile_comparisons): `age >= 18 and age <= 65`
is 5 labels, at most 2W - 2 for any range.

`#`, `>`, `=`, `^` cannot occur in policy attributes, so these labels never
collide with user attributes. One label always means one set of values, so even
a key holding two values could only satisfy comparisons one of them satisfies
(keys are nevertheless refused two values: expand_attributes).
"""

from __future__ import annotations

from collections.abc import Sequence

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
from ehr_common.errors import PolicyError


def prefix_label(name: str, shift: int, prefix: int) -> str:
    """Held iff value >> shift == prefix."""
    return f"{name}#>>{shift}={prefix}"


def at_least_label(name: str, k: int) -> str:
    """Held iff value >= 2^k."""
    return f"{name}#>=2^{k}"


def integer_labels(name: str, value: int) -> list[str]:
    """All key labels for `name = value` (name already validated and lower-cased)."""
    if not 0 <= value <= INT_MAX:
        raise PolicyError(f"integer attribute {name}={value} does not fit in {INT_BITS} bits")
    prefixes = [prefix_label(name, j, value >> j) for j in range(INT_BITS + 1)]
    return prefixes + [at_least_label(name, k) for k in range(value.bit_length())]


def _at_least(name: str, c: int) -> list[str]:
    if c == 0:
        return [prefix_label(name, INT_BITS, 0)]
    labels: list[str] = []
    start = c
    while start <= INT_MAX:
        if start & (start - 1) == 0:  # a power of two: the rest is one ladder label
            labels.append(at_least_label(name, start.bit_length() - 1))
            break
        shift = (start & -start).bit_length() - 1  # largest aligned block starting here
        labels.append(prefix_label(name, shift, start >> shift))
        start += 1 << shift
    return labels


def _at_most(name: str, c: int) -> list[str]:
    if c == INT_MAX:
        return [prefix_label(name, INT_BITS, 0)]
    end = c + 1  # [0, end) = one aligned block per 1 bit of end
    return [
        prefix_label(name, j, (end >> j) - 1) for j in reversed(range(INT_BITS)) if (end >> j) & 1
    ]


def _interval(cmp: Compare) -> tuple[int, int]:
    """The values satisfying `cmp`, as an inclusive range [low, high] (empty if low > high)."""
    op, c = cmp.op, cmp.value
    if not 0 <= c <= INT_MAX:
        raise PolicyError(f"'{render(cmp)}': {c} does not fit in {INT_BITS} bits")
    if op == "==":
        return c, c
    if op == ">=":
        return c, INT_MAX
    if op == ">":
        return c + 1, INT_MAX
    if op == "<=":
        return 0, c
    if op == "<":
        return 0, c - 1
    raise PolicyError(f"unknown comparison operator {op!r}")


def _between(name: str, low: int, high: int) -> list[str]:
    """Labels whose sets exactly cover [low, high] (0 <= low <= high <= INT_MAX)."""
    if high == INT_MAX:
        return _at_least(name, low)
    if low == 0:
        return _at_most(name, high)
    labels: list[str] = []
    start = low
    while start <= high:  # greedy: the largest aligned block that starts here and fits
        shift = (start & -start).bit_length() - 1
        while start + (1 << shift) - 1 > high:
            shift -= 1
        labels.append(prefix_label(name, shift, start >> shift))
        start += 1 << shift
    return labels


def _or_of(labels: list[str]) -> PolicyNode:
    leaves = tuple(Attr(label) for label in labels)
    return leaves[0] if len(leaves) == 1 else Or(leaves)


def compile_comparisons(name: str, comparisons: Sequence[Compare]) -> PolicyNode:
    """The conjunction of comparisons on one integer attribute. When their ranges
    intersect, one OR of labels covering the intersection (`age >= 18 and age <= 65`
    is the range [18, 65]); exact because a key holds one value per integer
    attribute. A contradiction (`x < 2 and x >= 3`) stays an `and` of the separate
    comparisons, which no key satisfies."""
    low, high = 0, INT_MAX
    for cmp in comparisons:
        lo, hi = _interval(cmp)
        low, high = max(low, lo), min(high, hi)
    if low > high and len(comparisons) > 1:
        return And(tuple(compile_comparison(cmp) for cmp in comparisons))
    if low > high:
        reason = (
            "integers are non-negative"
            if comparisons[0].op == "<"
            else f"{INT_BITS}-bit integers stop at {INT_MAX}"
        )
        raise PolicyError(f"'{render(comparisons[0])}' can never be satisfied: {reason}")
    return _or_of(_between(name, low, high))


def compile_comparison(cmp: Compare) -> PolicyNode:
    """The monotone formula over key labels equivalent to `cmp` for every key
    holding an integer `cmp.name`. Unsatisfiable comparisons are refused."""
    return compile_comparisons(cmp.name, [cmp])
