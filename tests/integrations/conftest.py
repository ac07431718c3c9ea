"""Fixtures of the integration tests: a real OAuth server (`oidc-provider`, see
`tests.integrations.peers`) and helpers that register and connect an integration."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bastion.integrations import vaulting
from bastion.integrations.models import Integration
from bastion.integrations.provider import TokenSet
from tests.factories import Factory, Member, Org
from tests.integrations.peers import CLIENT, OAuthServer


@pytest.fixture(scope="session")
def oauth_server() -> Iterator[OAuthServer]:
    server = OAuthServer()
    yield server
    server.stop()


@pytest.fixture
def browser(client: TestClient) -> TestClient:
    """The app's client with an empty cookie jar: a fresh browser."""
    client.cookies.clear()
    return client


def query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def register(
    client: TestClient, org: Org, server: OAuthServer, name: str | None = None, **extra: Any
) -> dict[str, Any]:
    body = {
        "name": name or f"crm-{uuid.uuid4().hex[:8]}",
        "provider": "oauth2",
        "client_id": CLIENT["client_id"],
        "client_secret": CLIENT["client_secret"],
        "scopes": ["read"],
        **server.endpoints,
        **extra,
    }
    response = client.post(f"/v1/orgs/{org.id}/integrations", json=body, headers=org.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def start(
    client: TestClient, org: Org, who: Member, integration_id: str, return_to: str = "/console/"
) -> httpx.Response:
    return client.get(
        f"/v1/orgs/{org.id}/integrations/{integration_id}/connect",
        params={"return_to": return_to},
        headers=who.headers,
        follow_redirects=False,
    )


def follow(client: TestClient, callback_url: str) -> httpx.Response:
    parts = urlsplit(callback_url)
    return client.get(f"{parts.path}?{parts.query}", follow_redirects=False)


def connect(client: TestClient, org: Org, server: OAuthServer, **extra: Any) -> dict[str, Any]:
    """Register and connect an integration (the org's admin consents): its JSON."""
    created = register(client, org, server, **extra)
    started = start(client, org, org.admin, created["id"])
    assert started.status_code == 302, started.text
    done = follow(client, server.authorize(started.headers["location"], "acct-1"))
    assert done.status_code == 302, done.text
    assert query(done.headers["location"]).get("status") == "connected", done.headers["location"]
    got = client.get(f"/v1/orgs/{org.id}/integrations/{created['id']}", headers=org.headers)
    return dict(got.json())


def tokens_of(factory: Factory, integration_id: str) -> TokenSet:
    """What the vault holds for the integration (the test peeks, as an operator could)."""
    state = factory.state
    with state.sessions() as db:
        row = db.execute(select(Integration).where(Integration.id == integration_id)).scalar_one()
        return vaulting.read_tokens(db, state.vault, row)


def events(client: TestClient, org: Org, type_: str) -> list[dict[str, Any]]:
    response = client.get(
        f"/v1/orgs/{org.id}/audit-events", params={"type": type_}, headers=org.headers
    )
    assert response.status_code == 200, response.text
    return list(response.json()["data"])
