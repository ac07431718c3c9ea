"""What `Run` and `AsyncRun` share: turning a guarded function's call into the JSON
object the gate judges, deadlines for long-polling, and turning the gate's answer into
the call (allowed) or `ActionDenied`. Only waiting differs between the two."""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from bastion.client._base import JSON, MAX_WAIT_SECONDS
from bastion.client._errors import ActionDenied
from bastion.client._model import Model

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T", bound=Model | JSON)

Arguments = Mapping[str, Any] | Callable[[dict[str, Any]], Mapping[str, Any]] | None
"""What a guard sends as the call's arguments: the function's own bound arguments
(None), a fixed object, or a function of the bound arguments returning the object."""

OnPending = Callable[[Any], Any] | None
"""Called with the pending call (its `approval_id`) before a guard waits for people;
with `AsyncRun` it may be a coroutine function."""

DEFAULT_TIMEOUT = 300.0
TIMEOUT_REASON = "approval_timeout"


def bind(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by parameter name, defaults applied. `**kwargs` are merged in,
    `*args` become a list, and a method's `self`/`cls` is left out."""
    signature = inspect.signature(fn)
    bound = signature.bind(*args, **kwargs)  # a wrong call fails as the function would
    bound.apply_defaults()
    out: dict[str, Any] = {}
    for index, (name, value) in enumerate(bound.arguments.items()):
        kind = signature.parameters[name].kind
        if index == 0 and name in ("self", "cls"):
            continue
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            out[name] = list(value)
        else:
            out[name] = value
    return out


def arguments_of(tool: str, spec: Arguments, bound: dict[str, Any]) -> dict[str, Any]:
    """The JSON object the gate sees, checked to be JSON before anything is sent."""
    if spec is None:
        chosen = bound
    elif callable(spec):
        chosen = dict(spec(bound))
    else:
        chosen = dict(spec)
    try:
        json.dumps(chosen, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"guard({tool}): the arguments are not JSON ({exc}); pass arguments= to choose "
            "what the gate sees"
        ) from None
    return chosen


def fixed_arguments(tool: str, spec: Arguments) -> dict[str, Any]:
    """A context manager's arguments: a fixed object (there is no function to bind)."""
    if callable(spec):
        raise TypeError(f"guard({tool}): as a context manager, arguments must be a mapping")
    return arguments_of(tool, spec, {})


def tool_name(tool: str | None, fn: Callable[..., Any] | None = None) -> str:
    if tool:
        return tool
    if fn is not None:
        return str(getattr(fn, "__name__", ""))
    raise TypeError("guard(...) as a context manager needs the tool's name")


def deadline_of(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + max(0.0, timeout)


def next_wait(deadline: float | None) -> float:
    """Seconds for the next long-poll: up to the server's 60, up to the deadline."""
    if deadline is None:
        return MAX_WAIT_SECONDS
    return max(0.0, min(MAX_WAIT_SECONDS, deadline - time.monotonic()))


def waited_enough(call: Model | JSON, deadline: float | None) -> bool:
    if call.get("decision") != "pending":
        return True
    return deadline is not None and time.monotonic() >= deadline


def settle(tool: str, call: T) -> T:
    """The allowed call, or `ActionDenied` for a denied or still-pending one."""
    decision = str(call.get("decision", ""))
    if decision == "allow":
        return call
    reason = TIMEOUT_REASON if decision == "pending" else str(call.get("reason", ""))
    raise ActionDenied(
        tool,
        call_id=call.get("id"),
        approval_id=call.get("approval_id"),
        decision=decision,
        reason=reason,
    )


async def maybe_await(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


def parse_time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def org_and_agent(
    agent: str | Mapping[str, Any] | Model, org: str | None
) -> tuple[str | None, str]:
    """An agent given by id (`agt_…`) or as the API's agent object (its `org_id` then
    serves as the default organisation)."""
    if isinstance(agent, Mapping | Model):
        return org or agent.get("org_id"), str(agent["id"])
    return org, agent


def run_body(
    on_behalf_of: str | None,
    workflow_id: str | None,
    ttl_seconds: int | None,
    max_tool_calls: int | None,
    max_pending_approvals: int | None,
) -> JSON:
    return {
        "on_behalf_of": on_behalf_of,
        "workflow_id": workflow_id,
        "ttl_seconds": ttl_seconds,
        "max_tool_calls": max_tool_calls,
        "max_pending_approvals": max_pending_approvals,
    }


def run_repr(kind: str, run_id: str, agent_id: str, expires_at: datetime) -> str:
    return f"{kind}(id={run_id!r}, agent_id={agent_id!r}, expires_at={expires_at.isoformat()!r})"
