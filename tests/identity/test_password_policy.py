"""The password policy: the organisation's minimum length and breached check, context
words, on every way a password is set (user creation, setup, change); and changing
one's password (the other sessions end, the current one stays)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.identity import breached, passwords
from bastion.identity.errors import PasswordBreached, PasswordTooWeak
from tests.factories import PASSWORD, Factory, Org, bearer, unique_email

NEW = "a brand new passphrase"


# --- the policy itself --------------------------------------------------------------


def test_bundled_list_is_loaded_and_matches_case_insensitively() -> None:
    assert breached.size() >= 30_000
    for listed in ("password", "qwerty123456", "Password", "QWERTY123456", "Password123!"):
        assert breached.is_breached(listed), listed
    for fine in (PASSWORD, NEW, "first password 123", "zq8#Lm2!vX0@pR"):
        assert not breached.is_breached(fine), fine


def test_context_words_ignore_short_ones_and_always_include_bastion() -> None:
    words = passwords.context_words(whole=["jane.doe"], split=["Acme Corp", "Jo Li", None])
    assert "bastion" in words
    assert {"acme corp", "acme", "corp", "jane.doe"} <= set(words)
    assert not {"jo", "li", "doe", "jane"} & set(words)


@pytest.mark.parametrize(
    ("password", "error"),
    [
        ("short", PasswordTooWeak),
        ("x" * 1025, PasswordTooWeak),
        ("my BASTION passphrase", PasswordTooWeak),
        ("welcome to acme, friends", PasswordTooWeak),
        ("qwerty123456", PasswordBreached),
        ("iloveyou1234567", PasswordBreached),
    ],
)
def test_check_policy_refusals(password: str, error: type[Exception]) -> None:
    with pytest.raises(error) as raised:
        passwords.check_policy(
            password, "new_password", context=passwords.context_words(split=["Acme"])
        )
    assert raised.value.errors[0].field == "new_password"  # type: ignore[attr-defined]
    assert password not in str(raised.value)


def test_breached_check_and_minimum_follow_the_policy() -> None:
    lax = passwords.Policy(min_length=8, breached_check=False)
    passwords.check_policy("qwerty123456", policy=lax)
    passwords.check_policy("zq8#Lm2!", policy=lax)
    with pytest.raises(PasswordTooWeak):
        passwords.check_policy("zq8#Lm2!vX0@", policy=passwords.Policy(min_length=16))


# --- over the API ---------------------------------------------------------------------


def _create(client: TestClient, org: Org, password: str, **extra: Any) -> Any:
    body = {"email": unique_email(), "role": "viewer", "password": password, **extra}
    return client.post(f"/v1/orgs/{org.id}/users", json=body, headers=org.headers)


def _patch(client: TestClient, org: Org, body: dict[str, Any]) -> Any:
    return client.patch(f"/v1/orgs/{org.id}", json=body, headers=org.headers)


def test_org_shows_and_changes_its_password_policy(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    shown = client.get(f"/v1/orgs/{org.id}", headers=org.headers).json()
    assert shown["password_policy"] == {"min_length": 12, "breached_check": True}
    changed = _patch(client, org, {"password_policy": {"min_length": 20}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["password_policy"] == {"min_length": 20, "breached_check": True}
    refused = _create(client, org, "nineteen characters")
    assert refused.status_code == 422
    assert refused.json()["code"] == "password_too_weak"
    assert refused.json()["errors"] == [
        {"field": "password", "message": "must be at least 20 characters"}
    ]
    assert _create(client, org, "twenty-one characters").status_code == 201

    off = _patch(client, org, {"password_policy": {"breached_check": False, "min_length": 12}})
    assert off.json()["password_policy"] == {"min_length": 12, "breached_check": False}
    assert _create(client, org, "qwerty123456").status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"password_policy": {"min_length": 7}},
        {"password_policy": {"min_length": 129}},
        {"password_policy": {"min_length": "12"}},
        {"password_policy": {"breached_check": "no"}},
        {"password_policy": {"unknown": 1}},
    ],
)
def test_bad_policies_are_refused(client: TestClient, factory: Factory, body: Any) -> None:
    org = factory.org()
    response = _patch(client, org, body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"].startswith("password_policy")


def test_user_creation_refuses_breached_and_context_passwords(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org(name="Umbrella")
    breached_answer = _create(client, org, "qwerty123456")
    assert breached_answer.status_code == 422
    assert breached_answer.json()["code"] == "password_breached"
    assert breached_answer.json()["errors"][0]["field"] == "password"
    for password, extra in [
        ("umbrella forever and ever", {}),
        ("my name is Henrietta!", {"name": "Henrietta Lacks"}),
        ("Bastion is my password", {}),
    ]:
        answer = _create(client, org, password, **extra)
        assert answer.status_code == 422, password
        assert answer.json()["code"] == "password_too_weak"
    email = unique_email("zebedee")
    local = email.split("@")[0]
    answer = _create(client, org, f"I am {local.upper()}!", email=email)
    assert answer.json()["code"] == "password_too_weak"


def test_setup_obeys_the_policy(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    invited = client.post(
        f"/v1/orgs/{org.id}/users",
        json={"email": unique_email(), "role": "viewer"},
        headers=org.headers,
    ).json()
    setup = {"token": invited["setup_token"], "password": "qwerty123456"}
    refused = client.post("/v1/auth/setup", json=setup)
    assert refused.status_code == 422
    assert refused.json()["code"] == "password_breached"
    setup["password"] = NEW
    assert client.post("/v1/auth/setup", json=setup).status_code == 200  # the token survived


# --- changing one's password ----------------------------------------------------------


def _change(client: TestClient, token: str, current: str, new: str) -> Any:
    return client.post(
        "/v1/me/password",
        json={"current_password": current, "new_password": new},
        headers=bearer(token),
    )


def test_change_ends_the_other_sessions_and_keeps_this_one(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    member = factory.member(org)
    other = factory.login(member.email)
    answer = _change(client, member.token, PASSWORD, NEW)
    assert answer.status_code == 204, answer.text
    assert client.get("/v1/me", headers=member.headers).status_code == 200
    assert client.get("/v1/me", headers=bearer(other)).status_code == 401
    assert client.post("/v1/auth/login", json={"email": member.email, "password": NEW}).is_success
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "auth.password_changed"},
        headers=org.headers,
    ).json()["data"]
    assert events[0]["metadata"] == {"other_sessions_ended": 1}
    assert NEW not in str(events)
    assert PASSWORD not in str(events)


def test_change_refusals(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org)
    wrong = _change(client, member.token, "not my password at all", NEW)
    assert wrong.status_code == 401
    weak = _change(client, member.token, PASSWORD, "short")
    assert weak.status_code == 422
    assert weak.json()["code"] == "password_too_weak"
    assert weak.json()["errors"][0]["field"] == "new_password"
    leaked = _change(client, member.token, PASSWORD, "iloveyou1234567")
    assert leaked.json()["code"] == "password_breached"
    assert leaked.json()["errors"][0]["field"] == "new_password"
    # An API key is no person: it has no password to change.
    assert _change(client, org.admin_key, PASSWORD, NEW).status_code == 401
    assert client.post("/v1/me/password", json={"current_password": PASSWORD}).status_code == 401
    # Nothing changed.
    assert client.get("/v1/me", headers=member.headers).status_code == 200
    assert client.post(
        "/v1/auth/login", json={"email": member.email, "password": PASSWORD}
    ).is_success


def test_guessing_the_current_password_is_throttled(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org)
    answers = [
        _change(client, member.token, f"wrong guess number {i}", NEW).status_code for i in range(6)
    ]
    assert answers == [401] * 5 + [429]
    assert _change(client, member.token, PASSWORD, NEW).status_code == 429
