"""The Approvals page over HTTP (in process): the inbox holds what I may decide now,
deciding goes through the same rules as the API (separation of duties, quorum, step-up,
CSRF), the arguments are shown escaped, the stream reports changes, and 1,000 pending
requests render within the budget in a fixed number of queries."""

from __future__ import annotations

import html
import json
import threading
import time
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import event

from bastion.console.pages import approvals as approvals_page
from bastion.core.clock import clock, utcnow
from tests.console.approvals_setup import many_pending, pending
from tests.console.helpers import csrf_of, sign_in
from tests.factories import PASSWORD, Factory, Org

INBOX = "/console/approvals"


def _signed_in(factory: Factory, email: str) -> TestClient:
    client = TestClient(factory.client.app, raise_server_exceptions=False)
    sign_in(client, email)
    return client


def _decide(client: TestClient, apr: str, how: str, comment: str = "") -> httpx.Response:
    token = csrf_of(client.get(INBOX).text)
    return client.post(
        f"/console/approvals/{apr}/{how}",
        data={"csrf": token, "comment": comment, "back": INBOX},
        follow_redirects=False,
    )


def _api(factory: Factory, org: Org, apr: str) -> Any:
    answer = factory.client.get(f"/v1/orgs/{org.id}/approvals/{apr}", headers=org.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_inbox_shows_the_request_safely_and_approve_allows_the_call(factory: Factory) -> None:
    org = factory.org()
    hostile = {"note": "<script>alert(1)</script>", "amount": 250}
    p = pending(factory, org, hostile)
    client = _signed_in(factory, org.admin.email)
    page = client.get(INBOX)
    assert page.status_code == 200
    assert "<h1>Approvals</h1>" in page.text
    assert f'id="apr-{p.approval_id}"' in page.text
    assert "Refund bot" in page.text
    assert "refund" in page.text
    assert "risk-high" in page.text
    assert p.requester.email in page.text  # who it is for
    assert "0 of 1" in page.text  # quorum progress
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert '"amount": 250' in html.unescape(page.text)  # pretty JSON
    # The requester sees nothing to decide: an action of a run they started.
    theirs = _signed_in(factory, p.requester.email).get(INBOX)
    assert f'id="apr-{p.approval_id}"' not in theirs.text

    answer = _decide(client, p.approval_id, "approve", "ok for me")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{INBOX}?notice=apr-approved"
    assert _api(factory, org, p.approval_id)["status"] == "approved"
    waited = factory.client.get(
        f"/v1/runs/{p.run_id}/tool-calls/{p.call['id']}",
        headers={"Authorization": f"Bearer {p.run_token}"},
    )
    assert waited.json()["decision"] == "allow"
    assert f'id="apr-{p.approval_id}"' not in client.get(INBOX).text
    history = client.get(f"{INBOX}?tab=history").text
    assert f'id="apr-{p.approval_id}"' in history
    assert "ok for me" in history
    assert f"approve by {org.admin.email}" in history
    # Deciding again is the API's conflict.
    assert _decide(client, p.approval_id, "approve").status_code == 409


def test_deny_with_a_comment(factory: Factory) -> None:
    org = factory.org()
    p = pending(factory, org)
    client = _signed_in(factory, org.admin.email)
    answer = _decide(client, p.approval_id, "deny", "not this one")
    assert answer.status_code == 303
    shown = _api(factory, org, p.approval_id)
    assert shown["status"] == "denied"
    assert [(d["decision"], d["comment"]) for d in shown["decisions"]] == [("deny", "not this one")]


def test_quorum_my_decision_leaves_my_inbox_not_the_others(factory: Factory) -> None:
    org = factory.org()
    p = pending(factory, org, quorum=2)
    manager = factory.member(org, "manager")
    mine, theirs = _signed_in(factory, org.admin.email), _signed_in(factory, manager.email)
    assert _decide(mine, p.approval_id, "approve").status_code == 303
    assert _api(factory, org, p.approval_id)["status"] == "pending"
    assert f'id="apr-{p.approval_id}"' not in mine.get(INBOX).text  # already decided by me
    card = mine.get(f"/console/approvals/{p.approval_id}/card")
    assert card.status_code == 204
    other = theirs.get(INBOX).text
    assert f'id="apr-{p.approval_id}"' in other
    assert "1 of 2" in other
    fragment = theirs.get(f"/console/approvals/{p.approval_id}/card")
    assert fragment.status_code == 200
    # Its form comes back to the inbox it is shown in, not to the fragment.
    assert 'name="back" value="/console/approvals"' in fragment.text
    assert _decide(theirs, p.approval_id, "approve").status_code == 303
    assert _api(factory, org, p.approval_id)["status"] == "approved"


def test_detail_page_the_emailed_link(factory: Factory) -> None:
    org = factory.org()
    p = pending(factory, org)
    client = _signed_in(factory, org.admin.email)
    page = client.get(f"/console/approvals/{p.approval_id}")
    assert page.status_code == 200
    assert "<h1>Approval</h1>" in page.text
    assert ">Approve</button>" in page.text
    token = csrf_of(page.text)
    back = f"/console/approvals/{p.approval_id}"
    answer = client.post(f"{back}/deny", data={"csrf": token, "back": back}, follow_redirects=False)
    assert answer.headers["location"] == f"{back}?notice=apr-denied"
    after = client.get(back).text
    assert "denied" in after
    assert ">Approve</button>" not in after
    # Another organisation's approval is not found.
    stranger = factory.org("Other")
    outsider = _signed_in(factory, stranger.admin.email)
    assert outsider.get(back).status_code == 404
    assert outsider.get(f"{back}/card").status_code == 204


def test_high_risk_decision_asks_for_step_up(factory: Factory) -> None:
    org = factory.org()
    p = pending(factory, org)
    client = _signed_in(factory, org.admin.email)
    clock.advance(601)  # the sign-in is older than step_up_max_age
    prompt = _decide(client, p.approval_id, "approve")
    assert prompt.status_code == 401
    assert "Confirm it" in prompt.text
    assert _api(factory, org, p.approval_id)["status"] == "pending"
    verified = client.post(
        "/console/step-up",
        data={"csrf": csrf_of(prompt.text), "password": PASSWORD, "back": INBOX},
        follow_redirects=False,
    )
    assert verified.status_code == 303
    assert _decide(client, p.approval_id, "approve").status_code == 303
    assert _api(factory, org, p.approval_id)["status"] == "approved"


def test_decision_without_csrf_is_refused(factory: Factory) -> None:
    org = factory.org()
    p = pending(factory, org)
    client = _signed_in(factory, org.admin.email)
    answer = client.post(
        f"/console/approvals/{p.approval_id}/approve", data={"comment": "x"},
        follow_redirects=False,
    )  # fmt: skip
    assert answer.status_code == 403
    assert _api(factory, org, p.approval_id)["status"] == "pending"
    bad = client.post(
        f"/console/approvals/{p.approval_id}/approve", data={"csrf": "forged"},
        follow_redirects=False,
    )  # fmt: skip
    assert bad.status_code == 403
    too_long = _decide(client, p.approval_id, "approve", "x" * 2001)
    assert too_long.status_code == 422
    assert "comment" in too_long.text
    assert _api(factory, org, p.approval_id)["status"] == "pending"


def test_stream_reports_a_decision(factory: Factory, monkeypatch: Any) -> None:
    monkeypatch.setattr(approvals_page, "STREAM_SECONDS", 3.0)
    org = factory.org()
    p = pending(factory, org)
    client = _signed_in(factory, org.admin.email)
    approver = _signed_in(factory, org.admin.email)

    def later() -> None:
        time.sleep(1.0)
        assert _decide(approver, p.approval_id, "approve").status_code == 303

    thread = threading.Thread(target=later)
    thread.start()
    body = client.get("/console/approvals/stream").text
    thread.join()
    assert "event: approval" in body
    assert f'"id": "{p.approval_id}", "status": "approved"' in body
    # Signed out: no stream.
    anonymous = TestClient(factory.client.app, raise_server_exceptions=False)
    assert anonymous.get("/console/approvals/stream", follow_redirects=False).status_code in (
        302,
        303,
    )


def test_one_thousand_pending_render_in_a_fixed_number_of_queries(factory: Factory) -> None:
    """1,000 pending requests: the inbox lists every one, each card whole (its arguments,
    its buttons), in a fixed number of queries (none per request). The time it takes is
    a benchmark's figure (`bench/console.py`, docs/benchmarks.md), not this test's."""
    org = factory.org()
    first = pending(factory, org)
    many_pending(factory, first, 999)
    client = _signed_in(factory, org.admin.email)
    engine = factory.state.engine
    statements: list[str] = []

    def count(*_: Any) -> None:
        statements.append("q")

    event.listen(engine, "before_cursor_execute", count)
    try:
        page = client.get(INBOX)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert page.status_code == 200
    assert page.text.count('class="approval"') == 1000
    assert page.text.count(">Approve</button>") == 1000
    assert 'id="inbox-count">1000<' in page.text
    for i in (0, 500, 998):
        assert f"&#34;order&#34;: &#34;A-{i}&#34;" in page.text
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page.text
    assert "<b>not bold</b>" not in page.text
    assert len(statements) < 40, len(statements)  # no query per request


def test_pretty_arguments_are_the_standard_encoders_text() -> None:
    """The cards' fast pretty-printer gives exactly `json.dumps(indent=2, sort_keys=True,
    ensure_ascii=False, default=str)`, cut at ARGUMENTS_SHOWN characters."""
    from bastion.console.pages.approvals_data import ARGUMENTS_SHOWN, pretty

    samples: list[Any] = [
        {"amount": 5, "order": "A-1", "note": "<b>not bold</b>"},
        {"z": [], "a": {}, "m": [1, 2.5, -0.0, 1e300, True, False, None, "x"]},
        {"nested": {"b": [{"c": {"d": ["é", "日本", "\u2028", 'quote " and \\ back']}}]}},
        [],
        {},
        "text\nwith newline",
        42,
        None,
        [[[]], [{}], [[1]]],
        {"when": utcnow()},  # not JSON: default=str, as the standard encoder
        {2: "int keys", 1: "b"},  # keys JSON turns into text: the standard encoder's order
        {"big": "x" * 5000},
        {f"k{i:04}": list(range(i % 7)) for i in range(400)},
    ]
    for value in samples:
        full = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
        expected = (
            (full, False)
            if len(full) <= ARGUMENTS_SHOWN
            else (full[:ARGUMENTS_SHOWN] + "\n…", True)
        )
        assert pretty(value) == expected, value
