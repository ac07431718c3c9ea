"""`PATCH /v1/orgs/{org}/alert-rules/{id}`: the fields given change, validated as on
create (422 naming the field, nothing half-written); a webhook channel keeps its sealed
secret when its URL stays; `kind` cannot change; another organisation's rule is 404; a
manager (who reads rules) may not change one; each change is audited once, without a
secret, and a change to nothing records nothing."""

from __future__ import annotations

import base64
from typing import Any

from fastapi.testclient import TestClient

from bastion.alerts.models import AlertRule
from bastion.alerts.rules import open_secrets
from tests.factories import Factory, Org

SECRET = "whsec_" + base64.b64encode(b"fedcba9876543210fedcba9876543210").decode()
OTHER = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
HOOK = "https://127.0.0.1/hooks"


def _rule(client: TestClient, org: Org, **body: Any) -> dict[str, Any]:
    made = client.post(f"/v1/orgs/{org.id}/alert-rules", json=body, headers=org.headers)
    assert made.status_code == 201, made.text
    return dict(made.json())


def _patch(client: TestClient, org: Org, rule: str, body: Any, headers: Any = None) -> Any:
    return client.patch(
        f"/v1/orgs/{org.id}/alert-rules/{rule}", json=body, headers=headers or org.headers
    )


def _updates(client: TestClient, org: Org) -> list[dict[str, Any]]:
    answer = client.get(
        f"/v1/orgs/{org.id}/audit-events", params={"type": "alert_rule.updated"},
        headers=org.headers,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    return list(answer.json()["data"])


def _secrets(factory: Factory, org: Org, rule_id: str) -> dict[str, str]:
    state = factory.state
    with state.sessions() as db:
        row = db.get(AlertRule, rule_id)
        assert row is not None
        if row.secrets_ciphertext is None:
            return {}
        return open_secrets(state.root_keys, org.id, rule_id, row.key_version,
                            row.secrets_ciphertext)  # fmt: skip


def test_update_changes_the_fields_given_and_is_audited(factory: Factory) -> None:
    client, org = factory.client, factory.org()
    email = {"type": "email", "to": ["sec@example.com"]}
    webhook = {"type": "webhook", "url": HOOK, "secret": SECRET}
    rule = _rule(client, org, name="Failures", kind="failed_signins_account",
                 params={"threshold": 3}, channels=[webhook, email])  # fmt: skip

    changed = _patch(client, org, rule["id"], {"name": "Many failures", "params": {"threshold": 9}})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["name"] == "Many failures"
    # params replace the old ones; those left out take the kind's defaults, as on create
    assert body["params"] == {"threshold": 9, "window_seconds": 900}
    assert [c["type"] for c in body["channels"]] == ["webhook", "email"]
    assert body["enabled"] is True
    fetched = client.get(f"/v1/orgs/{org.id}/alert-rules/{rule['id']}", headers=org.headers)
    assert fetched.json() == body
    [event] = _updates(client, org)
    assert event["resource"]["id"] == rule["id"]
    assert event["metadata"]["fields"] == ["name", "params"]
    assert event["metadata"]["kind"] == "failed_signins_account"

    # The webhook's URL stays and no secret is given: its sealed secret is kept.
    kept = _patch(client, org, rule["id"], {"channels": [{"type": "webhook", "url": HOOK}],
                                            "enabled": False})  # fmt: skip
    assert kept.status_code == 200, kept.text
    assert kept.json()["channels"] == [{"type": "webhook", "url": HOOK, "to": None}]
    assert kept.json()["enabled"] is False
    assert _secrets(factory, org, rule["id"]) == {"0": SECRET}
    # A new secret replaces it; a channel list without a webhook drops it.
    replaced = [email, {"type": "webhook", "url": HOOK, "secret": OTHER}]
    fresh = _patch(client, org, rule["id"], {"channels": replaced})
    assert fresh.status_code == 200, fresh.text
    assert _secrets(factory, org, rule["id"]) == {"1": OTHER}
    assert _patch(client, org, rule["id"], {"channels": [email]}).status_code == 200
    assert _secrets(factory, org, rule["id"]) == {}

    events = _updates(client, org)
    assert [e["metadata"]["fields"] for e in events] == [
        ["channels"], ["channels"], ["channels", "enabled"], ["name", "params"],
    ]  # fmt: skip
    everything = client.get(f"/v1/orgs/{org.id}/audit-events", headers=org.headers).text
    assert SECRET not in everything
    assert OTHER not in everything

    # The same values again change nothing and record nothing.
    again = {"name": "Many failures", "kind": rule["kind"], "params": {"threshold": 9},
             "enabled": False}  # fmt: skip
    same = _patch(client, org, rule["id"], again)
    assert same.status_code == 200, same.text
    assert len(_updates(client, org)) == 4


def test_update_is_validated_as_create_and_writes_nothing_when_refused(
    factory: Factory,
) -> None:
    client, org = factory.client, factory.org()
    webhook = {"type": "webhook", "url": HOOK, "secret": SECRET}
    rule = _rule(client, org, name="Exports", kind="data_export", channels=[webhook])
    before = client.get(f"/v1/orgs/{org.id}/alert-rules/{rule['id']}", headers=org.headers).json()
    cases: list[tuple[Any, str]] = [
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"enabled": "yes"}, "enabled"),
        ({"kind": "mfa_change"}, "kind"),
        ({"kind": "no_such_kind"}, "kind"),
        ({"params": {"window_seconds": 0}}, "params.window_seconds"),
        ({"params": {"threshold": 5}}, "params"),
        ({"params": [1]}, "params"),
        ({"channels": [{"type": "pager"}]}, "channels[0].type"),
        ({"channels": [{"type": "email", "to": ["x"]}]}, "channels[0].to"),
        # a new URL without a secret: the old secret does not follow it
        ({"channels": [{"type": "webhook", "url": "https://127.0.0.2/h"}]}, "channels[0].secret"),
        ({"channels": [{"type": "slack", "url": "ftp://example.com"}]}, "channels[0].url"),
        ({"name": "ok", "colour": "red"}, "*"),  # an unknown field, its name not echoed
    ]
    for body, field in cases:
        refused = _patch(client, org, rule["id"], body)
        assert refused.status_code == 422, (body, refused.text)
        fields = [e["field"] for e in refused.json()["errors"]]
        assert fields[0] == field, (body, fields)
    after = client.get(f"/v1/orgs/{org.id}/alert-rules/{rule['id']}", headers=org.headers).json()
    assert after == before
    assert _secrets(factory, org, rule["id"]) == {"0": SECRET}
    assert _updates(client, org) == []


def test_update_is_tenant_scoped_and_needs_org_manage(factory: Factory) -> None:
    client, org, other = factory.client, factory.org(), factory.org("Other")
    rule = _rule(client, org, name="Exports", kind="data_export")
    # Another organisation's admin, through their own org or this one: 404 / refused.
    theirs = _patch(client, other, rule["id"], {"name": "mine"})
    assert theirs.status_code == 404, theirs.text
    assert _patch(client, org, "alr_doesnotexist", {"name": "x"}).status_code == 404
    manager = factory.member(org, "manager")  # reads rules (audit:read), not org:manage
    refused = _patch(client, org, rule["id"], {"name": "x"}, headers=manager.headers)
    assert refused.status_code == 403, refused.text
    unchanged = client.get(f"/v1/orgs/{org.id}/alert-rules/{rule['id']}", headers=org.headers)
    assert unchanged.json()["name"] == "Exports"
    assert _updates(client, org) == []
