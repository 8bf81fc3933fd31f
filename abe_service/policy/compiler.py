"""Compiling policies to monotone span programs (MSPs) for FAME.

1. The policy is put in normal form (language.normalize); envelopes store that
   text, and compiling it again yields the identical MSP.
2. Integer comparisons become monotone formulas over key labels (integers.py).
3. The formula becomes an MSP with the Lewko-Waters construction, target vector
   (1, 0, ..., 0): an OR gate gives its vector to every child; an AND gate of n
   children adds n-1 columns, one child gets (v, 1), the next ones (0, -1, 1)
   chained, the last (0, ..., -1); a k-of-n gate adds k-1 columns and child j
   gets (v, j, j^2, ..., j^(k-1)), so its shares reconstruct by Lagrange at 0.
4. Reconstruction coefficients come from the tree (no elimination), choosing
   the fewest rows: decryption cost grows with the rows used.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from abe_service.policy.integers import (
    compile_comparison,
    compile_comparisons,
    integer_labels,
)
from abe_service.policy.language import (
    INT_BITS,
    INT_MAX,
    KEYWORDS,
    MAX_ATTRIBUTE_CHARS,
    MAX_POLICY_CHARS,
    NAME_RE,
    VALUE_RE,
    And,
    Attr,
    Compare,
    Or,
    PolicyNode,
    Threshold,
    mentioned,
    normalize,
    parse,
    render,
)
from ehr_common.errors import InvalidArgument, PolicyError

#: Most rows a compiled policy may have (each costs FAME three G1 elements and
#: multi-exponentiations at encryption).
MAX_ROWS = 1024
#: Most cells (rows x columns) of a span program: the matrix is held densely,
#: and the row bases cost one multi-scalar multiplication per row over its
#: non-zero cells. An `and` of the 256 attributes a policy may hold is 256 x 256.
MAX_SPAN_CELLS = 65536
#: Most non-zero cells: what encryption's row bases cost (six multi-scalar
#: multiplications per row, over its non-zero cells).
MAX_SPAN_NONZERO = 8192
#: Most children of a `k of (...)` gate (with 1 < k < n). Child j's row holds
#: j, j^2, ..., j^(k-1): the width bounds the k-1 columns and the size of those
#: entries (at most 64^62 < 2^372).
MAX_THRESHOLD_CHILDREN = 64
#: Total cells the compiled-policy cache may hold (at most ~24 MiB of matrices).
CACHE_MAX_CELLS = 1 << 20
CACHE_MAX_ENTRIES = 1024


# -- formula with row numbers ---------------------------------------------------------------
@dataclass(frozen=True)
class _Leaf:
    row: int
    label: str


@dataclass(frozen=True)
class _Gate:
    k: int  # children needed: 1 = or, len(children) = and
    children: tuple[_Leaf | _Gate, ...]
    leaves: int


_Formula = _Leaf | _Gate


def _expand(node: PolicyNode) -> PolicyNode:
    """Replace comparisons by formulas over key labels; keep the shape otherwise."""
    if isinstance(node, Attr):
        return node
    if isinstance(node, Compare):
        return compile_comparison(node)
    if isinstance(node, And):
        return And(_expand_conjunction(node.children))
    kids = tuple(_expand(c) for c in node.children)
    if isinstance(node, Or):
        return Or(kids)
    return Threshold(node.k, kids)


def _expand_conjunction(children: tuple[PolicyNode, ...]) -> tuple[PolicyNode, ...]:
    """Children of an `and`, with the comparisons on each integer attribute merged
    into one range (at the place of the first): fewer rows, no column, one row
    used at decryption."""
    by_name: dict[str, list[Compare]] = {}
    for c in children:
        if isinstance(c, Compare):
            by_name.setdefault(c.name, []).append(c)
    out: list[PolicyNode] = []
    for c in children:
        if not isinstance(c, Compare):
            out.append(_expand(c))
        elif by_name[c.name][0] is c:
            out.append(compile_comparisons(c.name, by_name[c.name]))
    return tuple(out)


def _number(node: PolicyNode, next_row: list[int]) -> _Formula:
    """Number leaves left to right (row i of the MSP is leaf i); flatten and/or
    nested by the comparison expansion."""
    if isinstance(node, Attr):
        row = next_row[0]
        if row >= MAX_ROWS:
            raise PolicyError(
                f"the policy needs more than {MAX_ROWS} span-program rows "
                "(integer comparisons cost up to 32 each): split it or simplify it"
            )
        next_row[0] += 1
        return _Leaf(row, node.label)
    assert not isinstance(node, Compare)  # expanded before numbering
    kids: list[_Formula] = []
    for c in node.children:
        sub = _number(c, next_row)
        same_kind = isinstance(sub, _Gate) and (
            (isinstance(node, Or) and sub.k == 1)
            or (isinstance(node, And) and sub.k == len(sub.children))
        )
        kids.extend(sub.children if same_kind and isinstance(sub, _Gate) else (sub,))
    k = 1 if isinstance(node, Or) else len(kids) if isinstance(node, And) else node.k
    leaves = sum(1 if isinstance(c, _Leaf) else c.leaves for c in kids)
    return _Gate(k, tuple(kids), leaves)


def _columns(f: _Formula) -> int:
    """Columns the Lewko-Waters construction gives f (with the first one), computed
    before any matrix is built, so an oversized policy costs nothing to refuse."""
    extra = 0
    stack: list[_Formula] = [f]
    while stack:
        g = stack.pop()
        if isinstance(g, _Gate):
            if g.k > 1 and g.k < len(g.children) and len(g.children) > MAX_THRESHOLD_CHILDREN:
                raise PolicyError(
                    f"a threshold gate has {len(g.children)} children, more than "
                    f"{MAX_THRESHOLD_CHILDREN}: split it into smaller gates"
                )
            extra += g.k - 1
            stack.extend(g.children)
    return 1 + extra


def _leaf_count(f: _Formula) -> int:
    return 1 if isinstance(f, _Leaf) else f.leaves


@dataclass
class _MspBuilder:
    rows: dict[int, list[int]] = field(default_factory=dict)
    columns: int = 1

    def build(self, f: _Formula, v: list[int]) -> None:
        if isinstance(f, _Leaf):
            self.rows[f.row] = v
            return
        n, k = len(f.children), f.k
        if k == 1:  # OR: every child gets the parent's vector
            for c in f.children:
                self.build(c, v)
        elif k == n:  # AND, Lewko-Waters; v goes to the smallest child (fewer nonzeros)
            base = self.columns
            self.columns += n - 1
            carrier = min(range(n), key=lambda j: _leaf_count(f.children[j]))
            order = [carrier, *(j for j in range(n) if j != carrier)]
            for pos, j in enumerate(order):
                vec = [0] * self.columns
                if pos == 0:
                    vec[: len(v)] = v
                else:
                    vec[base + pos - 1] = -1
                if pos < n - 1:
                    vec[base + pos] = 1
                self.build(f.children[j], vec)
        else:  # k of n: Vandermonde rows at the points 1..n
            base = self.columns
            self.columns += k - 1
            for j, c in enumerate(f.children, start=1):
                vec = [0] * self.columns
                vec[: len(v)] = v
                for e in range(1, k):
                    vec[base + e - 1] = j**e
                self.build(c, vec)


def _lagrange_at_zero(xs: list[int], modulus: int) -> list[int]:
    coefficients = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * -xj % modulus
                den = den * (xi - xj) % modulus
        coefficients.append(num * pow(den, -1, modulus) % modulus)
    return coefficients


def _satisfied(f: _Formula, labels: AbstractSet[str]) -> bool:
    if isinstance(f, _Leaf):
        return f.label in labels
    needed = f.k
    for c in f.children:
        if _satisfied(c, labels):
            needed -= 1
            if needed == 0:
                return True
    return False


def _reconstruct(f: _Formula, labels: AbstractSet[str], modulus: int) -> dict[int, int] | None:
    """Row -> coefficient with the fewest rows reconstructing f's vector, or None.

    Children are disjoint subtrees, so the fewest rows is the sum over the k
    cheapest satisfiable children (ties: leftmost), recursively."""
    if isinstance(f, _Leaf):
        return {f.row: 1} if f.label in labels else None
    solved: list[tuple[int, int, dict[int, int]]] = []
    for j, c in enumerate(f.children, start=1):
        sub = _reconstruct(c, labels, modulus)
        if sub is not None:
            solved.append((len(sub), j, sub))
        elif f.k == len(f.children):
            return None  # AND: one failure is enough
    if len(solved) < f.k:
        return None
    solved.sort(key=lambda t: (t[0], t[1]))
    chosen = solved[: f.k]
    if f.k == 1:
        return chosen[0][2]
    merged: dict[int, int] = {}
    if f.k == len(f.children):  # AND: the shares add up, coefficients 1
        for _, _, sub in chosen:
            merged.update(sub)
        return merged
    lam = _lagrange_at_zero([j for _, j, _ in chosen], modulus)
    for (_, _, sub), lj in zip(chosen, lam, strict=True):
        for row, coefficient in sub.items():
            merged[row] = coefficient * lj % modulus
    return merged


@dataclass(frozen=True, eq=False)
class CompiledPolicy:
    """A policy compiled to a monotone span program (M, rho).

    Row i of `matrix` belongs to the key label `row_labels[i]`; a label set
    satisfies the policy iff the rows it owns span (1, 0, ..., 0)."""

    source: str
    normal_form: str
    matrix: tuple[tuple[int, ...], ...]
    row_labels: tuple[str, ...]
    _formula: _Formula = field(repr=False)

    @property
    def rows(self) -> int:
        return len(self.matrix)

    @property
    def columns(self) -> int:
        return len(self.matrix[0]) if self.matrix else 0

    @property
    def nonzero_entries(self) -> int:
        return sum(1 for row in self.matrix for m in row if m)

    def satisfied_by(self, labels: AbstractSet[str]) -> bool:
        """Do these key labels (see expand_attributes) satisfy the policy?"""
        return _satisfied(self._formula, labels)

    def reconstruction(self, labels: AbstractSet[str], modulus: int) -> dict[int, int] | None:
        """Rows I and c_i (mod the prime `modulus`) with sum_i c_i * M_i = (1, 0, ..., 0),
        using the fewest rows; None if the labels do not satisfy the policy."""
        if modulus <= max(len(self.matrix), 2):
            raise InvalidArgument("reconstruction needs a prime modulus larger than the policy")
        return _reconstruct(self._formula, labels, modulus)


def _node(text_or_node: str | PolicyNode) -> PolicyNode:
    return parse(text_or_node) if isinstance(text_or_node, str) else text_or_node


def compile_policy(text: str) -> CompiledPolicy:
    """Parse, normalise and compile a policy. Raises PolicyError for bad policies."""
    tree = normalize(parse(text))
    formula = _number(_expand(tree), [0])
    rows, columns = _leaf_count(formula), _columns(formula)
    if rows * columns > MAX_SPAN_CELLS:
        raise PolicyError(
            f"the policy's span program would be {rows} rows x {columns} columns, more than "
            f"{MAX_SPAN_CELLS} cells: use fewer attributes under `and` and `k of` gates"
        )
    builder = _MspBuilder()
    builder.build(formula, [1])
    width = builder.columns
    matrix = tuple(
        tuple(builder.rows[i] + [0] * (width - len(builder.rows[i])))
        for i in range(len(builder.rows))
    )
    nonzero = sum(1 for row in matrix for m in row if m)
    if nonzero > MAX_SPAN_NONZERO:
        raise PolicyError(
            f"the policy's span program has {nonzero} non-zero entries, more than "
            f"{MAX_SPAN_NONZERO}: use smaller `k of` gates or fewer nested gates"
        )
    labels = _row_labels(formula, len(matrix))
    canonical = render(tree)
    if len(canonical) > MAX_POLICY_CHARS:
        # Envelopes store the normal form and decryption parses it again.
        raise PolicyError(
            f"the policy's normal form is longer than {MAX_POLICY_CHARS} characters: shorten it"
        )
    return CompiledPolicy(text, canonical, matrix, labels, formula)


class _SizedLru:
    """LRU of compiled policies bounded by entries AND by total span-program cells,
    so a stream of large policies cannot grow the cache without bound."""

    def __init__(self, max_entries: int, max_cells: int) -> None:
        self._items: OrderedDict[str, CompiledPolicy] = OrderedDict()
        self._cells = 0
        self._max_entries, self._max_cells = max_entries, max_cells
        self._lock = threading.Lock()

    @staticmethod
    def _weight(c: CompiledPolicy) -> int:
        return c.rows * max(c.columns, 1)

    def get(self, key: str) -> CompiledPolicy | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: str, value: CompiledPolicy) -> None:
        w = self._weight(value)
        if w > self._max_cells:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self._cells += w
            while len(self._items) > self._max_entries or self._cells > self._max_cells:
                _, old = self._items.popitem(last=False)
                self._cells -= self._weight(old)

    @property
    def cells(self) -> int:
        return self._cells

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._cells = 0


_CACHE = _SizedLru(CACHE_MAX_ENTRIES, CACHE_MAX_CELLS)


def compile_policy_cached(text: str) -> CompiledPolicy:
    """compile_policy, memoised in a cache bounded in entries and total cells
    (CACHE_MAX_ENTRIES, CACHE_MAX_CELLS). Errors are not cached."""
    hit = _CACHE.get(text)
    if hit is None:
        hit = compile_policy(text)
        _CACHE.put(text, hit)
    return hit


def compile_cache_cells() -> int:
    """Cells currently held by the compile cache (for tests and benchmarks)."""
    return _CACHE.cells


def _row_labels(f: _Formula, count: int) -> tuple[str, ...]:
    out = [""] * count
    stack: list[_Formula] = [f]
    while stack:
        g = stack.pop()
        if isinstance(g, _Leaf):
            out[g.row] = g.label
        else:
            stack.extend(g.children)
    return tuple(out)


def normal_form(text_or_node: str | PolicyNode) -> str:
    """Canonical policy text: lower-case keywords and names, `==` for `=`,
    flattened and de-duplicated and/or, children sorted, `1 of` as `or` and
    `n of n` as `and`. normal_form(normal_form(p)) == normal_form(p)."""
    return render(normalize(_node(text_or_node)))


def attributes(text_or_node: str | PolicyNode) -> tuple[str, ...]:
    """Sorted user-facing attributes a policy mentions: `role:doctor`, and for
    integer comparisons the name alone (`age`)."""
    return tuple(sorted(mentioned(_node(text_or_node))))


# -- key side -------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyAttribute:
    """One key attribute: `name` (value None), `name:value` (str) or `name=n` (int)."""

    name: str
    value: str | int | None = None

    def labels(self) -> list[str]:
        if isinstance(self.value, int):
            return integer_labels(self.name, self.value)
        return [self.name if self.value is None else f"{self.name}:{self.value}"]


def _check_name(name: str, whole: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise PolicyError(
            f"invalid attribute {whole!r}: a name is ASCII letters, digits, '_', '.', '-', "
            "not starting with a digit, '.' or '-'"
        )
    low = name.lower()
    if low in KEYWORDS:
        raise PolicyError(f"invalid attribute {whole!r}: {low!r} is a policy keyword")
    return low


def parse_attribute(s: str) -> KeyAttribute:
    """Validate one key attribute: `name`, `name:value` or `name=integer`
    (surrounding whitespace is ignored). Same grammar as policy attributes."""
    if not isinstance(s, str):
        raise PolicyError("an attribute must be text")
    text = s.strip()
    if not text:
        raise PolicyError("an attribute must not be empty")
    if len(text) > MAX_ATTRIBUTE_CHARS:
        raise PolicyError(f"an attribute is longer than {MAX_ATTRIBUTE_CHARS} characters")
    if "=" in text and ":" not in text.partition("=")[0]:
        name, _, number = text.partition("=")
        low = _check_name(name, text)
        if not number.isascii() or not number.isdigit():
            raise PolicyError(
                f"invalid attribute {text!r}: an integer attribute takes a non-negative integer"
            )
        digits = number.lstrip("0") or "0"
        if len(digits) > len(str(INT_MAX)) or int(digits) > INT_MAX:
            raise PolicyError(
                f"invalid attribute {text!r}: does not fit in {INT_BITS} bits (max {INT_MAX})"
            )
        return KeyAttribute(low, int(digits))
    name, colon, value = text.partition(":")
    if colon and "@" in name:
        raise PolicyError(
            f"invalid attribute {text!r}: the authority goes after the value (`role:doctor@hosp1`)"
        )
    low = _check_name(name, text)
    if not colon:
        return KeyAttribute(low)
    if not VALUE_RE.fullmatch(value):
        raise PolicyError(f"invalid attribute {text!r}: a value is letters, digits and _ . @ / + -")
    return KeyAttribute(low, value)


def expand_attributes(attrs: Iterable[str] | Mapping[str, str | int | bool]) -> frozenset[str]:
    """Key-side labels, in the label space of CompiledPolicy.row_labels.

    Accepts strings (`role:doctor`, `admin`, `age=42`) or a mapping
    ({"role": "doctor", "age": 42, "admin": True}; False omits the attribute).
    An integer attribute may have one value only (a key states one age, one
    clearance); see POLICY_LANGUAGE.md, "Integer comparisons"."""
    parsed: list[KeyAttribute] = []
    if isinstance(attrs, Mapping):
        for name, value in attrs.items():
            if not isinstance(name, str):
                raise PolicyError("attribute names must be text")
            if isinstance(value, bool):
                if value:
                    parsed.append(parse_attribute(name))
            elif isinstance(value, int):
                if (
                    not 0 <= value <= INT_MAX
                ):  # checked before formatting: huge ints cannot be printed
                    raise PolicyError(f"invalid attribute {name!r}: integers are 0 .. {INT_MAX}")
                parsed.append(parse_attribute(f"{name}={value}"))
            elif isinstance(value, str):
                parsed.append(parse_attribute(f"{name}:{value}"))
            else:
                raise PolicyError(f"attribute {name!r}: a value is text, an integer or a boolean")
    elif isinstance(attrs, str | bytes):
        raise PolicyError("give a list of attributes, not a single string")
    else:
        parsed = [parse_attribute(a) for a in attrs]
    integers: dict[str, int] = {}
    out: set[str] = set()
    for a in parsed:
        if isinstance(a.value, int) and integers.setdefault(a.name, a.value) != a.value:
            raise PolicyError(
                f"integer attribute {a.name!r} given two values ({integers[a.name]} and {a.value}); "
                "a key holds one value per integer attribute"
            )
        out.update(a.labels())
    return frozenset(out)
