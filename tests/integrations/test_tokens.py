"""Tokens against a real OAuth server (rotating refresh tokens, introspection,
revocation): refresh ahead of expiry, one refresh for concurrent callers, a refused
refresh disconnects and alerts, deletion revokes at the provider."""

from __future__ import annotations

import threading
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from bastion.alerts import service as alerts
from bastion.api.app import notifier
from bastion.core.clock import utcnow
from bastion.integrations import service as integrations
from bastion.integrations.flow import outbound
from bastion.integrations.models import Integration
from bastion.integrations.tokens import Token, TokenBroker
from tests.factories import Factory
from tests.integrations.conftest import connect, events, tokens_of
from tests.integrations.peers import OAuthServer


def make_due(factory: Factory, integration_id: str, seconds_left: int) -> None:
    """As if time had passed: the access token expires in `seconds_left`."""
    with factory.state.write_sessions() as db:
        db.execute(
            update(Integration)
            .where(Integration.id == integration_id)
            .values(access_expires_at=utcnow() + timedelta(seconds=seconds_left))
        )
        db.commit()


def _broker(factory: Factory) -> TokenBroker:
    """Another worker or replica: its own broker (own cache) on the same database."""
    state = factory.state
    return TokenBroker(state.sessions, state.write_sessions, state.vault, outbound(state.settings))


def test_refresh_ahead_of_expiry_keeps_the_rotated_refresh_token(
    client: TestClient, factory: Factory, oauth_server: OAuthServer
) -> None:
    org = factory.org()
    integration = connect(client, org, oauth_server)
    before = tokens_of(factory, integration["id"])
    assert _broker(factory).refresh_due() == 0  # fresh: nothing to do
    make_due(factory, integration["id"], 200)
    errors = oauth_server.stats()["refresh_error"]

    assert _broker(factory).refresh_due() == 1

    after = tokens_of(factory, integration["id"])
    assert after.access_token != before.access_token
    assert after.refresh_token != before.refresh_token  # rotated, and stored
    assert after.expires_at is not None
    assert after.expires_at > utcnow() + timedelta(seconds=500)
    assert not oauth_server.introspect(before.refresh_token or "")["active"]  # spent
    # The stored (rotated) refresh token works: a second refresh succeeds.
    make_due(factory, integration["id"], 200)
    assert _broker(factory).refresh_due() == 1
    assert oauth_server.stats()["refresh_error"] == errors
    assert len(events(client, org, "integration.token_refreshed")) == 2
    got = client.get(f"/v1/orgs/{org.id}/integrations/{integration['id']}", headers=org.headers)
    assert got.json()["status"] == "connected"


def test_concurrent_callers_make_one_refresh(
    client: TestClient, factory: Factory, oauth_server: OAuthServer
) -> None:
    org = factory.org()
    integration = connect(client, org, oauth_server)
    make_due(factory, integration["id"], 10)  # inside MIN_VALID: a fetch must refresh
    before = oauth_server.stats()
    brokers = [_broker(factory) for _ in range(4)]  # four workers or replicas
    barrier = threading.Barrier(len(brokers))
    got: list[Token] = []
    failed: list[BaseException] = []

    def fetch(broker: TokenBroker) -> None:
        try:
            barrier.wait()
            got.append(integrations.access_token(broker, org.id, integration["name"]))
        except BaseException as exc:  # reported below
            failed.append(exc)

    threads = [threading.Thread(target=fetch, args=(b,)) for b in brokers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert not failed, failed
    assert len({t.access_token for t in got}) == 1
    assert len(got) == len(brokers)
    after = oauth_server.stats()
    assert after["refresh_success"] - before["refresh_success"] == 1
    assert after["refresh_error"] == before["refresh_error"]
    assert got[0].access_token == tokens_of(factory, integration["id"]).access_token
    assert oauth_server.introspect(got[0].access_token)["active"]


def test_a_refused_refresh_disconnects_audits_and_alerts(
    client: TestClient, factory: Factory, oauth_server: OAuthServer
) -> None:
    org = factory.org()
    rule = {"name": "int", "kind": "integration_disconnected", "params": {}}
    created = client.post(f"/v1/orgs/{org.id}/alert-rules", json=rule, headers=org.headers)
    assert created.status_code == 201, created.text
    integration = connect(client, org, oauth_server)
    oauth_server.revoke(tokens_of(factory, integration["id"]).refresh_token or "")
    make_due(factory, integration["id"], 10)

    assert _broker(factory).refresh_due() == 1

    got = client.get(f"/v1/orgs/{org.id}/integrations/{integration['id']}", headers=org.headers)
    assert got.json()["status"] == "disconnected"
    assert got.json()["last_error"] == "invalid_grant"
    [event] = events(client, org, "integration.disconnected")
    assert event["reason"] == "invalid_grant"
    assert event["actor"]["type"] == "system"
    state = factory.state
    alerts.run_round(state.sessions, state.write_sessions, notifier(state), org.id)
    found = client.get(f"/v1/orgs/{org.id}/alerts", headers=org.headers).json()["data"]
    assert [a["kind"] for a in found] == ["integration_disconnected"]
    assert found[0]["key"] == f"integration:{integration['id']}"
    # A disconnected integration hands out nothing.
    refused = None
    try:
        integrations.access_token(_broker(factory), org.id, integration["name"])
    except integrations.NotConnected as exc:
        refused = exc
    assert refused is not None


def test_delete_revokes_at_the_provider(
    client: TestClient, factory: Factory, oauth_server: OAuthServer
) -> None:
    org = factory.org()
    integration = connect(client, org, oauth_server)
    tokens = tokens_of(factory, integration["id"])
    assert oauth_server.introspect(tokens.access_token)["active"]

    deleted = client.delete(
        f"/v1/orgs/{org.id}/integrations/{integration['id']}", headers=org.headers
    )

    assert deleted.status_code == 204, deleted.text
    assert not oauth_server.introspect(tokens.access_token)["active"]
    assert not oauth_server.introspect(tokens.refresh_token or "")["active"]
    [event] = events(client, org, "integration.deleted")
    assert event["metadata"]["revoked_at_provider"] is True
    gone = client.get(f"/v1/orgs/{org.id}/integrations/{integration['id']}", headers=org.headers)
    assert gone.status_code == 404
