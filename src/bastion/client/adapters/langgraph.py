"""LangGraph: pause the graph with `interrupt()` while people decide in Bastion.

    from langgraph.types import Command
    from bastion.client.adapters import use_run
    from bastion.client.adapters.langgraph import guard

    @guard
    def refund_payment(order: str, amount: float) -> str: ...

    with use_run(run):
        state = graph.invoke(inputs, config)          # pending: state["__interrupt__"]
        ...                                           # people approve in Bastion
        state = graph.invoke(Command(resume=True), config)

When the gate holds a call for approval, the guarded tool calls LangGraph's
`interrupt()` with `{"bastion": {"tool", "call_id", "approval_id", "run_id"}}`; the
graph checkpoints and returns. Resume it with `Command(resume=...)` (say, from
Bastion's `approval.decided` webhook): the node runs again, the guard finds the same
gate call (a stable idempotency key per graph task) and waits for its decision (up to
`timeout`), then runs the tool or returns the final denial. Needs the `langgraph` extra
and a checkpointer.

Async graphs: guard an `async def` tool, await it in an async node and run the graph with
`await graph.ainvoke(...)`, bound to an `AsyncRun` of `AsyncClient`
(`with use_run(await bastion.runs.start(...)):`); `interrupt()` pauses it the same way.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast

from langgraph.config import get_config
from langgraph.types import interrupt

from bastion.client import _runs
from bastion.client import models as m
from bastion.client._async import AsyncRun
from bastion.client._errors import ActionDenied
from bastion.client._runs import DEFAULT_TIMEOUT, Arguments
from bastion.client._sync import Run
from bastion.client.adapters import NO_RUN, AnyRun, current_run, denial_text, idempotency_key

__all__ = ["guard"]

F = TypeVar("F", bound=Callable[..., Any])


def _task_scope() -> str:
    """The graph task: the same when a node runs again after an interrupt."""
    try:
        config = get_config()
    except RuntimeError:
        return ""
    configurable = config.get("configurable", {})
    return f"{configurable.get('thread_id', '')}/{configurable.get('checkpoint_ns', '')}"


def _no_run(name: str) -> str:
    return denial_text(
        ActionDenied(name, call_id=None, approval_id=None, decision="deny", reason=NO_RUN)
    )


def _pause(name: str, run: AnyRun, call: m.ToolCallOut) -> None:
    """Checkpoint the graph and return: the node runs again on `Command(resume=...)`."""
    interrupt(
        {
            "bastion": {
                "tool": name,
                "call_id": call.id,
                "approval_id": call.approval_id,
                "run_id": run.id,
            }
        }
    )


def _outcome(name: str, call: m.ToolCallOut) -> str | None:
    """None when allowed, else the final denial text."""
    try:
        _runs.settle(name, call)
    except ActionDenied as denied:
        return denial_text(denied)
    return None


def guard(
    tool: F | str | None = None,
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
    arguments: Arguments = None,
    connection: str | None = None,
) -> Any:
    """Gate a tool function; pending calls interrupt the graph. A sync function asks
    with the sync `Run` in context; an `async def` one (for async nodes and
    `graph.ainvoke`) with an `AsyncRun`, on the event loop (a sync `Run` in a thread)."""

    def decorate(fn: F) -> F:
        name = _runs.tool_name(tool if isinstance(tool, str) else None, fn)

        def decide_sync(name: str, run: Run, bound: dict[str, Any]) -> str | None:
            key = idempotency_key(run, name, bound, _task_scope())
            call = run.tool_call(name, bound, connection=connection, idempotency_key=key)
            if call.decision == "pending":
                call = run.wait(call.id, 0)  # the replayed answer may be out of date
            if call.decision == "pending":
                _pause(name, run, call)
                call = run.wait(call.id, timeout)
            return _outcome(name, call)

        async def decide_async(name: str, run: AsyncRun, bound: dict[str, Any]) -> str | None:
            key = idempotency_key(run, name, bound, _task_scope())
            call = await run.tool_call(name, bound, connection=connection, idempotency_key=key)
            if call.decision == "pending":
                call = await run.wait(call.id, 0)
            if call.decision == "pending":
                _pause(name, run, call)
                call = await run.wait(call.id, timeout)
            return _outcome(name, call)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                bound = _runs.arguments_of(name, arguments, _runs.bind(fn, args, kwargs))
                run = current_run()
                if run is None:
                    return _no_run(name)
                if isinstance(run, Run):  # its calls block: in a worker thread
                    refused = await asyncio.to_thread(decide_sync, name, run, bound)
                else:
                    refused = await decide_async(name, run, bound)
                return refused if refused is not None else await fn(*args, **kwargs)

            return cast(F, guarded_async)

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            bound = _runs.arguments_of(name, arguments, _runs.bind(fn, args, kwargs))
            run = current_run()
            if run is None:
                return _no_run(name)
            if isinstance(run, AsyncRun):
                raise TypeError(
                    f"`{name}` is a sync tool and the run in context an AsyncRun: guard an "
                    "`async def` tool, or bind a Run of the sync Client"
                )
            refused = decide_sync(name, run, bound)
            return refused if refused is not None else fn(*args, **kwargs)

        return cast(F, guarded)

    if callable(tool):
        return decorate(tool)
    return decorate
