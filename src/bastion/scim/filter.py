"""SCIM filters and PATCH paths (RFC 7644 §3.4.2.2, §3.5.2): a small recursive-descent
parser with a budget, and the evaluation of a filter over a resource's JSON.

A filter is tenant input: it is refused (`InvalidFilter`, a 400 `invalidFilter`) past
`MAX_LENGTH` characters, `MAX_DEPTH` levels of nesting or `MAX_NODES` expressions,
before any work proportional to them is done. Recursion is bounded by the depth budget,
so no input reaches Python's recursion limit.

    filter   = or
    or       = and *("or" and)
    and      = unary *("and" unary)
    unary    = "not" "(" filter ")" / "(" filter ")" / valuePath / attrExp
    valuePath= attrPath "[" filter "]" ["." subAttr (("pr") / (compareOp value))]
    attrExp  = attrPath "pr" / attrPath compareOp value
    path     = attrPath ["[" filter "]" ["." subAttr]]

Microsoft Entra sends `emails[type eq "work"].value eq "x"`: it reads as
`emails[type eq "work" and value eq "x"]`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

MAX_LENGTH = 2048
MAX_DEPTH = 16
MAX_NODES = 64

COMPARE_OPS = frozenset({"eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"})
_KEYWORDS = COMPARE_OPS | {"pr", "and", "or", "not"}

# Attribute names compared exactly (RFC 7643: caseExact true); every other string
# attribute compares without regard to letter case.
CASE_EXACT = frozenset({"id", "externalid", "members.value", "groups.value"})


class InvalidFilter(ValueError):
    """A filter or path that does not parse, or exceeds the budget; the message names no
    input (it may be anything)."""


class InvalidPath(InvalidFilter):
    pass


@dataclass(frozen=True)
class AttrPath:
    """`urn` (an extension schema's URN, or "" for the resource's core schema) and the
    attribute names below it, e.g. ("name", "givenName")."""

    urn: str
    names: tuple[str, ...]

    @property
    def dotted(self) -> str:
        return ".".join(self.names).lower()


@dataclass(frozen=True)
class Compare:
    path: AttrPath
    op: str
    value: Any


@dataclass(frozen=True)
class Present:
    path: AttrPath


@dataclass(frozen=True)
class Logical:
    op: str  # "and" | "or"
    left: Node
    right: Node


@dataclass(frozen=True)
class Not:
    inner: Node


@dataclass(frozen=True)
class ValuePath:
    path: AttrPath
    inner: Node  # over the elements of the multi-valued attribute


Node = Compare | Present | Logical | Not | ValuePath


@dataclass(frozen=True)
class PatchPath:
    path: AttrPath
    filter: Node | None = None
    sub: str | None = None


_TOKEN = re.compile(
    r"""
    \s*(?:
      (?P<lpar>\() | (?P<rpar>\)) | (?P<lbr>\[) | (?P<rbr>\]) |
      (?P<string>"(?:[^"\\]|\\.)*") |
      (?P<squoted>'[^'\\]*') |
      (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?![\w.]) |
      (?P<word>(?:urn:[A-Za-z0-9:._-]+|[A-Za-z$][\w$-]*(?:\.[A-Za-z$][\w$-]*)*))
    )
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str


def _tokens(text: str) -> list[_Tok]:
    if len(text) > MAX_LENGTH:
        raise InvalidFilter(f"is longer than {MAX_LENGTH} characters")
    out: list[_Tok] = []
    pos, end = 0, len(text.rstrip())
    while pos < end:
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise InvalidFilter(f"cannot be read at character {pos + 1}")
        kind = m.lastgroup or ""
        out.append(_Tok(kind, m.group(kind)))
        pos = m.end()
        if text[pos : pos + 1] == "." and kind == "rbr":
            # "]." introduces a sub-attribute: a word follows
            m2 = re.compile(r"\.([A-Za-z$][\w$-]*)").match(text, pos)
            if m2 is None:
                raise InvalidFilter(f"cannot be read at character {pos + 1}")
            out.append(_Tok("sub", m2.group(1)))
            pos = m2.end()
    return out


