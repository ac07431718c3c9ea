"""Approvals in Chromium, end to end: an agent waits through the SDK (`bastion.client`)
for a high-risk call; the approver, signed in, sees the request appear live, approves
(the waiting call returns allowed) or denies (it raises `ActionDenied`); every other
open inbox shows a decision within 1 s of its commit.

That promise is measured from the decision's commit (taken in the server, which runs in
this process: an SQLAlchemy `after_commit` hook) to the moment each page has handled the
server-sent event (taken in the page: a listener wrapped by an init script), both on
this machine's wall clock. The click, the POST and the deciding page's reload are not
part of it, so a loaded machine slowing those does not fail the test; a wall-clock
bound is kept only as a guard against hanging. Without the live push (no event), the
card never leaves the other inboxes and the test fails."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from bastion.approvals.models import Approval
from bastion.client import ActionDenied, Client
from tests.console.approvals_setup import agent_with_run
from tests.console.browser import ConsoleServer, Watched, screenshot, sign_in, wait_for_path
from tests.factories import Factory

pytestmark = pytest.mark.e2e

LIVE_BUDGET = 1.0  # seconds from a decision's commit to its showing on every open inbox
HANG_GUARD = 20_000  # ms: only so that a broken push fails instead of hanging

# Each `approval` server-sent event a page handles: its data, and the wall-clock times
# (ms) at which it arrived and at which the page's own listener had finished with it.
RECORD_EVENTS = """
(() => {
  window.__approvalEvents = [];
  const add = EventTarget.prototype.addEventListener;
  EventSource.prototype.addEventListener = function (type, listener, options) {
    if (type !== "approval") return add.call(this, type, listener, options);
    return add.call(this, type, function (e) {
      const arrived = Date.now();
      listener.call(this, e);
      window.__approvalEvents.push({data: e.data, arrived: arrived, handled: Date.now()});
    }, options);
  };
})();
"""


@pytest.fixture
def decision_commits() -> Iterator[dict[str, float]]:
    """approval id → wall-clock time (s) at which a transaction that decided it (its
    status left `pending`) committed, in the server running in this process."""
    commits: dict[str, float] = {}

    def flushed(session: Session, _context: Any) -> None:
        for obj in session.dirty:
            if isinstance(obj, Approval) and obj.status != "pending":
                session.info.setdefault("decided_approvals", set()).add(obj.id)

    def committed(session: Session) -> None:
        now = time.time()
        for approval in session.info.pop("decided_approvals", ()):
            commits.setdefault(approval, now)

    def rolled_back(session: Session) -> None:
        session.info.pop("decided_approvals", None)

    hooks = [("after_flush", flushed), ("after_commit", committed),
             ("after_rollback", rolled_back)]  # fmt: skip
    for name, hook in hooks:
        event.listen(Session, name, hook)
    try:
        yield commits
    finally:
        for name, hook in hooks:
            event.remove(Session, name, hook)


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


def _handled(page: Any, approval: str) -> dict[str, Any]:
    """The page's record of the event that told it `approval` was decided."""
    for seen in page.evaluate("window.__approvalEvents"):
        data = json.loads(seen["data"])
        if data["id"] == approval and data["status"] != "pending":
            return dict(seen)
    raise AssertionError(f"no server-sent event reported the decision of {approval}")


def test_every_open_inbox_shows_a_decision_within_a_second_of_its_commit(
    watched: Watched,
    browser: Any,
    console_factory: Factory,
    console_server: ConsoleServer,
    decision_commits: dict[str, float],
) -> None:
    org = console_factory.org()
    manager = console_factory.member(org, "manager")
    member, agent, _run, _token = agent_with_run(console_factory, org)
    first = _inbox(watched, org.admin.email)
    # The same person's second tab, and another approver's browser.
    tab = Watched(first.context.new_page(), console_server.url).attach()
    context = browser.new_context(base_url=console_server.url)
    try:
        other = Watched(context.new_page(), console_server.url).attach()
        watchers = [tab, other]
        for watcher in watchers:
            watcher.page.add_init_script(RECORD_EVENTS)
        tab.page.goto("/console/approvals")
        tab.page.wait_for_selector("body[data-live='on']", timeout=15_000)
        _inbox(other, manager.email)
        waiting = Waiting(
            console_server.url, member.token, {"agent": agent, "org": org.id}, {"amount": 1}
        )
        assert waiting.pending.wait(30)
        card = first.locator("li.approval").first
        card.wait_for(timeout=HANG_GUARD)
        approval = str(card.get_attribute("id")).removeprefix("apr-")
        theirs = [w.page.locator(f"#apr-{approval}") for w in watchers]
        for shown in theirs:
            shown.wait_for(timeout=HANG_GUARD)  # arrived live too
        card.get_by_role("button", name="Approve").click()
        for shown in theirs:
            shown.wait_for(state="detached", timeout=HANG_GUARD)
        committed = decision_commits[approval]
        for watcher, name in zip(watchers, ("same person's tab", "other approver"), strict=True):
            seen = _handled(watcher.page, approval)
            arrived = seen["arrived"] / 1000 - committed
            shown_after = seen["handled"] / 1000 - committed
            print(f"{name}: event {arrived * 1000:.0f} ms, card gone "
                  f"{shown_after * 1000:.0f} ms after the decision's commit")  # fmt: skip
            assert arrived > -0.05, arrived  # both clocks are this machine's
            assert shown_after < LIVE_BUDGET, (name, shown_after)
            assert watcher.page.get_by_text("Nothing is waiting for you.").is_visible()
        waiting.join()
        assert waiting.result is not None
        assert waiting.result["decision"] == "allow"
        for watcher in watchers:
            watcher.clean()
    finally:
        context.close()
    watched.clean()
