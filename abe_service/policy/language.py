"""The policy language: tokenizer, parser, AST and normal form.

    policy     := or_expr
    or_expr    := and_expr ( "or" and_expr )*
    and_expr   := primary ( "and" primary )*
    primary    := "(" or_expr ")" | threshold | comparison | attribute
    threshold  := INT "of" "(" or_expr ( "," or_expr )* ")"
    comparison := NAME ( ">=" | ">" | "<=" | "<" | "==" | "=" ) INT
    attribute  := NAME [ ":" VALUE ]
    NAME       := [A-Za-z_][A-Za-z0-9_.-]*        (case-insensitive: normalised to lower case)
    VALUE      := [A-Za-z0-9_.@/+-]+              (case-sensitive)

Keywords (and, or, of) are case-insensitive; `and` binds tighter than `or`.
Policies are monotone: negation (`not`, `!=`) is refused with a clear error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

from ehr_abe.errors import PolicyError

MAX_POLICY_CHARS = 8192
MAX_DEPTH = 64
INT_BITS = 32
INT_MAX = (1 << INT_BITS) - 1

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_VALUE_RE = re.compile(r"[A-Za-z0-9_.@/+\-]+")
_INT_RE = re.compile(r"[0-9]+")
_KEYWORDS = {"and", "or", "of"}
_UNSUPPORTED = {"not": "negation ('not') is not supported: policies are monotone"}


@dataclass(frozen=True)
class Attr:
    name: str
    value: str | None = None

    @property
    def label(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True)
class Compare:
    name: str
    op: str  # one of >=, >, <=, <, ==
    value: int


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Threshold:
    k: int
    children: tuple[Node, ...]


Node = Union[Attr, Compare, And, Or, Threshold]  # noqa: UP007 - runtime alias


@dataclass(frozen=True)
class _Tok:
    kind: str  # name, int, op, lparen, rparen, comma, colon, kw, end
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c == "(":
            toks.append(_Tok("lparen", c, i))
            i += 1
        elif c == ")":
            toks.append(_Tok("rparen", c, i))
            i += 1
        elif c == ",":
            toks.append(_Tok("comma", c, i))
            i += 1
        elif c == ":":
            toks.append(_Tok("colon", c, i))
            i += 1
            m = _VALUE_RE.match(text, i)
            if not m:
                raise PolicyError("expected an attribute value after ':'", position=i, text=text)
            toks.append(_Tok("value", m.group(), i))
            i = m.end()
        elif text.startswith(("!=", "<>"), i):
            raise PolicyError("'!=' is not supported: policies are monotone (no negation)", position=i, text=text)
        elif text.startswith((">=", "<=", "=="), i):
            toks.append(_Tok("op", text[i : i + 2], i))
            i += 2
        elif c in "<>=":
            toks.append(_Tok("op", "==" if c == "=" else c, i))
            i += 1
        elif c == "!":
            raise PolicyError("'!' (negation) is not supported: policies are monotone", position=i, text=text)
        elif c.isdigit():
            m = _INT_RE.match(text, i)
            assert m
            end = m.end()
            if end < n and (text[end].isalpha() or text[end] == "_"):
                raise PolicyError("an attribute name cannot start with a digit", position=i, text=text)
            toks.append(_Tok("int", m.group(), i))
            i = end
        elif c.isalpha() or c == "_":
            m = _NAME_RE.match(text, i)
            assert m
            word = m.group()
            low = word.lower()
            if low in _UNSUPPORTED:
                raise PolicyError(_UNSUPPORTED[low], position=i, text=text)
            toks.append(_Tok("kw" if low in _KEYWORDS else "name", low if low in _KEYWORDS else word, i))
            i = m.end()
        else:
            raise PolicyError(f"unexpected character {c!r}", position=i, text=text)
    toks.append(_Tok("end", "", n))
    return toks


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

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

    def parse(self) -> Node:
        if not self.text.strip():
            raise PolicyError("the policy is empty")
        node = self.or_expr()
        t = self.peek()
        if t.kind != "end":
            if t.kind == "rparen":
                raise self.error("unbalanced ')'")
            raise self.error(f"expected 'and', 'or' or the end of the policy, found {t.text!r}")
        return node

    def or_expr(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"the policy nests deeper than {MAX_DEPTH} levels")
        children = [self.and_expr()]
        while self.peek().kind == "kw" and self.peek().text == "or":
            self.take()
            children.append(self.and_expr())
        self.depth -= 1
        return children[0] if len(children) == 1 else Or(tuple(children))

    def and_expr(self) -> Node:
        children = [self.primary()]
        while self.peek().kind == "kw" and self.peek().text == "and":
            self.take()
            children.append(self.primary())
        return children[0] if len(children) == 1 else And(tuple(children))

    def primary(self) -> Node:
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
            name = t.text.lower()
            nxt = self.peek()
            if nxt.kind == "colon":
                self.take()
                value = self.expect("value", "an attribute value")
                return Attr(name, value.text)
            if nxt.kind == "op":
                self.take()
                num = self.expect("int", f"a non-negative integer after {nxt.text!r}")
                value = int(num.text)
                if value > INT_MAX:
                    raise self.error(f"integer {value} does not fit in {INT_BITS} bits", num)
                return Compare(name, nxt.text, value)
            return Attr(name)
        if t.kind == "end":
            raise self.error("the policy ends where an attribute or '(' was expected")
        if t.kind == "kw":
            raise self.error(f"'{t.text}' needs an attribute or '(' before it" if t.text != "of" else "'of' needs a number before it")
        raise self.error(f"expected an attribute, a number or '(', found {t.text!r}")

    def threshold(self) -> Node:
        num = self.take()
        k = int(num.text)
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
        if not 1 <= k <= len(children):
            raise self.error(f"threshold {k} of {len(children)} is impossible: need 1 ≤ k ≤ {len(children)}", num)
        if k == 1:
            return children[0] if len(children) == 1 else Or(tuple(children))
        if k == len(children):
            return And(tuple(children))
        return Threshold(k, tuple(children))


def parse(text: str) -> Node:
    if not isinstance(text, str):
        raise PolicyError("a policy must be text")
    if len(text) > MAX_POLICY_CHARS:
        raise PolicyError(f"the policy is longer than {MAX_POLICY_CHARS} characters")
    return _Parser(text).parse()


# -- normal form ------------------------------------------------------------------
def _flatten(node: Node) -> Node:
    if isinstance(node, And | Or):
        kind = type(node)
        out: list[Node] = []
        for c in node.children:
            c = _flatten(c)
            if isinstance(c, kind):
                out.extend(c.children)
            else:
                out.append(c)
        # sort and de-duplicate: and/or are commutative and idempotent
        unique = {render(c): c for c in out}
        children = tuple(unique[k] for k in sorted(unique))
        return children[0] if len(children) == 1 else kind(children)
    if isinstance(node, Threshold):
        kids = tuple(sorted((_flatten(c) for c in node.children), key=render))
        return Threshold(node.k, kids)
    return node


def normalize(node: Node) -> Node:
    return _flatten(node)


def render(node: Node) -> str:
    if isinstance(node, Attr):
        return node.label
    if isinstance(node, Compare):
        return f"{node.name} {node.op} {node.value}"
    if isinstance(node, And):
        return " and ".join(f"({render(c)})" if isinstance(c, Or) else render(c) for c in node.children)
    if isinstance(node, Or):
        return " or ".join(f"({render(c)})" if isinstance(c, And) else render(c) for c in node.children)
    return f"{node.k} of (" + ", ".join(render(c) for c in node.children) + ")"


def mentioned(node: Node) -> set[str]:
    if isinstance(node, Attr):
        return {node.label}
    if isinstance(node, Compare):
        return {node.name}
    out: set[str] = set()
    for c in node.children:
        out |= mentioned(c)
    return out
