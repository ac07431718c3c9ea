"""A recursive-descent parser of the CEL grammar the library accepts, which estimates a
condition's cost as it reads it and notes where each comprehension is, so that
`Parsed.program` can wrap every comprehension body in a call to the meter.

The library has no AST to walk, hence a parser of our own (see the package doc).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from bastion.authz.conditions.cost import CONTEXT, Est, _join, _node
from bastion.authz.conditions.errors import RuleError
from bastion.authz.conditions.limits import (
    CALL_STEPS,
    COPY_STEPS,
    MACROS,
    MATCH_STEPS,
    MAX_REPEAT,
    METER,
    RESET,
    UNICODE_CLASS_STEPS,
)
from bastion.authz.conditions.metering import Metered, _cel_compile

_TOKEN = re.compile(
    r"""(?P<space>\s+|//[^\n]*)
    |(?P<string>(?:[rR][bB]?|[bB][rR]?)?(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"
        |'(?:\\.|[^\\'\n])*'|"(?:\\.|[^\\"\n])*"))
    |(?P<number>0[xX][0-9a-fA-F]+[uU]?|\d+\.\d*(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+
        |\.\d+(?:[eE][+-]?\d+)?|\d+[uU]?)
    |(?P<name>[A-Za-z_][A-Za-z0-9_]*)
    |(?P<op>==|!=|<=|>=|&&|\|\||[-+*/%!<>?:.,()\[\]{}])""",
    re.VERBOSE | re.DOTALL,
)
_RELATIONS = frozenset({"==", "!=", "<", "<=", ">", ">=", "in"})


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    start: int
    end: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        found = _TOKEN.match(text, i)
        if found is None or found.lastgroup is None:
            raise RuleError(f"cannot read the condition at character {i}")
        if found.lastgroup != "space":
            tokens.append(_Token(found.lastgroup, found.group(), i, found.end()))
        i = found.end()
    tokens.append(_Token("end", "", len(text), len(text)))
    return tokens


@dataclass(frozen=True)
class _Meter:
    """Where a comprehension is, and what it charges: `upfront` (a CEL integer
    expression) once as it starts, when its range is a literal or a path (cheap to take
    the size of); else `steps` at each iteration (and for `map` and `filter`, `copied`
    times the elements built so far)."""

    start: int  # the comprehension's first character (its range's)
    body: tuple[int, int]  # the span of its first body
    end: int  # just after its closing parenthesis
    steps: int
    copied: int | None
    upfront: str | None


@dataclass(frozen=True)
class Parsed:
    est: Est
    widest: int  # the longest comprehension range
    meters: tuple[_Meter, ...]
    patterns: tuple[str, ...]  # what is wrong with the regular expressions, if anything

    def program(self, source: str) -> Metered:
        resets = any(m.copied is not None and m.upfront is None for m in self.meters)
        return Metered(source, _cel_compile(self.metered(source)), resets)

    def metered(self, source: str) -> str:
        """`source` with each comprehension body wrapped in a call to the meter (and a
        `map` or `filter` started by a reset of what it built), or, where it is charged
        upfront, the whole comprehension wrapped in the call."""
        edits: list[tuple[int, int, str]] = []  # (where, order among equal places, text)
        for site, m in enumerate(self.meters):
            if m.upfront is not None:
                edits.append((m.start, -2 * site - 1, f"({METER}({m.upfront}) ? ("))
                edits.append((m.end, 2 * site + 1, ") : false)"))
                continue
            call = f"{METER}({m.steps})"
            if m.copied is not None:
                call = f"{METER}({m.steps}, {site}, {m.copied})"
                edits.append((m.start, -2 * site - 1, f"({RESET}({site}) ? ("))
                edits.append((m.end, 2 * site + 1, ") : false)"))
            edits.append((m.body[0], -2 * site, f"{call} ? ("))
            edits.append((m.body[1], 2 * site, ") : false"))
        out = source
        for at, _order, text in sorted(edits, reverse=True):
            out = out[:at] + text + out[at:]
        return out


class _Parser:  # the CEL grammar (cel-spec's langdef.md), macros as the library has them
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.scope: list[tuple[str, Est]] = []
        self.meters: list[_Meter] = []
        self.patterns: list[str] = []
        self.widest = 0
        self.range: tuple[int, int] = (0, 0)  # the tokens of the target of a method called

    def parse(self) -> Parsed:
        est = self.expr()
        self.expect("end")
        return Parsed(est, self.widest, tuple(self.meters), tuple(self.patterns))

    # helpers
    def peek(self, offset: int = 0) -> _Token:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return token

    def accept(self, text: str) -> bool:
        if self.peek().text == text and self.peek().kind != "string":
            self.take()
            return True
        return False

    def expect(self, text: str) -> _Token:
        token = self.peek()
        if token.kind != text if text == "end" else token.text != text:
            raise RuleError(f"cannot read the condition at character {token.start}")
        return self.take()

    # the grammar
    def expr(self) -> Est:
        cond = self.binary(0)
        if not self.accept("?"):
            return cond
        yes = self.binary(0)
        self.expect(":")
        no = self.expr()
        cost, local, depth = _node(cond, extra=1)
        branch = _join([yes, no]) or yes
        return replace(
            branch,
            cost=cost + branch.cost,
            local=local + branch.local,
            depth=max(depth, branch.depth),
        )

    _LEVELS = (("||",), ("&&",), tuple(_RELATIONS), ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int) -> Est:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek().kind in ("op", "name") and self.peek().text in self._LEVELS[level]:
            op = self.take().text
            right = self.binary(level + 1)
            left = self.combine(op, left, right)
        return left

    @staticmethod
    def combine(op: str, left: Est, right: Est) -> Est:
        cost, local, depth = _node(left, right)
        if op == "+":  # strings and lists: a copy of both
            copy = left.weight + right.weight
            item = _join([e for e in (left.item, right.item) if e is not None])
            return Est(cost + copy, local + copy, left.length + right.length, copy, depth, item)
        if op in ("==", "!=", "<", "<=", ">", ">=", "in"):  # compares through
            touched = right.weight if op == "in" else min(left.weight, right.weight)
            return Est(cost + touched, local + touched, depth=depth)
        return Est(cost, local, depth=depth)

    def unary(self) -> Est:
        if self.peek().text in ("!", "-") and self.peek().kind == "op":
            self.take()
            inner = self.unary()
            return replace(inner, cost=inner.cost + 1, local=inner.local + 1)
        return self.member()

    def member(self) -> Est:
        first = self.i
        est = self.primary()
        while True:
            if self.accept("."):
                name = self.take()
                if name.kind != "name":
                    raise RuleError(f"cannot read the condition at character {name.start}")
                if self.peek().text == "(":
                    self.range = (first, self.i - 2)  # up to the dot
                    est = self.call(name.text, est)
                else:
                    cost, local, depth = _node(est)
                    est = replace(est.field(), cost=cost, local=local, depth=depth)
            elif self.accept("["):
                index = self.expr()
                self.expect("]")
                cost, local, depth = _node(est, index)
                est = replace(est.field(), cost=cost, local=local, depth=depth)
            else:
                return est

    def primary(self) -> Est:
        token = self.take()
        if token.kind == "number":
            return Est()
        if token.kind == "string":
            return Est(length=0, weight=1 + len(token.text) // 16, literal=token.text)
        if token.kind == "name":
            if token.text.startswith(METER):
                raise RuleError(f"{token.text} is a reserved name")
            if self.peek().text == "(":
                return self.call(token.text, None)
            for bound_name, bound in reversed(self.scope):
                if bound_name == token.text:
                    return replace(bound, cost=1, local=1, depth=0)
            return Est(weight=1) if token.text in ("true", "false", "null") else CONTEXT
        if token.text == ".":  # a leading dot: a name from the root scope
            name = self.take()
            if name.kind != "name":
                raise RuleError(f"cannot read the condition at character {name.start}")
            return CONTEXT
        if token.text == "(":
            inner = self.expr()
            self.expect(")")
            return inner
        if token.text == "[":
            items = self.items("]", pairs=False)
            return self.collection(items)
        if token.text == "{":
            items = self.items("}", pairs=True)
            return self.collection(items)
        raise RuleError(f"cannot read the condition at character {token.start}")

    def items(self, close: str, *, pairs: bool) -> list[Est]:
        out: list[Est] = []
        while not self.accept(close):
            key = self.expr()
            if pairs:
                self.expect(":")
                out.append(_join([key, self.expr()]) or key)
            else:
                out.append(key)
            if not self.accept(","):
                self.expect(close)
                break
        return out

    @staticmethod
    def collection(items: list[Est]) -> Est:
        cost, local, depth = _node(*items)
        weight = sum(e.weight for e in items) + 1
        return Est(cost, local, len(items), weight, depth, _join(items))

    def args(self) -> list[Est]:
        self.expect("(")
        return self.items(")", pairs=False)

    def call(self, name: str, target: Est | None) -> Est:
        if target is not None and name in MACROS:
            return self.comprehension(name, target)
        if target is None and name == "has":  # a presence test: nothing evaluated
            self.args()
            return Est(cost=2, local=2)
        args = self.args()
        parts = ([target] if target is not None else []) + args
        cost, local, depth = _node(*parts)
        touched = sum(p.weight for p in parts)
        if name == "matches" and args:
            touched += self.pattern(args[-1].literal)
        like = _join(parts) or Est()
        if name == "size" or name.startswith(("int", "uint", "double", "bool")):
            like = Est()
        return Est(cost + touched, local + touched, like.length, like.weight, depth, like.item)

    def pattern(self, literal: str | None) -> int:
        """The steps of compiling a pattern; what is wrong with it noted in `patterns`."""
        if literal is None:
            self.patterns.append("with a pattern that is not a string literal")
            return MATCH_STEPS
        wide = len(_UNICODE_CLASS.findall(literal))
        counted = _COUNTED.findall(literal)
        repeats = 1
        for low, high in counted:
            repeats *= max(int(low or 0), int(high or 0), 1)
        if wide and counted:  # \w{20}: 32 ms to compile, \w{100}: 0.44 s
            self.patterns.append(
                "with a counted repetition and a Unicode class (\\w, \\d, \\s, \\p):"
                " use an ASCII class such as [0-9]"
            )
        elif repeats > MAX_REPEAT:
            self.patterns.append(f"with counted repetitions of {repeats} (at most {MAX_REPEAT})")
        return MATCH_STEPS + wide * UNICODE_CLASS_STEPS + repeats

    def comprehension(self, name: str, over: Est) -> Est:
        over_tokens = self.tokens[self.range[0] : self.range[1]]
        self.expect("(")
        variable = self.take()
        if variable.kind != "name":
            raise RuleError(f"cannot read the condition at character {variable.start}")
        self.expect(",")
        self.scope.append((variable.text, over.element()))
        start = self.peek().start
        body = self.expr()
        end = self.tokens[self.i - 1].end
        bodies = [body]
        if name == "map" and self.accept(","):  # map(x, filter, transform)
            bodies.append(self.expr())
        self.scope.pop()
        self.expect(")")
        length = over.length
        self.widest = max(self.widest, length)
        steps = sum(b.local for b in bodies) + CALL_STEPS
        per_item = sum(b.cost for b in bodies) + CALL_STEPS
        cost = over.cost + 1 + length * per_item
        local = over.local + 1
        depth = max(over.depth, 1 + max(b.depth for b in bodies))
        first = over_tokens[0].start
        if name not in ("map", "filter"):
            upfront = self.upfront(over_tokens, length, steps, 0)
            self.meters.append(_Meter(first, (start, end), self.end(), steps, None, upfront))
            return Est(cost, local, depth=depth)
        made = bodies[-1] if name == "map" else over.element()
        copied = COPY_STEPS * made.weight
        upfront = self.upfront(over_tokens, length, steps, copied)
        self.meters.append(_Meter(first, (start, end), self.end(), steps, copied, upfront))
        cost += copied * length * (length - 1) // 2
        if name == "map":
            return Est(cost, local, length, 1 + length * made.weight, depth, made)
        return Est(cost, local, length, over.weight, depth, over.item)

    def upfront(self, over: list[_Token], length: int, steps: int, copied: int) -> str | None:
        """What a comprehension over `over` costs in all, as a CEL integer expression:
        its estimate when `over` holds only literals (an upper bound then), the size of
        `over` when it is a path (`resource.metadata.tags`: cheap to evaluate twice);
        None otherwise (charged at each iteration)."""
        if all(t.kind != "name" or t.text in _LITERAL_NAMES for t in over) and not any(
            t.text == "(" and t.kind == "op" for t in over
        ):
            return str(steps * length + copied * length * (length - 1) // 2)
        if all(t.kind == "name" or t.text == "." for t in over):
            size = f"size({self.text[over[0].start : over[-1].end]})"
            if copied:
                return f"{steps} * {size} + {copied} * {size} * ({size} - 1) / 2"
            return f"{steps} * {size}"
        return None

    def end(self) -> int:
        """Just after the last token taken."""
        return self.tokens[self.i - 1].end


_LITERAL_NAMES = frozenset({"true", "false", "null", "in"})
_UNICODE_CLASS = re.compile(r"\\+[wWdDsSpP]")
_COUNTED = re.compile(r"\{(\d*)(?:,(\d*))?\}")
