"""Agent-framework adapters against the real app, driven through each framework's own
invocation API (no model): a guard defined once at import that finds its run from
context, denials as a final tool result, the OpenAI Agents SDK's `needs_approval` hook
and LangGraph's `interrupt()` while people decide."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypedDict

import httpx
import pytest
from fastapi.testclient import TestClient

from bastion.client import ActionDenied, AsyncClient, AsyncRun
from bastion.client.adapters import current_run, guard, use_run
from tests.client.test_runs import World
from tests.factories import Factory

pytestmark = pytest.mark.filterwarnings("ignore:You should not use the 'timeout' argument")

CALLED: list[tuple[str, Any]] = []


# Defined once, at import: no run exists yet.
@guard(timeout=10)
def refund_payment(order: str, amount: float) -> str:
    CALLED.append(("refund_payment", amount))
    return f"refunded {amount} on {order}"


@guard
def wire_money(to: str) -> str:  # not a tool the agent declared: the gate denies it
    CALLED.append(("wire_money", to))
    return "sent"


def _need(module: str, extra: str) -> None:
    if os.environ.get("CI") == "true":
        __import__(module)  # CI installs the test extra: run, never skip
        return
    pytest.importorskip(module, reason=f"pip install -e '.[test]' (or 'bastion[{extra}]')")


@pytest.fixture
def w(client: TestClient, factory: Factory) -> Iterator[World]:
    world = World(client, factory)
    world.small_refunds_allowed()
    world.two_managers_over_100()
    CALLED.clear()
    yield world
    world.join()


def test_the_guard_finds_its_run_from_context(w: World) -> None:
    run = w.start()
    assert current_run() is None
    with use_run(run):
        assert current_run() is run
        assert refund_payment("A-1", 25) == "refunded 25 on A-1"
    assert current_run() is None
    assert run.status().tool_calls == 1
    # Another run, the same guarded function: each run's gate is asked.
    other = w.start()
    with use_run(other):
        assert refund_payment("A-2", 30) == "refunded 30 on A-2"
    assert other.status().tool_calls == 1
    seen: list[object] = []
    thread = threading.Thread(target=lambda: seen.append(current_run()))
    with use_run(run):
        thread.start()
        thread.join()
    assert seen == [None]  # a context is per thread: nothing leaks


def test_a_denial_is_a_final_result_and_the_function_does_not_run(w: World) -> None:
    text = wire_money("acct-9")  # no run bound: default deny
    assert text.startswith("DENIED")
    assert "final" in text
    assert "do not call this tool again" in text
    with use_run(w.start()):
        text = wire_money("acct-9")
    assert text.startswith("DENIED")
    assert "undeclared_tool" in text
    assert CALLED == []

    @guard(on_denied="raise")
    def transfer(to: str) -> str:
        return "sent"

    with use_run(w.start()), pytest.raises(ActionDenied):
        transfer("x")


def test_langchain_tool_and_handle_tool_error(w: World) -> None:
    _need("langchain_core", "langchain")
    from langchain_core.tools import ToolException, tool

    from bastion.client.adapters import langchain as lc

    @tool
    @lc.guard("refund_payment", timeout=10)
    def refund(order: str, amount: float) -> str:
        """Refund an order."""
        return f"refunded {amount}"

    refund.handle_tool_error = lc.handle_denied

    @tool
    @lc.guard
    def wire(to: str) -> str:
        """Wire money."""
        return "sent"

    assert set(refund.args) == {"order", "amount"}  # the schema comes from the function
    with use_run(w.start()):
        assert refund.invoke({"order": "A-1", "amount": 25}) == "refunded 25.0"
        assert "DENIED" not in refund.invoke({"order": "A-1", "amount": 5})
    with use_run(w.start()):
        denied = refund.invoke({"order": "A-1", "amount": 500})  # pending, nobody decides
    assert denied.startswith("DENIED")
    assert "nobody approved it in time" in denied
    with use_run(w.start()), pytest.raises(ToolException) as raised:
        wire.invoke({"to": "acct-9"})  # without handle_tool_error LangChain raises it
    assert isinstance(raised.value, ActionDenied)
    assert raised.value.reason == "undeclared_tool"


def test_openai_agents_needs_approval_and_a_final_denial(w: World) -> None:
    _need("agents", "openai-agents")
    from agents.tool_context import ToolContext

    from agents import FunctionTool, RunContextWrapper
    from bastion.client.adapters import openai_agents as oa

    @oa.function_tool(timeout=10)
    def refund_payment(order: str, amount: float) -> str:
        """Refund an order."""
        return f"refunded {amount}"

    @oa.function_tool(tool="wire_money")
    def wire(to: str) -> str:
        """Wire money."""
        return "sent"

    refund = refund_payment
    assert isinstance(refund, FunctionTool)

    async def call(tool: Any, name: str, params: dict[str, Any], call_id: str) -> tuple[bool, str]:
        ctx = ToolContext(
            context=None, tool_name=name, tool_call_id=call_id, tool_arguments=json.dumps(params)
        )
        assert callable(tool.needs_approval)
        waits = await tool.needs_approval(RunContextWrapper(context=None), params, call_id)
        return waits, str(await tool.on_invoke_tool(ctx, json.dumps(params)))

    run = w.start()
    with use_run(run):
        waits, out = asyncio.run(call(refund, "refund_payment", {"order": "A", "amount": 5}, "c1"))
    assert (waits, out) == (False, "refunded 5.0")
    assert run.status().tool_calls == 1  # the hook's call was taken over, not asked again

    run = w.start()
    w.later(run.id, w.approve_by(*w.managers[:2]))
    with use_run(run):
        waits, out = asyncio.run(
            call(refund, "refund_payment", {"order": "B", "amount": 250}, "c2")
        )
    assert waits is True  # the SDK would pause the run for approval here
    assert out == "refunded 250.0"  # approved by two managers in Bastion, then it ran
    assert run.status().tool_calls == 1

    with use_run(w.start()):
        waits, out = asyncio.run(call(wire, "wire_money", {"to": "x"}, "c3"))
    assert waits is False
    assert out.startswith("DENIED")  # final, not "An error occurred… try again"
    assert "undeclared_tool" in out


def test_langgraph_interrupts_while_people_decide(w: World) -> None:
    _need("langgraph", "langgraph")
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command

    from bastion.client.adapters import langgraph as lg

    ran: list[float] = []

    @lg.guard(timeout=10)
    def refund_payment(order: str, amount: float) -> str:
        ran.append(amount)
        return f"refunded {amount}"

    class State(TypedDict, total=False):
        amount: float
        result: str

    def act(state: State) -> State:
        return {"result": refund_payment("A-1", state["amount"])}

    builder = StateGraph(State)
    builder.add_node("act", act)
    builder.add_edge(START, "act")
    builder.add_edge("act", END)
    graph = builder.compile(checkpointer=InMemorySaver())

    run = w.start()
    config: Any = {"configurable": {"thread_id": "t-1"}}
    with use_run(run):
        paused = graph.invoke({"amount": 250}, config)
        assert "__interrupt__" in paused
        asked = paused["__interrupt__"][0].value["bastion"]
        assert asked["tool"] == "refund_payment"
        assert asked["run_id"] == run.id
        assert ran == []
        approval = w.pending_for(run.id)
        assert approval["call_id"] == asked["call_id"]
        w.approve_by(*w.managers[:2])(approval)
        done = graph.invoke(Command(resume=True), config)
    assert done["result"] == "refunded 250"
    assert ran == [250]
    assert run.status().tool_calls == 1  # the resumed node found the same gate call

    run = w.start()
    config = {"configurable": {"thread_id": "t-2"}}
    with use_run(run):
        graph.invoke({"amount": 300}, config)
        w.deny_by(w.managers[0])(w.pending_for(run.id))
        done = graph.invoke(Command(resume=True), config)
    assert done["result"].startswith("DENIED")
    assert ran == [250]


# --- async: AsyncClient's AsyncRun, through each framework's async API ------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class AsyncWorld:
    """`World` over `AsyncClient`: runs are `AsyncRun`s, managers decide on the loop."""

    def __init__(self, w: World, app: Any) -> None:
        self.w = w
        self.transport = httpx.ASGITransport(app=app)
        self.admin = self._client(w.org.admin_key)
        self.managers = [self._client(m.token) for m in w.managers[:2]]

    def _client(self, token: str) -> AsyncClient:
        return AsyncClient("http://bastion.test", token=token, transport=self.transport)

    async def start(self) -> AsyncRun:
        return await self.admin.runs.start(self.w.agent, on_behalf_of=self.w.member.user_id)

    async def pending(self, run_id: str) -> str:
        for _ in range(400):
            async for x in self.managers[0].approvals.list(self.w.org.id, status="pending"):
                if x.run_id == run_id:
                    return x.id
            await asyncio.sleep(0.05)
        raise AssertionError("no pending approval appeared")

    async def approve_when_asked(self, run_id: str) -> None:
        approval = await self.pending(run_id)
        await asyncio.sleep(0.3)  # the guard is waiting by now
        for manager in self.managers:
            await manager.approvals.approve(self.w.org.id, approval, comment="ok")

    async def close(self) -> None:
        for c in (self.admin, *self.managers):
            await c.close()


@pytest.fixture
async def aw(w: World, app: Any) -> AsyncIterator[AsyncWorld]:
    world = AsyncWorld(w, app)
    yield world
    await world.close()


@pytest.mark.anyio
async def test_the_guard_asks_an_async_run_on_the_event_loop(aw: AsyncWorld) -> None:
    @guard(timeout=10)
    async def refund_payment(order: str, amount: float) -> str:
        CALLED.append(("refund_payment", amount))
        return f"refunded {amount} on {order}"

    assert (await refund_payment("A-0", 5)).startswith("DENIED")  # no run: default deny
    run = await aw.start()
    with use_run(run):
        assert current_run() is run
        assert await refund_payment("A-1", 25) == "refunded 25 on A-1"
        approver = asyncio.create_task(aw.approve_when_asked(run.id))
        assert await refund_payment("A-2", 250) == "refunded 250 on A-2"  # two managers
        await approver
        with pytest.raises(TypeError):  # a sync tool cannot wait on an AsyncRun
            refund_payment_sync("A-3", 5)
    assert (await run.status()).tool_calls == 2
    assert CALLED == [("refund_payment", 25), ("refund_payment", 250)]
    with use_run(aw.w.start()):  # a sync Run guards it too, asked in a worker thread
        assert await refund_payment("A-4", 10) == "refunded 10 on A-4"
    with use_run(await aw.start()):
        text = await wire_money_async("acct-9")
    assert text.startswith("DENIED")
    assert "undeclared_tool" in text
    assert ("wire_money", "acct-9") not in CALLED


@guard
def refund_payment_sync(order: str, amount: float) -> str:
    return "must not run"


@guard(tool="wire_money")
async def wire_money_async(to: str) -> str:
    CALLED.append(("wire_money", to))
    return "sent"


@pytest.mark.anyio
async def test_langchain_ainvoke_with_an_async_run(aw: AsyncWorld) -> None:
    _need("langchain_core", "langchain")
    from langchain_core.tools import ToolException, tool

    from bastion.client.adapters import langchain as lc

    @tool
    @lc.guard("refund_payment", timeout=1)
    async def refund(order: str, amount: float) -> str:
        """Refund an order."""
        return f"refunded {amount}"

    refund.handle_tool_error = lc.handle_denied

    @tool
    @lc.guard
    async def wire(to: str) -> str:
        """Wire money."""
        return "sent"

    assert set(refund.args) == {"order", "amount"}
    run = await aw.start()
    with use_run(run):
        assert await refund.ainvoke({"order": "A-1", "amount": 25}) == "refunded 25.0"
        denied = await refund.ainvoke({"order": "A-1", "amount": 500})  # nobody decides
    assert denied.startswith("DENIED")
    assert "nobody approved it in time" in denied
    assert (await run.status()).tool_calls == 2
    with use_run(await aw.start()), pytest.raises(ToolException) as raised:
        await wire.ainvoke({"to": "acct-9"})
    assert isinstance(raised.value, ActionDenied)
    assert raised.value.reason == "undeclared_tool"


@pytest.mark.anyio
async def test_openai_agents_async_tool_with_an_async_run(aw: AsyncWorld) -> None:
    _need("agents", "openai-agents")
    from agents.tool_context import ToolContext

    from agents import RunContextWrapper
    from bastion.client.adapters import openai_agents as oa

    ran: list[float] = []

    @oa.function_tool(timeout=10)
    async def refund_payment(order: str, amount: float) -> str:
        """Refund an order."""
        ran.append(amount)
        return f"refunded {amount}"

    @oa.function_tool(tool="wire_money")
    async def wire(to: str) -> str:
        """Wire money."""
        return "sent"

    async def call(tool: Any, name: str, params: dict[str, Any], call_id: str) -> tuple[bool, str]:
        ctx = ToolContext(
            context=None, tool_name=name, tool_call_id=call_id, tool_arguments=json.dumps(params)
        )
        waits = await tool.needs_approval(RunContextWrapper(context=None), params, call_id)
        return waits, str(await tool.on_invoke_tool(ctx, json.dumps(params)))

    run = await aw.start()
    with use_run(run):
        assert await call(refund_payment, "refund_payment", {"order": "A", "amount": 5}, "c1") == (
            False,
            "refunded 5.0",
        )
    assert (await run.status()).tool_calls == 1  # the hook's call was taken over

    run = await aw.start()
    approver = asyncio.create_task(aw.approve_when_asked(run.id))
    with use_run(run):
        waits, out = await call(
            refund_payment, "refund_payment", {"order": "B", "amount": 250}, "c2"
        )
    await approver
    assert waits is True  # the SDK would pause the run for approval here
    assert out == "refunded 250.0"
    assert (await run.status()).tool_calls == 1
    assert ran == [5, 250]

    with use_run(await aw.start()):
        waits, out = await call(wire, "wire_money", {"to": "x"}, "c3")
    assert waits is False
    assert out.startswith("DENIED")
    assert "undeclared_tool" in out


@pytest.mark.anyio
async def test_langgraph_async_node_interrupts_while_people_decide(aw: AsyncWorld) -> None:
    _need("langgraph", "langgraph")
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command

    from bastion.client.adapters import langgraph as lg

    ran: list[float] = []

    @lg.guard(timeout=10)
    async def refund_payment(order: str, amount: float) -> str:
        ran.append(amount)
        return f"refunded {amount}"

    class State(TypedDict, total=False):
        amount: float
        result: str

    async def act(state: State) -> State:
        return {"result": await refund_payment("A-1", state["amount"])}

    builder = StateGraph(State)
    builder.add_node("act", act)
    builder.add_edge(START, "act")
    builder.add_edge("act", END)
    graph = builder.compile(checkpointer=InMemorySaver())

    run = await aw.start()
    config: Any = {"configurable": {"thread_id": "at-1"}}
    with use_run(run):
        paused = await graph.ainvoke({"amount": 250}, config)
        assert "__interrupt__" in paused
        asked = paused["__interrupt__"][0].value["bastion"]
        assert asked["tool"] == "refund_payment"
        assert asked["run_id"] == run.id
        assert ran == []
        assert await aw.pending(run.id) == asked["approval_id"]
        await aw.approve_when_asked(run.id)
        done = await graph.ainvoke(Command(resume=True), config)
    assert done["result"] == "refunded 250"
    assert ran == [250]
    assert (await run.status()).tool_calls == 1  # the resumed node found the same gate call

    run = await aw.start()
    config = {"configurable": {"thread_id": "at-2"}}
    with use_run(run):
        await graph.ainvoke({"amount": 300}, config)
        approval = await aw.pending(run.id)
        await aw.managers[0].approvals.deny(aw.w.org.id, approval, comment="no")
        done = await graph.ainvoke(Command(resume=True), config)
    assert done["result"].startswith("DENIED")
    assert ran == [250]
    small = await aw.start()
    with use_run(small):
        done = await graph.ainvoke({"amount": 5}, {"configurable": {"thread_id": "at-3"}})
    assert done["result"] == "refunded 5"
