"""LangChain: guarded `@tool`s whose denial reaches the model as the tool's result.

    from langchain_core.tools import tool
    from bastion.client.adapters import use_run
    from bastion.client.adapters.langchain import guard, handle_denied

    @tool
    @guard
    def refund_payment(order: str, amount: float) -> str:
        \"\"\"Refund an order.\"\"\"

    refund_payment.handle_tool_error = handle_denied

    with use_run(run):
        refund_payment.invoke({"order": "A-1", "amount": 25})

Async: guard an `async def` tool and call `await refund_payment.ainvoke(...)` (LangChain's
`_arun` awaits the coroutine); bound to an `AsyncRun` of `AsyncClient` the guard asks the
gate on the event loop, no thread:

    @tool
    @guard
    async def refund_payment(order: str, amount: float) -> str: ...

    with use_run(await bastion.runs.start(agent_id, on_behalf_of=user_id)):
        await refund_payment.ainvoke({"order": "A-1", "amount": 25})

A denial raises `ToolDenied`, which is both Bastion's `ActionDenied` and LangChain's
`ToolException`, so LangChain's `handle_tool_error` path catches it (the agent loop
goes on) and `handle_denied` turns it into a final, non-retryable answer. Needs the
`langchain` extra (`langchain-core`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from langchain_core.tools import ToolException

from bastion.client._errors import ActionDenied
from bastion.client._runs import DEFAULT_TIMEOUT, Arguments
from bastion.client.adapters import denial_text
from bastion.client.adapters import guard as _guard

__all__ = ["ToolDenied", "guard", "handle_denied"]

F = TypeVar("F", bound=Callable[..., Any])


class ToolDenied(ActionDenied, ToolException):
    """The gate did not allow the tool call (LangChain's `handle_tool_error` catches it)."""


def handle_denied(error: ToolException) -> str:
    """A tool's `handle_tool_error`: a denial's final text, or the error's."""
    if isinstance(error, ActionDenied):
        return denial_text(error)
    return str(error)


def guard(
    tool: F | str | None = None,
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
    arguments: Arguments = None,
    connection: str | None = None,
) -> Any:
    """`bastion.client.adapters.guard` that raises `ToolDenied` when not allowed."""

    def decorate(fn: F) -> F:
        inner = _guard(
            tool if isinstance(tool, str) else None,
            timeout=timeout,
            arguments=arguments,
            connection=connection,
            on_denied="raise",
        )(fn)
        import functools
        import inspect

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await inner(*args, **kwargs)
                except ActionDenied as denied:
                    raise _tool_denied(denied) from None

            return guarded_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return inner(*args, **kwargs)
            except ActionDenied as denied:
                raise _tool_denied(denied) from None

        return guarded  # type: ignore[return-value]

    if callable(tool):
        return decorate(tool)
    return decorate


def _tool_denied(denied: ActionDenied) -> ToolDenied:
    return ToolDenied(
        denied.tool,
        call_id=denied.call_id,
        approval_id=denied.approval_id,
        decision=denied.decision,
        reason=denied.reason,
    )
