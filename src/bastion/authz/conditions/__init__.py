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

The code is split by concern: `limits` (the numbers), `errors` (what is raised, and
`problem`), `cost` and `parser` (the estimate made when a condition is read), `metering`
(the budget as a condition runs) and `compile` (the entry points). This module is their
public surface; `bastion.authz.rules` is the part other domains use.
"""

from typing import Any

from bastion.authz.conditions import metering
from bastion.authz.conditions.compile import compile_condition, estimate, validate
from bastion.authz.conditions.cost import CONTEXT, ITEM, Est
from bastion.authz.conditions.errors import BudgetExhausted, RuleError, TooCostly, problem
from bastion.authz.conditions.limits import (
    ASSUMED_LENGTH,
    CALL_STEPS,
    COPY_STEPS,
    MACROS,
    MATCH_STEPS,
    MAX_COST,
    MAX_DEPTH,
    MAX_RANGE,
    MAX_REPEAT,
    MAX_STEPS,
    METER,
    RESET,
    UNICODE_CLASS_STEPS,
)
from bastion.authz.conditions.metering import Metered, Program
from bastion.authz.conditions.parser import Parsed

__all__ = [
    "ASSUMED_LENGTH",
    "CALL_STEPS",
    "CONTEXT",
    "COPY_STEPS",
    "ITEM",
    "MACROS",
    "MATCH_STEPS",
    "MAX_COST",
    "MAX_DEPTH",
    "MAX_RANGE",
    "MAX_REPEAT",
    "MAX_STEPS",
    "METER",
    "RESET",
    "UNICODE_CLASS_STEPS",
    "BudgetExhausted",
    "Est",
    "Metered",
    "Parsed",
    "Program",
    "RuleError",
    "TooCostly",
    "compile_condition",
    "estimate",
    "problem",
    "validate",
]


def __getattr__(name: str) -> Any:
    """`exhausted`, the count of evaluations the budget stopped, read where `metering`
    keeps it (a copy made at import would stay 0)."""
    if name == "exhausted":
        return metering.exhausted
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
