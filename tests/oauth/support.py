"""Helpers for the OAuth tests: a service account with a client, token requests by
either client authentication method, and checks with an independent JOSE library."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import jwt as pyjwt
from fastapi.testclient import TestClient
from httpx import Response

from tests.factories import Org

FORM = {"content-type": "application/x-www-form-urlencoded"}


@dataclass
class Machine:
    """A service account of `org` with one OAuth client."""

    org: Org
    account_id: str
    client_id: str
    secret: str

    @property
    def basic(self) -> dict[str, str]:
        return basic(self.client_id, self.secret)


def basic(client_id: str, secret: str) -> dict[str, str]:
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


def machine(
    client: TestClient,
    org: Org,
    role: str = "viewer",
    scopes: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> Machine:
    account = client.post(
        f"/v1/orgs/{org.id}/service-accounts",
        json={"name": "robot", "role": role},
        headers=org.headers,
    )
    assert account.status_code == 201, account.text
    account_id = account.json()["id"]
    body: dict[str, Any] = {"name": "ci"}
    if scopes is not None:
        body["scopes"] = scopes
    made = client.post(
        f"/v1/orgs/{org.id}/service-accounts/{account_id}/oauth-clients",
        json=body,
        headers=headers or org.headers,
    )
    assert made.status_code == 201, made.text
    return Machine(org, account_id, made.json()["client_id"], made.json()["client_secret"])


def request_token(
    client: TestClient, m: Machine, *, method: str = "basic", **params: str
) -> Response:
    data = {"grant_type": "client_credentials", **params}
    if method == "basic":
        return client.post("/v1/oauth/token", data=data, headers={**FORM, **m.basic})
    data |= {"client_id": m.client_id, "client_secret": m.secret}
    return client.post("/v1/oauth/token", data=data, headers=FORM)


def access_token(client: TestClient, m: Machine, **params: str) -> str:
    response = request_token(client, m, **params)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def verify_independently(client: TestClient, token: str, issuer: str) -> dict[str, Any]:
    """The token's claims as PyJWT sees them, from the published JWKS alone."""
    jwks = client.get("/.well-known/jwks.json")
    assert jwks.status_code == 200
    keys = pyjwt.PyJWKSet.from_dict(jwks.json())
    kid = pyjwt.get_unverified_header(token)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    claims: dict[str, Any] = pyjwt.decode(
        token,
        key.key,
        algorithms=["EdDSA"],
        audience=f"{issuer}/v1",
        issuer=issuer,
        options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
    )
    return claims
