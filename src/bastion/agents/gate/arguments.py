"""A tool call's arguments: their digest, and their check against the tool's JSON Schema.

Each tool's schema is compiled once per definition (keyed by its digest) with
`bastion.agents.service.arguments_validator`. A failure is named by where and why,
never by the values: the reason is stored on the call and audited.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from bastion.agents import service as agents
from bastion.core.crypto import sha256_hex


def arguments_digest(arguments: Any) -> str:
    return sha256_hex(json.dumps(arguments, sort_keys=True, separators=(",", ":")))


_validators: dict[str, Callable[[Any], str | None]] = {}


def schema_error(tool: dict[str, Any], arguments: Any) -> str | None:
    """Where and why the arguments fail the tool's schema (never their values)."""
    check = _validators.get(tool["digest"])
    if check is None:
        check = _checker(tool.get("input_schema") or {})
        if len(_validators) > 5000:
            _validators.clear()
        _validators[tool["digest"]] = check
    return check(arguments)


def _checker(schema: dict[str, Any]) -> Callable[[Any], str | None]:
    """The tool's compiled validator (`agents.arguments_validator`: jsonschema-rs,
    offline). The first error is named in `jsonschema`'s notation: its JSON path in the
    arguments and the failing keyword (`false` for a `false` subschema). A schema it
    cannot compile (stored before saving required it to, or edited in the database)
    denies every call with `invalid_tool_schema` until the tool is saved again: no other
    validator, with other regular-expression semantics, runs on an agent's arguments."""
    try:
        fast = agents.arguments_validator(schema)
    except Exception:
        return _unusable

    def compiled(arguments: Any) -> str | None:
        try:
            if fast.is_valid(arguments):
                return None
            error = next(iter(fast.iter_errors(arguments)))
        except ValueError:  # too deep to describe (the edge refuses such arguments)
            return "invalid_arguments at $ (nesting)"
        except Exception:  # whatever else fails while checking denies
            return "invalid_tool_schema"
        return _reason(error.instance_path, _keyword(error.schema_path))

    return compiled


def _unusable(arguments: Any) -> str:
    return "invalid_tool_schema"


# Keywords whose value maps names to subschemas: in a schema path, the element after one
# of them is a name, not a keyword.
_NAMED = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})


def _keyword(schema_path: Sequence[str | int]) -> str:
    """The keyword that failed: the path's last keyword, or `false` when the path ends
    at a subschema (a name or an index: a `false` schema there rejected everything)."""
    keyword, named = "false", False
    for part in schema_path:
        if named or isinstance(part, int):
            keyword, named = "false", False
        else:
            keyword, named = part, part in _NAMED
    return keyword


_NAME = re.compile("[a-zA-Z][a-zA-Z0-9_]*")
_REASON_PATH_MAX = 200  # a call's reason is stored in 300 characters; keys are the caller's


def _reason(path: Iterable[str | int], keyword: str) -> str:
    """`invalid_arguments at $.a[0]['b c'] (type)`: the JSON path as `jsonschema` writes
    it (cut short, with `…`, past 200 characters), and the keyword that failed."""
    at = "$"
    for part in path:
        if isinstance(part, int):
            at += f"[{part}]"
        elif _NAME.fullmatch(part):
            at += f".{part}"
        else:
            at += "['" + part.replace("\\", "\\\\").replace("'", "\\'") + "']"
        if len(at) > _REASON_PATH_MAX:
            at = at[: _REASON_PATH_MAX - 1] + "…"
            break
    return f"invalid_arguments at {at} ({keyword[:40]})"
