"""CEL conditions with a cost budget: what a condition may cost when it is saved, and
what one evaluation may spend when it runs.

The CEL library (a Rust interpreter) has no cost limits, no AST to walk and no way to
interrupt an evaluation from outside, and it holds the GIL while it evaluates: one
condition of four nested comprehensions over 60-element lists ran 2.9 s and stalled
every request of the process (issue 12, finding 2). So:

- when a condition is saved, `validate` parses it (a small recursive-descent parser of
  the CEL grammar the library accepts) and estimates its cost in steps (about one
  expression node evaluated; a comprehension costs its range's length times its body,
  and `map` and `filter` also copy what they built at every element; lists and maps
  read from the context are assumed `ASSUMED_LENGTH` long, their size being unknown
  until they are read; a regular expression is compiled wherever it is matched). It
  refuses (`TooCostly`, naming the limit) comprehensions nested deeper than
  `MAX_DEPTH`, a range longer than `MAX_RANGE`, a pattern that is not a literal or
  compiles slowly, and an estimate above `MAX_COST`;
- when a condition runs, every comprehension body is metered: `compile_condition`
  rewrites `r.all(x, body)` as `r.all(x, bastion_budget(k) ? (body) : false)`, where
  `k` is the body's own steps, and the function charges them to a budget of
  `MAX_STEPS` for this evaluation; past it, the function raises, which ends the
  evaluation at once, and the condition fails (`BudgetExhausted`, counted in
  `exhausted` and logged): a failing condition refuses, as any error does. This also
  stops conditions saved before the budget existed, and those whose context lists are
  much longer than assumed.

A condition without comprehensions is compiled as it is: nothing is added on its path.
Calibration (`bench/conditions.py`, docs/benchmarks.md): a full budget is a few
milliseconds.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import cel
import structlog

log = structlog.get_logger("bastion.authz")

MAX_DEPTH = 3  # comprehensions nested in one another
MAX_RANGE = 1_000  # elements a comprehension iterates over, as estimated
MAX_COST = 20_000  # estimated steps of one evaluation, refused when saved above it
MAX_STEPS = 20_000  # steps one evaluation may spend when it runs
ASSUMED_LENGTH = 32  # elements of a list or map read from the context, when saved
CALL_STEPS = 10  # a metered iteration's call out to Python, in steps
# `map` and `filter` copy what they have built at every element: element i costs i
# copies of an element (measured: about 0.5 us per element copied).
COPY_STEPS = 6
# A regular expression is compiled wherever it is matched: 50-150 us for a plain one,
# 0.3 ms for each Unicode class (\w, \d, \s, \p); a counted repetition of a Unicode
# class compiles in seconds (\w{100}: 0.44 s), so it is refused, as is a pattern that
# is not a literal (a document's metadata would choose what is compiled).
MATCH_STEPS = 1_500
UNICODE_CLASS_STEPS = 3_000
MAX_REPEAT = 1_000  # the product of a pattern's counted repetitions
METER = "bastion_budget"  # the functions the rewritten condition calls
RESET = "bastion_budget_reset"
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})


class RuleError(ValueError):
    """A condition that does not compile, or costs too much; `str()` says why."""


class TooCostly(RuleError):
    """A condition over the budget when saved: which limit, and the estimate."""

    def __init__(self, limit: str, detail: str) -> None:
        self.limit = limit
        super().__init__(f"exceeds the evaluation budget: {limit} {detail}")


def problem(error: RuleError) -> str:
    """Why a condition does not compile, saying where but quoting none of it: the
    compiler's message repeats the expression, and errors echo nothing a caller sent.
    Over the budget: which limit, and the estimate."""
    message = str(error)
    if isinstance(error, TooCostly):
        return message
    found = _CEL_WHERE.search(message)
    if found is not None:
        line, column, kind = found.groups()
        return f"does not compile: {kind.lower()} at line {line}, column {column}"
    if "'" in message or '"' in message:  # it quotes the condition
        return "does not compile"
    return f"does not compile: {message}"


_CEL_WHERE = re.compile(r"<input>:([0-9]+):([0-9]+): ([A-Za-z][A-Za-z ]{0,40}):")


class BudgetExhausted(RuntimeError):
    """An evaluation that spent its `MAX_STEPS`."""


class Program(Protocol):
    def execute(self, context: Any = None) -> Any: ...


# --- counting ---------------------------------------------------------------------------

_lock = threading.Lock()
exhausted = 0  # evaluations stopped by the budget, in this process


def _count_exhausted(steps: int) -> None:
    global exhausted  # noqa: PLW0603 - a process-wide counter, as the engine's stats
    with _lock:
        exhausted += 1
    log.warning("condition stopped: evaluation budget exhausted", steps=steps, limit=MAX_STEPS)


class _Budget:
    """One evaluation's spending. `charge(steps)` for an iteration of `all`, `exists`
    or `exists_one`; `charge(steps, site, copied)` for one of `map` or `filter`, which
    also pays for copying what the comprehension at `site` built so far, counted since
    `reset(site)` (called as that comprehension starts)."""

    __slots__ = ("built", "spent")

    def __init__(self) -> None:
        self.spent = 0
        self.built: dict[int, int] = {}

    def charge(self, steps: int, site: int = -1, copied: int = 0) -> bool:
        if site >= 0:
            done = self.built.get(site, 0)
            self.built[site] = done + 1
            steps += done * copied
        self.spent += steps
        if self.spent > MAX_STEPS:
            # Ends the evaluation at once (an answered null would be absorbed by `all`
            # and `exists`, which would go on through every element left). The library
            # writes the error to stderr: one line per evaluation stopped.
            raise BudgetExhausted(f"evaluation budget of {MAX_STEPS} steps exhausted")
        return True

    def reset(self, site: int) -> bool:
        self.built[site] = 0
        return True


@dataclass(frozen=True)
class Metered:
    """A condition with comprehensions: each evaluation gets a budget of its own."""

    source: str
    program: Any
    resets: bool  # calls `RESET` (a `map` or `filter` charged at each iteration)

    def execute(self, context: Any = None) -> Any:
        budget = _Budget()
        if isinstance(context, cel.Context):
            context.add_function(METER, budget.charge)
            if self.resets:
                context.add_function(RESET, budget.reset)
        else:
            functions: dict[str, Callable[..., Any]] = {METER: budget.charge, RESET: budget.reset}
            context = cel.Context(dict(context or {}), functions)
        try:
            value = self.program.execute(context)
        except Exception:
            if budget.spent <= MAX_STEPS:
                raise
        # Past the budget, whatever came of it (an error, or a value when `all` or
        # `exists` absorbed the errors) fails.
        if budget.spent > MAX_STEPS:
            _count_exhausted(budget.spent)
            raise BudgetExhausted(f"evaluation budget of {MAX_STEPS} steps exhausted")
        return value


@dataclass(frozen=True)
class _Unmetered:
    """A stored condition the budget cannot read (saved before it existed): refuses."""

    source: str

    def execute(self, context: Any = None) -> Any:
        raise BudgetExhausted("a condition the evaluation budget cannot read")


def _cel_compile(condition: str) -> Any:
    try:
        return cel.compile(condition)
    except (ValueError, RuntimeError) as exc:
        raise RuleError(str(exc).splitlines()[0][:300]) from None


def compile_condition(condition: str) -> Program:
    """The program that evaluates `condition` within the budget (see the module doc)."""
    program = _cel_compile(condition)
    try:
        parsed = _Parser(condition).parse()
    except RuleError:
        return _Unmetered(condition)
    if not parsed.meters:
        return program  # type: ignore[no-any-return]
    return parsed.program(condition)


def validate(condition: str) -> Program:
    """The program for a condition being saved: `RuleError` when it does not compile
    or cannot be read, `TooCostly` when it is over the budget."""
    program = _cel_compile(condition)
    parsed = _Parser(condition).parse()
    est = parsed.est
    if est.depth > MAX_DEPTH:
        raise TooCostly("comprehension nesting depth", f"{est.depth} (at most {MAX_DEPTH})")
    if parsed.widest > MAX_RANGE:
        raise TooCostly("comprehension range", f"of {parsed.widest} (at most {MAX_RANGE})")
    if parsed.patterns:
        raise TooCostly("regular expression", parsed.patterns[0])
    if est.cost > MAX_COST:
        raise TooCostly("estimated cost in steps", f"{est.cost} (at most {MAX_COST})")
    if not parsed.meters:
        return program  # type: ignore[no-any-return]
    return parsed.program(condition)


def estimate(condition: str) -> tuple[int, int]:
    """(estimated steps, comprehension nesting depth) of a condition."""
    parsed = _Parser(condition).parse()
    return parsed.est.cost, parsed.est.depth


# --- the estimate ---------------------------------------------------------------------


@dataclass(frozen=True)
class Est:
    """What evaluating an expression costs and gives: `cost` steps in all, `local` of
    them outside the bodies of the comprehensions in it (what a metered iteration
    charges), `length` (as a range: its elements), `weight` (its size, what copying or
    comparing it costs), `depth` (comprehension nesting) and `item` (an element's
    estimate; None: like a context value)."""

    cost: int = 1
    local: int = 1
    length: int = 0
    weight: int = 1
    depth: int = 0
    item: Est | None = None
    literal: str | None = None  # a string literal's token, quotes and all

    def element(self) -> Est:
        """An element, when iterated over (of a context value: a small one)."""
        return self.item if self.item is not None else ITEM

    def field(self) -> Est:
        """A field or an indexed value (of a context value: as large as it)."""
        return self.item if self.item is not None else CONTEXT


CONTEXT = Est(length=ASSUMED_LENGTH, weight=ASSUMED_LENGTH)
ITEM = Est(length=ASSUMED_LENGTH, weight=4)


def _join(ests: list[Est]) -> Est | None:
    if not ests:
        return None
    return Est(
        cost=max(e.cost for e in ests),
        local=max(e.local for e in ests),
        length=max(e.length for e in ests),
        weight=max(e.weight for e in ests),
        depth=max(e.depth for e in ests),
        item=_join([e.element() for e in ests if e.item is not None]),
    )


def _node(*parts: Est, extra: int = 1) -> tuple[int, int, int]:
    """(cost, local, depth) of a node over `parts` costing `extra` steps itself."""
    return (
        sum(p.cost for p in parts) + extra,
        sum(p.local for p in parts) + extra,
        max((p.depth for p in parts), default=0),
    )


# --- the parser -----------------------------------------------------------------------

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
