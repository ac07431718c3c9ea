"""The MCP server registry: per organisation, URLs through the outbound guard, static
headers sealed in the vault and never shown again, every change audited."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from bastion.api.state import AppState
from bastion.secrets.models import Secret, SecretVersion
from tests.factories import Factory

TOKEN = "sealed-upstream-token-abcdef0123456789"


def _create(client: TestClient, org_id: str, auth: dict[str, str], **body: object) -> Any:
    payload = {"name": "files", "url": "http://127.0.0.1:9/mcp", **body}
    return client.post(f"/v1/orgs/{org_id}/mcp-servers", json=payload, headers=auth)


def test_register_list_change_and_remove_a_server(
    client: TestClient, factory: Factory, app: object
) -> None:
    org = factory.org()
    base = f"/v1/orgs/{org.id}/mcp-servers"
    created = _create(client, org.id, org.headers, headers={"Authorization": f"Bearer {TOKEN}"})
    assert created.status_code == 201, created.text
    server = created.json()
    assert server["id"].startswith("mcs_")
    assert server["header_names"] == ["Authorization"]
    assert TOKEN not in created.text
    listed = client.get(base, headers=org.headers).json()
    assert [s["id"] for s in listed["data"]] == [server["id"]]
    state: AppState = app.state.bastion  # type: ignore[attr-defined]
    with state.sessions() as db:
        sealed = db.execute(select(Secret).where(Secret.scope_id == server["id"])).scalar_one()
        assert sealed.scope_type == "mcp_server"
        stored = db.execute(
            select(SecretVersion.ciphertext).where(SecretVersion.secret_id == sealed.id)
        ).scalar_one()
        assert TOKEN.encode() not in stored
    changed = client.patch(
        f"{base}/{server['id']}", json={"name": "docs", "headers": {}}, headers=org.headers
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["name"] == "docs"
    assert changed.json()["header_names"] == []
    assert changed.json()["version"] == 2
    with state.sessions() as db:  # the replaced credential is destroyed
        assert db.execute(select(Secret).where(Secret.scope_id == server["id"])).first() is None
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events", params={"resource_id": server["id"]}, headers=org.headers
    )
    assert TOKEN not in events.text
    assert client.delete(f"{base}/{server['id']}", headers=org.headers).status_code == 204
    assert client.get(f"{base}/{server['id']}", headers=org.headers).status_code == 404


def test_names_are_unique_per_organisation(client: TestClient, factory: Factory) -> None:
    org, other = factory.org(), factory.org()
    assert _create(client, org.id, org.headers).status_code == 201
    taken = _create(client, org.id, org.headers)
    assert taken.status_code == 409
    assert _create(client, other.id, other.headers).status_code == 201


def test_urls_pass_the_outbound_guard(client: TestClient, factory: Factory) -> None:
    """Loopback is allowlisted in the suite's settings; other internal addresses, plain
    http:// to a public address and credentials in the URL are refused, naming `url`
    and never echoing it."""
    org = factory.org()
    for url in (
        "http://10.1.2.3/mcp",
        "https://169.254.169.254/latest",
        "http://8.8.8.8/mcp",
        "https://user:pw@127.0.0.1/mcp",
        "ftp://127.0.0.1/mcp",
        "not a url at all",
    ):
        response = _create(client, org.id, org.headers, url=url)
        assert response.status_code == 422, (url, response.text)
        assert response.json()["errors"][0]["field"] == "url"
        assert url not in response.text


def test_who_may_register_read_and_connect(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    member, viewer = factory.member(org, "member"), factory.member(org, "viewer")
    assert _create(client, org.id, member.headers).status_code == 403
    server = _create(client, org.id, org.headers).json()
    base = f"/v1/orgs/{org.id}/mcp-servers"
    assert client.get(base, headers=member.headers).status_code == 200
    assert client.get(base, headers=viewer.headers).status_code == 403
    # Connecting an agent needs mcp_servers:use (members have it, viewers do not).
    agent = {"name": "a", "connections": [server["id"]]}
    ok = client.post(f"/v1/orgs/{org.id}/agents", json=agent, headers=member.headers)
    assert ok.status_code == 201, ok.text
    role = client.post(
        f"/v1/orgs/{org.id}/roles",
        json={"name": "builder", "permissions": ["agents:create", "agents:read"]},
        headers=org.headers,
    )
    assert role.status_code == 201, role.text
    builder = factory.member(org, "builder")
    refused = client.post(f"/v1/orgs/{org.id}/agents", json=agent, headers=builder.headers)
    assert refused.status_code == 403, refused.text
    assert "mcp_servers:use" in refused.text
    # A server that does not exist, or another organisation's, is not a connection.
    other = factory.org()
    foreign = _create(client, other.id, other.headers).json()
    for missing in ("mcs_doesnotexist", foreign["id"]):
        bad = {"name": "b", "connections": [missing]}
        response = client.post(f"/v1/orgs/{org.id}/agents", json=bad, headers=member.headers)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "connections"
    assert client.get(f"{base}/{foreign['id']}", headers=org.headers).status_code == 404
