"""Agent-framework adapters: a guard defined once, at import, that finds its run from
context, and denials the model reads as a final answer.

    from bastion.client.adapters import guard, use_run

    @guard                                 # defined once, next to the tool
    def refund_payment(order: str, amount: float) -> str: ...

    run = bastion.runs.start(agent_id, on_behalf_of=user_id)
    with use_run(run):                     # per run: the guard asks this run's gate
        refund_payment("A-1", 25)          # allowed: runs; denied: a final denial text

With `AsyncClient` the run is an `AsyncRun`: bound the same way, it guards `async def`
tools without a thread (LangChain `ainvoke`, the Agents SDK's async tools, async
LangGraph nodes); a sync `Run` guards them too, asking the gate in a worker thread.

`use_run` binds the run to the current context (a `contextvars.ContextVar`, so each
thread and asyncio task sees its own). A guarded tool called outside `use_run` is
denied (default deny), as is one the gate denies or nobody approves in time; the
function does not run and the tool's result is a final, non-retryable denial
(`denial_text`): the model is told not to try again. `on_denied="raise"` raises
`ActionDenied` instead.

Framework integrations, each behind its extra (`pip install 'bastion[langchain]'`, …):
`bastion.client.adapters.langchain` (LangChain `@tool`, `handle_tool_error`),
`bastion.client.adapters.openai_agents` (`@function_tool`, `needs_approval`) and
`bastion.client.adapters.langgraph` (`interrupt()` while people decide), each for sync
and `async def` tools.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import inspect
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeVar, cast, overload

from bastion.client import _runs
from bastion.client._async import AsyncRun
from bastion.client._errors import ActionDenied
from bastion.client._runs import DEFAULT_TIMEOUT, Arguments
from bastion.client._sync import Run

__all__ = ["NO_RUN", "AnyRun", "current_run", "denial_text", "guard", "use_run"]

F = TypeVar("F", bound=Callable[..., Any])
OnDenied = Literal["result", "raise"]
NO_RUN = "no_run_in_context"

AnyRun = Run | AsyncRun
_RUN: contextvars.ContextVar[AnyRun | None] = contextvars.ContextVar("bastion_run", default=None)

R = TypeVar("R", Run, AsyncRun)


@contextmanager
def use_run(run: R) -> Iterator[R]:
    """Bind `run` to the current context for guarded tools; restored on exit."""
    token = _RUN.set(run)
    try:
        yield run
    finally:
        _RUN.reset(token)


def current_run() -> AnyRun | None:
    """The run bound by `use_run` in this context, if any."""
    return _RUN.get()


def denial_text(denied: ActionDenied) -> str:
    """What the model reads when a tool was not allowed: final, and says not to retry
    (a retry would only ask people again)."""
    if denied.reason == NO_RUN:
        why = "no Bastion run is bound to this agent (use_run)"
    elif denied.decision == "pending":
        why = "nobody approved it in time"
    else:
        why = f"it was denied ({denied.reason})"
    return (
        f"DENIED: the tool `{denied.tool}` did not run: {why}. This decision is final: "
        "do not call this tool again for this request and do not try to work around it; "
        "tell the user it was not allowed."
    )


def idempotency_key(run: AnyRun, tool: str, arguments: dict[str, Any], scope: str = "") -> str:
    """A stable key for one tool call of a run: asking again (a framework re-running a
    step after an interrupt) replays the same gate call instead of opening a new
    approval."""
    canonical = json.dumps([run.id, tool, arguments, scope], sort_keys=True, default=str)
    return "bastion-adapter-" + hashlib.sha256(canonical.encode()).hexdigest()[:48]


_HANDOFF: dict[tuple[str, str], list[str]] = {}


def _numbers_alike(value: Any) -> Any:
    """5 and 5.0 are one JSON number (a framework may parse `5` into a float)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        return {k: _numbers_alike(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_numbers_alike(v) for v in value]
    return value


def _digest(tool: str, arguments: dict[str, Any]) -> str:
    text = json.dumps([tool, _numbers_alike(arguments)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def hand_over(run: AnyRun, tool: str, arguments: dict[str, Any], call_id: str) -> None:
    """A framework hook asked the gate already: the guard takes this call over instead
    of asking again (so people see one approval, not two)."""
    _HANDOFF.setdefault((run.id, _digest(tool, arguments)), []).append(call_id)


def authorize(
    tool: str,
    arguments: dict[str, Any],
    *,
    timeout: float | None,
    connection: str | None = None,
) -> Any:
    """Ask the gate of the run in context (or take over the call a framework hook
    asked): the allowed call, or `ActionDenied`."""
    run = _run_in_context(tool)
    if isinstance(run, AsyncRun):
        raise TypeError(
            f"`{tool}` is a sync tool and the run in context an AsyncRun: guard an "
            "`async def` tool, or bind a Run of the sync Client"
        )
    waiting = _HANDOFF.get((run.id, _digest(tool, arguments)))
    if waiting:
        call_id = waiting.pop(0)
        return _runs.settle(tool, run.wait(call_id, timeout))
    return run.authorize(tool, arguments, timeout=timeout, connection=connection)


async def aauthorize(
    tool: str,
    arguments: dict[str, Any],
    *,
    timeout: float | None,  # noqa: ASYNC109 - the server waits, not a cancellation
    connection: str | None = None,
) -> Any:
    """`authorize` awaited: an `AsyncRun` in context is asked on the event loop; a sync
    `Run` in a worker thread (its calls block)."""
    run = _run_in_context(tool)
    if isinstance(run, Run):
        context = contextvars.copy_context()
        ask = functools.partial(authorize, tool, arguments, timeout=timeout, connection=connection)
        return await asyncio.to_thread(context.run, ask)
    waiting = _HANDOFF.get((run.id, _digest(tool, arguments)))
    if waiting:
        call_id = waiting.pop(0)
        return _runs.settle(tool, await run.wait(call_id, timeout))
    return await run.authorize(tool, arguments, timeout=timeout, connection=connection)


def _run_in_context(tool: str) -> AnyRun:
    run = _RUN.get()
    if run is None:  # default deny
        raise ActionDenied(tool, call_id=None, approval_id=None, decision="deny", reason=NO_RUN)
    return run


@overload
def guard(tool: F) -> F: ...


@overload
def guard(
    tool: str | None = None,
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
    arguments: Arguments = None,
    connection: str | None = None,
    on_denied: OnDenied = "result",
) -> Callable[[F], F]: ...


def guard(
    tool: str | Callable[..., Any] | None = None,
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
    arguments: Arguments = None,
    connection: str | None = None,
    on_denied: OnDenied = "result",
) -> Any:
    """Gate a tool function (sync or `async def`) behind the gate of the run bound by
    `use_run`. `tool` defaults to the function's name, `arguments` to its bound
    arguments. A denial returns `denial_text(...)` (`on_denied="result"`) or raises
    `ActionDenied` (`"raise"`)."""

    def decorate(fn: F) -> F:
        name = _runs.tool_name(tool if isinstance(tool, str) else None, fn)

        def refusal(denied: ActionDenied) -> str:
            if on_denied == "raise":
                raise denied
            return denial_text(denied)

        def ask(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
            bound = _runs.arguments_of(name, arguments, _runs.bind(fn, args, kwargs))
            try:
                authorize(name, bound, timeout=timeout, connection=connection)
            except ActionDenied as denied:
                return refusal(denied)
            return None

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                bound = _runs.arguments_of(name, arguments, _runs.bind(fn, args, kwargs))
                try:
                    await aauthorize(name, bound, timeout=timeout, connection=connection)
                except ActionDenied as denied:
                    return refusal(denied)
                return await fn(*args, **kwargs)

            return cast(F, guarded_async)

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            refused = ask(args, kwargs)
            return refused if refused is not None else fn(*args, **kwargs)

        return cast(F, guarded)

    if callable(tool):
        return decorate(cast(Any, tool))
    return decorate
