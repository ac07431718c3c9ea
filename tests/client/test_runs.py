"""The SDK's runs and `guard` against the real app: allow, deny, approval by a quorum of
managers from another thread, denial, timeout, async functions, `AsyncRun`, the
context-manager form and how a function's arguments become the call's arguments."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from bastion.agents.gate import arguments_digest
from bastion.client import (
    ActionDenied,
    AsyncClient,
    AsyncRun,
    AuthenticationError,
    Client,
    MockBastion,
    PermissionDeniedError,
    Run,
)
from tests.factories import Factory, Member, Org

# Long-polls set their own read timeout; Starlette's TestClient warns about any timeout.
pytestmark = pytest.mark.filterwarnings("ignore:You should not use the 'timeout' argument")

REFUND_SCHEMA = {
    "type": "object",
    "properties": {"order": {"type": "string"}, "amount": {"type": "number", "minimum": 0}},
    "required": ["order", "amount"],
    "additionalProperties": False,
}
TOOLS = [
    {"name": "lookup_order", "risk": "low"},
    {"name": "refund_payment", "input_schema": REFUND_SCHEMA, "risk": "high"},
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class World:
    """An org with a support agent, a member the runs act for and three managers."""

    def __init__(self, client: TestClient, factory: Factory) -> None:
        self.http = client
        self.org: Org = factory.org()
        self.admin = Client(http_client=client, token=self.org.admin_key)
        self.agent = self.admin.agents.create(
            self.org.id, name="support", visibility="org", tools=TOOLS
        )
        self.member: Member = factory.member(self.org, "member")
        self.managers = [factory.member(self.org, "manager") for _ in range(3)]
        self._threads: list[threading.Thread] = []

    def two_managers_over_100(self) -> dict[str, Any]:
        return self.admin.approval_policies.create(
            self.org.id,
            name="refunds over 100",
            match={"tools": ["refund_payment"], "condition": "arguments.amount > 100"},
            decision="require_approval",
            approvers={"roles": ["manager"]},
            quorum=2,
        )

    def small_refunds_allowed(self) -> dict[str, Any]:
        return self.admin.approval_policies.create(
            self.org.id,
            name="small refunds",
            match={"tools": ["refund_payment"], "condition": "arguments.amount <= 100"},
            decision="allow",
        )

    def start(self) -> Run:
        return self.admin.runs.start(self.agent, on_behalf_of=self.member.user_id)

    def as_(self, who: Member) -> Client:
        return Client(http_client=self.http, token=who.token)

    def pending_for(self, run_id: str, timeout: float = 10) -> dict[str, Any]:
        """The run's first pending approval, from a manager's inbox."""
        inbox = self.as_(self.managers[0]).approvals
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for approval in inbox.list(self.org.id, status="pending", mine=True):
                if approval["run_id"] == run_id:
                    return approval
            time.sleep(0.05)
        raise AssertionError("no pending approval appeared")

    def later(self, run_id: str, decide: Callable[[dict[str, Any]], None]) -> None:
        """In a background thread: find the run's pending approval, then decide it."""

        def work() -> None:
            approval = self.pending_for(run_id)
            time.sleep(0.3)  # the guard is waiting by now
            decide(approval)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        self._threads.append(thread)

    def approve_by(self, *managers: Member) -> Callable[[dict[str, Any]], None]:
        def decide(approval: dict[str, Any]) -> None:
            for manager in managers:
                self.as_(manager).approvals.approve(self.org.id, approval["id"], comment="ok")

        return decide

    def deny_by(self, manager: Member) -> Callable[[dict[str, Any]], None]:
        def decide(approval: dict[str, Any]) -> None:
            self.as_(manager).approvals.deny(self.org.id, approval["id"], comment="too much")

        return decide

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=15)
            assert not thread.is_alive()


@pytest.fixture
def w(client: TestClient, factory: Factory) -> Iterator[World]:
    world = World(client, factory)
    yield world
    world.join()


def test_start_returns_a_run_with_its_own_token(w: World) -> None:
    run = w.start()
    assert run.id.startswith("run_")
    assert run.token.startswith("bat_")
    assert run.org_id == w.org.id
    assert run.agent_id == w.agent["id"]
    assert run.token not in repr(run)
    status = run.status()
    assert (status["status"], status["on_behalf_of"]) == ("active", w.member.user_id)
    # By id, the organisation comes from the caller's `me()`.
    by_id = w.admin.runs.start(w.agent["id"], on_behalf_of=w.member.user_id, ttl_seconds=60)
    assert by_id.org_id == w.org.id
    assert w.admin.runs.get(by_id.id)["id"] == by_id.id
    assert {r["id"] for r in w.admin.runs.list(w.org.id, w.agent["id"])} >= {run.id, by_id.id}


