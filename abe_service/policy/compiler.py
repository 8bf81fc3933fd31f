"""Compiling policies to monotone span programs (MSPs) for FAME.

1. Integer comparisons become monotone formulas over bit attributes
   (BSW07 / OpenABE): a key for `age = 42` holds, for each of 32 bits, the
   label `age#<bit>=<0|1>`; `age >= 18` becomes a small and/or formula over
   those labels. `#` cannot occur in user attributes, so no collision.
2. The formula becomes an MSP with the Lewko–Waters construction (target
   vector (1, 0, …, 0)): an OR gate copies its vector, an AND gate of k
   children adds k-1 columns with entries ±1, and a k-of-n threshold gate adds
   k-1 columns with Vandermonde entries (child j gets j, j², …, j^(k-1)), so
   its shares reconstruct with Lagrange coefficients.
3. Reconstruction coefficients are computed on the tree (not by elimination),
   choosing the fewest rows: decryption cost grows with the rows used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from abe_service.policy.language import (
    INT_BITS,
    INT_MAX,
    And,
    Attr,
    Compare,
    Node,
    Or,
    Threshold,
    _NAME_RE,
    _VALUE_RE,
    mentioned,
    normalize,
    parse,
    render,
)
from ehr_abe.errors import PolicyError

MAX_LEAVES = 1024


def bit_label(name: str, bit: int, value: int) -> str:
    return f"{name}#{bit}={value}"


def _bits(name: str, c: int, upto: int, want_ge: bool) -> Node | None:
    """x[upto..0] >= c (want_ge) or x[upto..0] <= c, as a monotone formula; None = always true."""
    node: Node | None = None  # formula for the bits below the current one
    for i in range(0, upto + 1):
        ci = (c >> i) & 1
        if want_ge:
            leaf = Attr(bit_label(name, i, 1))
            if ci == 1:
                node = leaf if node is None else And((leaf, node))
            elif node is not None:
                node = Or((leaf, node))
        else:
            leaf = Attr(bit_label(name, i, 0))
            if ci == 0:
                node = leaf if node is None else And((leaf, node))
            elif node is not None:
                node = Or((leaf, node))
    return node


def _compare(cmp: Compare, text: str) -> Node:
    name, c = cmp.name, cmp.value
    top = INT_BITS - 1
    if cmp.op == "==":
        return And(tuple(Attr(bit_label(name, i, (c >> i) & 1)) for i in reversed(range(INT_BITS))))
    if cmp.op in (">", ">="):
        bound = c + 1 if cmp.op == ">" else c
        if bound > INT_MAX:
            raise PolicyError(f"'{render(cmp)}' can never be satisfied ({INT_BITS}-bit integers)")
        node = _bits(name, bound, top, want_ge=True)
    else:
        bound = c - 1 if cmp.op == "<" else c
        if bound < 0:
            raise PolicyError(f"'{render(cmp)}' can never be satisfied (integers are non-negative)")
        node = _bits(name, bound, top, want_ge=False)
    if node is None:
        raise PolicyError(f"'{render(cmp)}' is always true: remove it from the policy")
    return node


def expand(node: Node, text: str = "") -> Node:
    """Replace comparisons by formulas over bit attributes."""
    if isinstance(node, Attr):
        return node
    if isinstance(node, Compare):
        return _compare(node, text)
    kids = tuple(expand(c, text) for c in node.children)
    if isinstance(node, And):
        return And(kids)
    if isinstance(node, Or):
        return Or(kids)
    return Threshold(node.k, kids)


# -- MSP ----------------------------------------------------------------------------
@dataclass
class _Builder:
    rows: list[list[int]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    cols: int = 1

    def build(self, node: Node, v: list[int]) -> None:
        if isinstance(node, Attr):
            if len(self.rows) >= MAX_LEAVES:
                raise PolicyError(f"the policy has more than {MAX_LEAVES} leaves after expansion")
            self.rows.append(v)
            self.labels.append(node.label)
            return
        if isinstance(node, Or):
            for c in node.children:
                self.build(c, list(v))
            return
        if isinstance(node, And):
            k = len(node.children)
            base = self.cols
            self.cols += k - 1
            for m, c in enumerate(node.children):
                vec = [0] * self.cols
                if m == 0:
                    vec[: len(v)] = v
                    vec[base] = 1
                else:
                    vec[base + m - 1] = -1
                    if m < k - 1:
                        vec[base + m] = 1
                self.build(c, vec)
            return
        assert isinstance(node, Threshold)
        base = self.cols
        self.cols += node.k - 1
        for j, c in enumerate(node.children, start=1):
            vec = [0] * self.cols
            vec[: len(v)] = v
            for e in range(1, node.k):
                vec[base + e - 1] = j**e
            self.build(c, vec)


def _lagrange_at_zero(xs: list[int], modulus: int) -> list[int]:
    out = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * (-xj) % modulus
                den = den * (xi - xj) % modulus
        out.append(num * pow(den, -1, modulus) % modulus)
    return out


@dataclass(frozen=True)
class _Plan:
    """Rows used and their coefficients (as a dict row → coeff, not yet reduced)."""

    coeffs: dict[int, int]


@dataclass(frozen=True, eq=False)
class CompiledPolicy:
    source: str
    normal_form: str
    matrix: tuple[tuple[int, ...], ...]
    row_labels: tuple[str, ...]
    tree: Node  # expanded tree whose leaves, left to right, are the rows

    def satisfied_by(self, labels: AbstractSet[str]) -> bool:
        return _satisfied(self.tree, labels)

    def reconstruction(self, labels: AbstractSet[str], modulus: int) -> dict[int, int] | None:
        counter = [0]
        plan = _reconstruct(self.tree, labels, modulus, counter)
        if plan is None:
            return None
        return {row: c % modulus for row, c in plan[1].items()}


def _satisfied(node: Node, labels: AbstractSet[str]) -> bool:
    if isinstance(node, Attr):
        return node.label in labels
    if isinstance(node, And):
        return all(_satisfied(c, labels) for c in node.children)
    if isinstance(node, Or):
        return any(_satisfied(c, labels) for c in node.children)
    if isinstance(node, Threshold):
        return sum(_satisfied(c, labels) for c in node.children) >= node.k
    raise AssertionError(node)


def _count_leaves(node: Node) -> int:
    if isinstance(node, Attr):
        return 1
    if isinstance(node, Compare):
        raise AssertionError("comparisons are expanded before compilation")
    return sum(_count_leaves(c) for c in node.children)


def _reconstruct(
    node: Node, labels: AbstractSet[str], modulus: int, counter: list[int]
) -> tuple[int, dict[int, int]] | None:
    """(number of rows used, row → coefficient) reconstructing this node's vector,
    or None. `counter` numbers the leaves left to right (the MSP's rows)."""
    if isinstance(node, Attr):
        row = counter[0]
        counter[0] += 1
        return (1, {row: 1}) if node.label in labels else None
    kids = [_reconstruct(c, labels, modulus, counter) for c in node.children]
    if isinstance(node, Or):
        ok = [k for k in kids if k is not None]
        return min(ok, key=lambda k: k[0]) if ok else None
    if isinstance(node, And):
        if any(k is None for k in kids):
            return None
        merged: dict[int, int] = {}
        for k in kids:
            assert k is not None
            merged.update(k[1])
        return len(merged), merged
    assert isinstance(node, Threshold)
    ok = sorted(((k[0], j) for j, k in enumerate(kids, start=1) if k is not None))
    if len(ok) < node.k:
        return None
    chosen = [j for _, j in ok[: node.k]]
    lam = _lagrange_at_zero(chosen, modulus)
    merged = {}
    for j, lj in zip(chosen, lam, strict=True):
        sub = kids[j - 1]
        assert sub is not None
        for row, c in sub[1].items():
            merged[row] = c * lj % modulus
    return len(merged), merged


def compile_policy(text: str) -> CompiledPolicy:
    tree = normalize(parse(text))
    nf = render(tree)
    expanded = expand(tree, text)
    if _count_leaves(expanded) > MAX_LEAVES:
        raise PolicyError(f"the policy has more than {MAX_LEAVES} leaves after expansion")
    b = _Builder()
    b.build(expanded, [1])
    matrix = tuple(tuple(r + [0] * (b.cols - len(r))) for r in b.rows)
    return CompiledPolicy(text, nf, matrix, tuple(b.labels), expanded)


def normal_form(text_or_node: str | Node) -> str:
    node = parse(text_or_node) if isinstance(text_or_node, str) else text_or_node
    return render(normalize(node))


def attributes(text_or_node: str | Node) -> tuple[str, ...]:
    node = parse(text_or_node) if isinstance(text_or_node, str) else text_or_node
    return tuple(sorted(mentioned(node)))


# -- key side -------------------------------------------------------------------------
def parse_attribute(s: str) -> tuple[str, str | int | None]:
    """One key attribute: `name`, `name:value` or `name=integer`."""
    if not isinstance(s, str) or not s:
        raise PolicyError("an attribute must be non-empty text")
    text = s.strip()
    if "=" in text:
        name, _, num = text.partition("=")
        name, num = name.strip(), num.strip()
        if not _NAME_RE.fullmatch(name):
            raise PolicyError(f"invalid attribute name {name!r}")
        if not num.isdigit():
            raise PolicyError(f"attribute {text!r}: integer attributes take a non-negative integer")
        value = int(num)
        if value > INT_MAX:
            raise PolicyError(f"attribute {text!r}: {value} does not fit in {INT_BITS} bits")
        return name.lower(), value
    name, sep, val = text.partition(":")
    if not _NAME_RE.fullmatch(name):
        raise PolicyError(f"invalid attribute name {name!r}: letters, digits, '_', '.', '-'; not starting with a digit")
    if name.lower() in {"and", "or", "of", "not"}:
        raise PolicyError(f"{name!r} is a keyword, not an attribute name")
    if sep:
        if not _VALUE_RE.fullmatch(val):
            raise PolicyError(f"invalid attribute value {val!r}: letters, digits and _ . @ / + -")
        return name.lower(), val
    return name.lower(), None


def _labels_for(name: str, value: str | int | None) -> list[str]:
    if isinstance(value, int):
        return [bit_label(name, i, (value >> i) & 1) for i in range(INT_BITS)]
    return [name if value is None else f"{name}:{value}"]


def expand_attributes(attrs: Iterable[str] | Mapping[str, str | int | bool]) -> frozenset[str]:
    """Key-side attribute labels, in the label space of CompiledPolicy.row_labels."""
    out: set[str] = set()
    if isinstance(attrs, Mapping):
        for name, value in attrs.items():
            if isinstance(value, bool):
                if value:
                    out.update(_labels_for(*parse_attribute(name)))
                continue
            if isinstance(value, int):
                out.update(_labels_for(*parse_attribute(f"{name}={value}")))
            else:
                out.update(_labels_for(*parse_attribute(f"{name}:{value}")))
        return frozenset(out)
    if isinstance(attrs, str):
        raise PolicyError("give a list of attributes, not a single string")
    for a in attrs:
        out.update(_labels_for(*parse_attribute(a)))
    return frozenset(out)
