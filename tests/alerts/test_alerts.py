"""Alert rules over the event stream, each at and below its threshold, with real
channels: a Standard Webhooks receiver, a Slack-style receiver and an SMTP server
(aiosmtpd); one incident is one alert; notification retries; history and resolve."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient

from bastion.alerts import deliver, evaluate
from bastion.alerts import service as alerts
from bastion.api.app import create_app, notifier
from bastion.audit import service as audit
from bastion.audit import sinks
from bastion.core.clock import clock
from bastion.core.context import Actor
from bastion.core.db import begin_write
from bastion.core.events import EventType
from bastion.webhooks import verify
from tests.conftest import make_settings
from tests.factories import Factory, Org, step_up
from tests.receivers import HttpReceiver, StartHttp, free_port

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.messages.append((list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def world(
    data_dir: Path, database_url: str, smtp: tuple[Mailbox, int]
) -> Iterator[tuple[TestClient, Factory, Any]]:
    settings = make_settings(
        data_dir,
        database_url,
        smtp_host="127.0.0.1",
        smtp_port=smtp[1],
        smtp_starttls=False,  # plain SMTP: 127.0.0.0/8 is in the plaintext allowance
        alert_poll_interval=60,
    )
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, Factory(app.state.bastion, c), app.state.bastion


def _round(state: Any, org: Org) -> int:
    """One evaluation and notification round for `org` alone: under PostgreSQL the suite's
    workers share one database, and another's round must not send this test's alerts."""
    return alerts.run_round(state.sessions, state.write_sessions, notifier(state), org.id)


def _rule(client: TestClient, org: Org, kind: str, **body: Any) -> dict[str, Any]:
    response = client.post(
        f"/v1/orgs/{org.id}/alert-rules",
        json={"name": kind, "kind": kind, **body},
        headers=org.headers,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def _alerts(client: TestClient, org: Org, **params: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/orgs/{org.id}/alerts", params=params, headers=org.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def _record(state: Any, org: Org, type_: EventType, actor: Actor, **kw: Any) -> None:
    with state.sessions() as db:
        begin_write(db)
        audit.record(db, type=type_, actor=actor, org_id=org.id, **kw)
        db.commit()


def _webhook(receiver: HttpReceiver) -> dict[str, Any]:
    return {"type": "webhook", "url": receiver.url("/hooks"), "secret": SECRET}


def test_failed_signins_per_account_webhook_and_dedup(
    world: tuple[TestClient, Factory, Any], start_http: StartHttp
) -> None:
    client, factory, state = world
    org = factory.org()
    hooks = start_http()
    params = {"threshold": 3, "window_seconds": 600}
    _rule(client, org, "failed_signins_account", params=params, channels=[_webhook(hooks)])
    wrong = {"email": org.admin.email, "password": "not the password at all"}
    for _ in range(2):
        assert client.post("/v1/auth/login", json=wrong).status_code == 401
    _round(state, org)
    assert _alerts(client, org) == []  # below the threshold
    for _ in range(3):
        client.post("/v1/auth/login", json=wrong)
    assert _round(state, org) == 1
    [alert] = _alerts(client, org)
    assert alert["kind"] == "failed_signins_account"
    assert alert["key"] == f"user:{org.admin.user_id}"
    assert alert["count"] == 3 + 2  # opened at the third, extended by the next two
    assert alert["notified_at"] is not None
    [delivery] = hooks.requests  # one incident, one notification
    verify("standard", SECRET, delivery.headers, delivery.body)
    assert json.loads(delivery.body)["data"]["id"] == alert["id"]
    client.post("/v1/auth/login", json=wrong)
    _round(state, org)
    assert len(_alerts(client, org)) == 1
    assert len(hooks.requests) == 1


def test_failed_signins_per_address(world: tuple[TestClient, Factory, Any]) -> None:
    client, factory, state = world
    org = factory.org()
    _rule(client, org, "failed_signins_ip", params={"threshold": 4, "window_seconds": 600})
    users = [factory.member(org, "viewer") for _ in range(3)]
    for user in users:  # three accounts, one address: below the threshold of four
        client.post("/v1/auth/login", json={"email": user.email, "password": "wrong-password-x"})
    _round(state, org)
    assert _alerts(client, org) == []
    client.post("/v1/auth/login", json={"email": users[0].email, "password": "wrong-again-xx"})
    _round(state, org)
    [alert] = _alerts(client, org)
    assert alert["key"] == "ip:testclient"


def test_sign_in_from_a_new_network_by_email(
    world: tuple[TestClient, Factory, Any], smtp: tuple[Mailbox, int]
) -> None:
    client, factory, state = world
    org = factory.org()
    box, _ = smtp
    _rule(
        client, org, "new_network_signin", channels=[{"type": "email", "to": ["sec@example.com"]}]
    )
    user = org.admin.user_id

    def signin(ip: str) -> None:
        actor = Actor("user", user, ip, "ua", None)
        _record(state, org, EventType.AUTH_LOGIN_SUCCEEDED, actor, resource=("session", "ses_x"))

    signin("203.0.113.10")  # a first sign-in sets the baseline, no alert
    signin("203.0.113.77")  # same /24
    _round(state, org)
    assert _alerts(client, org) == []
    signin("198.51.100.5")  # a new network
    _round(state, org)
    [alert] = _alerts(client, org)
    assert alert["details"]["ip"] == "198.51.100.5"
    [(rcpt, content)] = box.messages
    assert rcpt == ["sec@example.com"]
    assert b"new network" in content


def test_access_spike_per_principal(world: tuple[TestClient, Factory, Any]) -> None:
    client, factory, state = world
    org = factory.org()
    params = {"threshold": 3, "window_seconds": 60, "event_types": ["audit.exported"]}
    _rule(client, org, "access_spike", params=params)
    export = f"/v1/orgs/{org.id}/audit-events/export"
    for _ in range(2):
        client.get(export, headers=org.headers)
    _round(state, org)
    assert _alerts(client, org) == []
    client.get(export, headers=org.headers)
    _round(state, org)
    [alert] = _alerts(client, org)
    assert alert["kind"] == "access_spike"
    assert alert["count"] == 3


def test_permission_changes_burst_is_one_alert(world: tuple[TestClient, Factory, Any]) -> None:
    client, factory, state = world
    org = factory.org()
    _rule(client, org, "permission_change", params={"window_seconds": 600})
    _round(state, org)
    assert _alerts(client, org) == []  # creating a team is not a permission change
    client.post(f"/v1/orgs/{org.id}/teams", json={"name": "t"}, headers=org.headers)
    _round(state, org)
    assert _alerts(client, org) == []
    roles = f"/v1/orgs/{org.id}/roles"
    client.post(roles, json={"name": "r1", "permissions": ["users:read"]}, headers=org.headers)
    member = factory.member(org, "viewer")
    client.patch(
        f"/v1/orgs/{org.id}/users/{member.user_id}", json={"role": "member"}, headers=org.headers
    )
    _round(state, org)
    [alert] = _alerts(client, org)
    assert alert["count"] == 2
    clock.advance(601)  # a change after the window is a new incident
    client.post(roles, json={"name": "r2", "permissions": ["users:read"]}, headers=org.headers)
    _round(state, org)
    assert len(_alerts(client, org)) == 2


def test_data_export_to_slack(
    world: tuple[TestClient, Factory, Any], start_http: StartHttp
) -> None:
    client, factory, state = world
    org = factory.org()
    slack = start_http()
    _rule(
        client,
        org,
        "data_export",
        channels=[{"type": "slack", "url": slack.url("/services/T/B/x")}],
    )
    _round(state, org)
    assert slack.requests == []
    client.get(f"/v1/orgs/{org.id}/audit-events/export?format=csv", headers=org.headers)
    _round(state, org)
    [post] = slack.requests
    assert "exported" in json.loads(post.body)["text"]


def test_failing_sink_alerts_and_resolves(
    world: tuple[TestClient, Factory, Any], start_syslog: Any
) -> None:
    client, factory, state = world
    org = factory.org()
    _rule(client, org, "sink_failing", params={"after_seconds": 300})
    port = free_port()  # nothing listens yet
    client.post(
        f"/v1/orgs/{org.id}/audit-sinks",
        json={
            "name": "siem",
            "type": "syslog",
            "format": "json",
            "host": "127.0.0.1",
            "port": port,
        },
        headers=org.headers,
    )
    stores = sinks.Stores(read=state.sessions, write=state.write_sessions)
    sinks.deliver_due(
        stores,
        state.root_keys,
        state.settings.outbound_allow,
        plaintext=state.settings.outbound_plaintext_allow,
    )
    _round(state, org)
    assert _alerts(client, org) == []  # failing, but not for long enough
    clock.advance(301)
    _round(state, org)
    [alert] = _alerts(client, org, status="open")
    assert alert["kind"] == "sink_failing"
    start_syslog(port=port)
    clock.advance(900)
    sinks.deliver_due(
        stores,
        state.root_keys,
        state.settings.outbound_allow,
        plaintext=state.settings.outbound_plaintext_allow,
    )
    _round(state, org)
    assert _alerts(client, org, status="open") == []
    assert _alerts(client, org, status="resolved")[0]["id"] == alert["id"]


def test_notification_retries_until_accepted(
    world: tuple[TestClient, Factory, Any],
    start_http: StartHttp,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, factory, state = world
    # The jitter may choose a retry a moment away, which real time can pass between two
    # rounds; this test pins the delay (the jitter's bounds are tested in test_siem_transport).
    asked: list[tuple[int, float, float]] = []

    def fixed_delay(attempt: int, *, base: float, cap: float) -> float:
        asked.append((attempt, base, cap))
        return 30.0

    monkeypatch.setattr(deliver, "backoff_delay", fixed_delay)
    org = factory.org()
    hooks = start_http()
    hooks.status = 503
    _rule(client, org, "data_export", channels=[_webhook(hooks)])
    client.get(f"/v1/orgs/{org.id}/audit-events/export", headers=org.headers)
    assert _round(state, org) == 0
    [alert] = _alerts(client, org)
    assert alert["notified_at"] is None
    assert alert["notify_attempts"] == 1
    assert "503" in alert["notify_error"]
    assert asked == [(0, 5, 900)]  # the first retry's delay, within 5 s to 15 min
    hooks.status = 200
    assert _round(state, org) == 0  # waiting out the backoff
    clock.advance(60)
    assert _round(state, org) == 1
    [alert] = _alerts(client, org)
    assert alert["notified_at"] is not None
    ids = {r.headers["webhook-id"] for r in hooks.requests}
    assert ids == {alert["id"]}  # retries carry the same id, so receivers can dedupe


def test_concurrent_workers_send_an_alert_once(
    world: tuple[TestClient, Factory, Any], start_http: StartHttp
) -> None:
    """Two workers' notification rounds at once (a slow receiver keeps the first send
    open while the second reads): the alert is claimed by one, sent once."""
    client, factory, state = world
    org = factory.org()
    hooks = start_http()
    hooks.delay = 0.5
    _rule(client, org, "data_export", channels=[_webhook(hooks)])
    client.get(f"/v1/orgs/{org.id}/audit-events/export", headers=org.headers)
    with state.write_sessions() as db:
        evaluate.evaluate_org(db, org.id)
        db.commit()
    outgoing = notifier(state)
    with ThreadPoolExecutor(2) as pool:
        runs = [
            pool.submit(deliver.notify_pending, state.write_sessions, outgoing, org.id)
            for _ in range(2)
        ]
        sent = sorted(run.result() for run in runs)
    assert sent == [0, 1]
    assert len(hooks.requests) == 1
    [alert] = _alerts(client, org)
    assert (alert["notify_attempts"], alert["notify_error"]) == (1, None)
    assert alert["notified_at"] is not None


def test_resolve_history_and_validation(world: tuple[TestClient, Factory, Any]) -> None:
    client, factory, state = world
    org = factory.org()
    rule = _rule(client, org, "data_export")
    client.get(f"/v1/orgs/{org.id}/audit-events/export", headers=org.headers)
    _round(state, org)
    [alert] = _alerts(client, org, status="open")
    resolved = client.post(f"/v1/orgs/{org.id}/alerts/{alert['id']}/resolve", headers=org.headers)
    assert resolved.json()["status"] == "resolved"
    assert _alerts(client, org, status="open") == []
    assert _alerts(client, org, rule=rule["id"])[0]["status"] == "resolved"

    url = f"/v1/orgs/{org.id}/alert-rules"
    hook = {"type": "webhook", "url": "https://127.0.0.1/h"}
    cases = [
        ({"kind": "failed_signins_ip", "params": {"threshold": 0}}, "params.threshold"),
        ({"kind": "failed_signins_ip", "params": {"bogus": 1}}, "params"),
        ({"kind": "data_export", "channels": [hook]}, "channels[0].secret"),
        ({"kind": "data_export", "channels": [{"type": "pager"}]}, "channels[0].type"),
        ({"kind": "data_export", "channels": [{"type": "email", "to": ["x"]}]}, "channels[0].to"),
    ]  # fmt: skip
    for body, field in cases:
        response = client.post(url, json={"name": "x", **body}, headers=org.headers)
        assert response.status_code == 422, body
        assert response.json()["errors"][0]["field"] == field
    listed = client.get(url, headers=org.headers).json()["data"]
    assert [r["id"] for r in listed] == [rule["id"]]  # nothing half-written


def test_outbound_channels_respect_the_ssrf_guard(data_dir: Path, database_url: str) -> None:
    app = create_app(make_settings(data_dir, database_url, outbound_allow=[]))
    with TestClient(app, raise_server_exceptions=False) as client:
        org = Factory(app.state.bastion, client).org()
        refused = client.post(
            f"/v1/orgs/{org.id}/alert-rules",
            json={
                "name": "x",
                "kind": "data_export",
                "channels": [{"type": "slack", "url": "http://169.254.169.254/latest"}],
            },
            headers=org.headers,
        )
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["field"] == "channels[0].url"


def test_alert_events_are_not_secret_bearing(world: tuple[TestClient, Factory, Any]) -> None:
    client, factory, _ = world
    org = factory.org()
    _rule(
        client,
        org,
        "data_export",
        channels=[{"type": "webhook", "url": "https://127.0.0.1/h", "secret": SECRET}],
    )
    rules = client.get(f"/v1/orgs/{org.id}/alert-rules", headers=org.headers).text
    events = client.get(f"/v1/orgs/{org.id}/audit-events", headers=org.headers).text
    assert SECRET not in rules
    assert SECRET not in events


def test_api_key_used_from_a_new_network(world: tuple[TestClient, Factory, Any]) -> None:
    client, factory, state = world
    org = factory.org()
    _rule(client, org, "api_key_new_network")
    key = factory.api_key(org, "viewer")

    def use(ip: str) -> None:
        from_ip = TestClient(client.app, client=(ip, 40000))
        response = from_ip.get("/v1/me", headers={"Authorization": f"Bearer {key['key']}"})
        assert response.status_code == 200

    use("203.0.113.5")  # the first use sets the baseline
    use("203.0.113.77")  # same network
    _round(state, org)
    assert _alerts(client, org) == []
    use("198.51.100.9")
    use("198.51.100.10")  # same new network: one event, one alert
    _round(state, org)
    [alert] = _alerts(client, org)
    assert alert["kind"] == "api_key_new_network"
    assert alert["details"]["network"] == "198.51.100.0/24"
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "api_key.new_network", "resource": key["id"]},
        headers=org.headers,
    ).json()["data"]
    assert [e["metadata"]["first"] for e in events] == [False, True]


def test_approval_requests_reach_approvers_on_slack(
    world: tuple[TestClient, Factory, Any], start_http: StartHttp
) -> None:
    client, factory, state = world
    org = factory.org()
    slack = start_http()
    channels = [{"type": "slack", "url": slack.url("/services/T/B/x")}]
    _rule(client, org, "approval_requested", channels=channels)
    call = factory.pending_tool_call(org)
    _round(state, org)
    [post] = slack.requests
    text = json.loads(post.body)["text"]
    assert call["approval_id"] in text
    assert "refund" in text


def test_approvals_pending_too_long_alert_by_email_and_resolve(
    world: tuple[TestClient, Factory, Any], smtp: tuple[Mailbox, int]
) -> None:
    client, factory, state = world
    org = factory.org()
    box, _ = smtp
    email = [{"type": "email", "to": ["approvers@example.com"]}]
    _rule(client, org, "approval_pending", params={"after_seconds": 600}, channels=email)
    manager = factory.member(org, "manager")
    call = factory.pending_tool_call(org)
    base = f"/v1/orgs/{org.id}"
    clock.advance(599)
    _round(state, org)
    assert _alerts(client, org) == []  # below the threshold
    clock.advance(2)
    _round(state, org)
    _round(state, org)  # still pending: still one alert
    [alert] = _alerts(client, org, status="open")
    assert alert["details"]["approval_id"] == call["approval_id"]
    [(rcpt, content)] = box.messages
    assert rcpt == ["approvers@example.com"]
    assert b"pending" in content
    step_up(client, manager.headers)  # deciding a high-risk call, 601 s after sign-in
    decided = client.post(
        f"{base}/approvals/{call['approval_id']}/decisions",
        json={"decision": "deny"},
        headers=manager.headers,
    )
    assert decided.status_code == 200, decided.text
    _round(state, org)
    assert _alerts(client, org, status="open") == []
