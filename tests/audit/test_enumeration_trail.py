"""Probing for other organisations' objects leaves a trace in the prober's own trail:
404s to an authenticated caller are counted per principal and minute, recorded at the
1st, 2nd, 4th, 8th… of a minute, and an alert rule can watch for bursts of them."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from bastion.alerts import service as alerts
from bastion.api.app import notifier
from bastion.core.clock import clock, utcnow
from tests.factories import Factory, Org


def start_of_a_minute() -> None:
    """Move the clock to just after a minute begins: a test's requests share one minute."""
    now = utcnow()
    clock.advance(61 - now.second - now.microsecond / 1e6)


def _events(client: TestClient, org: Org, type_: str) -> list[dict[str, Any]]:
    response = client.get(
        f"/v1/orgs/{org.id}/audit-events", params={"type": type_}, headers=org.headers
    )
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def test_probing_another_org_is_recorded_in_the_callers_trail(
    client: TestClient, factory: Factory
) -> None:
    prober, target = factory.org(), factory.org()
    start_of_a_minute()
    admin = prober.admin.headers  # a session: the actor is the user
    for _ in range(5):  # another organisation's user, through either organisation's path
        assert client.get(f"/v1/orgs/{target.id}/users", headers=admin).status_code == 404
    missing = f"/v1/orgs/{prober.id}/users/{target.admin.user_id}"
    assert client.get(missing, headers=admin).status_code == 404
    events = _events(client, prober, "authz.not_found")
    assert [e["metadata"]["count"] for e in events] == [4, 2, 1]  # newest first
    first = events[-1]
    assert first["actor"]["id"] == prober.admin.user_id
    assert first["outcome"] == "denied"
    assert first["metadata"]["path"] == f"/v1/orgs/{target.id}/users"
    assert first["metadata"]["method"] == "GET"
    assert _events(client, target, "authz.not_found") == []  # nothing in the target's trail


def test_anonymous_callers_leave_no_not_found_events(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    start_of_a_minute()
    assert client.get(f"/v1/orgs/{org.id}/users").status_code == 401
    assert client.get("/v1/no-such-thing").status_code == 404
    assert _events(client, org, "authz.not_found") == []


def test_not_found_burst_alert(client: TestClient, factory: Factory, app: Any) -> None:
    state = app.state.bastion
    prober, target = factory.org(), factory.org()
    rule = {"name": "enumeration", "kind": "not_found_burst", "params": {"threshold": 4}}
    response = client.post(f"/v1/orgs/{prober.id}/alert-rules", json=rule, headers=prober.headers)
    assert response.status_code == 201, response.text
    member = factory.member(prober, "viewer")
    start_of_a_minute()

    def probe(times: int) -> None:
        for _ in range(times):
            url = f"/v1/orgs/{prober.id}/users/{target.admin.user_id}"
            assert client.get(url, headers=member.headers).status_code == 404
        alerts.run_round(state.sessions, state.write_sessions, notifier(state), prober.id)

    def found() -> list[dict[str, Any]]:
        return list(
            client.get(f"/v1/orgs/{prober.id}/alerts", headers=prober.headers).json()["data"]
        )

    probe(3)  # recorded: 1st and 2nd (the 4th is the next to be)
    assert found() == []
    probe(1)
    [alert] = found()
    assert alert["kind"] == "not_found_burst"
    assert alert["key"] == f"actor:{member.user_id}"
