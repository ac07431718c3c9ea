"""Approvals in Chromium, end to end: an agent waits through the SDK (`bastion.client`)
for a high-risk call; the approver, signed in, sees the request appear live, approves
(the waiting call returns allowed) or denies (it raises `ActionDenied`); a second open
inbox sees a decision within 1 s."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bastion.client import ActionDenied, Client
from tests.console.approvals_setup import agent_with_run
from tests.console.browser import ConsoleServer, Watched, screenshot, sign_in, wait_for_path
from tests.factories import Factory

pytestmark = pytest.mark.e2e

LIVE_BUDGET = 1.0  # seconds: a decision shows on every open inbox within this


class Waiting:
    """An agent's guarded call, asked and waited for through the SDK in a thread."""

    def __init__(self, url: str, token: str, run: dict[str, Any], arguments: dict[str, Any]):
        self.result: dict[str, Any] | None = None
        self.denied: ActionDenied | None = None
        self.pending = threading.Event()
        self.thread = threading.Thread(target=self._go, args=(url, token, run, arguments))
        self.thread.start()

    def _go(self, url: str, token: str, run: dict[str, Any], arguments: dict[str, Any]) -> None:
        with Client(url, token=token) as client:
            started = client.runs.start(run["agent"], org=run["org"])
            try:
                self.result = started.authorize(
                    "refund", arguments, timeout=60, on_pending=lambda _: self.pending.set()
                )
            except ActionDenied as exc:
                self.denied = exc

    def join(self) -> None:
        self.thread.join(timeout=70)
        assert not self.thread.is_alive()


def _inbox(watched: Watched, email: str) -> Any:
    sign_in(watched, email, start="/console/approvals")
    wait_for_path(watched.page, "/console/approvals")
    watched.page.wait_for_selector("body[data-live='on']", timeout=15_000)
    return watched.page


def test_approve_and_deny_end_to_end_with_the_sdk_waiting(
    watched: Watched,
    console_factory: Factory,
    console_server: ConsoleServer,
    axe: str,
    tmp_path: Path,
) -> None:
    org = console_factory.org()
    member, agent, _run, _token = agent_with_run(console_factory, org)
    page = _inbox(watched, org.admin.email)
    assert page.get_by_text("Nothing is waiting for you.").is_visible()
    where = {"agent": agent, "org": org.id}

    waiting = Waiting(console_server.url, member.token, where, {"order": "A-1", "amount": 250})
    assert waiting.pending.wait(30)
    card = page.locator("li.approval").first
    card.wait_for(timeout=10_000)  # arrived live: no reload
    assert "Refund bot" in card.inner_text()
    assert '"amount": 250' in card.inner_text()
    assert page.get_by_role("button", name="Deny").is_visible()
    assert watched.axe(axe) == []
    screenshot(page, "approvals", tmp_path)
    card.get_by_label("Comment (optional)").fill("refund is fine")
    card.get_by_role("button", name="Approve").click()
    page.get_by_text("Your approval is recorded.").wait_for()
    waiting.join()
    assert waiting.denied is None
    assert waiting.result is not None
    assert waiting.result["decision"] == "allow"

    waiting = Waiting(console_server.url, member.token, where, {"order": "A-2", "amount": 9999})
    assert waiting.pending.wait(30)
    card = page.locator("li.approval").first
    card.wait_for(timeout=10_000)
    card.get_by_label("Comment (optional)").fill("too much")
    card.get_by_role("button", name="Deny").click()
    page.get_by_text("Denied: the agent's call will not run.").wait_for()
    waiting.join()
    assert waiting.result is None
    assert waiting.denied is not None
    assert "approval_denied" in str(waiting.denied)
    page.get_by_role("link", name="History").click()
    assert page.get_by_text("too much").first.is_visible()
    watched.clean()


def test_a_second_open_inbox_sees_the_decision_within_a_second(
    watched: Watched, browser: Any, console_factory: Factory, console_server: ConsoleServer
) -> None:
    org = console_factory.org()
    manager = console_factory.member(org, "manager")
    member, agent, _run, _token = agent_with_run(console_factory, org)
    first = _inbox(watched, org.admin.email)
    context = browser.new_context(base_url=console_server.url)
    try:
        other = Watched(context.new_page(), console_server.url).attach()
        second = _inbox(other, manager.email)
        waiting = Waiting(
            console_server.url, member.token, {"agent": agent, "org": org.id}, {"amount": 1}
        )
        assert waiting.pending.wait(30)
        first.locator("li.approval").first.wait_for(timeout=10_000)
        theirs = second.locator("li.approval").first
        theirs.wait_for(timeout=10_000)
        started = time.perf_counter()
        first.locator("li.approval").first.get_by_role("button", name="Approve").click()
        theirs.wait_for(state="detached", timeout=5_000)
        took = time.perf_counter() - started
        print(f"second inbox updated {took * 1000:.0f} ms after the click")
        assert took < LIVE_BUDGET, took
        assert second.get_by_text("Nothing is waiting for you.").is_visible()
        waiting.join()
        assert waiting.result is not None
        assert waiting.result["decision"] == "allow"
        other.clean()
    finally:
        context.close()
    watched.clean()
