"""An approval policy's `match.condition` has the same cost budget as a metadata rule's
(issue 12, finding 2): refused when saved over it (422 naming `match.condition`), and an
evaluation that spends it fails, which denies the call and is counted."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from bastion.approvals.models import ApprovalPolicy
from bastion.authz import conditions
from tests.agents.test_gate import World
from tests.factories import Factory
from tests.responsive import slowest_healthz_while

SIXTY = "[" + ",".join(str(i) for i in range(60)) + "]"
NESTED_4 = f"{SIXTY}.all(a, {SIXTY}.all(b, {SIXTY}.all(c, {SIXTY}.all(d, a + b + c + d >= 0))))"
# Cheap as estimated (lists in the arguments assumed short); costly on long ones.
SCAN = "arguments.items.exists(i, i == 'none')"
# Over the budget: a policy saved before it existed (written to the database here).
PAIRS = "arguments.items.exists(a, arguments.items.exists(b, a + b == 'none'))"


@pytest.fixture
def w(client: TestClient, factory: Factory) -> World:
    return World(client, factory)


def test_a_policy_over_the_budget_is_a_422_naming_the_condition(w: World) -> None:
    response = w.client.post(
        w.url("approval-policies"),
        json={"name": "slow", "match": {"condition": NESTED_4}, "decision": "deny"},
        headers=w.org.headers,
    )
    assert response.status_code == 422, response.text
    error = response.json()["errors"][0]
    assert error["field"] == "match.condition"
    assert "nesting depth 4" in error["message"]


def test_a_policy_costly_at_run_time_is_stopped_and_denies(w: World) -> None:
    """20,000 items: the evaluation runs out of budget and the call is denied (before,
    the condition ran to the end, matched nothing: allowed)."""
    w.policy(match={"tools": ["lookup_order"], "condition": SCAN}, decision="deny")
    run = w.run()
    assert w.call(run, "lookup_order", {"items": ["a", "b"]})["decision"] == "allow"
    stopped = conditions.exhausted
    started = time.perf_counter()
    denied = w.call(run, "lookup_order", {"items": [f"i{n}" for n in range(20_000)]})
    assert time.perf_counter() - started < 1.0
    assert denied["decision"] == "deny"
    assert denied["reason"].startswith("policy_error:")
    assert conditions.exhausted == stopped + 1


def test_healthz_stays_responsive_while_policies_are_evaluated(w: World) -> None:
    """Tool calls whose policy condition (stored before the budget) would run 4,000,000
    iterations each, while /healthz is asked: it answers promptly."""
    policy = w.policy(match={"tools": ["lookup_order"], "condition": SCAN}, decision="deny")
    with w.factory._tx() as db:
        db.get(ApprovalPolicy, policy).match = {"tools": ["lookup_order"], "condition": PAIRS}
        db.commit()
    run = w.run()
    items = [f"i{n}" for n in range(2000)]

    def load() -> None:
        for _ in range(3):
            w.call(run, "lookup_order", {"items": items})

    slowest = slowest_healthz_while(w.client, load, limit=300)
    assert slowest < 1.0, f"/healthz waited {slowest:.3f} s"  # before: 3 s and more
