from __future__ import annotations

from fastapi.testclient import TestClient

from tests.factories import Factory


def test_me_with_api_key_and_session(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    by_key = client.get("/v1/me", headers=org.headers)
    assert by_key.status_code == 200
    assert by_key.json()["principal_type"] == "api_key"
    assert by_key.json()["org_id"] == org.id
    by_session = client.get("/v1/me", headers=org.admin.headers)
    assert by_session.json() == {
        **by_session.json(),
        "principal_type": "user",
        "id": org.admin.user_id,
        "role": "admin",
    }
    assert "users:manage" in by_session.json()["permissions"]
