"""Alert rules from the Alerts page over HTTP (in process), checked through the API:
a rule added with its channel, a bad one refused by field with nothing written, a rule
deleted; a manager (who reads them) may do neither."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.console.helpers import csrf_of, sign_in
from tests.factories import Factory, Org


def _signed_in(factory: Factory, email: str) -> TestClient:
    client = TestClient(factory.client.app, raise_server_exceptions=False)
    sign_in(client, email)
    return client


def _post(client: TestClient, action: str, **data: Any) -> httpx.Response:
    token = csrf_of(client.get("/console/alerts").text)
    return client.post(action, data={"csrf": token, **data}, follow_redirects=False)


def _rules(factory: Factory, org: Org) -> list[dict[str, Any]]:
    answer = factory.client.get(f"/v1/orgs/{org.id}/alert-rules", headers=org.headers)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])


def test_add_and_delete_an_alert_rule(factory: Factory) -> None:
    org = factory.org()
    client = _signed_in(factory, org.admin.email)
    added = _post(client, "/console/alerts/rules", name="Too many failures",
                  kind="failed_signins_account", params='{"threshold": 7}', enabled="1",
                  channel_type="email", channel_to="sec@example.com, ops@example.com")  # fmt: skip
    assert added.status_code == 303, added.text
    [rule] = _rules(factory, org)
    assert (rule["name"], rule["kind"], rule["enabled"]) == (
        "Too many failures", "failed_signins_account", True,
    )  # fmt: skip
    assert rule["params"]["threshold"] == 7
    assert rule["channels"] == [{"type": "email", "url": None,
                                 "to": ["sec@example.com", "ops@example.com"]}]  # fmt: skip
    page = client.get("/console/alerts").text
    assert "Too many failures" in page
    assert 'aria-label="Delete rule Too many failures"' in page

    for fields, named in (
        ({"name": "x", "kind": "no_such_kind"}, "kind"),
        ({"name": "x", "kind": "data_export", "params": "[1"}, "params"),
        (
            {
                "name": "x",
                "kind": "data_export",
                "channel_type": "webhook",
                "channel_url": "https://hooks.example.com/a",
            },
            "secret",
        ),
    ):
        refused = _post(client, "/console/alerts/rules", **fields)
        assert refused.status_code == 422, fields
        assert named in refused.text, (fields, refused.text)
    assert len(_rules(factory, org)) == 1

    deleted = _post(client, f"/console/alerts/rules/{rule['id']}/delete")
    assert deleted.status_code == 303
    assert _rules(factory, org) == []
    events = factory.client.get(
        f"/v1/orgs/{org.id}/audit-events?type=alert_rule.deleted", headers=org.headers
    ).json()["data"]
    assert [e["resource"]["id"] for e in events] == [rule["id"]]


def test_a_manager_may_see_but_not_add_or_delete_rules(factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org, "manager")  # audit:read, not org:manage
    made = factory.client.post(
        f"/v1/orgs/{org.id}/alert-rules",
        json={"name": "Exports", "kind": "data_export"},
        headers=org.headers,
    )
    assert made.status_code == 201, made.text
    client = _signed_in(factory, member.email)
    page = client.get("/console/alerts")
    assert page.status_code == 200
    assert "Exports" in page.text
    assert "Add an alert rule" not in page.text
    assert "Delete rule" not in page.text
    token = csrf_of(page.text)
    for action, data in (
        ("/console/alerts/rules", {"name": "x", "kind": "data_export"}),
        (f"/console/alerts/rules/{made.json()['id']}/delete", {}),
    ):
        answer = client.post(action, data={"csrf": token, **data}, follow_redirects=False)
        assert answer.status_code == 403, action
    assert [r["name"] for r in _rules(factory, org)] == ["Exports"]
