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
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from langgraph.config import get_config
from langgraph.types import interrupt

from bastion.client import _runs
from bastion.client._errors import ActionDenied
from bastion.client._runs import DEFAULT_TIMEOUT, Arguments
from bastion.client.adapters import NO_RUN, current_run, denial_text, idempotency_key

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


def guard(
    tool: F | str | None = None,
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
    arguments: Arguments = None,
    connection: str | None = None,
) -> Any:
    """Gate a (sync) tool function; pending calls interrupt the graph."""

    def decorate(fn: F) -> F:
        name = _runs.tool_name(tool if isinstance(tool, str) else None, fn)

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            bound = _runs.arguments_of(name, arguments, _runs.bind(fn, args, kwargs))
            run = current_run()
            if run is None:
                return denial_text(
                    ActionDenied(
                        name, call_id=None, approval_id=None, decision="deny", reason=NO_RUN
                    )
                )
            key = idempotency_key(run, name, bound, _task_scope())
            call = run.tool_call(name, bound, connection=connection, idempotency_key=key)
            if call.decision == "pending":
                call = run.wait(call.id, 0)  # the replayed answer may be out of date
            if call.decision == "pending":
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
                call = run.wait(call.id, timeout)
            try:
                _runs.settle(name, call)
            except ActionDenied as denied:
                return denial_text(denied)
            return fn(*args, **kwargs)

        return cast(F, guarded)

    if callable(tool):
        return decorate(tool)
    return decorate
