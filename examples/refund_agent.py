"""A scripted support agent whose big refunds need two managers' approval (no LLM).

The agent `support-bot` has two tools: `lookup_order` (low risk) and `refund_payment`
(high risk). Policies say: a refund above 100 needs two approvals by managers; smaller
refunds go through. The script plays one conversation for a customer-support member:

    1. look up an order                      → allowed at once
    2. refund 40                             → allowed at once (the small-refund policy)
    3. refund 250                            → pending; two managers approve it from
                                               another thread a second later → runs
    4. refund 500                            → pending; a manager denies it → ActionDenied

Every tool is an ordinary Python function behind `run.guard`, which asks Bastion's
tool-call gate before the function runs. The exit code is 0 when the story goes as
above, 1 otherwise.

Run it (from the repository root):

    make run                                      # terminal 1: serves on :8400

    # terminal 2: an organisation and an admin API key (README, "First steps")
    printf '%s\\n' 'correct-horse-battery-staple' | .venv/bin/bastion org create Acme \\
        --admin-email admin@example.com --admin-password-stdin --json
    .venv/bin/bastion apikey create --org org_… --name examples --role admin --json

    BASTION_API_KEY=bsk_key_… .venv/bin/python examples/refund_agent.py
    # or: .venv/bin/python examples/refund_agent.py --url http://127.0.0.1:8400 --api-key bsk_…

Setup is idempotent: running it again reuses the agent, the policies and the people it
made in that organisation (two managers and a support member, with a demo password).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from bastion.client import ActionDenied, Client, ConflictError, Run

AGENT = "support-bot"
DEMO_PASSWORD = "refund-demo-password"  # noqa: S105 - demo people only, never real ones
TOOLS: list[dict[str, Any]] = [
    {
        "name": "lookup_order",
        "description": "Look up an order's status and amount.",
        "input_schema": {
            "type": "object",
            "properties": {"order": {"type": "string"}},
            "required": ["order"],
            "additionalProperties": False,
        },
        "risk": "low",
    },
    {
        "name": "refund_payment",
        "description": "Refund (part of) an order's payment to the customer's card.",
        "input_schema": {
            "type": "object",
            "properties": {
                "order": {"type": "string", "pattern": "^A-[0-9]+$"},
                "amount": {"type": "number", "exclusiveMinimum": 0},
                "reason": {"type": "string", "maxLength": 200},
            },
            "required": ["order", "amount"],
            "additionalProperties": False,
        },
        "risk": "high",
    },
]
BIG_REFUNDS = "support-bot: refunds above 100 need two managers"
SMALL_REFUNDS = "support-bot: refunds up to 100 go through"

# The "payment system" the tools act on.
ORDERS = {
    "A-1001": {"status": "delivered, damaged", "amount": 40},
    "A-1002": {"status": "never arrived", "amount": 250},
    "A-1003": {"status": "delivered", "amount": 500},
}
REFUNDED: list[tuple[str, float]] = []


def say(who: str, text: str) -> None:
    print(f"{who:>10} │ {text}", flush=True)


# --- setup (as the organisation's admin) ----------------------------------------------


def person(bastion: Client, org: str, local: str, name: str, role: str) -> dict[str, Any]:
    """A user with a demo password, made once per organisation."""
    email = f"{local}+{org.lower()}@example.com"
    found = list(bastion.users.list(org, email=email))
    if found:
        return found[0]
    return bastion.users.create(org, email=email, name=name, role=role, password=DEMO_PASSWORD)


def agent(bastion: Client, org: str) -> dict[str, Any]:
    """`support-bot`, registered once; its tools are brought up to date if they changed."""
    for existing in bastion.agents.list(org):
        if existing["name"] == AGENT:
            return bastion.agents.update(org, existing["id"], tools=TOOLS, visibility="org")
    return bastion.agents.create(
        org,
        name=AGENT,
        description="Answers order questions and refunds payments.",
        visibility="org",
        tools=TOOLS,
    )


def policies(bastion: Client, org: str, bot: dict[str, Any]) -> None:
    """Above 100: two managers. Up to 100: allowed. (Without the second policy a
    high-risk tool would wait for one approval by default.)"""
    existing = {p["name"]: p for p in bastion.approval_policies.list(org)}
    target = {"agents": [bot["id"]], "tools": ["refund_payment"]}
    if BIG_REFUNDS not in existing:
        bastion.approval_policies.create(
            org,
            name=BIG_REFUNDS,
            match={**target, "condition": "arguments.amount > 100"},
            decision="require_approval",
            approvers={"roles": ["manager"]},
            quorum=2,
            expires_in=600,
        )
    small = existing.get(SMALL_REFUNDS)
    if small is None:
        # An `allow` pins the tool definitions it was created for.
        bastion.approval_policies.create(
            org,
            name=SMALL_REFUNDS,
            match={**target, "condition": "arguments.amount <= 100"},
            decision="allow",
        )
        return
    digest = next(t["digest"] for t in bot["tools"] if t["name"] == "refund_payment")
    if small["tool_digests"].get(f"{bot['id']}:refund_payment") != digest:
        say("setup", "refund_payment's definition changed: re-approving it for small refunds")
        bastion.approval_policies.reapprove(org, small["id"])


# --- the managers, deciding from another thread ---------------------------------------


class Managers:
    """Managers who sign in and decide whatever appears in their inbox for this run."""

    def __init__(self, url: str, org: str, emails: list[str]) -> None:
        self.url, self.org, self.emails = url, org, emails
        self.errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []

    def will(self, run_id: str, decisions: list[str], after: float = 1.0) -> None:
        """In the background: wait for the run's next pending approval, then the i-th
        manager decides `decisions[i]` ("approve" or "deny")."""

        def work() -> None:
            try:
                self._decide(run_id, decisions, after)
            except BaseException as exc:  # reported by the main thread
                self.errors.append(exc)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _decide(self, run_id: str, decisions: list[str], after: float) -> None:
        clients = []
        for email in self.emails[: len(decisions)]:
            signed_in = Client(self.url)
            signed_in.auth.login(email, DEMO_PASSWORD)
            clients.append(signed_in)
        approval = self._next_pending(clients[0], run_id)
        time.sleep(after)
        for i, (manager, decision) in enumerate(zip(clients, decisions, strict=True)):
            args = approval["arguments"]
            who = f"manager {i + 1}"
            if decision == "approve":
                done = manager.approvals.approve(self.org, approval["id"], comment="checked")
                say(who, f"approves {args['amount']} on {args['order']} → {done['status']}")
            else:
                done = manager.approvals.deny(self.org, approval["id"], comment="too much")
                say(who, f"denies {args['amount']} on {args['order']} → {done['status']}")
        for manager in clients:
            manager.auth.logout()
            manager.close()

    def _next_pending(self, manager: Client, run_id: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for approval in manager.approvals.list(self.org, status="pending", mine=True):
                if approval["run_id"] == run_id:
                    return approval
            time.sleep(0.2)
        raise TimeoutError("no approval request arrived")

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=60)


# --- the agent --------------------------------------------------------------------------


def waiting(call: dict[str, Any]) -> None:
    reason, approval = call["reason"], call["approval_id"]
    say("bot", f"{call['tool']} is pending ({reason}); waiting for approval {approval}…")


def tools(run: Run) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The agent's tools: plain functions, each behind the gate."""

    @run.guard(timeout=60, on_pending=waiting)
    def lookup_order(order: str) -> dict[str, Any]:
        return ORDERS[order]

    @run.guard(timeout=60, on_pending=waiting)
    def refund_payment(order: str, amount: float, reason: str = "customer request") -> str:
        REFUNDED.append((order, amount))
        return f"refunded {amount} on {order} ({reason})"

    return lookup_order, refund_payment