def split_attr(word: str, core_urn: str) -> AttrPath:
    """`urn:…:User:name.givenName` → (URN, names); the core schema's URN is dropped."""
    urn = ""
    rest = word
    if word.lower().startswith("urn:"):
        urn, sep, rest = word.rpartition(":")
        if not sep or not rest:
            raise InvalidFilter("names a schema but no attribute")
        if urn.lower() == core_urn.lower():
            urn = ""
    names = tuple(rest.split("."))
    if not all(names) or len(names) > 3:
        raise InvalidFilter("has a malformed attribute path")
    return AttrPath(urn, names)


class _Parser:
    def __init__(self, text: str, core_urn: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.nodes = 0
        self.core_urn = core_urn

    def _peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _next(self) -> _Tok:
        tok = self._peek()
        if tok is None:
            raise InvalidFilter("ends too early")
        self.i += 1
        return tok

    def _keyword(self, word: str) -> bool:
        tok = self._peek()
        if tok is not None and tok.kind == "word" and tok.text.lower() == word:
            self.i += 1
            return True
        return False

    def _expect(self, kind: str) -> _Tok:
        tok = self._next()
        if tok.kind != kind:
            raise InvalidFilter(f"expected {'a ' + kind if kind != 'rpar' else ')'} here")
        return tok

    def _count(self) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise InvalidFilter(f"has more than {MAX_NODES} expressions")

    def parse(self) -> Node:
        node = self._or(0, inside=False)
        if self._peek() is not None:
            raise InvalidFilter("has text after the end of the expression")
        return node

    def _or(self, depth: int, inside: bool) -> Node:
        if depth > MAX_DEPTH:
            raise InvalidFilter(f"nests deeper than {MAX_DEPTH} levels")
        node = self._and(depth, inside)
        while self._keyword("or"):
            self._count()
            node = Logical("or", node, self._and(depth, inside))
        return node

    def _and(self, depth: int, inside: bool) -> Node:
        node = self._unary(depth, inside)
        while self._keyword("and"):
            self._count()
            node = Logical("and", node, self._unary(depth, inside))
        return node

    def _unary(self, depth: int, inside: bool) -> Node:
        self._count()
        tok = self._next()
        if tok.kind == "word" and tok.text.lower() == "not":
            self._expect("lpar")
            inner = self._or(depth + 1, inside)
            self._expect("rpar")
            return Not(inner)
        if tok.kind == "lpar":
            inner = self._or(depth + 1, inside)
            self._expect("rpar")
            return inner
        if tok.kind != "word" or tok.text.lower() in _KEYWORDS:
            raise InvalidFilter("expected an attribute name here")
        path = split_attr(tok.text, self.core_urn)
        nxt = self._peek()
        if nxt is not None and nxt.kind == "lbr":
            if inside:
                raise InvalidFilter("nests a value filter inside another")
            self.i += 1
            inner = self._or(depth + 1, inside=True)
            self._expect("rbr")
            sub = self._peek()
            if sub is not None and sub.kind == "sub":  # Entra: emails[type eq "work"].value eq "x"
                self.i += 1
                cond = self._attr_exp(AttrPath("", (sub.text,)))
                inner = Logical("and", inner, cond)
            return ValuePath(path, inner)
        return self._attr_exp(path)

    def _attr_exp(self, path: AttrPath) -> Node:
        op_tok = self._next()
        op = op_tok.text.lower() if op_tok.kind == "word" else ""
        if op == "pr":
            return Present(path)
        if op not in COMPARE_OPS:
            raise InvalidFilter(
                "expected a comparison operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr)"
            )
        return Compare(path, op, self._value())

    def _value(self) -> Any:
        tok = self._next()
        if tok.kind == "string":
            try:
                return json.loads(tok.text)
            except ValueError:
                raise InvalidFilter("has a malformed string") from None
        if tok.kind == "squoted":  # not RFC 7644, but some Entra paths quote so
            return tok.text[1:-1]
        if tok.kind == "number":
            return json.loads(tok.text)
        if tok.kind == "word" and tok.text.lower() in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[tok.text.lower()]
        raise InvalidFilter("expected a value (a quoted string, a number, true, false or null)")


def parse_filter(text: str, core_urn: str = "") -> Node:
    if not text.strip():
        raise InvalidFilter("is empty")
    return _Parser(text, core_urn).parse()


def parse_path(text: str, core_urn: str = "") -> PatchPath:
    """A PATCH operation's `path`: `attr`, `attr.sub`, `urn:…:attr`, `attr[filter]`,
    `attr[filter].sub`."""
    try:
        p = _Parser(text, core_urn)
        first = p._next()
        if first.kind != "word" or first.text.lower() in _KEYWORDS:
            raise InvalidPath("does not start with an attribute name")
        path = split_attr(first.text, core_urn)
        node: Node | None = None
        sub: str | None = None
        if p._peek() is not None:
            p._expect("lbr")
            node = p._or(1, inside=True)
            p._expect("rbr")
            nxt = p._peek()
            if nxt is not None:
                if nxt.kind != "sub":
                    raise InvalidPath("has text after the end of the path")
                p.i += 1
                sub = nxt.text
            if p._peek() is not None:
                raise InvalidPath("has text after the end of the path")
        return PatchPath(path, node, sub)
    except InvalidPath:
        raise
    except InvalidFilter as exc:
        raise InvalidPath(str(exc)) from None


# --- evaluation over a resource's JSON ------------------------------------------------


def _get(obj: Any, name: str) -> Any:
    """A member of a JSON object, its name compared without regard to case."""
    if not isinstance(obj, dict):
        return None
    if name in obj:
        return obj[name]
    lowered = name.lower()
    for key, value in obj.items():
        if key.lower() == lowered:
            return value
    return None


def values_at(resource: dict[str, Any], path: AttrPath) -> list[Any]:
    """Every value the path reaches, multi-valued attributes flattened. A path ending at a
    multi-valued complex attribute reaches its elements' `value`."""
    current: list[Any] = [resource if not path.urn else _get(resource, path.urn)]
    for name in path.names:
        nxt: list[Any] = []
        for item in current:
            got = _get(item, name)
            if isinstance(got, list):
                nxt.extend(got)
            elif got is not None:
                nxt.append(got)
        current = nxt
    out: list[Any] = []
    for item in current:
        if isinstance(item, dict):
            value = _get(item, "value")
            out.append(value if value is not None else item)  # a complex value: itself
        else:
            out.append(item)
    return out


def _fold(value: Any, exact: bool) -> Any:
    return value.lower() if isinstance(value, str) and not exact else value


def _compare(actual: Any, op: str, expected: Any, exact: bool) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool) or expected is None:
        if op == "eq":
            return bool(actual == expected)
        if op == "ne":
            return bool(actual != expected)
        return False
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        a_num, e_num = actual, expected
        return {
            "eq": a_num == e_num,
            "ne": a_num != e_num,
            "gt": a_num > e_num,
            "ge": a_num >= e_num,
            "lt": a_num < e_num,
            "le": a_num <= e_num,
        }.get(op, False)
    if not isinstance(actual, str) or not isinstance(expected, str):
        return op == "ne"
    a, e = _fold(actual, exact), _fold(expected, exact)
    if op == "eq":
        return bool(a == e)
    if op == "ne":
        return bool(a != e)
    if op == "co":
        return bool(e in a)
    if op == "sw":
        return bool(a.startswith(e))
    if op == "ew":
        return bool(a.endswith(e))
    return bool({"gt": a > e, "ge": a >= e, "lt": a < e, "le": a <= e}[op])


def matches(node: Node, resource: dict[str, Any]) -> bool:
    if isinstance(node, Logical):
        if node.op == "and":
            return matches(node.left, resource) and matches(node.right, resource)
        return matches(node.left, resource) or matches(node.right, resource)
    if isinstance(node, Not):
        return not matches(node.inner, resource)
    if isinstance(node, Present):
        return any(v not in (None, "", [], {}) for v in values_at(resource, node.path))
    if isinstance(node, ValuePath):
        elements = _get(
            resource if not node.path.urn else _get(resource, node.path.urn), node.path.names[0]
        )
        for name in node.path.names[1:]:
            elements = _get(elements, name)
        if isinstance(elements, dict):
            elements = [elements]
        return isinstance(elements, list) and any(
            isinstance(el, dict) and matches(node.inner, el) for el in elements
        )
    found = values_at(resource, node.path)
    exact = node.path.dotted in CASE_EXACT
    if node.op == "ne":
        return not any(_compare(v, "eq", node.value, exact) for v in found)
    return any(_compare(v, node.op, node.value, exact) for v in found)
