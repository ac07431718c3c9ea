"""Retention per data class: the settings over HTTP (defaults, step-up, audited, 404
across organisations, 422 naming the field) and the purge the app runs hourly and the
CLI runs by hand: what outlived its period goes, what is pending stays, the purge is
recorded, and the audit chain still verifies."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bastion.agents import privacy_hooks
from bastion.agents.models import ToolCall
from bastion.approvals import service as approvals
from bastion.core.clock import clock
from bastion.privacy import retention
from tests.factories import Factory, Org, bearer, step_up

DAY = 86400


def _url(org: Org) -> str:
    return f"/v1/orgs/{org.id}/retention"


def test_defaults_changes_and_scope(client: TestClient, factory: Factory) -> None:
    org, other = factory.org(), factory.org()
    got = client.get(_url(org), headers=org.headers)
    assert got.status_code == 200, got.text
    assert got.json() == {
        "audit_events_days": 90,  # the organisation's audit_retention_days (its default)
        "tool_calls_days": 90,
        "webhook_events_days": 30,
        "deleted_objects_days": 30,
        "run_artifacts_hours": 24,
    }
    put = client.put(
        _url(org), json={"tool_calls_days": 7, "audit_events_days": 400}, headers=org.headers
    )
    assert put.status_code == 200, put.text
    assert put.json()["tool_calls_days"] == 7
    assert put.json()["audit_events_days"] == 400
    assert put.json()["webhook_events_days"] == 30
    org_view = client.get(f"/v1/orgs/{org.id}", headers=org.headers).json()
    assert org_view["audit_retention_days"] == 400  # one setting, two views
    assert client.get(_url(other), headers=other.headers).json()["tool_calls_days"] == 90
    assert client.get(_url(org), headers=other.headers).status_code == 404
    assert (
        client.put(_url(org), json={"tool_calls_days": 1}, headers=other.headers).status_code == 404
    )
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "privacy.retention_updated"},
        headers=org.headers,
    ).json()["data"]
    assert events[0]["metadata"]["tool_calls_days"] == {"from": 90, "to": 7}
    member = factory.member(org)
    assert client.get(_url(org), headers=member.headers).status_code == 403


def test_a_stale_session_must_step_up_to_shorten(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    clock.advance(601)
    refused = client.put(_url(org), json={"tool_calls_days": 5}, headers=org.admin.headers)
    assert refused.status_code == 401, refused.text
    assert refused.json()["code"] == "step_up_required"
    step_up(client, org.admin.headers)
    done = client.put(_url(org), json={"tool_calls_days": 5}, headers=org.admin.headers)
    assert done.status_code == 200, done.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tool_calls_days": 0}, "tool_calls_days"),
        ({"audit_events_days": 5}, "audit_events_days"),
        ({"run_artifacts_hours": "24"}, "run_artifacts_hours"),
        ({"webhook_events_days": 99999}, "webhook_events_days"),
        ({"shredding": True}, "shredding"),
    ],
)
def test_bad_bodies_are_422_naming_the_field(
    client: TestClient, factory: Factory, body: dict[str, Any], field: str
) -> None:
    org = factory.org()
    r = client.put(_url(org), json=body, headers=org.headers)
    assert r.status_code == 422, r.text
    assert field in r.text or '"*"' in r.text


def _sweep(app: Any) -> int:
    with app.state.bastion.write_sessions() as db:
        done = approvals.sweep(db)
        db.commit()
        return done


def _calls(app: Any, org_id: str) -> list[str]:
    with app.state.bastion.sessions() as db:
        stmt = select(ToolCall.decision).where(ToolCall.org_id == org_id)
        return sorted(db.execute(stmt).scalars())


def test_purge_removes_what_outlived_its_period_and_records_it(
    app: Any, client: TestClient, factory: Factory
) -> None:
    org, other = factory.org(), factory.org()
    for who in (org, other):
        tools = [{"name": "low", "risk": "low"}, {"name": "high", "risk": "high"}]
        agent = client.post(
            f"/v1/orgs/{who.id}/agents",
            json={"name": "a", "visibility": "org", "tools": tools},
            headers=who.headers,
        ).json()["id"]
        run = client.post(
            f"/v1/orgs/{who.id}/agents/{agent}/runs",
            json={"ttl_seconds": 86400},
            headers=who.admin.headers,
        ).json()
        for tool in ("low", "high"):
            made = client.post(
                f"/v1/runs/{run['run_id']}/tool-calls",
                json={"tool": tool, "arguments": {}},
                headers=bearer(run["token"]),
            )
            assert made.status_code == 201, made.text
    client.put(_url(org), json={"tool_calls_days": 2}, headers=org.headers)
    clock.advance(3 * DAY)
    # The held calls' approvals (and runs) have expired: settled first, as the app's
    # sweeper does, so no background sweep changes them between the purges below.
    while _sweep(app):
        pass
    done = retention.purge_all(app.state.bastion.write_sessions)
    purged = {p.org_id: p.counts for p in done}
    assert purged[org.id] == {"tool_calls": 2}
    assert purged[other.id] == {}  # its period (90 days) has not passed
    assert _calls(app, org.id) == []
    assert _calls(app, other.id) == ["allow", "deny"]
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events", params={"type": "privacy.purged"}, headers=org.headers
    ).json()["data"]
    assert events[0]["metadata"]["purged"] == {"tool_calls": 2}
    assert events[0]["actor"]["type"] == "system"
    verified = client.post(f"/v1/orgs/{org.id}/audit-events/verify", headers=org.headers)
    assert verified.json()["valid"] is True
    again = retention.purge_all(app.state.bastion.write_sessions)
    assert {p.org_id: p.counts for p in again}[org.id] == {}  # nothing left to purge


def test_a_pending_call_is_never_purged(app: Any, client: TestClient, factory: Factory) -> None:
    org = factory.org()
    call = factory.pending_tool_call(org)
    decided = _calls(app, org.id)
    assert decided == ["pending"]
    with app.state.bastion.write_sessions() as db:
        later = clock.now() + timedelta(days=1)  # every call of the org is older than this
        assert privacy_hooks._purge_calls(db, org.id, later) == 0
        db.commit()
    assert _calls(app, org.id) == ["pending"]
    assert call["approval_id"]


def test_a_domain_registers_its_purge_for_a_known_class_only() -> None:
    with pytest.raises(ValueError, match="unknown data class"):
        retention.register("everything", "x", lambda db, org, cutoff: 0)
