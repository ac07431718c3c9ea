"""Compile a condition to run (`compile_condition`), or to save (`validate`, which
refuses one over the budget), and `estimate` its cost: the entry points that put the
parser, the limits and the meter together.
"""

from __future__ import annotations

from bastion.authz.conditions.errors import RuleError, TooCostly
from bastion.authz.conditions.limits import MAX_COST, MAX_DEPTH, MAX_RANGE
from bastion.authz.conditions.metering import Program, _cel_compile, _Unmetered
from bastion.authz.conditions.parser import _Parser


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
