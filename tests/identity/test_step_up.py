"""Step-up (RFC 9470): sensitive actions need a recent verification of the person."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bastion.client import Client, StepUpRequired
from bastion.client._base import Req
from bastion.core.clock import clock
from tests.factories import PASSWORD, Factory, Org, bearer, step_up
from tests.identity.mfa_support import code, enrol_totp, sign_in_with_totp

STALE = 601  # past the default step_up_max_age (600)


def _secret(client: TestClient, org: Org) -> str:
    url = f"/v1/orgs/{org.id}/secrets/db-password"
    assert client.put(url, json={"value": "hunter22"}, headers=org.headers).status_code == 200
    return f"{url}/reveal"


def _assert_step_up(response, max_age: int = 600) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "step_up_required"
    assert response.headers["www-authenticate"] == (
        f'Bearer error="insufficient_user_authentication", max_age={max_age}'
    )


def test_a_stale_session_must_step_up_to_reveal_a_secret(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    reveal = _secret(client, org)
    assert client.post(reveal, json={}, headers=org.admin.headers).status_code == 200
    clock.advance(STALE)
    refused = client.post(reveal, json={}, headers=org.admin.headers)
    _assert_step_up(refused)
    assert "hunter22" not in refused.text
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "auth.step_up_required"},
        headers=org.headers,
    ).json()["data"]
    assert events[0]["outcome"] == "denied"
    assert events[0]["metadata"] == {"action": "secret.reveal", "max_age": 600}
    # Without a factor, the password steps up; the action then works again.
    stepped = client.post(
        "/v1/auth/step-up", json={"method": "password", "password": PASSWORD},
        headers=org.admin.headers,
    )  # fmt: skip
    assert stepped.status_code == 200, stepped.text
    assert stepped.json()["amr"] == ["pwd"]
    assert client.post(reveal, json={}, headers=org.admin.headers).status_code == 200
    me = client.get("/v1/me", headers=org.admin.headers).json()
    assert me["auth_time"] == stepped.json()["auth_time"]


def test_api_keys_are_not_people_step_up_does_not_apply(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    reveal = _secret(client, org)
    clock.advance(3600)
    assert client.post(reveal, json={}, headers=org.headers).status_code == 200
    refused = client.post(
        "/v1/auth/step-up", json={"method": "password", "password": PASSWORD}, headers=org.headers
    )
    assert refused.status_code == 403


def test_an_organisation_may_refuse_admin_keys_the_step_up_actions(
    client: TestClient, factory: Factory
) -> None:
    """The contract's org setting: admin-role API keys refused the actions that need
    step-up of a person (403, audited); other keys, and people who stepped up, not."""
    org = factory.org()
    reveal = _secret(client, org)
    url = f"/v1/orgs/{org.id}"
    role = {"name": "revealer", "permissions": ["secrets:reveal"]}
    assert client.post(f"{url}/roles", json=role, headers=org.headers).status_code == 201
    reader = factory.api_key(org, role="revealer")  # may reveal, not an admin key
    assert client.get(url, headers=org.headers).json()["step_up_refuses_admin_keys"] is False
    on = {"step_up_refuses_admin_keys": True}
    clock.advance(STALE)
    _assert_step_up(client.patch(url, json=on, headers=org.admin.headers))  # an MFA setting
    step_up(client, org.admin.headers)
    assert client.patch(url, json=on, headers=org.admin.headers).status_code == 200
    refused = client.post(reveal, json={}, headers=org.headers)  # the admin key, cached
    assert refused.status_code == 403, refused.text
    assert "refuses admin-role API keys" in refused.json()["detail"]
    export = client.get(f"/v1/orgs/{org.id}/audit-events/export", headers=org.headers)
    assert export.status_code == 403
    made = client.post(
        f"/v1/orgs/{org.id}/api-keys", json={"name": "k", "role": "admin"}, headers=org.headers
    )
    assert made.status_code == 403
    assert client.post(reveal, json={}, headers=bearer(reader["key"])).status_code == 200
    assert client.post(reveal, json={}, headers=org.admin.headers).status_code == 200
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "auth.step_up_required"},
        headers=org.admin.headers,
    ).json()["data"]
    assert any(e["metadata"].get("admin_key_refused") for e in events)
    # Off again (the person is within the window): the key may act again at once.
    off = {"step_up_refuses_admin_keys": False}
    assert client.patch(url, json=off, headers=org.admin.headers).status_code == 200
    assert client.post(reveal, json={}, headers=org.headers).status_code == 200


def test_a_person_with_a_factor_steps_up_with_it(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    enrolled = enrol_totp(client, org.admin.headers)
    session = sign_in_with_totp(client, org.admin.email, enrolled.secret)
    clock.advance(STALE)
    reveal = _secret(client, org)
    _assert_step_up(client.post(reveal, json={}, headers=session))
    by_password = client.post(
        "/v1/auth/step-up", json={"method": "password", "password": PASSWORD}, headers=session
    )
    assert by_password.status_code == 422
    assert by_password.json()["errors"][0]["field"] == "method"
    wrong = client.post(
        "/v1/auth/step-up", json={"method": "totp", "code": "000000"}, headers=session
    )
    assert wrong.status_code == 401
    right = client.post(
        "/v1/auth/step-up", json={"method": "totp", "code": code(enrolled.secret)}, headers=session
    )
    assert right.status_code == 200, right.text
    assert right.json()["amr"] == ["pwd", "otp", "mfa"]
    assert client.post(reveal, json={}, headers=session).status_code == 200
    # The same code again: a replay, refused.
    replay = client.post(
        "/v1/auth/step-up", json={"method": "totp", "code": code(enrolled.secret)}, headers=session
    )
    assert replay.status_code == 401
    failed = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "auth.step_up_failed"},
        headers=org.headers,
    ).json()["data"]
    assert {e["reason"] for e in failed} == {"wrong_code", "replayed"}


def test_the_organisations_window_is_used(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    changed = client.patch(f"/v1/orgs/{org.id}", json={"step_up_max_age": 60}, headers=org.headers)
    assert changed.status_code == 200
    assert changed.json()["step_up_max_age"] == 60
    reveal = _secret(client, org)
    clock.advance(61)
    _assert_step_up(client.post(reveal, json={}, headers=org.admin.headers), max_age=60)


@pytest.mark.parametrize(("role", "needs_step_up"), [("admin", True), ("viewer", False)])
def test_creating_an_admin_key_needs_step_up(
    client: TestClient, factory: Factory, role: str, needs_step_up: bool
) -> None:
    org = factory.org()
    clock.advance(STALE)
    created = client.post(
        f"/v1/orgs/{org.id}/api-keys", json={"name": "k", "role": role}, headers=org.admin.headers
    )
    if needs_step_up:
        _assert_step_up(created)
    else:
        assert created.status_code == 201, created.text


def test_rotating_an_admin_key_needs_step_up(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    key = factory.api_key(org, "admin", headers=org.admin.headers)
    clock.advance(STALE)
    rotate = f"/v1/orgs/{org.id}/api-keys/{key['id']}/rotate"
    _assert_step_up(client.post(rotate, json={}, headers=org.admin.headers))


def test_exporting_audit_events_needs_step_up(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    export = f"/v1/orgs/{org.id}/audit-events/export"
    assert client.get(export, headers=org.admin.headers).status_code == 200
    clock.advance(STALE)
    _assert_step_up(client.get(export, headers=org.admin.headers))
    assert client.get(export, headers=org.headers).status_code == 200


def test_deciding_a_high_risk_approval_needs_step_up(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    call = factory.pending_tool_call(org)
    clock.advance(STALE)
    decide = f"/v1/orgs/{org.id}/approvals/{call['approval_id']}/decisions"
    _assert_step_up(client.post(decide, json={"decision": "approve"}, headers=org.admin.headers))
    client.post(
        "/v1/auth/step-up", json={"method": "password", "password": PASSWORD},
        headers=org.admin.headers,
    )  # fmt: skip
    decided = client.post(decide, json={"decision": "approve"}, headers=org.admin.headers)
    assert decided.status_code == 200, decided.text


def test_changing_mfa_settings_needs_step_up(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    enrolled = enrol_totp(client, org.admin.headers)
    clock.advance(STALE)
    url = f"/v1/orgs/{org.id}"
    _assert_step_up(client.patch(url, json={"mfa_policy": "admins"}, headers=org.admin.headers))
    # Other settings do not need it.
    assert client.patch(url, json={"name": "Renamed"}, headers=org.admin.headers).status_code == 200
    _assert_step_up(client.post("/v1/me/mfa/recovery-codes", headers=org.admin.headers))
    _assert_step_up(client.delete(f"/v1/me/mfa/{enrolled.factor_id}", headers=org.admin.headers))
    # Another authenticator (a stolen session planting its own).
    _assert_step_up(client.post("/v1/me/mfa/totp", headers=org.admin.headers))


def test_changing_retention_settings_needs_step_up(client: TestClient, factory: Factory) -> None:
    """A retention setting (the contract's step-up list): a person whose last
    verification is stale steps up first; the same value again, or a key, needs none."""
    org = factory.org()
    url = f"/v1/orgs/{org.id}"
    current = client.get(url, headers=org.headers).json()["audit_retention_days"]
    clock.advance(STALE)
    longer = {"audit_retention_days": current + 30}
    _assert_step_up(client.patch(url, json=longer, headers=org.admin.headers))
    assert client.get(url, headers=org.headers).json()["audit_retention_days"] == current
    same = {"audit_retention_days": current}
    assert client.patch(url, json=same, headers=org.admin.headers).status_code == 200
    assert client.patch(url, json=longer, headers=org.headers).status_code == 200  # a key
    step_up(client, org.admin.headers)
    shorter = {"audit_retention_days": current}
    assert client.patch(url, json=shorter, headers=org.admin.headers).status_code == 200


def test_a_stale_session_steps_up_before_a_first_factor(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    clock.advance(STALE)
    _assert_step_up(client.post("/v1/me/mfa/totp", headers=org.admin.headers))
    stepped = client.post(
        "/v1/auth/step-up", json={"method": "password", "password": PASSWORD},
        headers=org.admin.headers,
    )  # fmt: skip
    assert stepped.status_code == 200
    assert client.post("/v1/me/mfa/totp", headers=org.admin.headers).status_code == 200


def test_the_sdk_raises_a_typed_error_with_the_challenge(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    reveal = _secret(client, org)
    sdk = Client(http_client=client, token=org.admin.token)
    clock.advance(STALE)
    with pytest.raises(StepUpRequired) as caught:
        sdk._call(Req("POST", reveal, json={}))  # no secrets helper: its transport
    assert caught.value.max_age == 600
    assert caught.value.code == "step_up_required"
    assert "insufficient_user_authentication" in (caught.value.challenge or "")
    assert sdk.auth.step_up("password", password=PASSWORD)["amr"] == ["pwd"]
    assert sdk._call(Req("POST", reveal, json={}))["value"] == "hunter22"


def test_an_enrolment_token_cannot_step_up(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    client.patch(f"/v1/orgs/{org.id}", json={"mfa_policy": "all"}, headers=org.headers)
    owed = client.post(
        "/v1/auth/login", json={"email": org.admin.email, "password": PASSWORD}
    ).json()
    assert owed["mfa_enrolment_required"] is True
    refused = client.post(
        "/v1/auth/step-up",
        json={"method": "password", "password": PASSWORD},
        headers=bearer(owed["mfa_token"]),
    )
    assert refused.status_code == 401
