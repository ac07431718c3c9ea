"""OAuth clients of service accounts: the secret is shown once and kept as a keyed
hash; making one is bounded like making an API key of the account (nobody hands on
what they do not hold; an admin account needs a person's step-up); another
organisation's accounts and clients do not exist for the caller."""

from __future__ import annotations

from fastapi.testclient import TestClient

from bastion.core.clock import clock
from bastion.oauth.models import OAuthClient
from tests.factories import Factory, step_up
from tests.oauth.support import access_token, bearer, machine, request_token

STALE = 601  # past the default step_up_max_age


def _clients(org_id: str, account: str) -> str:
    return f"/v1/orgs/{org_id}/service-accounts/{account}/oauth-clients"


def _account(client: TestClient, org_id: str, headers: dict[str, str], role: str) -> str:
    made = client.post(
        f"/v1/orgs/{org_id}/service-accounts", json={"name": "sa", "role": role}, headers=headers
    )
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def test_the_secret_is_shown_once_and_stored_as_a_keyed_hash(
    client: TestClient, factory: Factory, app
) -> None:  # type: ignore[no-untyped-def]
    org = factory.org()
    m = machine(client, org)
    assert m.client_id.startswith("oac_")
    assert m.secret.startswith(f"boc_{m.client_id}_")
    url = _clients(org.id, m.account_id)
    listed = client.get(url, headers=org.headers)
    assert listed.status_code == 200
    data = listed.json()["data"]
    assert [c["client_id"] for c in data] == [m.client_id]
    assert "client_secret" not in data[0]
    assert m.secret not in listed.text
    one = client.get(f"{url}/{m.client_id}", headers=org.headers)
    assert one.status_code == 200
    assert m.secret not in one.text
    assert one.json()["last_used_at"] is None
    access_token(client, m)
    assert client.get(f"{url}/{m.client_id}", headers=org.headers).json()["last_used_at"]
    secret = m.secret.rsplit("_", 1)[1]
    with app.state.bastion.sessions() as db:
        row = db.get(OAuthClient, m.client_id)
        assert secret not in row.secret_hash
        assert len(row.secret_hash) == 64
    audited = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "oauth_client.created"},
        headers=org.headers,
    ).json()["data"]
    assert audited
    assert m.secret not in str(audited)


def test_nobody_hands_on_what_they_do_not_hold(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    manager = factory.member(org, "manager")
    admin_account = _account(client, org.id, org.headers, "admin")
    # A manager lacks service_accounts:manage or the admin's rights: refused either way.
    refused = client.post(
        _clients(org.id, admin_account), json={"name": "x"}, headers=manager.headers
    )
    assert refused.status_code == 403
    # Scopes: known permission names, within the account's role.
    viewer_account = _account(client, org.id, org.headers, "viewer")
    url = _clients(org.id, viewer_account)
    unknown = client.post(url, json={"name": "x", "scopes": ["no:such"]}, headers=org.headers)
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"] == "scopes"
    beyond = client.post(url, json={"name": "x", "scopes": ["org:manage"]}, headers=org.headers)
    assert beyond.status_code == 422


def test_an_admin_account_needs_a_person_who_stepped_up(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    account = _account(client, org.id, org.headers, "admin")
    url = _clients(org.id, account)
    clock.advance(STALE)
    stale = client.post(url, json={"name": "x"}, headers=org.admin.headers)
    assert stale.status_code == 401, stale.text
    assert stale.json()["code"] == "step_up_required"
    step_up(client, org.admin.headers)
    assert client.post(url, json={"name": "x"}, headers=org.admin.headers).status_code == 201
    # A key is no person: allowed, unless the organisation refuses admin keys such acts.
    assert client.post(url, json={"name": "y"}, headers=org.headers).status_code == 201
    on = {"step_up_refuses_admin_keys": True}
    assert client.patch(f"/v1/orgs/{org.id}", json=on, headers=org.admin.headers).status_code == 200
    assert client.post(url, json={"name": "z"}, headers=org.headers).status_code == 403


def test_an_admin_token_is_refused_step_up_actions_when_the_org_says_so(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    m = machine(client, org, role="admin")
    headers = bearer(access_token(client, m))
    keys = f"/v1/orgs/{org.id}/api-keys"
    admin_key = {"name": "k", "role": "admin"}
    assert client.post(keys, json=admin_key, headers=headers).status_code == 201
    on = {"step_up_refuses_admin_keys": True}
    assert client.patch(f"/v1/orgs/{org.id}", json=on, headers=org.admin.headers).status_code == 200
    assert client.post(keys, json=admin_key, headers=headers).status_code == 403


def test_another_organisation_sees_nothing(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    m = machine(client, org)
    intruder = factory.org()
    url = _clients(org.id, m.account_id)
    assert client.get(url, headers=intruder.headers).status_code == 404
    assert client.post(url, json={"name": "x"}, headers=intruder.headers).status_code == 404
    assert client.delete(f"{url}/{m.client_id}", headers=intruder.headers).status_code == 404
    own = _clients(intruder.id, m.account_id)
    assert client.get(own, headers=intruder.headers).status_code == 404
    # Its client's id under another account of the same organisation is not found either.
    n = machine(client, org)
    other = _clients(org.id, n.account_id)
    assert client.delete(f"{other}/{m.client_id}", headers=org.headers).status_code == 404
    assert request_token(client, m).status_code == 200


def test_deleting_a_client_is_audited(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    m = machine(client, org)
    url = f"{_clients(org.id, m.account_id)}/{m.client_id}"
    assert client.delete(url, headers=org.headers).status_code == 204
    assert client.get(url, headers=org.headers).status_code == 404
    assert client.delete(url, headers=org.headers).status_code == 404
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "oauth_client.deleted"},
        headers=org.headers,
    ).json()["data"]
    assert [e["resource"]["id"] for e in events] == [m.client_id]
