"""Metadata rules' conditions, for the domains that evaluate them too (approval
policies' `match.condition`): compile and validate a CEL condition, describe why it was
refused, and read what it answered.

The public face of `bastion.authz.conditions` (whose cost budget and parser are
authz's own business) plus `rule_answer`, so that an approval policy's condition and an
authorization rule mean the same thing by true, false and an error.
"""

from __future__ import annotations

from typing import Any

from bastion.authz.conditions import RuleError, compile_condition, problem, validate

__all__ = ["RuleError", "compile_condition", "problem", "rule_answer", "validate"]


def rule_answer(value: Any) -> bool:
    """A condition's answer: true or false. Anything else (`resource.metadata.restricted`
    holding 1, "yes" or null) is an error, and a failing rule refuses: a deny rule of the
    wrong type must not silently stop denying."""
    if isinstance(value, bool):
        return value
    raise TypeError("a rule's condition must give true or false")
