"""Access review campaigns: one item per subject; reviewers by user or role, never of
their own access; a revoke takes effect at once (the key stops working, the person is
signed out, the agent loses the secret); at the due date undecided items get `on_due`
with an audit trail; reminders reach reviewers through an alert channel (a real SMTP
server); recurring campaigns; other tenants see nothing; completed campaigns are the
evidence of the access-review controls."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from bastion.agents.models import Agent
from bastion.alerts import service as alerts
from bastion.api.app import notifier
from bastion.audit.models import AuditEvent
from bastion.authz.models import RoleGrant
from bastion.compliance import reviews
from bastion.core.clock import rfc3339, utcnow
from bastion.core.ids import new_id
from tests.alerts.test_alerts import Mailbox, smtp, world  # noqa: F401 - fixtures
from tests.compliance.conftest import writing
from tests.factories import Factory, Member, Org, bearer


def _due(days: float = 7) -> str:
    return str(rfc3339(utcnow() + timedelta(days=days)))


def _create(client: TestClient, org: Org, **body: Any) -> dict[str, Any]:
    payload = {
        "name": "Q4 access review",
        "scope": ["users", "api_keys"],
        "reviewers": {"roles": ["manager"]},
        "due_at": _due(),
        "on_due": "keep",
        **body,
    }
    response = client.post(f"/v1/orgs/{org.id}/access-reviews", json=payload, headers=org.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _items(
    client: TestClient, org: Org, review: str, headers: dict[str, str]
) -> list[dict[str, Any]]:
    response = client.get(f"/v1/orgs/{org.id}/access-reviews/{review}/items", headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def _decide(
    client: TestClient, org: Org, review: str, item: str, who: Member, decision: str, **kw: Any
) -> Any:
    return client.post(
        f"/v1/orgs/{org.id}/access-reviews/{review}/items/{item}/decision",
        json={"decision": decision, **kw},
        headers=who.headers,
    )


def _events(factory: Factory, org: Org, type_: str) -> list[AuditEvent]:
    with factory.state.sessions() as db:
        return list(
            db.execute(
                select(AuditEvent)
                .where(AuditEvent.chain == org.id, AuditEvent.type == type_)
                .order_by(AuditEvent.seq)
            ).scalars()
        )


def test_campaign_items_decisions_and_self_review(factory: Factory) -> None:
    client = factory.client
    org = factory.org()
    reviewer = factory.member(org, "manager")
    member = factory.member(org, "member")
    member_key = factory.api_key(org, "member", headers=None)
    review = _create(client, org)
    assert review["status"] == "open"
    assert review["items"]["total"] >= 5
    assert review["reviewers"] == {"users": [], "roles": ["manager"]}
    items = _items(client, org, review["id"], reviewer.headers)
    by_subject = {(i["kind"], i["subject_id"]): i for i in items}
    assert ("user", member.user_id) in by_subject
    assert ("api_key", member_key["id"]) in by_subject
    assert by_subject[("user", member.user_id)]["access"]["role"] == "member"

    # Nobody reviews their own access; only reviewers decide.
    own = by_subject[("user", reviewer.user_id)]
    response = _decide(client, org, review["id"], own["id"], reviewer, "keep")
    assert response.status_code == 403
    assert "own access" in response.text
    response = _decide(client, org, review["id"], own["id"], member, "keep")
    assert response.status_code in (403, 404)
    admin = org.admin
    response = _decide(client, org, review["id"], own["id"], admin, "keep")
    assert response.status_code == 403  # the admin is no reviewer of this campaign

    # A revoke takes effect at once: the key stops working in the same moment.
    assert client.get("/v1/me", headers=bearer(member_key["key"])).status_code == 200
    key_item = by_subject[("api_key", member_key["id"])]
    response = _decide(
        client, org, review["id"], key_item["id"], reviewer, "revoke", comment="unused"
    )
    assert response.status_code == 200, response.text
    decided = response.json()
    assert (decided["decision"], decided["decided_by"], decided["comment"]) == (
        "revoke",
        reviewer.user_id,
        "unused",
    )
    assert decided["effect"] == "API key revoked"
    assert client.get("/v1/me", headers=bearer(member_key["key"])).status_code == 401
    again = _decide(client, org, review["id"], key_item["id"], reviewer, "keep")
    assert again.status_code == 409

    # Revoking a person suspends them: their session ends now.
    assert client.get("/v1/me", headers=member.headers).status_code == 200
    response = _decide(
        client, org, review["id"], by_subject[("user", member.user_id)]["id"], reviewer, "revoke"
    )
    assert response.status_code == 200, response.text
    assert client.get("/v1/me", headers=member.headers).status_code == 401
    [decision_event, *_] = _events(factory, org, "access_review.decided")
    assert decision_event.actor_id == reviewer.user_id
    assert decision_event.event_metadata["subject_id"] == member_key["id"]
    assert decision_event.event_metadata["decision"] == "revoke"
    revoked = _events(factory, org, "api_key.revoked")
    assert revoked[-1].resource_id == member_key["id"]
    assert revoked[-1].actor_id == reviewer.user_id


def test_agents_grants_and_temporary_grants(factory: Factory) -> None:
    client = factory.client
    org = factory.org()
    reviewer = factory.member(org, "manager")
    owner = factory.member(org, "member")
    agent_id, grant_id = new_id("agt"), new_id("grt")
    with writing(factory) as db:
        db.add(
            Agent(
                id=agent_id,
                org_id=org.id,
                name="payer",
                owner_id=owner.user_id,
                configured_by=owner.user_id,
                visibility="org",
                team_ids=[],
                tools=[],
                connections=["github"],
                secrets=["stripe-key", "db-password"],
            )
        )
        db.add(
            RoleGrant(
                id=grant_id,
                org_id=org.id,
                user_id=owner.user_id,
                role="manager",
                reason="incident",
                expires_at=utcnow() + timedelta(days=3),
            )
        )
    review = _create(
        client, org, scope=["agents", "role_grants"], reviewers={"users": [reviewer.user_id]}
    )
    items = _items(client, org, review["id"], reviewer.headers)
    assert sorted(i["kind"] for i in items) == [
        "agent_connection",
        "agent_secret",
        "agent_secret",
        "role_grant",
    ]
    secret = next(i for i in items if i["access"].get("secret") == "stripe-key")
    response = _decide(client, org, review["id"], secret["id"], reviewer, "revoke")
    assert response.status_code == 200, response.text
    agent = client.get(f"/v1/orgs/{org.id}/agents/{agent_id}", headers=org.headers).json()
    assert agent["secrets"] == ["db-password"]
    assert agent["connections"] == ["github"]
    grant = next(i for i in items if i["kind"] == "role_grant")
    assert grant["subject_id"] == grant_id
    # The grant's holder cannot review it; the reviewer can.
    owner_review = _create(client, org, scope=["role_grants"], reviewers={"users": [owner.user_id]})
    [own] = _items(client, org, owner_review["id"], owner.headers)
    response = _decide(client, org, owner_review["id"], own["id"], owner, "keep")
    assert response.status_code == 403
    response = _decide(client, org, review["id"], grant["id"], reviewer, "revoke")
    assert response.status_code == 200
    assert response.json()["effect"] == "temporary grant revoked"
    with factory.state.sessions() as db:
        assert db.get(RoleGrant, grant_id).revoked_at is not None  # type: ignore[union-attr]


def test_on_due_revokes_undecided_items(factory: Factory) -> None:
    client = factory.client
    org = factory.org()
    reviewer = factory.member(org, "manager")
    kept_key = factory.api_key(org, "member")
    stale_key = factory.api_key(org, "viewer")
    review = _create(
        client,
        org,
        scope=["api_keys"],
        reviewers={"users": [reviewer.user_id]},
        on_due="revoke",
        due_at=_due(1),
    )
    items = {i["subject_id"]: i for i in _items(client, org, review["id"], reviewer.headers)}
    response = _decide(client, org, review["id"], items[kept_key["id"]]["id"], reviewer, "keep")
    assert response.status_code == 200, response.text
    # Before the due date nothing happens to the undecided items.
    reviews.sweep(factory.state.write_sessions, utcnow())
    assert client.get("/v1/me", headers=bearer(stale_key["key"])).status_code == 200
    reviews.sweep(factory.state.write_sessions, utcnow() + timedelta(days=1, seconds=5))
    assert client.get("/v1/me", headers=bearer(stale_key["key"])).status_code == 401
    assert client.get("/v1/me", headers=bearer(kept_key["key"])).status_code == 200
    # The admin's own key was undecided too: revoked; the admin signs in instead.
    assert client.get("/v1/me", headers=org.headers).status_code == 401
    done = client.get(f"/v1/orgs/{org.id}/access-reviews/{review['id']}", headers=org.admin.headers)
    assert done.json()["status"] == "completed"
    assert done.json()["completed_at"]
    items = {i["subject_id"]: i for i in _items(client, org, review["id"], org.admin.headers)}
    stale = items[stale_key["id"]]
    assert (stale["decision"], stale["on_due"], stale["decided_by"]) == ("revoke", True, "system")
    assert items[kept_key["id"]]["on_due"] is False
    on_due_events = [
        e for e in _events(factory, org, "access_review.decided") if e.event_metadata["on_due"]
    ]
    assert {e.event_metadata["subject_id"] for e in on_due_events} >= {stale_key["id"]}
    assert all(e.actor_type == "system" for e in on_due_events)
    [completed] = _events(factory, org, "access_review.completed")
    assert completed.resource_id == review["id"]
    # A completed campaign is the evidence of the access-review controls.
    controls = client.get(
        f"/v1/orgs/{org.id}/compliance/controls",
        params={"framework": "soc2"},
        headers=org.admin.headers,
    ).json()["data"]
    cc62 = next(c for c in controls if c["id"] == "CC6.2")
    assert {
        "type": "access_review",
        "id": review["id"],
        "name": review["name"],
        "completed_at": done.json()["completed_at"],
    } in cc62["evidence"]
    check = next(c for c in cc62["checks"] if c["name"] == "access_reviews_completed")
    assert check["status"] == "passing"


def test_recurring_campaign_starts_its_successor(factory: Factory) -> None:
    client = factory.client
    org = factory.org()
    reviewer = factory.member(org, "manager")
    review = _create(
        client,
        org,
        scope=["service_accounts", "users"],
        reviewers={"users": [reviewer.user_id]},
        recurrence="quarterly",
    )
    for item in _items(client, org, review["id"], reviewer.headers):
        if item["subject_id"] == reviewer.user_id:
            continue
        assert _decide(client, org, review["id"], item["id"], reviewer, "keep").status_code == 200
    # The reviewer's own item is left undecided: the due date keeps it (`on_due`).
    assert (
        client.get(f"/v1/orgs/{org.id}/access-reviews/{review['id']}", headers=org.headers).json()[
            "status"
        ]
        == "open"
    )
    reviews.sweep(factory.state.write_sessions, utcnow() + timedelta(days=8))
    listed = client.get(f"/v1/orgs/{org.id}/access-reviews", headers=org.headers).json()["data"]
    successor = next(r for r in listed if r["previous_id"] == review["id"])
    assert successor["status"] == "open"
    assert successor["recurrence"] == "quarterly"
    assert (
        successor["due_at"][:10]
        == str(rfc3339(reviews.add_months(utcnow() + timedelta(days=7), 3)))[:10]
    )
    assert successor["items"]["total"] == review["items"]["total"]
    # Month arithmetic keeps the day where it can and clips it where it cannot.
    start = utcnow().replace(year=2026, month=11, day=30)
    assert (reviews.add_months(start, 3).month, reviews.add_months(start, 3).day) == (2, 28)


def test_other_tenants_and_validation(factory: Factory) -> None:
    client = factory.client
    org, other = factory.org(), factory.org()
    reviewer = factory.member(org, "manager")
    review = _create(client, org, reviewers={"users": [reviewer.user_id]})
    [item, *_] = _items(client, org, review["id"], org.headers)
    base = f"/v1/orgs/{org.id}/access-reviews/{review['id']}"
    assert client.get(base, headers=other.headers).status_code == 404
    assert client.get(f"{base}/items", headers=other.headers).status_code == 404
    response = client.post(
        f"{base}/items/{item['id']}/decision", json={"decision": "revoke"}, headers=other.headers
    )
    assert response.status_code == 404
    other_base = f"/v1/orgs/{other.id}/access-reviews/{review['id']}"
    assert client.get(other_base, headers=other.headers).status_code == 404
    assert client.get(f"/v1/orgs/{other.id}/access-reviews", headers=other.headers).json() == {
        "data": []
    }
    # A member who reviews nothing sees nothing.
    member = factory.member(org)
    assert client.get(base, headers=member.headers).status_code == 404
    url = f"/v1/orgs/{org.id}/access-reviews"
    good: dict[str, Any] = {
        "name": "x",
        "scope": ["users"],
        "reviewers": {"roles": ["admin"]},
        "due_at": _due(),
        "on_due": "keep",
    }
    changes: list[tuple[dict[str, Any], str]] = [
        ({"due_at": "2001-01-01T00:00:00Z"}, "due_at"),
        ({"due_at": "9999-12-31T00:00:00Z"}, "due_at"),
        ({"reviewers": {}}, "reviewers"),
        ({"reviewers": {"users": ["usr_nobody"]}}, "reviewers.users[0]"),
        ({"reviewers": {"roles": ["overlord"]}}, "reviewers.roles"),
        ({"scope": ["printers"]}, "scope"),
        ({"on_due": "shrug"}, "on_due"),
        ({"recurrence": "hourly"}, "recurrence"),
    ]
    for change, field in changes:
        response = client.post(url, json={**good, **change}, headers=org.headers)
        assert response.status_code == 422, (change, response.text)
        assert field in response.text, (field, response.text)
    assert client.post(url, json=good, headers=member.headers).status_code == 403


def test_reminders_reach_reviewers_by_email(
    world: tuple[TestClient, Factory, Any],  # noqa: F811 - the fixture imported above
    smtp: tuple[Mailbox, int],  # noqa: F811 - the fixture imported above
) -> None:
    client, factory, state = world
    box = smtp[0]
    org = factory.org()
    reviewer = factory.member(org, "manager")
    rule = client.post(
        f"/v1/orgs/{org.id}/alert-rules",
        json={
            "name": "reviews",
            "kind": "access_review_due",
            "channels": [{"type": "email", "to": [reviewer.email]}],
        },
        headers=org.headers,
    )
    assert rule.status_code == 201, rule.text
    review = _create(client, org, reviewers={"users": [reviewer.user_id]})
    reviews.sweep(state.write_sessions, utcnow())
    reviews.sweep(state.write_sessions, utcnow() + timedelta(hours=1))  # once a day only
    reminders = _events(factory, org, "access_review.reminder")
    assert [e.resource_id for e in reminders] == [review["id"]]
    assert reminders[0].event_metadata["reviewers"]["users"] == [reviewer.user_id]
    sent = alerts.run_round(state.sessions, state.write_sessions, notifier(state), org.id)
    assert sent == 1
    [(to, message)] = box.messages
    assert to == [reviewer.email]
    assert review["id"].encode() in message
    assert b"undecided" in message
