"""Fixtures of the SSO tests: the real peers (see `tests.sso.peers`), an app that asks
the test DNS server, and helpers that drive a browser through the flow."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from bastion.api.app import create_app
from tests.conftest import make_settings
from tests.factories import Factory, Org
from tests.sso.peers import CLIENTS, DnsServer, FakeProvider, NodeProvider
from tests.sso.saml.conftest import (  # noqa: F401 - the SAML IdP, for the flow tests too
    idp,
    idp_keys,
    idp_process,
)

CONSOLE_ORIGIN = "https://console.example.com"


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[NodeProvider]:
    provider = NodeProvider()
    yield provider
    provider.stop()


@pytest.fixture(scope="session")
def fake_idp() -> Iterator[FakeProvider]:
    fake = FakeProvider()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def dns() -> Iterator[DnsServer]:
    server = DnsServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sso_app(data_dir: Path, database_url: str, dns: DnsServer) -> Any:
    settings = make_settings(
        data_dir,
        database_url,
        dns_resolver=dns.address,
        allowed_return_origins=[CONSOLE_ORIGIN],
        sso_jwks_refetch_interval=0,
    )
    return create_app(settings)


@pytest.fixture(scope="session")
def _sso_client(sso_app: Any) -> Iterator[TestClient]:
    with TestClient(sso_app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def browser(_sso_client: TestClient) -> TestClient:
    """The SSO app's client with an empty cookie jar: a fresh browser."""
    _sso_client.cookies.clear()
    return _sso_client


@pytest.fixture
def sso_factory(sso_app: Any, browser: TestClient) -> Factory:
    return Factory(sso_app.state.bastion, browser)


def new_domain() -> str:
    return f"d{uuid.uuid4().hex[:12]}.example.org"


def verified_domain(browser: TestClient, dns: DnsServer, org: Org) -> str:
    domain = new_domain()
    created = browser.post(
        f"/v1/orgs/{org.id}/domains", json={"domain": domain}, headers=org.headers
    )
    assert created.status_code == 201, created.text
    dns.records[domain] = [created.json()["txt_record"]]
    verified = browser.post(
        f"/v1/orgs/{org.id}/domains/{created.json()['id']}/verify", headers=org.headers
    )
    assert verified.status_code == 200, verified.text
    assert verified.json()["verified"] is True
    return domain


def oidc_connection(
    browser: TestClient, org: Org, issuer: str, client: int = 0, **extra: Any
) -> dict[str, Any]:
    body = {
        "type": "oidc",
        "name": "Test provider",
        "issuer": issuer,
        "client_id": CLIENTS[client]["client_id"],
        "client_secret": CLIENTS[client]["client_secret"],
        "scopes": ["openid", "email", "profile", "groups"],
        "groups_attribute": "groups",
        **extra,
    }
    response = browser.post(f"/v1/orgs/{org.id}/sso-connections", json=body, headers=org.headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def start(browser: TestClient, **params: str) -> httpx.Response:
    params.setdefault("return_to", "/console/")
    return browser.get("/v1/auth/sso/start", params=params, follow_redirects=False)


def query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def follow_callback(browser: TestClient, callback_url: str) -> httpx.Response:
    parts = urlsplit(callback_url)
    return browser.get(f"{parts.path}?{parts.query}", follow_redirects=False)


def sign_in(
    browser: TestClient, provider: NodeProvider, account: str, **params: str
) -> httpx.Response:
    """Start, sign in at the provider as `account`, come back: Bastion's final answer."""
    started = start(browser, **params)
    assert started.status_code == 302, started.text
    callback = provider.authenticate(started.headers["location"], account)
    return follow_callback(browser, callback)
