"""Agents, Audit log, Alerts, Secrets and Webhooks pages over HTTP (in process): what
they show, what their actions do (checked through the API), and that they refuse what
the API refuses."""

from __future__ import annotations

import re
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import update

from bastion.core.clock import clock
from bastion.core.db import begin_write
from bastion.webhooks import outbound
from bastion.webhooks.models import WebhookDelivery
from tests.console.helpers import csrf_of, sign_in
from tests.factories import PASSWORD, Factory, Org


def _signed_in(factory: Factory, email: str) -> TestClient:
    client = TestClient(factory.client.app, raise_server_exceptions=False)
    sign_in(client, email)
    return client


def _post(client: TestClient, page: str, action: str, **data: Any) -> httpx.Response:
    token = csrf_of(client.get(page).text)
    return client.post(action, data={"csrf": token, "back": page, **data}, follow_redirects=False)


def _api(factory: Factory, org: Org, method: str, path: str, **kw: Any) -> Any:
    answer = factory.client.request(method, f"/v1/orgs/{org.id}{path}", headers=org.headers, **kw)
    assert answer.status_code < 300, answer.text
    return answer.json() if answer.content else None


def test_agents_list_detail_and_clone_from_the_hub(factory: Factory) -> None:
    publisher = factory.org("Publisher")
    tools = [{"name": "lookup", "risk": "low"}, {"name": "refund", "risk": "high"}]
    body = {"name": "Public helper", "visibility": "public", "tools": tools}
    public = _api(factory, publisher, "POST", "/agents", json=body)
    org = factory.org()
    body = {"name": "Ops <bot>", "visibility": "org", "tools": tools, "secrets": ["db_password"]}
    private = _api(factory, org, "POST", "/agents", json=body)
    client = _signed_in(factory, org.admin.email)
    page = client.get("/console/agents").text
    assert "<h1>Agents</h1>" in page
    assert "Ops &lt;bot&gt;" in page
    assert "Public helper" in page
    detail = client.get(f"/console/agents/{private['id']}").text
    digest = private["tools"][1]["digest"]
    assert digest in detail
    assert "risk-high" in detail
    assert "db_password" in detail
    cloned = _post(client, "/console/agents", "/console/agents/clone", from_hub=public["id"])
    assert cloned.status_code == 303
    listed = _api(factory, org, "GET", "/agents")["data"]
    assert any(a["cloned_from"] == public["id"] for a in listed)
    # A member without agents:create is refused as by the API; nothing is cloned.
    member = factory.member(org, "viewer")
    refused = _post(_signed_in(factory, member.email), "/console/agents", "/console/agents/clone",
                    from_hub=public["id"])  # fmt: skip
    assert refused.status_code == 403
    assert len(_api(factory, org, "GET", "/agents")["data"]) == len(listed)
    # Another organisation's private agent is not found.
    assert (
        _signed_in(factory, publisher.admin.email)
        .get(f"/console/agents/{private['id']}")
        .status_code
        == 404
    )


def test_audit_filters_detail_export_and_bad_input(factory: Factory) -> None:
    org = factory.org()
    _api(factory, org, "POST", "/agents", json={"name": "Findable", "visibility": "org"})
    client = _signed_in(factory, org.admin.email)
    page = client.get("/console/audit", params={"q": "Findable", "outcome": "success"})
    assert page.status_code == 200
    assert "agent.created" in page.text
    assert "user.created" not in page.text
    event = re.search(r'href="/console/audit/(evt_\w+)"', page.text)
    assert event is not None
    detail = client.get(f"/console/audit/{event.group(1)}")
    assert detail.status_code == 200
    assert "Findable" in detail.text
    exported = client.get("/console/audit/export", params={"q": "Findable", "format": "csv"})
    assert exported.status_code == 200
    assert "agent.created" in exported.text
    assert exported.headers["content-type"].startswith("text/csv")
    types = [e["type"] for e in _api(factory, org, "GET", "/audit-events")["data"]]
    assert "audit.exported" in types or any(t.startswith("audit.export") for t in types)
    bad = client.get("/console/audit", params={"outcome": "maybe", "since": "yesterday"})
    assert bad.status_code == 422
    assert "outcome" in bad.text
    assert "maybe" not in bad.text  # problems never echo input
    verified = _post(client, "/console/audit", "/console/audit/verify")
    assert verified.status_code == 200
    assert "Chain verified" in verified.text
    stranger = factory.org("Other")
    assert (
        _signed_in(factory, stranger.admin.email)
        .get(f"/console/audit/{event.group(1)}")
        .status_code
        == 404
    )