def test_a_run_binds_to_a_workflow_that_admits_its_agent(w: World) -> None:
    workflow = w.admin.workflows.create(w.org.id, name="refunds", agent_ids=[w.agent["id"]])
    run = w.admin.runs.start(w.agent, on_behalf_of=w.member.user_id, workflow_id=workflow["id"])
    assert run.status()["workflow_id"] == workflow["id"]
    w.admin.workflows.update(w.org.id, workflow["id"], agent_ids=[])
    assert w.admin.workflows.get(w.org.id, workflow["id"])["agent_ids"] == []
    with pytest.raises(PermissionDeniedError):
        w.admin.runs.start(w.agent, on_behalf_of=w.member.user_id, workflow_id=workflow["id"])


def test_guard_allows_and_runs(w: World) -> None:
    run = w.start()
    ran: list[str] = []

    @run.guard
    def lookup_order(order: str) -> str:
        ran.append(order)
        return f"order {order}: shipped"

    assert lookup_order("A-1") == "order A-1: shipped"
    assert lookup_order.__name__ == "lookup_order"
    assert ran == ["A-1"]
    assert run.status()["tool_calls"] == 1


def test_guard_deny_raises_action_denied_and_does_not_run(w: World) -> None:
    policy = w.admin.approval_policies.create(
        w.org.id,
        name="no VIP lookups",
        match={"tools": ["lookup_order"], "condition": "arguments.order.startsWith('VIP')"},
        decision="deny",
    )
    run = w.start()
    ran: list[str] = []

    @run.guard()
    def lookup_order(order: str) -> None:
        ran.append(order)

    with pytest.raises(ActionDenied) as denied:
        lookup_order("VIP-7")
    assert ran == []
    error = denied.value
    assert (error.tool, error.decision, error.reason) == (
        "lookup_order",
        "deny",
        f"policy:{policy['id']}",
    )
    assert error.call_id
    assert error.call_id.startswith("call_")
    assert error.approval_id is None

    @run.guard("drop_database")
    def anything() -> None:
        ran.append("dropped")

    with pytest.raises(ActionDenied) as undeclared:
        anything()
    assert undeclared.value.reason == "undeclared_tool"
    assert ran == []


def test_pending_then_two_managers_approve_from_another_thread(w: World) -> None:
    w.two_managers_over_100()
    w.small_refunds_allowed()
    run = w.start()
    refunded: list[float] = []
    told: list[dict[str, Any]] = []

    @run.guard(timeout=30, on_pending=told.append)
    def refund_payment(order: str, amount: float) -> str:
        refunded.append(amount)
        return f"refunded {amount} on {order}"

    assert refund_payment("A-1", 40) == "refunded 40 on A-1"  # allowed at once
    w.later(run.id, w.approve_by(w.managers[0], w.managers[1]))
    started = time.monotonic()
    assert refund_payment("A-2", amount=250) == "refunded 250 on A-2"
    assert time.monotonic() - started >= 0.3
    assert refunded == [40, 250]
    [pending] = told  # once, for the 250 only
    assert pending["decision"] == "pending"
    assert pending["reason"].startswith("policy:")
    assert pending["approval_id"]


def test_pending_then_denied(w: World) -> None:
    w.two_managers_over_100()
    run = w.start()
    ran: list[float] = []

    @run.guard(timeout=30)
    def refund_payment(order: str, amount: float) -> None:
        ran.append(amount)

    w.later(run.id, w.deny_by(w.managers[2]))
    with pytest.raises(ActionDenied) as denied:
        refund_payment("A-3", 500)
    error = denied.value
    assert (error.decision, error.reason) == ("deny", "approval_denied")
    assert error.approval_id
    assert error.approval_id.startswith("apr_")
    assert ran == []
    shown = w.admin.approvals.get(w.org.id, error.approval_id)
    assert shown["status"] == "denied"
    assert shown["decisions"][0]["comment"] == "too much"


def test_still_pending_at_the_timeout_raises(w: World) -> None:
    w.two_managers_over_100()
    run = w.start()

    @run.guard(timeout=0.5)
    def refund_payment(order: str, amount: float) -> None:
        raise AssertionError("must not run")

    started = time.monotonic()
    with pytest.raises(ActionDenied) as timed_out:
        refund_payment("A-4", 900)
    assert 0.45 <= time.monotonic() - started < 5
    error = timed_out.value
    assert (error.decision, error.reason) == ("pending", "approval_timeout")
    assert error.approval_id is not None
    # The approval is still open: someone may decide it later.
    assert w.admin.approvals.get(w.org.id, error.approval_id)["status"] == "pending"
    assert run.wait(str(error.call_id), timeout=0)["decision"] == "pending"


