"""The policy language: tokenizer, parser, AST and normal form (grammar: POLICY_LANGUAGE.md).

    policy     = or_expr ;
    or_expr    = and_expr , { "or" , and_expr } ;
    and_expr   = primary , { "and" , primary } ;
    primary    = "(" , or_expr , ")" | threshold | comparison | attribute ;
    threshold  = INT , "of" , "(" , or_expr , { "," , or_expr } , ")" ;
    comparison = NAME , ( ">=" | ">" | "<=" | "<" | "==" | "=" ) , INT ;
    attribute  = NAME , [ ":" , VALUE ] ;

Names are ASCII `[A-Za-z_][A-Za-z0-9_.-]*`, case-insensitive (lower-cased);
values `[A-Za-z0-9_.@/+-]+`, case-sensitive. Keywords are case-insensitive and
`and` binds tighter than `or`. Policies are monotone: `not`, `!`, `!=` are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

from ehr_common.errors import PolicyError

MAX_POLICY_CHARS = 8192
MAX_DEPTH = 32
MAX_LEAVES = 256
#: Longest attribute, as a key writes it (`name:value`, `name=4294967295`): a longer
#: one in a policy could never be matched, since keys refuse it.
MAX_ATTRIBUTE_CHARS = 256
INT_BITS = 32
INT_MAX = (1 << INT_BITS) - 1

#: A name, optionally qualified by its issuing authority for multi-authority
#: policies (`admin@hosp1`, `age@hosp1 >= 18`; a string attribute puts the
#: authority after its value: `role:doctor@hosp1`).
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*(?:@[A-Za-z0-9][A-Za-z0-9_.\-]*)?")
VALUE_RE = re.compile(r"[A-Za-z0-9_.@/+\-]+")
_INT_RE = re.compile(r"[0-9]+")
_MAX_INT_DIGITS = len(str(INT_MAX))
_MAX_INTEGER_NAME_CHARS = MAX_ATTRIBUTE_CHARS - 1 - _MAX_INT_DIGITS
KEYWORDS = frozenset({"and", "or", "of", "not"})
_NEGATION = "negation is not supported in monotone policies"
_ASCII_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_ASCII_DIGITS = frozenset("0123456789")


@dataclass(frozen=True)
class Attr:
    """A string attribute: `name` or `name:value`."""

    name: str
    value: str | None = None

    @property
    def label(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True)
class Compare:
    """An integer comparison `name op value`; op is one of >=, >, <=, <, ==."""

    name: str
    op: str
    value: int


@dataclass(frozen=True)
class And:
    children: tuple[PolicyNode, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[PolicyNode, ...]


@dataclass(frozen=True)
class Threshold:
    """`k of (c1, ..., cn)`: at least k of the n children."""

    k: int
    children: tuple[PolicyNode, ...]


PolicyNode = Union[Attr, Compare, And, Or, Threshold]  # noqa: UP007 - runtime alias
Node = PolicyNode  # short alias kept for existing callers

COMPARISON_OPS = (">=", ">", "<=", "<", "==")


@dataclass(frozen=True)
class _Tok:
    kind: str  # name, value, int, op, lparen, rparen, comma, colon, kw, end
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c in "(),":
            toks.append(_Tok({"(": "lparen", ")": "rparen", ",": "comma"}[c], c, i))
            i += 1
        elif c == ":":
            toks.append(_Tok("colon", c, i))
            i += 1
            m = VALUE_RE.match(text, i)
            if not m:
                raise PolicyError(
                    "expected an attribute value after ':' (letters, digits and _ . @ / + -)",
                    position=i,
                    text=text,
                )
            toks.append(_Tok("value", m.group(), i))
            i = m.end()
        elif text.startswith(("!=", "<>"), i) or c == "!":
            raise PolicyError(f"'{text[i : i + 2]}': {_NEGATION}", position=i, text=text)
        elif text.startswith((">=", "<=", "=="), i):
            toks.append(_Tok("op", text[i : i + 2], i))
            i += 2
        elif c in "<>=":
            toks.append(_Tok("op", "==" if c == "=" else c, i))
            i += 1
        elif c in _ASCII_DIGITS:
            m = _INT_RE.match(text, i)
            assert m is not None  # c is a digit
            end = m.end()
            glued = NAME_RE.match(text, end)
            if glued and glued.group().lower() != "of":  # `2of(a, b)` is fine, `1abc` is not
                raise PolicyError(
                    "an attribute name cannot start with a digit", position=i, text=text
                )
            toks.append(_Tok("int", m.group(), i))
            i = end
        elif c in _ASCII_LETTERS:
            m = NAME_RE.match(text, i)
            assert m is not None  # c starts a name
            word = m.group()
            low = word.lower()
            if low == "not":
                raise PolicyError(f"'not': {_NEGATION}", position=i, text=text)
            toks.append(_Tok("kw" if low in KEYWORDS else "name", low, i))
            i = m.end()
        else:
            what = repr(c) if c.isprintable() else f"U+{ord(c):04X}"
            raise PolicyError(f"unexpected character {what}", position=i, text=text)
    toks.append(_Tok("end", "", n))
    return toks


def _to_int(tok: _Tok, text: str, what: str) -> int:
    # Checked before int(): refuses absurd digit strings without converting them.
    digits = tok.text.lstrip("0") or "0"
    if len(digits) > _MAX_INT_DIGITS or int(digits) > INT_MAX:
        raise PolicyError(
            f"{what} {tok.text} does not fit in {INT_BITS} bits (max {INT_MAX})",
            position=tok.pos,
            text=text,
        )
    return int(digits)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0
        self.leaves = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def error(self, message: str, tok: _Tok | None = None) -> PolicyError:
        t = tok or self.peek()
        return PolicyError(message, position=t.pos, text=self.text)

    def expect(self, kind: str, what: str) -> _Tok:
        t = self.peek()
        if t.kind != kind:
            found = "the end of the policy" if t.kind == "end" else repr(t.text)
            raise self.error(f"expected {what}, found {found}")
        return self.take()

    def parse(self) -> PolicyNode:
        if self.peek().kind == "end":
            raise PolicyError("the policy is empty")
        node = self.or_expr()
        t = self.peek()
        if t.kind == "rparen":
            raise self.error("unbalanced ')'")
        if t.kind != "end":
            raise self.error(f"expected 'and', 'or' or the end of the policy, found {t.text!r}")
        return node

    def or_expr(self) -> PolicyNode:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"the policy nests deeper than {MAX_DEPTH} levels")
        children = [self.and_expr()]
        while self.peek().kind == "kw" and self.peek().text == "or":
            self.take()
            children.append(self.and_expr())
        self.depth -= 1
        return children[0] if len(children) == 1 else Or(tuple(children))

    def and_expr(self) -> PolicyNode:
        children = [self.primary()]
        while self.peek().kind == "kw" and self.peek().text == "and":
            self.take()
            children.append(self.primary())
        return children[0] if len(children) == 1 else And(tuple(children))

    def leaf(self, tok: _Tok) -> None:
        self.leaves += 1
        if self.leaves > MAX_LEAVES:
            raise self.error(f"the policy has more than {MAX_LEAVES} attributes", tok)

    def primary(self) -> PolicyNode:
        t = self.peek()
        if t.kind == "lparen":
            self.take()
            node = self.or_expr()
            self.expect("rparen", "')'")
            return node
        if t.kind == "int":
            return self.threshold()
        if t.kind == "name":
            self.take()
            self.leaf(t)
            nxt = self.peek()
            if nxt.kind == "colon":
                if "@" in t.text:
                    raise self.error(
                        "the authority goes after the value: write `role:doctor@hosp1`", t
                    )
                self.take()
                attr = Attr(t.text, self.expect("value", "an attribute value").text)
                if len(attr.label) > MAX_ATTRIBUTE_CHARS:
                    raise self.error(
                        f"the attribute is longer than {MAX_ATTRIBUTE_CHARS} characters", t
                    )
                return attr
            if nxt.kind == "op":
                # room for the key's `name=4294967295`
                if len(t.text) > _MAX_INTEGER_NAME_CHARS:
                    raise self.error(
                        f"an integer attribute name is longer than {_MAX_INTEGER_NAME_CHARS} characters",
                        t,
                    )
                self.take()
                num = self.expect("int", f"a non-negative integer after {nxt.text!r}")
                cmp = Compare(t.text, nxt.text, _to_int(num, self.text, "integer"))
                if cmp.op == "<" and cmp.value == 0:
                    raise self.error(
                        f"'{render(cmp)}' can never be satisfied: integers are non-negative", t
                    )
                if cmp.op == ">" and cmp.value == INT_MAX:
                    raise self.error(
                        f"'{render(cmp)}' can never be satisfied: {INT_BITS}-bit integers stop at {INT_MAX}",
                        t,
                    )
                return cmp
            if len(t.text) > MAX_ATTRIBUTE_CHARS:
                raise self.error(
                    f"the attribute is longer than {MAX_ATTRIBUTE_CHARS} characters", t
                )
            return Attr(t.text)
        if t.kind == "end":
            raise self.error("the policy ends where an attribute or '(' was expected")
        if t.kind == "kw":
            if t.text == "of":
                raise self.error("'of' needs a number before it (threshold gate: '2 of (a, b, c)')")
            raise self.error(f"'{t.text}' needs an attribute or '(' before it")
        if t.kind == "op":
            raise self.error(f"{t.text!r} needs an attribute name before it")
        raise self.error(f"expected an attribute, a number or '(', found {t.text!r}")

    def threshold(self) -> PolicyNode:
        num = self.take()
        kw = self.peek()
        if kw.kind != "kw" or kw.text != "of":
            raise self.error("expected 'of' after a number (threshold gate: '2 of (a, b, c)')")
        self.take()
        self.expect("lparen", "'(' after 'of'")
        children = [self.or_expr()]
        while self.peek().kind == "comma":
            self.take()
            children.append(self.or_expr())
        self.expect("rparen", "')' or ','")
        n = len(children)
        k = _to_int(num, self.text, "threshold")
        if not 1 <= k <= n:
            raise self.error(f"threshold {k} of {n} is impossible: need 1 <= k <= {n}", num)
        return Threshold(k, tuple(children))


def parse(text: str) -> PolicyNode:
    """Parse policy text into its AST, as written (no simplification).

    Raises PolicyError (with position and text where it helps) for any bad input."""
    if not isinstance(text, str):
        raise PolicyError("a policy must be text")
    if len(text) > MAX_POLICY_CHARS:
        raise PolicyError(f"the policy is longer than {MAX_POLICY_CHARS} characters")
    return _Parser(text).parse()


# -- normal form ------------------------------------------------------------------
def normalize(node: PolicyNode) -> PolicyNode:
    """The canonical tree: `=` is `==`; `1 of` is `or`, `n of n` is `and`; nested
    and/or are flattened; and/or children are de-duplicated and sorted by their
    rendering; threshold children are sorted (never de-duplicated: that would
    change the count). Semantics are unchanged."""
    if isinstance(node, Attr | Compare):
        return node
    kids = [normalize(c) for c in node.children]
    if isinstance(node, Threshold):
        if node.k == 1:
            return normalize(Or(tuple(kids)))
        if node.k == len(kids):
            return normalize(And(tuple(kids)))
        return Threshold(node.k, tuple(sorted(kids, key=render)))
    kind = type(node)
    flat: list[PolicyNode] = []
    for c in kids:
        flat.extend(c.children if isinstance(c, kind) else (c,))
    unique = {render(c): c for c in flat}
    children = tuple(unique[key] for key in sorted(unique))
    return children[0] if len(children) == 1 else kind(children)


def render(node: PolicyNode) -> str:
    """Policy text for a tree. Parentheses only where needed, except that an `and`
    group inside `or` is always parenthesised, for human readers."""
    if isinstance(node, Attr):
        return node.label
    if isinstance(node, Compare):
        return f"{node.name} {node.op} {node.value}"
    if isinstance(node, And):
        return " and ".join(
            f"({render(c)})" if isinstance(c, Or) else render(c) for c in node.children
        )
    if isinstance(node, Or):
        return " or ".join(
            f"({render(c)})" if isinstance(c, And) else render(c) for c in node.children
        )
    return f"{node.k} of (" + ", ".join(render(c) for c in node.children) + ")"


def mentioned(node: PolicyNode) -> set[str]:
    """User-facing attributes: labels for string attributes, names for integers."""
    if isinstance(node, Attr):
        return {node.label}
    if isinstance(node, Compare):
        return {node.name}
    out: set[str] = set()
    for c in node.children:
        out |= mentioned(c)
    return out
