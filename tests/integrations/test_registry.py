"""Registering integrations: presets, the generic provider's URLs under the SSRF guard,
names, and what is never shown."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.factories import Factory, Org


def _post(client: TestClient, org: Org, **body: Any) -> Any:
    full = {"name": "x", "provider": "oauth2", "client_id": "c", "client_secret": "s3cr3t-value"}
    return client.post(
        f"/v1/orgs/{org.id}/integrations", json={**full, **body}, headers=org.headers
    )


def _field(response: Any) -> str:
    assert response.status_code == 422, response.text
    return str(response.json()["errors"][0]["field"])


def test_presets_fill_endpoints_and_read_only_scopes(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    expected = {
        "github": ("https://github.com/login/oauth/authorize", ["read:user"]),
        "slack": ("https://slack.com/oauth/v2/authorize", ["channels:read"]),
        "linear": ("https://linear.app/oauth/authorize", ["read"]),
        "google": ("https://accounts.google.com/o/oauth2/v2/auth", ["openid", "email"]),
    }
    for provider, (authorize_url, scopes) in expected.items():
        created = _post(client, org, name=provider, provider=provider)
        assert created.status_code == 201, created.text
        body = created.json()
        assert (body["authorize_url"], body["scopes"]) == (authorize_url, scopes)
        assert body["token_url"].startswith("https://")
        assert body["revoke_url"]
        assert "s3cr3t-value" not in created.text
        assert "client_secret" not in body
    own = _post(client, org, name="gh-repo", provider="github", scopes=["repo"])
    assert own.json()["scopes"] == ["repo"]


def test_the_generic_provider_needs_its_urls_and_they_pass_the_guard(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    assert _field(_post(client, org, authorize_url="https://127.0.0.1/a")) == "token_url"
    assert _field(_post(client, org, token_url="https://127.0.0.1/t")) == "authorize_url"
    # Internal addresses (outside BASTION_OUTBOUND_ALLOW, 127.0.0.0/8 in the tests).
    internal = _post(
        client,
        org,
        authorize_url="https://127.0.0.1/a",
        token_url="https://169.254.169.254/latest/meta-data",
    )
    assert _field(internal) == "token_url"
    assert "BASTION_OUTBOUND_ALLOW" in internal.json()["errors"][0]["message"]
    # Plain http:// only to BASTION_OUTBOUND_PLAINTEXT_ALLOW.
    plain = _post(
        client,
        org,
        authorize_url="https://127.0.0.1/a",
        token_url="https://127.0.0.1/t",
        revoke_url="http://93.184.216.34/revoke",
    )
    assert _field(plain) == "revoke_url"
    assert "169.254" not in internal.text
    assert "93.184" not in plain.text
    assert _field(_post(client, org, authorize_url="ftp://127.0.0.1/a")) == "authorize_url"
    assert _field(_post(client, org, provider="dropbox")) == "provider"
    assert _field(_post(client, org, name="has space")) == "name"


def test_names_are_unique_per_organisation(client: TestClient, factory: Factory) -> None:
    org, other = factory.org(), factory.org()
    assert _post(client, org, name="crm", provider="linear").status_code == 201
    again = _post(client, org, name="crm", provider="slack")
    assert again.status_code == 409
    assert _post(client, other, name="crm", provider="linear").status_code == 201


def test_only_a_person_connects(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    created = _post(client, org, name="lin", provider="linear").json()
    by_key = client.get(
        f"/v1/orgs/{org.id}/integrations/{created['id']}/connect",
        headers=org.headers,
        follow_redirects=False,
    )
    assert by_key.status_code == 403
