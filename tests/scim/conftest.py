from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import Factory, Org, bearer

SCIM = "application/scim+json"
USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR_URN = "urn:ietf:params:scim:api:messages:2.0:Error"


@dataclass
class Scim:
    client: TestClient
    org: Org
    token: str
    token_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {**bearer(self.token), "Content-Type": SCIM}

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(f"/scim/v2{path}", headers=self.headers, **kw)

    def post(self, path: str, body: Any) -> Any:
        return self.client.post(f"/scim/v2{path}", json=body, headers=self.headers)

    def put(self, path: str, body: Any, **headers: str) -> Any:
        return self.client.put(f"/scim/v2{path}", json=body, headers={**self.headers, **headers})

    def patch(self, path: str, ops: list[dict[str, Any]], **headers: str) -> Any:
        body = {"schemas": [PATCH_URN], "Operations": ops}
        return self.client.patch(f"/scim/v2{path}", json=body, headers={**self.headers, **headers})

    def delete(self, path: str, **headers: str) -> Any:
        return self.client.delete(f"/scim/v2{path}", headers={**self.headers, **headers})

    def user(self, email: str, **extra: Any) -> dict[str, Any]:
        body = {"schemas": [USER_URN], "userName": email, "active": True, **extra}
        response = self.post("/Users", body)
        assert response.status_code == 201, response.text
        return dict(response.json())


def new_token(client: TestClient, org: Org) -> tuple[str, str]:
    response = client.post(
        f"/v1/orgs/{org.id}/scim-tokens", json={"name": "okta"}, headers=org.headers
    )
    assert response.status_code == 201, response.text
    return response.json()["token"], response.json()["id"]


@pytest.fixture
def scim(client: TestClient, factory: Factory) -> Scim:
    org = factory.org()
    token, token_id = new_token(client, org)
    return Scim(client, org, token, token_id)