def test_context_manager_asks_on_enter(w: World) -> None:
    run = w.start()
    with run.guard("lookup_order", arguments={"order": "A-5"}) as call:
        assert call["decision"] == "allow"
        assert call["arguments_digest"] == arguments_digest({"order": "A-5"})
    entered = False
    with pytest.raises(ActionDenied), run.guard("refund_payment", arguments={"amount": "lots"}):
        entered = True
    assert not entered
    with pytest.raises(TypeError), run.guard():
        pass


def test_an_async_generator_is_refused_rather_than_asked_for_on_the_event_loop(w: World) -> None:
    run = w.start()

    async def stream_orders(order: str) -> Any:
        yield order

    with pytest.raises(TypeError, match="async with"):
        run.guard("lookup_order")(stream_orders)


def test_arguments_are_bound_with_defaults(w: World) -> None:
    run = w.start()
    w.later(run.id, w.approve_by(w.managers[0]))
    seen: dict[str, Any] = {}

    @run.guard(timeout=30)
    def refund_payment(order: str, amount: float = 10.5) -> None:
        seen["ran"] = True

    refund_payment("A-6")  # high risk with no policy: one approval by default
    assert seen == {"ran": True}
    [approval] = list(w.admin.approvals.list(w.org.id, status="approved"))
    assert approval["arguments"] == {"order": "A-6", "amount": 10.5}

    class Tools:
        @run.guard("lookup_order")
        def lookup(self, order: str, *, verbose: bool = False, **extra: Any) -> str:
            return order

    assert Tools().lookup("A-7", note="x") == "A-7"
    [looked_up] = [c for c in _calls(w, run) if c["tool"] == "lookup_order"]
    expected = {"order": "A-7", "verbose": False, "note": "x"}  # no self; **extra merged
    assert looked_up["arguments_digest"] == arguments_digest(expected)

    @run.guard("lookup_order", arguments=lambda bound: {"order": bound["order"]})
    def with_connection(order: str, db: object) -> str:
        return order

    assert with_connection("A-8", object()) == "A-8"

    @run.guard("lookup_order")
    def not_json(order: object) -> None:
        raise AssertionError("must not run")

    calls_before = run.status()["tool_calls"]
    with pytest.raises(TypeError, match="not JSON"):
        not_json(object())
    assert run.status()["tool_calls"] == calls_before  # nothing was sent


def _calls(w: World, run: Run) -> list[dict[str, Any]]:
    """The run's decided tool calls, newest first, from the audit trail."""
    events = w.admin.audit_events.list(w.org.id, type="tool_call.decided")
    return [
        {"tool": e["metadata"]["tool"], "arguments_digest": e["metadata"]["arguments_digest"]}
        for e in events
        if e["metadata"]["run_id"] == run.id
    ]


@pytest.mark.anyio
async def test_async_function_with_the_sync_run(w: World) -> None:
    w.two_managers_over_100()
    run = w.start()

    @run.guard(timeout=30)
    async def refund_payment(order: str, amount: float) -> str:
        await asyncio.sleep(0)
        return f"refunded {amount}"

    assert asyncio.iscoroutinefunction(refund_payment)
    w.later(run.id, w.approve_by(w.managers[1], w.managers[2]))
    # The loop stays free while the guard waits in a worker thread.
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.05)

    ticker = asyncio.create_task(tick())
    try:
        assert await refund_payment("A-9", 300) == "refunded 300"
    finally:
        ticker.cancel()
    assert ticks >= 5
    async with run.guard("lookup_order", arguments={"order": "A-9"}) as call:
        assert call["decision"] == "allow"


@pytest.mark.anyio
async def test_async_run_with_async_with_and_a_decorated_function(
    w: World,
    app: Any,
) -> None:
    w.two_managers_over_100()
    transport = httpx.ASGITransport(app=app)
    async with AsyncClient("http://bastion.test", token=w.org.admin_key, transport=transport) as a:
        run = await a.runs.start(w.agent, on_behalf_of=w.member.user_id)
        assert isinstance(run, AsyncRun)
        assert run.token.startswith("bat_")
        assert (await run.status())["status"] == "active"

        async with run.guard("lookup_order", arguments={"order": "B-1"}) as call:
            assert call["decision"] == "allow"

        told: list[str] = []

        async def waiting(call: dict[str, Any]) -> None:
            told.append(call["approval_id"])

        @run.guard(timeout=30, on_pending=waiting)
        async def refund_payment(order: str, amount: float) -> str:
            return f"refunded {amount} on {order}"

        managers = [
            AsyncClient("http://bastion.test", token=m.token, transport=transport)
            for m in w.managers[:2]
        ]

        found_id: list[str] = []

        async def approve_later() -> None:
            while True:
                found = [
                    x
                    async for x in managers[0].approvals.list(w.org.id, status="pending")
                    if x["run_id"] == run.id
                ]
                if found:
                    break
                await asyncio.sleep(0.05)
            found_id.append(found[0]["id"])
            await asyncio.sleep(0.3)
            for manager in managers:
                await manager.approvals.approve(w.org.id, found[0]["id"])

        approver = asyncio.create_task(approve_later())
        assert await refund_payment("B-2", 150) == "refunded 150 on B-2"
        await approver
        assert told == [found_id[0]]

        deny = asyncio.create_task(_deny_first_pending(managers[1], w.org.id, run.id))
        with pytest.raises(ActionDenied) as denied:
            async with run.guard("refund_payment", arguments={"order": "B-3", "amount": 999}):
                raise AssertionError("must not enter")
        await deny
        assert denied.value.reason == "approval_denied"

        with pytest.raises(TypeError):
            run.guard("lookup_order")(lambda order: order)  # a sync function

        async with run:  # revoked on exit
            pass
        with pytest.raises(AuthenticationError):
            await run.status()
        assert (await a.me())["org_id"] == w.org.id  # the parent's connection still works
        for manager in managers:
            await manager.close()