def conversation(run: Run, managers: Managers) -> list[str]:
    """The scripted chat; returns what went differently from the expected story."""
    lookup_order, refund_payment = tools(run)
    wrong: list[str] = []

    say("customer", "Hi, order A-1001 arrived damaged.")
    found = lookup_order("A-1001")
    say("bot", f"lookup_order(order=A-1001) → {found['status']}, paid {found['amount']}")

    say("customer", "Can I get my 40 back?")
    say("bot", "refund_payment(order=A-1001, amount=40)")
    say("bot", refund_payment("A-1001", 40, reason="damaged"))

    say("customer", "And A-1002 never arrived: 250, please.")
    managers.will(run.id, ["approve", "approve"])
    started = time.monotonic()
    say("bot", "refund_payment(order=A-1002, amount=250)")
    try:
        done = refund_payment("A-1002", 250, reason="never arrived")
        say("bot", f"{done} after {time.monotonic() - started:.1f} s")
    except ActionDenied as denied:
        wrong.append(f"the 250 refund should have been approved: {denied}")

    say("customer", "Refund A-1003 too, all 500.")
    managers.will(run.id, ["deny"])
    say("bot", "refund_payment(order=A-1003, amount=500)")
    try:
        refund_payment("A-1003", 500)
        wrong.append("the 500 refund should have been denied")
    except ActionDenied as denied:
        say("bot", f"ActionDenied: {denied.decision} ({denied.reason}), nothing refunded")
        if (denied.decision, denied.reason) != ("deny", "approval_denied"):
            wrong.append(f"unexpected denial: {denied}")
        say("bot", "Sorry, I can't refund that one; a manager will get back to you.")

    managers.join()
    wrong += [f"a manager failed: {e!r}" for e in managers.errors]
    if REFUNDED != [("A-1001", 40), ("A-1002", 250)]:
        wrong.append(f"refunded {REFUNDED}, expected 40 on A-1001 and 250 on A-1002")
    return wrong


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A scripted agent whose refunds need approval.")
    parser.add_argument("--url", default=os.environ.get("BASTION_URL", "http://127.0.0.1:8400"))
    parser.add_argument("--api-key", default=os.environ.get("BASTION_API_KEY"))
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("an admin API key is needed: --api-key or BASTION_API_KEY")

    with Client(args.url, token=args.api_key) as bastion:
        org = bastion.me()["org_id"]
        managers = [person(bastion, org, f"manager{i}", f"Manager {i}", "manager") for i in (1, 2)]
        member = person(bastion, org, "support", "Sam from support", "member")
        bot = agent(bastion, org)
        policies(bastion, org, bot)
        say("setup", f"{AGENT} ({bot['id']}) in {org}; the run acts for {member['email']}")

        with bastion.runs.start(bot, on_behalf_of=member["id"], ttl_seconds=600) as run:
            say("setup", f"run {run.id} started; its token expires at {run.expires_at:%H:%M:%S %Z}")
            wrong = conversation(run, Managers(args.url, org, [m["email"] for m in managers]))
            say("setup", f"{run.status()['tool_calls']} tool calls asked; revoking the run")

    for problem in wrong:
        print(f"UNEXPECTED: {problem}", file=sys.stderr)
    print("story as expected" if not wrong else "story went wrong", flush=True)
    return 1 if wrong else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConflictError as exc:  # e.g. a demo email taken by another organisation
        print(f"setup failed: {exc}", file=sys.stderr)
        sys.exit(1)
