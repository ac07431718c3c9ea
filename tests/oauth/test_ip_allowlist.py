"""An organisation's IP allowlist holds for OAuth too: no token is handed out to a
request from outside it, and a token (cached or not) is refused from outside at once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.api.app import create_app
from tests.conftest import make_settings
from tests.factories import Factory
from tests.oauth.support import FORM, machine

INSIDE = "10.1.2.3"
OUTSIDE = "192.0.2.7"


@pytest.fixture(scope="module")
def world(data_dir: Path, database_url: str) -> Iterator[tuple[TestClient, Any]]:
    """Behind a trusted proxy at 127.0.0.1: each request names its client address."""
    settings = make_settings(data_dir, database_url, trusted_proxies=["127.0.0.1/32"])
    app = create_app(settings)
    with TestClient(
        app,
        raise_server_exceptions=False,
        client=("127.0.0.1", 50000),
        headers={"X-Forwarded-For": INSIDE},
    ) as c:
        yield c, app.state.bastion


def _refused(response: Any) -> bool:
    return response.status_code == 403 and response.json()["code"] == "ip_not_allowed"


def test_tokens_are_neither_issued_nor_accepted_from_outside(
    world: tuple[TestClient, Any],
) -> None:
    client, state = world
    factory = Factory(state, client)
    org = factory.org()
    m = machine(client, org)

    def token(ip: str) -> Any:
        return client.post(
            "/v1/oauth/token",
            data={"grant_type": "client_credentials"},
            headers={**FORM, **m.basic, "X-Forwarded-For": ip},
        )

    issued = token(OUTSIDE)  # no allowlist yet: any address
    assert issued.status_code == 200, issued.text
    headers = {"Authorization": f"Bearer {issued.json()['access_token']}"}
    me = client.get("/v1/me", headers={**headers, "X-Forwarded-For": OUTSIDE})
    assert me.status_code == 200  # cached now
    saved = client.patch(
        f"/v1/orgs/{org.id}", json={"ip_allowlist": ["10.1.0.0/16"]}, headers=org.headers
    )
    assert saved.status_code == 200, saved.text
    assert _refused(client.get("/v1/me", headers={**headers, "X-Forwarded-For": OUTSIDE}))
    assert client.get("/v1/me", headers=headers).status_code == 200  # from inside
    assert _refused(token(OUTSIDE))
    assert token(INSIDE).status_code == 200