async def _deny_first_pending(manager: AsyncClient, org: str, run_id: str) -> None:
    while True:
        async for approval in manager.approvals.list(org, status="pending", mine=True):
            if approval["run_id"] == run_id:
                await manager.approvals.deny(org, approval["id"], comment="no")
                return
        await asyncio.sleep(0.05)


def test_a_run_as_context_manager_is_revoked_and_leaves_the_parent_open(w: World) -> None:
    with w.start() as run:
        assert run.status()["status"] == "active"
    with pytest.raises(AuthenticationError):
        run.status()
    assert w.admin.me()["org_id"] == w.org.id


def test_agents_hub_policies_and_the_inbox(w: World) -> None:
    public = w.admin.agents.create(w.org.id, name="public helper", visibility="public")
    assert public["id"] in {a["id"] for a in w.admin.agents.hub()}
    assert w.admin.agents.get(w.org.id, w.agent["id"])["name"] == "support"
    allow = w.admin.approval_policies.create(
        w.org.id, name="refunds ok", match={"tools": ["refund_payment"]}, decision="allow"
    )
    key = f"{w.agent['id']}:refund_payment"
    assert key in allow["tool_digests"]
    tools = [TOOLS[0], {**TOOLS[1], "description": "Refund, now with a new description"}]
    w.admin.agents.update(w.org.id, w.agent["id"], tools=tools)
    run = w.start()
    changed = run.tool_call("refund_payment", {"order": "C-1", "amount": 1})
    assert (changed["decision"], changed["reason"]) == ("pending", "tool_changed_since_approved")
    inbox = list(w.as_(w.managers[0]).approvals.list(w.org.id, status="pending", mine=True))
    assert [a["call_id"] for a in inbox] == [changed["id"]]
    repinned = w.admin.approval_policies.reapprove(w.org.id, allow["id"])
    assert repinned["tool_digests"][key] != allow["tool_digests"][key]
    assert run.authorize("refund_payment", {"order": "C-2", "amount": 1})["decision"] == "allow"
    assert {p["id"] for p in w.admin.approval_policies.list(w.org.id)} == {allow["id"]}
    w.admin.approval_policies.delete(w.org.id, allow["id"])


def test_wait_long_polls_in_chunks_of_at_most_60_seconds() -> None:
    mock = MockBastion()
    started = {"run_id": "run_1", "token": "bat_run_secret", "expires_at": "2030-01-01T00:00:00Z"}
    mock.add("POST", "/v1/orgs/org_1/agents/agt_1/runs", started, status=201)
    pending = {
        "id": "call_1",
        "run_id": "run_1",
        "tool": "refund_payment",
        "decision": "pending",
        "approval_id": "apr_1",
        "reason": "x",
        "arguments_digest": "sha256:0",
        "created_at": "2030-01-01T00:00:00Z",
    }
    mock.add("POST", "/v1/runs/run_1/tool-calls", pending, status=201)
    path = "/v1/runs/run_1/tool-calls/call_1"
    mock.add("GET", path, pending).add("GET", path, pending)
    mock.add("GET", path, {**pending, "decision": "allow", "reason": "policy:pol_1"})
    sdk = Client("http://bastion.test", token="bsk_admin", transport=mock.transport())
    run = sdk.runs.start("agt_1", org="org_1")
    assert run.authorize("refund_payment", {"amount": 1}, timeout=None)["decision"] == "allow"
    polls = [r for r in mock.requests if r.method == "GET"]
    assert [r.url.params["wait"] for r in polls] == ["60.0"] * 3
    assert all(r.extensions["timeout"]["read"] > 60 for r in polls)
    assert all(r.headers["authorization"] == "Bearer bat_run_secret" for r in mock.requests[1:])
    assert mock.requests[0].headers["authorization"] == "Bearer bsk_admin"
