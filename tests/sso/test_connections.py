"""SSO connections: the contract's fields, secrets sealed and never returned, mapped
roles bounded by the caller's rights, teams of the organisation, presets, step-up."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from bastion.core.clock import clock
from tests.factories import Factory, Org, step_up
from tests.sso.peers import CLIENTS
from tests.sso.saml.conftest import Idp

SECRET = CLIENTS[0]["client_secret"]


def _create(browser: TestClient, org: Org, headers: dict[str, str] | None = None, **body: object):  # type: ignore[no-untyped-def]
    payload = {
        "type": "oidc",
        "name": "Okta",
        "preset": "okta",
        "tenant": "acme",
        "client_id": "0oa123",
        "client_secret": SECRET,
        **body,
    }
    return browser.post(
        f"/v1/orgs/{org.id}/sso-connections", json=payload, headers=headers or org.headers
    )


def test_crud_and_the_secret_never_comes_back(browser: TestClient, sso_factory: Factory) -> None:
    org = sso_factory.org()
    created = _create(
        browser,
        org,
        role_mapping=[{"group": "admins", "role": "admin"}],
        default_role="viewer",
    )
    assert created.status_code == 201, created.text
    conn = created.json()
    assert conn["id"].startswith("ssoc_")
    assert conn["issuer"] == "https://acme.okta.com"  # filled in by the preset
    assert conn["groups_attribute"] == "groups"
    assert "groups" in conn["scopes"]
    assert conn["client_secret_set"] is True
    assert "client_secret" not in conn
    assert conn["default_role"] == "viewer"
    assert conn["jit"] is True
    assert conn["redirect_uri"] == "http://localhost:8400/v1/auth/sso/oidc/callback"
    url = f"/v1/orgs/{org.id}/sso-connections/{conn['id']}"
    assert SECRET not in browser.get(url, headers=org.headers).text
    assert SECRET not in browser.get(f"/v1/orgs/{org.id}/sso-connections", headers=org.headers).text
    events = browser.get(f"/v1/orgs/{org.id}/audit-events", headers=org.headers).text
    assert SECRET not in events
    assert "sso_connection.created" in events

    changed = browser.patch(url, json={"name": "Okta prod", "jit": False}, headers=org.headers)
    assert changed.status_code == 200, changed.text
    assert changed.json()["name"] == "Okta prod"
    assert changed.json()["jit"] is False
    assert browser.delete(url, headers=org.headers).status_code == 204
    assert browser.get(url, headers=org.headers).status_code == 404


def test_saml_connections_keep_their_metadata(
    browser: TestClient, sso_factory: Factory, idp: Idp
) -> None:
    org = sso_factory.org()
    metadata = idp.metadata((idp.keys.primary,))
    created = browser.post(
        f"/v1/orgs/{org.id}/sso-connections",
        json={"type": "saml", "name": "Entra SAML", "idp_metadata_xml": metadata},
        headers=org.headers,
    )
    assert created.status_code == 201, created.text
    assert created.json()["idp_metadata_xml"] == metadata
    assert created.json()["idp_metadata_url"] is None
    assert created.json()["redirect_uri"] is None
    assert created.json()["allow_idp_initiated"] is False
    missing = browser.post(
        f"/v1/orgs/{org.id}/sso-connections",
        json={"type": "saml", "name": "No metadata"},
        headers=org.headers,
    )
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "idp_metadata_xml"


def test_invalid_input_names_the_field(browser: TestClient, sso_factory: Factory) -> None:
    org = sso_factory.org()
    cases = [
        ({"role_mapping": [{"group": "g", "role": "no-such-role"}]}, "role_mapping.0.role"),
        ({"team_mapping": [{"group": "g", "team_id": "team_01ARZ3NDEKTSV4RRFFQ69G5FAV"}]},
         "team_mapping.0.team_id"),
        ({"preset": "okta", "tenant": None}, "tenant"),
        ({"preset": None, "tenant": None}, "issuer"),
        ({"issuer": "ftp://x"}, "issuer"),
        ({"default_role": "nope"}, "default_role"),
    ]  # fmt: skip
    for body, field in cases:
        answer = _create(browser, org, **body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["errors"][0]["field"] == field, (body, answer.text)
    assert (
        browser.get(f"/v1/orgs/{org.id}/sso-connections", headers=org.headers).json()["data"] == []
    )  # nothing half-written


def test_a_mapping_cannot_hand_out_more_than_the_caller_holds(
    browser: TestClient, sso_factory: Factory
) -> None:
    org = sso_factory.org()
    role = browser.post(
        f"/v1/orgs/{org.id}/roles",
        json={"name": "sso-admin", "permissions": ["org:manage", "org:read", "teams:read"]},
        headers=org.headers,
    )
    assert role.status_code == 201, role.text
    key = sso_factory.api_key(org, role=role.json()["id"])
    headers = {"Authorization": f"Bearer {key['key']}"}
    refused = _create(browser, org, headers=headers, role_mapping=[{"group": "g", "role": "admin"}])
    assert refused.status_code == 403, refused.text
    refused_default = _create(browser, org, headers=headers, default_role="member")
    assert refused_default.status_code == 403
    own = _create(
        browser, org, headers=headers, role_mapping=[{"group": "g", "role": "sso-admin"}],
        default_role="sso-admin",
    )  # fmt: skip
    assert own.status_code == 201, own.text
    assert own.json()["role_mapping"] == [{"group": "g", "role": role.json()["id"]}]


def test_changing_sso_settings_needs_step_up(browser: TestClient, sso_factory: Factory) -> None:
    org = sso_factory.org()
    clock.advance(601)
    refused = _create(browser, org, headers=org.admin.headers)
    assert refused.status_code == 401
    assert refused.json()["code"] == "step_up_required"
    step_up(browser, org.admin.headers)
    assert _create(browser, org, headers=org.admin.headers).status_code == 201


def test_connections_are_scoped_and_permission_checked(
    browser: TestClient, sso_factory: Factory
) -> None:
    org, other = sso_factory.org(), sso_factory.org()
    conn = _create(browser, org).json()
    url = f"/v1/orgs/{org.id}/sso-connections/{conn['id']}"
    assert browser.get(url).status_code == 401
    assert browser.get(url, headers=other.headers).status_code == 404
    other_url = f"/v1/orgs/{other.id}/sso-connections/{conn['id']}"
    assert browser.get(other_url, headers=other.headers).status_code == 404
    assert browser.patch(other_url, json={"name": "x"}, headers=other.headers).status_code == 404
    member = sso_factory.member(org, "member")
    assert browser.patch(url, json={"name": "x"}, headers=member.headers).status_code == 403
    assert browser.delete(url, headers=member.headers).status_code == 403
    assert (
        browser.get(f"/v1/orgs/{org.id}/sso-connections/ssoc_x", headers=org.headers).status_code
        == 404
    )


def test_presets_fill_in_issuers(browser: TestClient, sso_factory: Factory) -> None:
    org = sso_factory.org()
    expected = {
        ("entra", "contoso-tenant-id"): "https://login.microsoftonline.com/contoso-tenant-id/v2.0",
        ("google", None): "https://accounts.google.com",
        ("onelogin", "acme"): "https://acme.onelogin.com/oidc/2",
        ("auth0", "acme"): "https://acme.auth0.com/",
    }
    for (preset, tenant), issuer in expected.items():
        made = _create(browser, org, preset=preset, tenant=tenant)
        assert made.status_code == 201, made.text
        assert made.json()["issuer"] == issuer
    assert json.dumps(made.json())  # serialisable


def test_patching_preset_and_tenant_moves_the_issuer(
    browser: TestClient, sso_factory: Factory
) -> None:
    org = sso_factory.org()
    conn = _create(browser, org).json()
    url = f"/v1/orgs/{org.id}/sso-connections/{conn['id']}"
    moved = browser.patch(url, json={"tenant": "globex"}, headers=org.headers)
    assert moved.json()["issuer"] == "https://globex.okta.com"
    entra = browser.patch(url, json={"preset": "entra", "tenant": "t-1"}, headers=org.headers)
    assert entra.json()["issuer"] == "https://login.microsoftonline.com/t-1/v2.0"
    google = browser.patch(url, json={"preset": "google"}, headers=org.headers)
    assert google.json()["issuer"] == "https://accounts.google.com"
    needs = browser.patch(url, json={"preset": "okta"}, headers=org.headers)
    assert needs.status_code == 422
    assert needs.json()["errors"][0]["field"] == "tenant"
    explicit = browser.patch(
        url, json={"issuer": "https://idp.example.com/x", "client_secret": "new-secret-value"},
        headers=org.headers,
    )  # fmt: skip
    assert explicit.json()["issuer"] == "https://idp.example.com/x"
    events = browser.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "sso_connection.updated"},
        headers=org.headers,
    ).json()["data"]
    assert events[0]["metadata"]["changed"] == ["client_secret", "issuer"]
    assert "new-secret-value" not in str(events)
