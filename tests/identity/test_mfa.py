"""TOTP enrolment, sign-in with a second factor, recovery codes, and every refusal."""

from __future__ import annotations

import pyotp
from fastapi.testclient import TestClient
from sqlalchemy import select

from bastion.api.app import create_app
from bastion.core.clock import clock
from bastion.identity.mfa import signin
from bastion.identity.models import MfaChallenge, MfaFactor, RecoveryCode
from bastion.identity.tokens import parse
from bastion.secrets.models import Secret, SecretVersion
from tests.conftest import make_settings
from tests.factories import PASSWORD, Factory, bearer
from tests.identity.mfa_support import (
    code,
    enrol_totp,
    finish,
    login,
    next_step,
    sign_in_with_totp,
)


def _events(client: TestClient, org_headers: dict[str, str], org_id: str, type_: str) -> list:  # type: ignore[type-arg]
    response = client.get(
        f"/v1/orgs/{org_id}/audit-events", params={"type": type_}, headers=org_headers
    )
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def test_enrolment_gives_a_secret_once_and_an_otpauth_uri(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    started = client.post("/v1/me/mfa/totp", headers=org.admin.headers)
    assert started.status_code == 200, started.text
    body = started.json()
    assert body["factor_id"].startswith("mfa_")
    uri = pyotp.parse_uri(body["otpauth_uri"])  # an independent parser of the URI
    assert isinstance(uri, pyotp.TOTP)
    assert uri.secret == body["secret"]
    assert uri.issuer == "Bastion"
    assert uri.digits == 6
    assert uri.interval == 30
    listed = client.get("/v1/me/mfa", headers=org.admin.headers)
    assert listed.status_code == 200
    assert [(f["id"], f["status"]) for f in listed.json()["data"]] == [
        (body["factor_id"], "pending")
    ]
    assert body["secret"] not in listed.text
    # Pending: signing in still needs the password only.
    assert "token" in login(client, org.admin.email)


def test_the_secret_is_sealed_in_the_vault_not_stored_in_clear(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    enrolled = enrol_totp(client, org.admin.headers)
    with factory.state.sessions() as db:
        factor = db.get(MfaFactor, enrolled.factor_id)
        assert factor is not None
        assert factor.secret_id is not None
        assert enrolled.secret not in repr(vars(factor))
        versions = db.execute(
            select(SecretVersion).where(SecretVersion.secret_id == factor.secret_id)
        ).scalars()
        for version in versions:
            assert enrolled.secret.encode() not in version.ciphertext


def test_confirm_refuses_a_wrong_code_naming_the_field(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    body = client.post("/v1/me/mfa/totp", headers=org.admin.headers).json()
    wrong = str((int(code(body["secret"])) + 1) % 1_000_000).zfill(6)
    refused = client.post(
        f"/v1/me/mfa/totp/{body['factor_id']}/confirm",
        json={"code": wrong},
        headers=org.admin.headers,
    )
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "code"
    assert _events(client, org.headers, org.id, "auth.mfa_failed")


def test_first_factor_brings_ten_recovery_codes_later_ones_none(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    first = enrol_totp(client, org.admin.headers)
    assert len(first.recovery_codes) == 10 == len(set(first.recovery_codes))
    second = enrol_totp(client, org.admin.headers)
    assert second.recovery_codes == []
    with factory.state.sessions() as db:
        stored = db.execute(
            select(RecoveryCode.code_hash).where(RecoveryCode.user_id == org.admin.user_id)
        ).scalars()
        hashes = list(stored)
    assert len(hashes) == 10
    assert not set(hashes) & {c.replace("-", "") for c in first.recovery_codes}
    confirmed = client.post(
        f"/v1/me/mfa/totp/{second.factor_id}/confirm", json={"code": "000000"},
        headers=org.admin.headers,
    )  # fmt: skip
    assert confirmed.status_code == 409  # already confirmed


def test_sign_in_with_a_factor_needs_the_code(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    enrolled = enrol_totp(client, org.admin.headers)
    next_step()
    owed = login(client, org.admin.email)
    assert owed["mfa_required"] is True
    assert owed["methods"] == ["totp", "recovery_code"]
    assert "token" not in owed
    assert owed["mfa_token"].startswith("bsm_mfc_")
    done = finish(client, owed["mfa_token"], "totp", code(enrolled.secret))
    assert done.status_code == 200, done.text
    assert done.json()["user_id"] == org.admin.user_id
    me = client.get("/v1/me", headers=bearer(done.json()["token"])).json()
    assert me["amr"] == ["pwd", "otp", "mfa"]
    assert me["auth_time"].endswith("Z")
    sessions = client.get("/v1/me/sessions", headers=bearer(done.json()["token"])).json()
    current = [s for s in sessions["data"] if s["current"]]
    assert current[0]["amr"] == ["pwd", "otp", "mfa"]
    assert current[0]["auth_time"]
    assert _events(client, org.headers, org.id, "auth.mfa_challenged")


def test_a_code_is_accepted_once(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    enrolled = enrol_totp(client, org.admin.headers)
    next_step()
    used = code(enrolled.secret)
    assert (
        finish(client, login(client, org.admin.email)["mfa_token"], "totp", used).status_code == 200
    )
    replay = finish(client, login(client, org.admin.email)["mfa_token"], "totp", used)
    assert replay.status_code == 401
    failed = _events(client, org.headers, org.id, "auth.mfa_failed")
    assert failed[0]["reason"] == "replayed"
    assert used not in str(failed)
    # The previous step's code (still inside the ±1 window) is older: refused as well.
    earlier = code(enrolled.secret, -30)
    assert (
        finish(client, login(client, org.admin.email)["mfa_token"], "totp", earlier).status_code
        == 401
    )


def test_a_code_is_accepted_once_across_workers(
    client: TestClient,
    factory: Factory,
    data_dir,
    database_url,  # type: ignore[no-untyped-def]
) -> None:
    """Another app (another worker or replica: its own caches, one database) refuses the
    code the first one accepted: the last step is in the database."""
    org = factory.org()
    enrolled = enrol_totp(client, org.admin.headers)
    next_step()
    used = code(enrolled.secret)
    other_app = create_app(make_settings(data_dir, database_url))
    with TestClient(other_app, raise_server_exceptions=False) as other:
        token_here = login(client, org.admin.email)["mfa_token"]
        token_there = login(other, org.admin.email)["mfa_token"]
        assert finish(other, token_there, "totp", used).status_code == 200
        assert finish(client, token_here, "totp", used).status_code == 401


def test_five_wrong_codes_kill_the_mfa_token(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    enrolled = enrol_totp(client, org.admin.headers)
    next_step()
    token = login(client, org.admin.email)["mfa_token"]
    right = code(enrolled.secret)
    wrong = str((int(right) + 500_000) % 1_000_000).zfill(6)
    for _ in range(5):
        assert finish(client, token, "totp", wrong).status_code == 401
    assert finish(client, token, "totp", right).status_code == 401  # dead, even when right
    with factory.state.sessions() as db:
        attempts = db.execute(
            select(MfaChallenge.attempts).where(MfaChallenge.user_id == org.admin.user_id)
        ).scalar_one()
    assert attempts == 5
    assert len(_events(client, org.headers, org.id, "auth.mfa_failed")) >= 5
    # A new sign-in gets a new token, and the right code works.
    assert (
        finish(client, login(client, org.admin.email)["mfa_token"], "totp", right).status_code
        == 200
    )


def test_an_expired_mfa_token_is_refused(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    enrolled = enrol_totp(client, org.admin.headers)
    next_step()
    token = login(client, org.admin.email)["mfa_token"]
    clock.advance(301)
    refused = finish(client, token, "totp", code(enrolled.secret))
    assert refused.status_code == 401
    assert "mfa_token" in refused.json()["detail"]
    failed = _events(client, org.headers, org.id, "auth.mfa_failed")
    assert failed[0]["reason"] == "mfa_token_expired"
    assert failed[0]["resource"] == {"type": "user", "id": org.admin.user_id}
    assert token not in str(failed)


def test_an_mfa_token_is_used_once(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    enrolled = enrol_totp(client, org.admin.headers)
    next_step()
    token = login(client, org.admin.email)["mfa_token"]
    assert finish(client, token, "totp", code(enrolled.secret)).status_code == 200
    next_step()
    assert finish(client, token, "totp", code(enrolled.secret)).status_code == 401


def test_an_mfa_token_is_no_bearer_credential(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    enrol_totp(client, org.admin.headers)
    token = login(client, org.admin.email)["mfa_token"]
    for method, path in (("GET", "/v1/me"), ("GET", f"/v1/orgs/{org.id}/users"),
                         ("GET", "/v1/me/mfa")):  # fmt: skip
        assert client.request(method, path, headers=bearer(token)).status_code == 401
    # Nor a made-up or truncated one at /v1/auth/mfa.
    assert finish(client, token[:-2], "totp", "123456").status_code == 401
    assert finish(client, "bsm_nope", "totp", "123456").status_code == 401


def test_recovery_codes_sign_in_once_each(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    enrolled = enrol_totp(client, org.admin.headers)
    recovery = enrolled.recovery_codes[3]
    done = finish(client, login(client, org.admin.email)["mfa_token"], "recovery_code",
                  recovery.lower())  # fmt: skip
    assert done.status_code == 200, done.text
    session = bearer(done.json()["token"])
    assert client.get("/v1/me", headers=session).json()["amr"] == ["pwd", "mfa"]
    again = finish(client, login(client, org.admin.email)["mfa_token"], "recovery_code", recovery)
    assert again.status_code == 401
    assert client.get("/v1/me/mfa", headers=session).json()["recovery_codes_remaining"] == 9
    used = _events(client, org.headers, org.id, "mfa_recovery_code.used")
    assert used
    assert used[0]["metadata"]["remaining"] == 9
    assert recovery not in str(used)


def test_regenerating_recovery_codes_voids_the_old_set(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    enrolled = enrol_totp(client, org.admin.headers)
    fresh = client.post("/v1/me/mfa/recovery-codes", headers=org.admin.headers)
    assert fresh.status_code == 200, fresh.text
    new_codes = fresh.json()["recovery_codes"]
    assert len(new_codes) == 10
    assert not set(new_codes) & set(enrolled.recovery_codes)
    old = finish(client, login(client, org.admin.email)["mfa_token"], "recovery_code",
                 enrolled.recovery_codes[0])  # fmt: skip
    assert old.status_code == 401
    new = finish(client, login(client, org.admin.email)["mfa_token"], "recovery_code", new_codes[0])
    assert new.status_code == 200


def test_removing_the_last_factor_ends_mfa_at_sign_in(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    enrolled = enrol_totp(client, org.admin.headers)
    session = sign_in_with_totp(client, org.admin.email, enrolled.secret)
    assert client.delete(f"/v1/me/mfa/{enrolled.factor_id}", headers=session).status_code == 204
    assert "token" in login(client, org.admin.email)
    assert client.get("/v1/me/mfa", headers=session).json() == {
        "data": [], "next_cursor": None, "recovery_codes_remaining": 0, "mfa_required": False,
    }  # fmt: skip
    assert _events(client, org.headers, org.id, "mfa_factor.deleted")


def test_factors_are_the_persons_own(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org)
    enrolled = enrol_totp(client, org.admin.headers)
    # Another person's factor, in the same organisation or another one, is not found.
    assert (
        client.delete(f"/v1/me/mfa/{enrolled.factor_id}", headers=member.headers).status_code == 404
    )
    other = factory.org()
    assert (
        client.delete(f"/v1/me/mfa/{enrolled.factor_id}", headers=other.admin.headers).status_code
        == 404
    )
    confirm = f"/v1/me/mfa/totp/{enrolled.factor_id}/confirm"
    assert client.post(confirm, json={"code": "123456"}, headers=member.headers).status_code == 404
    assert (
        client.delete(
            "/v1/me/mfa/usr_01ZZZZZZZZZZZZZZZZZZZZZZZZ", headers=member.headers
        ).status_code
        == 404
    )
    # API keys are not people.
    assert client.post("/v1/me/mfa/totp", headers=org.headers).status_code == 403
    assert client.get("/v1/me/mfa", headers=org.headers).status_code == 403


def test_bad_bodies_are_422_naming_the_field(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    token = login(client, org.admin.email)["token"]
    body = {"mfa_token": "bsm_x", "method": "sms", "code": "1"}
    refused = client.post("/v1/auth/mfa", json=body)
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == ["method"]
    assert client.post("/v1/auth/mfa", json={"method": "totp"}).status_code == 422
    # Without a factor, step-up is by password: a code method names `method`, a
    # missing password names `password`.
    step = client.post("/v1/auth/step-up", json={"method": "totp"}, headers=bearer(token))
    assert step.status_code == 422
    assert step.json()["errors"][0]["field"] == "method"
    step = client.post("/v1/auth/step-up", json={"method": "password"}, headers=bearer(token))
    assert step.status_code == 422
    assert step.json()["errors"][0]["field"] == "password"


def test_wrong_password_is_the_same_401_for_a_user_with_mfa(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    enrol_totp(client, org.admin.headers)
    wrong = client.post("/v1/auth/login", json={"email": org.admin.email, "password": "nope" * 4})
    ghost = client.post(
        "/v1/auth/login", json={"email": "ghost@example.com", "password": "nope" * 4}
    )
    assert wrong.status_code == ghost.status_code == 401
    assert "mfa" not in wrong.text
    assert PASSWORD not in wrong.text


def test_tries_in_flight_count_before_the_code_is_checked(
    client: TestClient, factory: Factory
) -> None:
    """Five tries taken from the token's budget (as five requests in flight on other
    workers would, before any of them is counted in the database): the sixth is
    refused even with the right code."""
    org = factory.org()
    enrolled = enrol_totp(client, org.admin.headers)
    next_step()
    token = login(client, org.admin.email)["mfa_token"]
    parsed = parse(token)
    assert parsed is not None
    for _ in range(5):
        factory.state.limiter.take(signin._PER_TOKEN, f"mfa:token:{parsed.row_id}")
    assert finish(client, token, "totp", code(enrolled.secret)).status_code == 401


def test_wrong_codes_across_tokens_are_throttled_per_person(
    client: TestClient, factory: Factory
) -> None:
    """Signing in again with the password buys no fresh guesses: ten wrong codes over
    two tokens, and the third token is refused (429) even with the right code."""
    org = factory.org()
    enrolled = enrol_totp(client, org.admin.headers)
    next_step()
    right = code(enrolled.secret)
    wrong = str((int(right) + 1) % 1_000_000).zfill(6)
    for _ in range(2):
        token = login(client, org.admin.email)["mfa_token"]
        for _ in range(5):
            assert finish(client, token, "totp", wrong).status_code == 401
    refused = finish(client, login(client, org.admin.email)["mfa_token"], "totp", right)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    failed = _events(client, org.headers, org.id, "auth.mfa_failed")
    assert failed[0]["reason"] == "throttled"


def test_no_factor_secret_outlives_its_factor_or_its_user(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    member = factory.member(org)
    mine = enrol_totp(client, org.admin.headers)
    theirs = enrol_totp(client, member.headers)

    def sealed(factor_id: str) -> int:
        with factory.state.sessions() as db:
            stmt = select(Secret.id).where(Secret.scope_type == "mfa", Secret.scope_id == factor_id)
            return len(list(db.execute(stmt).scalars()))

    assert sealed(mine.factor_id) == sealed(theirs.factor_id) == 1
    listed = client.get(f"/v1/orgs/{org.id}/secrets", headers=org.headers).json()["data"]
    assert listed == []  # the secrets API never lists (nor reveals) them
    assert (
        client.delete(f"/v1/me/mfa/{mine.factor_id}", headers=org.admin.headers).status_code == 204
    )
    deleted = client.delete(f"/v1/orgs/{org.id}/users/{member.user_id}", headers=org.headers)
    assert deleted.status_code == 204
    assert sealed(mine.factor_id) == sealed(theirs.factor_id) == 0
