"""OpenAI Agents SDK: Bastion's gate as the `needs_approval` hook of `@function_tool`,
and denials as a final tool result (not "An error occurred… try again").

    from bastion.client.adapters import use_run
    from bastion.client.adapters.openai_agents import function_tool

    @function_tool(timeout=120)             # the Agents SDK's @function_tool, guarded
    def refund_payment(order: str, amount: float) -> str:
        \"\"\"Refund an order.\"\"\"

    with use_run(run):
        result = await Runner.run(agent, "refund A-1")

`needs_approval` asks the gate of the run in context before the SDK runs the tool:
allowed or denied, the SDK goes on (a denied tool returns its final denial without
running); pending, the SDK pauses the run with an approval interruption while people
decide in Bastion. The guard then takes over the call the hook made, so the gate and
the approvers see one call, not two. `async def` tools work the same (the SDK awaits
them); bound to an `AsyncRun` (`AsyncClient`) the hook and the guard ask the gate on the
event loop, without a thread:

    @function_tool(timeout=120)
    async def refund_payment(order: str, amount: float) -> str: ...

    async with AsyncClient(url, token=key) as bastion:
        run = await bastion.runs.start(agent_id, on_behalf_of=user_id)
        with use_run(run):
            result = await Runner.run(agent, "refund A-1")

Needs the `openai-agents` extra.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import agents
from agents import FunctionTool, RunContextWrapper
from bastion.client import _runs
from bastion.client._async import AsyncRun
from bastion.client._errors import ActionDenied
from bastion.client._runs import DEFAULT_TIMEOUT, Arguments
from bastion.client.adapters import current_run, denial_text, guard, hand_over

__all__ = ["function_tool", "guard", "needs_approval", "on_failure"]


def function_tool(
    fn: Callable[..., Any] | None = None,
    *,
    tool: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    arguments: Arguments = None,
    connection: str | None = None,
    **options: Any,
) -> Any:
    """The Agents SDK's `@function_tool` with Bastion's gate: the guard, the
    `needs_approval` hook and the denial as the tool's final result, all for the tool
    `tool` (default: the function's name). Other keyword arguments go to the SDK."""

    def build(f: Callable[..., Any]) -> FunctionTool:
        name = tool or f.__name__
        guarded = guard(
            name, timeout=timeout, arguments=arguments, connection=connection, on_denied="raise"
        )(f)
        return agents.function_tool(
            guarded,
            name_override=name,
            needs_approval=needs_approval(name, arguments=arguments),
            failure_error_function=on_failure,
            **options,
        )

    if fn is not None:
        return build(fn)
    return build


def needs_approval(
    tool: str, *, arguments: Arguments = None
) -> Callable[[RunContextWrapper[Any], dict[str, Any], str], Awaitable[bool]]:
    """A `needs_approval` hook for the tool `tool`: asks the gate of the run in context;
    True while it holds the call for people. (`arguments` as given to the guard: a
    mapping or a function of the call's arguments.)"""

    async def hook(ctx: RunContextWrapper[Any], params: dict[str, Any], call_id: str) -> bool:
        import asyncio

        run = current_run()
        if run is None:
            return False  # the guard denies it (default deny) without running the tool
        sent = _runs.arguments_of(tool, arguments, dict(params))
        if isinstance(run, AsyncRun):  # AsyncClient: on the event loop
            call = await run.tool_call(tool, sent)
        else:  # the sync Client blocks: in a worker thread
            call = await asyncio.to_thread(run.tool_call, tool, sent)
        hand_over(run, tool, sent, call.id)  # the guard waits on this call, not a new one
        return call.decision == "pending"

    return hook


def on_failure(ctx: RunContextWrapper[Any], error: Exception) -> str:
    """A `failure_error_function`: a denial's final text; other errors as the SDK says."""
    if isinstance(error, ActionDenied):
        return denial_text(error)
    return "An error occurred while running the tool."


_ = guard  # re-exported: `bastion.client.adapters.guard`
