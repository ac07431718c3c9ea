"""A condition as it runs: compiled by the CEL library, and, when it has comprehensions,
metered so one evaluation spends at most `MAX_STEPS` (see the package doc).

The process-wide count of evaluations stopped, `exhausted`, lives here; the package
exposes it as `bastion.authz.conditions.exhausted`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import cel
import structlog

from bastion.authz.conditions.errors import BudgetExhausted, RuleError
from bastion.authz.conditions.limits import MAX_STEPS, METER, RESET

log = structlog.get_logger("bastion.authz")


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
