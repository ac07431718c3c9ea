"""Why a condition is refused: the errors raised when it does not compile, is over the
budget when saved or spends its budget when run, and `problem`, the one place they are
described to a caller (without quoting the condition).
"""

from __future__ import annotations

import re


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