def test_secrets_names_rotate_and_reveal_once_with_step_up(factory: Factory) -> None:
    org = factory.org()
    _api(factory, org, "PUT", "/secrets/stripe_key", json={"value": "sk_first_value"})
    client = _signed_in(factory, org.admin.email)
    page = client.get("/console/secrets").text
    assert "stripe_key" in page
    assert "sk_first_value" not in page
    assert "version 1 of 1" in page
    rotated = _post(client, "/console/secrets", "/console/secrets/stripe_key/rotate",
                    value="sk_second_value")  # fmt: skip
    assert rotated.status_code == 303
    assert "version 2 of 2" in client.get("/console/secrets").text
    clock.advance(601)  # the sign-in is older than step_up_max_age
    prompt = _post(client, "/console/secrets", "/console/secrets/stripe_key/reveal")
    assert prompt.status_code == 401
    assert "sk_second_value" not in prompt.text
    verified = client.post(
        "/console/step-up",
        data={"csrf": csrf_of(prompt.text), "password": PASSWORD, "back": "/console/secrets"},
        follow_redirects=False,
    )
    assert verified.status_code == 303
    shown = _post(client, "/console/secrets", "/console/secrets/stripe_key/reveal")
    assert shown.status_code == 200
    assert "sk_second_value" in shown.text
    assert shown.headers["cache-control"] == "no-store"
    assert "sk_second_value" not in client.get("/console/secrets").text  # once
    events = _api(factory, org, "GET", "/audit-events", params={"type": "secret.revealed"})
    assert len(events["data"]) == 1
    bad = _post(client, "/console/secrets", "/console/secrets", name="a b", value="x")
    assert bad.status_code == 422
    assert "name" in bad.text
    # A viewer may not reveal (the API's permission), and sees no button.
    viewer = _signed_in(factory, factory.member(org, "viewer").email)
    assert "Reveal" not in viewer.get("/console/secrets").text
    assert _post(viewer, "/console/secrets", "/console/secrets/stripe_key/reveal").status_code in (
        403,
        404,
    )


def test_alerts_rules_channels_and_resolve(factory: Factory) -> None:
    org = factory.org()
    rule = _api(factory, org, "POST", "/alert-rules", json={
        "name": "Exports", "kind": "data_export",
        "channels": [{"type": "email", "to": ["sec@example.com"]}]})  # fmt: skip
    client = _signed_in(factory, org.admin.email)
    page = client.get("/console/alerts").text
    assert "<h1>Alerts</h1>" in page
    assert "Exports" in page
    assert "sec@example.com" in page
    assert rule["id"]  # open alerts are listed by the alerts job; none yet
    assert "No open alerts." in page


def test_webhooks_deliveries_and_replay_a_failed_one(factory: Factory) -> None:
    org = factory.org()
    sub = _api(factory, org, "POST", "/webhook-subscriptions",
               json={"url": "http://127.0.0.1:9/hook", "events": ["agent.*"]})  # fmt: skip
    db = factory.state.write_sessions()
    begin_write(db)
    with db:
        (delivery,) = outbound.enqueue(db, org.id, "agent.created", {"id": "agt_x"})
        db.execute(
            update(WebhookDelivery).where(WebhookDelivery.id == delivery)
            .values(status="failed", attempts=8, last_error="127.0.0.1: connection refused")
        )  # fmt: skip
        db.commit()
    client = _signed_in(factory, org.admin.email)
    assert "http://127.0.0.1:9/hook" in client.get("/console/webhooks").text
    page = f"/console/webhooks/subscriptions/{sub['id']}"
    log = client.get(page).text
    assert delivery in log
    assert "connection refused" in log
    assert ">Replay</button>" in log
    replayed = _post(client, page, f"{page}/deliveries/{delivery}/replay")
    assert replayed.status_code == 303
    assert delivery in outbound.due(factory.state.sessions)
    again = _post(client, page, f"{page}/deliveries/{delivery}/replay")
    assert again.status_code == 409  # only a failed delivery
    events = _api(
        factory, org, "GET", "/audit-events", params={"type": "webhook_delivery.replayed"}
    )
    assert len(events["data"]) == 1
    # The API route does the same.
    api = factory.client.post(
        f"/v1/orgs/{org.id}/webhook-subscriptions/{sub['id']}/deliveries/{delivery}/replay",
        headers=org.headers,
    )
    assert api.status_code == 409
