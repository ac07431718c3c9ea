"""WebAuthn: registering passkeys and security keys, the second factor, passwordless
sign-in and step-up, with responses from a software authenticator written for the suite
(`webauthn_authenticator`), and every refusal."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import select

from bastion.core.clock import clock
from bastion.identity.models import MfaFactor, User
from tests.factories import Factory, Org, bearer
from tests.identity.mfa_support import enrol_totp, login
from tests.identity.webauthn_authenticator import RP_ID, SoftAuthenticator, b64url, unb64url

REFUSED = "the code is wrong, expired or was already used"


def register(
    client: TestClient,
    headers: dict[str, str],
    authenticator: SoftAuthenticator,
    name: str = "Security key",
    **create: Any,
) -> Any:
    options = client.post("/v1/me/mfa/webauthn/registration-options", headers=headers)
    assert options.status_code == 200, options.text
    credential = authenticator.create(options.json(), **create)
    return client.post(
        "/v1/me/mfa/webauthn", json={"name": name, "credential": credential}, headers=headers
    )


def registered(
    client: TestClient, headers: dict[str, str], authenticator: SoftAuthenticator, name: str = "Key"
) -> dict[str, Any]:
    done = register(client, headers, authenticator, name)
    assert done.status_code == 200, done.text
    return dict(done.json())


def mfa_options(client: TestClient, mfa_token: str) -> dict[str, Any]:
    response = client.post("/v1/auth/mfa/webauthn-options", json={"mfa_token": mfa_token})
    assert response.status_code == 200, response.text
    return dict(response.json())


def answer(client: TestClient, mfa_token: str, credential: dict[str, Any]) -> Any:
    return client.post(
        "/v1/auth/mfa",
        json={"mfa_token": mfa_token, "method": "webauthn", "credential": credential},
    )


def passkey_options(client: TestClient) -> dict[str, Any]:
    response = client.post("/v1/auth/passkey/options")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _events(client: TestClient, org: Org, type_: str) -> list[dict[str, Any]]:
    found = client.get(
        f"/v1/orgs/{org.id}/audit-events", params={"type": type_}, headers=org.headers
    )
    assert found.status_code == 200, found.text
    return list(found.json()["data"])


# --- registration ---------------------------------------------------------------------


def test_registration_options_follow_the_public_url_and_exclude_existing_credentials(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    options = client.post("/v1/me/mfa/webauthn/registration-options", headers=org.admin.headers)
    assert options.status_code == 200, options.text
    body = options.json()
    assert body["rp"] == {"id": RP_ID, "name": "Bastion"}
    assert unb64url(body["user"]["id"]) == org.admin.user_id.encode()
    assert body["user"]["name"] == org.admin.email
    assert len(unb64url(body["challenge"])) == 32
    assert body["attestation"] == "none"
    assert body["authenticatorSelection"]["residentKey"] == "preferred"
    assert body["authenticatorSelection"]["userVerification"] == "preferred"
    assert body["excludeCredentials"] == []
    key = SoftAuthenticator()
    registered(client, org.admin.headers, key)
    again = client.post("/v1/me/mfa/webauthn/registration-options", headers=org.admin.headers)
    excluded = again.json()["excludeCredentials"]
    assert [unb64url(c["id"]) for c in excluded] == list(key.credentials)
    assert excluded[0]["transports"] == ["nfc", "usb"]
    # The authenticator refuses to register a second credential for the same account.
    with pytest.raises(ValueError, match="excluded"):
        key.create(again.json())


def test_register_two_name_them_list_them_remove_one(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    first = registered(client, org.admin.headers, SoftAuthenticator(), "YubiKey")
    assert first["factor_id"].startswith("mfa_")
    assert len(first["recovery_codes"]) == 10  # the first factor brings recovery codes
    second = registered(client, org.admin.headers, SoftAuthenticator(), "Laptop")
    assert second["recovery_codes"] == []
    listed = client.get("/v1/me/mfa", headers=org.admin.headers).json()
    assert {(f["name"], f["kind"], f["status"]) for f in listed["data"]} == {
        ("YubiKey", "webauthn", "active"),
        ("Laptop", "webauthn", "active"),
    }
    assert listed["recovery_codes_remaining"] == 10
    assert all(f["aaguid"] == "00000000-0000-0000-0000-000000000000" for f in listed["data"])
    removed = client.delete(f"/v1/me/mfa/{first['factor_id']}", headers=org.admin.headers)
    assert removed.status_code == 204
    left = client.get("/v1/me/mfa", headers=org.admin.headers).json()["data"]
    assert [f["id"] for f in left] == [second["factor_id"]]
    created = _events(client, org, "mfa_factor.created")
    assert {e["metadata"]["kind"] for e in created} == {"webauthn"}
    assert [e["resource"]["id"] for e in _events(client, org, "mfa_factor.deleted")] == [
        first["factor_id"]
    ]


def test_a_registration_from_the_wrong_origin_or_rp_or_challenge_is_refused(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    key = SoftAuthenticator()
    for bad in (
        {"origin": "https://evil.example"},
        {"rp_id": "evil.example"},
        {"challenge": b64url(b"\x00" * 32)},
    ):
        refused = register(client, org.admin.headers, key, **bad)
        assert refused.status_code == 422, (bad, refused.text)
        assert [e["field"] for e in refused.json()["errors"]] == ["credential"]
    assert client.get("/v1/me/mfa", headers=org.admin.headers).json()["data"] == []
    reasons = {e["reason"] for e in _events(client, org, "auth.mfa_failed")}
    assert {"bad_attestation", "unknown_challenge"} <= reasons


def test_a_registration_challenge_is_used_once(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    options = client.post("/v1/me/mfa/webauthn/registration-options", headers=org.admin.headers)
    key = SoftAuthenticator()
    first = key.create(options.json())
    second = SoftAuthenticator().create(options.json())
    url = "/v1/me/mfa/webauthn"
    ok = client.post(url, json={"credential": first}, headers=org.admin.headers)
    assert ok.status_code == 200, ok.text
    again = client.post(url, json={"credential": second}, headers=org.admin.headers)
    assert again.status_code == 422


def test_another_persons_registration_challenge_is_refused(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    member = factory.member(org)
    options = client.post("/v1/me/mfa/webauthn/registration-options", headers=org.admin.headers)
    credential = SoftAuthenticator().create(options.json())
    refused = client.post(
        "/v1/me/mfa/webauthn", json={"credential": credential}, headers=member.headers
    )
    assert refused.status_code == 422
    assert client.get("/v1/me/mfa", headers=member.headers).json()["data"] == []


def test_adding_a_key_needs_step_up_once_a_factor_exists(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    registered(client, org.admin.headers, SoftAuthenticator())
    clock.advance(601)
    stale = client.post("/v1/me/mfa/webauthn/registration-options", headers=org.admin.headers)
    assert stale.status_code == 401
    assert stale.json()["code"] == "step_up_required"


def test_an_enrolment_token_registers_a_passkey_under_a_requiring_policy(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    member = factory.member(org)
    changed = client.patch(f"/v1/orgs/{org.id}", json={"mfa_policy": "all"}, headers=org.headers)
    assert changed.status_code == 200, changed.text
    owed = login(client, member.email)
    assert owed["mfa_enrolment_required"] is True
    token = bearer(owed["mfa_token"])
    done = registered(client, token, SoftAuthenticator())
    assert len(done["recovery_codes"]) == 10
    # The enrolment token is used up: the person signs in again, with the passkey.
    assert client.get("/v1/me/mfa", headers=token).status_code == 401
    assert login(client, member.email)["methods"] == ["webauthn", "recovery_code"]


def test_malformed_registration_json_is_422_naming_the_field(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    url = "/v1/me/mfa/webauthn"
    cases: list[tuple[Any, str]] = [
        ({"credential": {"id": "x", "rawId": "x", "type": "public-key"}}, "credential.response"),
        ({"credential": "nope"}, "credential"),
        (
            {"credential": {"id": "x", "rawId": "x", "type": "other", "response": {}}},
            "credential.type",
        ),
        (
            {
                "credential": {
                    "id": "x!",
                    "rawId": "x",
                    "type": "public-key",
                    "response": {"clientDataJSON": "e30", "attestationObject": "oA"},
                }
            },
            "credential.id",
        ),
    ]
    for body, field in cases:
        refused = client.post(url, json=body, headers=org.admin.headers)
        assert refused.status_code == 422, refused.text
        assert field in [e["field"] for e in refused.json()["errors"]], refused.json()
    # Well-formed base64url that is not WebAuthn: refused, not a 500.
    junk = {"clientDataJSON": "e30", "attestationObject": "oA", "transports": []}
    body = {"credential": {"id": "AA", "rawId": "AA", "type": "public-key", "response": junk}}
    refused = client.post(url, json=body, headers=org.admin.headers)
    assert refused.status_code == 422


# --- the second factor ----------------------------------------------------------------


def test_signing_in_with_a_security_key_as_second_factor(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    key = SoftAuthenticator()
    registered(client, org.admin.headers, key)
    other = SoftAuthenticator()
    registered(client, org.admin.headers, other)
    owed = login(client, org.admin.email)
    assert owed["methods"] == ["webauthn", "recovery_code"]
    options = mfa_options(client, owed["mfa_token"])
    assert {unb64url(c["id"]) for c in options["allowCredentials"]} == set(key.credentials) | set(
        other.credentials
    )
    assert options["rpId"] == RP_ID
    done = answer(client, owed["mfa_token"], key.get(options))
    assert done.status_code == 200, done.text
    me = client.get("/v1/me", headers=bearer(done.json()["token"])).json()
    assert me["amr"] == ["pwd", "hwk", "mfa"]
    used = _events(client, org, "mfa_factor.used")
    assert used[0]["metadata"]["stage"] == "sign_in"
    assert options["challenge"] not in str(used)


def test_a_synced_passkey_is_a_software_key(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    key = SoftAuthenticator(backup_eligible=True, counting=False)
    registered(client, org.admin.headers, key)
    for _ in range(2):  # a counter that stays 0 is not a regression
        owed = login(client, org.admin.email)
        done = answer(client, owed["mfa_token"], key.get(mfa_options(client, owed["mfa_token"])))
        assert done.status_code == 200, done.text
        me = client.get("/v1/me", headers=bearer(done.json()["token"])).json()
        assert me["amr"] == ["pwd", "swk", "mfa"]


def _refused(client: TestClient, mfa_token: str, credential: dict[str, Any]) -> None:
    response = answer(client, mfa_token, credential)
    assert response.status_code == 401, response.text
    assert response.json()["detail"] == REFUSED


def test_every_bad_assertion_is_the_same_401(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    key = SoftAuthenticator()
    registered(client, org.admin.headers, key)
    (cid,) = key.credentials
    intruder = factory.org()
    stranger = SoftAuthenticator()
    registered(client, intruder.admin.headers, stranger)
    (stranger_id,) = stranger.credentials

    def token() -> str:
        return str(login(client, org.admin.email)["mfa_token"])

    cases: dict[str, Any] = {
        "wrong origin": lambda t, o: key.get(o, origin="https://evil.example"),
        "wrong rp id": lambda t, o: key.get(o, rp_id="evil.example"),
        "bad signature": lambda t, o: key.get(o, key=ec.generate_private_key(ec.SECP256R1())),
        "another org's credential": lambda t, o: stranger.get(o, credential_id=stranger_id),
        "unknown challenge": lambda t, o: key.get(o, challenge=b64url(b"\x01" * 32)),
        "no user presence": lambda t, o: key.get(o, up=False),
    }
    for case, make in cases.items():
        mfa_token = token()
        options = mfa_options(client, mfa_token)
        response = answer(client, mfa_token, make(mfa_token, options))
        assert response.status_code == 401, (case, response.text)
        assert response.json()["detail"] == REFUSED, case
    # Sign-count regression (a cloned authenticator): the stored count is non-zero now.
    mfa_token = token()
    good = answer(client, mfa_token, key.get(mfa_options(client, mfa_token)))
    assert good.status_code == 200, good.text
    stored = key.credentials[cid].sign_count
    mfa_token = token()
    _refused(client, mfa_token, key.get(mfa_options(client, mfa_token), sign_count=stored))
    reasons = {e["reason"] for e in _events(client, org, "auth.mfa_failed")}
    assert {
        "bad_assertion",
        "unknown_credential",
        "unknown_challenge",
        "sign_count_regression",
    } <= reasons


def test_a_challenge_is_single_use_short_lived_and_bound_to_its_token(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    key = SoftAuthenticator()
    registered(client, org.admin.headers, key)
    # Reused: an assertion replayed, and a fresh assertion on a used challenge.
    first = login(client, org.admin.email)["mfa_token"]
    options = mfa_options(client, first)
    assertion = key.get(options)
    assert answer(client, first, assertion).status_code == 200
    second = login(client, org.admin.email)["mfa_token"]
    _refused(client, second, assertion)
    _refused(client, second, key.get(options))
    # Foreign: the challenge of another mfa token (of the same person).
    third = login(client, org.admin.email)["mfa_token"]
    theirs = mfa_options(client, second)
    _refused(client, third, key.get(theirs))
    # A refused attempt uses its challenge up too.
    fourth = login(client, org.admin.email)["mfa_token"]
    options = mfa_options(client, fourth)
    _refused(client, fourth, key.get(options, origin="https://evil.example"))
    _refused(client, fourth, key.get(options))
    reasons = {e["reason"] for e in _events(client, org, "auth.mfa_failed")}
    assert {"reused_challenge", "foreign_challenge"} <= reasons


def test_wrong_assertions_use_up_the_mfa_token(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    key = SoftAuthenticator()
    registered(client, org.admin.headers, key)
    mfa_token = login(client, org.admin.email)["mfa_token"]
    for _ in range(5):
        options = mfa_options(client, mfa_token)
        _refused(client, mfa_token, key.get(options, origin="https://evil.example"))
    response = client.post("/v1/auth/mfa/webauthn-options", json={"mfa_token": mfa_token})
    assert response.status_code == 401
    assert "mfa_token" in response.json()["detail"]


def test_malformed_assertion_json_is_422_or_401_never_500(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    registered(client, org.admin.headers, SoftAuthenticator())
    mfa_token = login(client, org.admin.email)["mfa_token"]
    missing = answer(client, mfa_token, {"id": "AA", "rawId": "AA", "type": "public-key"})
    assert missing.status_code == 422
    assert [e["field"] for e in missing.json()["errors"]] == ["credential.response"]
    none = client.post("/v1/auth/mfa", json={"mfa_token": mfa_token, "method": "webauthn"})
    assert none.status_code == 422
    assert [e["field"] for e in none.json()["errors"]] == ["credential"]
    for junk in ("AA", "e30", "eyJjaGFsbGVuZ2UiOjF9", "A"):
        response = {"clientDataJSON": junk, "authenticatorData": junk, "signature": junk}
        credential = {"id": "AA", "rawId": "AA", "type": "public-key", "response": response}
        assert answer(client, mfa_token, credential).status_code == 401


def test_a_person_without_a_key_gets_no_webauthn_options(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    enrol_totp(client, org.admin.headers)
    owed = login(client, org.admin.email)
    assert "webauthn" not in owed["methods"]
    refused = client.post("/v1/auth/mfa/webauthn-options", json={"mfa_token": owed["mfa_token"]})
    assert refused.status_code == 409
    bad = client.post("/v1/auth/mfa/webauthn-options", json={"mfa_token": "bsm_nope"})
    assert bad.status_code == 401


def test_an_org_may_allow_webauthn_alone(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    key = SoftAuthenticator()
    registered(client, org.admin.headers, key)
    enrol = client.post("/v1/me/mfa/totp", headers=org.admin.headers)
    assert enrol.status_code == 200
    changed = client.patch(
        f"/v1/orgs/{org.id}", json={"mfa_methods": ["webauthn"]}, headers=org.admin.headers
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["mfa_methods"] == ["webauthn"]
    assert client.post("/v1/me/mfa/totp", headers=org.admin.headers).status_code == 403
    owed = login(client, org.admin.email)
    assert owed["methods"] == ["webauthn", "recovery_code"]
    # And the other way round: with WebAuthn no longer allowed, keys are not offered.
    client.patch(f"/v1/orgs/{org.id}", json={"mfa_methods": ["totp"]}, headers=org.admin.headers)
    owed = login(client, org.admin.email)
    assert owed["methods"] == ["recovery_code"]
    refused = client.post("/v1/auth/mfa/webauthn-options", json={"mfa_token": owed["mfa_token"]})
    assert refused.status_code == 409


# --- passwordless ---------------------------------------------------------------------


def test_passwordless_sign_in_with_a_discoverable_credential(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    key = SoftAuthenticator()
    registered(client, org.admin.headers, key)
    options = passkey_options(client)
    assert options["userVerification"] == "required"
    assert options.get("allowCredentials", []) == []
    assert options["rpId"] == RP_ID
    done = client.post("/v1/auth/passkey", json={"credential": key.get(options)})
    assert done.status_code == 200, done.text
    assert done.json()["user_id"] == org.admin.user_id
    me = client.get("/v1/me", headers=bearer(done.json()["token"])).json()
    assert me["amr"] == ["hwk", "mfa"]
    used = _events(client, org, "mfa_factor.used")
    assert used[0]["metadata"]["stage"] == "passkey"
    assert used[0]["metadata"]["user_verified"] is True


def test_passwordless_refusals_are_one_401(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    key = SoftAuthenticator()
    registered(client, org.admin.headers, key)
    member = factory.member(org)
    theirs = SoftAuthenticator()
    registered(client, member.headers, theirs)
    unknown = SoftAuthenticator()
    unknown.create(
        {"rp": {"id": RP_ID}, "user": {"id": b64url(b"usr_x")}, "challenge": b64url(b"c")}
    )

    def attempt(credential: dict[str, Any]) -> Any:
        return client.post("/v1/auth/passkey", json={"credential": credential})

    answers = [
        attempt(key.get(passkey_options(client), uv=False)),  # user verification required
        attempt(unknown.get(passkey_options(client))),
        attempt(key.get(passkey_options(client), key=ec.generate_private_key(ec.SECP256R1()))),
        attempt(key.get(passkey_options(client), origin="https://evil.example")),
        attempt(key.get(passkey_options(client), user_handle=member.user_id.encode())),
        attempt(key.get(mfa_options(client, login(client, org.admin.email)["mfa_token"]))),
    ]
    # A suspended person, and an organisation that no longer allows WebAuthn.
    suspended = client.patch(
        f"/v1/orgs/{org.id}/users/{member.user_id}", json={"status": "suspended"},
        headers=org.headers,
    )  # fmt: skip
    assert suspended.status_code == 200, suspended.text
    answers.append(attempt(theirs.get(passkey_options(client))))
    client.patch(f"/v1/orgs/{org.id}", json={"mfa_methods": ["totp"]}, headers=org.headers)
    answers.append(attempt(key.get(passkey_options(client))))
    assert [a.status_code for a in answers] == [401] * len(answers), [a.text for a in answers]
    assert len({a.json()["detail"] for a in answers}) == 1
    reasons = {
        e["reason"]
        for e in _events(client, org, "auth.login_failed")
        if e["metadata"].get("method") == "passkey"
    }
    assert {
        "bad_assertion",
        "user_handle_mismatch",
        "user_suspended",
        "method_not_allowed",
    } <= reasons


def test_a_passwordless_challenge_is_single_use_and_short_lived(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    key = SoftAuthenticator()
    registered(client, org.admin.headers, key)
    options = passkey_options(client)
    assertion = key.get(options)
    assert client.post("/v1/auth/passkey", json={"credential": assertion}).status_code == 200
    replay = client.post("/v1/auth/passkey", json={"credential": key.get(options)})
    assert replay.status_code == 401
    options = passkey_options(client)
    clock.advance(301)
    late = client.post("/v1/auth/passkey", json={"credential": key.get(options)})
    assert late.status_code == 401
    reasons = {
        e["reason"]
        for e in _events(client, org, "auth.login_failed")
        if e["metadata"].get("method") == "passkey"
    }
    assert {"reused_challenge", "expired_challenge"} <= reasons


# --- step-up --------------------------------------------------------------------------


def test_step_up_with_a_security_key(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    key = SoftAuthenticator()
    done = registered(client, org.admin.headers, key)
    owed = login(client, org.admin.email)
    session = answer(client, owed["mfa_token"], key.get(mfa_options(client, owed["mfa_token"])))
    headers = bearer(session.json()["token"])
    clock.advance(601)
    codes = "/v1/me/mfa/recovery-codes"
    assert client.post(codes, headers=headers).status_code == 401  # step-up required
    options = client.post("/v1/auth/step-up/webauthn-options", headers=headers)
    assert options.status_code == 200, options.text
    # Another session's options, and a bad origin, are refused.
    other = client.post("/v1/auth/step-up/webauthn-options", headers=org.admin.headers)
    refused = client.post(
        "/v1/auth/step-up",
        json={"method": "webauthn", "credential": key.get(other.json())},
        headers=headers,
    )
    assert refused.status_code == 401
    stepped = client.post(
        "/v1/auth/step-up",
        json={"method": "webauthn", "credential": key.get(options.json())},
        headers=headers,
    )
    assert stepped.status_code == 200, stepped.text
    assert stepped.json()["amr"] == ["pwd", "hwk", "mfa"]
    assert client.post(codes, headers=headers).status_code == 200
    missing = client.post("/v1/auth/step-up", json={"method": "webauthn"}, headers=headers)
    assert missing.status_code == 422
    assert [e["field"] for e in missing.json()["errors"]] == ["credential"]
    assert done["factor_id"]
    reasons = {e["reason"] for e in _events(client, org, "auth.step_up_failed")}
    assert "foreign_challenge" in reasons


def test_no_key_material_but_the_public_key_is_stored(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    key = SoftAuthenticator()
    done = registered(client, org.admin.headers, key)
    with factory.state.sessions() as db:
        factor = db.execute(select(MfaFactor).where(MfaFactor.id == done["factor_id"])).scalar_one()
        (credential,) = key.credentials.values()
        assert factor.credential_id == b64url(credential.id)
        assert factor.public_key == credential.cose_key()
        assert factor.sign_count == 0
        assert factor.secret_id is None
        assert db.get(User, org.admin.user_id) is not None


def test_a_held_password_only_session_enrols_a_key_and_steps_up_with_it(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    member = factory.member(org)  # signed in with a password, under "optional"
    changed = client.patch(f"/v1/orgs/{org.id}", json={"mfa_policy": "all"}, headers=org.headers)
    assert changed.status_code == 200, changed.text
    assert client.get(f"/v1/orgs/{org.id}", headers=member.headers).status_code == 403
    key = SoftAuthenticator()
    registered(client, member.headers, key)  # the enrolment routes answer
    options = client.post("/v1/auth/step-up/webauthn-options", headers=member.headers)
    assert options.status_code == 200, options.text
    stepped = client.post(
        "/v1/auth/step-up",
        json={"method": "webauthn", "credential": key.get(options.json())},
        headers=member.headers,
    )
    assert stepped.status_code == 200, stepped.text
    assert stepped.json()["amr"] == ["pwd", "hwk", "mfa"]
    assert client.get(f"/v1/orgs/{org.id}", headers=member.headers).status_code == 200


def test_the_relying_party_is_the_public_url() -> None:
    from bastion.core.config import ConfigError, load_settings
    from bastion.identity.mfa.passkeys import RelyingParty

    rp = RelyingParty.of(load_settings(public_url="https://Bastion.Example.com:8443/"))
    assert (rp.id, rp.origin) == ("bastion.example.com", "https://bastion.example.com:8443")
    assert RelyingParty.of(load_settings()).origin == "http://localhost:8400"
    for bad in (
        "bastion.example.com",
        "https://x.example/path",
        "ftp://x.example",
        "https://u:p@x",
    ):
        with pytest.raises(ConfigError, match="BASTION_PUBLIC_URL"):
            load_settings(public_url=bad)


def test_an_admin_reset_removes_keys_and_open_challenges(
    client: TestClient, factory: Factory
) -> None:
    from bastion.identity.models import WebAuthnChallenge

    org = factory.org()
    member = factory.member(org)
    key = SoftAuthenticator()
    registered(client, member.headers, key)
    client.post("/v1/me/mfa/webauthn/registration-options", headers=member.headers)
    reset = client.delete(f"/v1/orgs/{org.id}/users/{member.user_id}/mfa", headers=org.headers)
    assert reset.status_code == 204, reset.text
    with factory.state.sessions() as db:
        left = db.execute(
            select(WebAuthnChallenge).where(WebAuthnChallenge.user_id == member.user_id)
        ).all()
        assert left == []
    refused = client.post("/v1/auth/passkey", json={"credential": key.get(passkey_options(client))})
    assert refused.status_code == 401
    assert "token" in login(client, member.email)  # a password alone again


def test_expired_challenges_are_swept_when_new_ones_are_issued(
    client: TestClient, factory: Factory
) -> None:
    from bastion.core.crypto import sha256_hex
    from bastion.identity.models import WebAuthnChallenge

    first = unb64url(passkey_options(client)["challenge"])
    clock.advance(301)
    passkey_options(client)
    with factory.state.sessions() as db:
        found = db.execute(
            select(WebAuthnChallenge).where(WebAuthnChallenge.challenge_hash == sha256_hex(first))
        ).all()
        assert found == []
