"""Rotating the pepper behind every credential hash (`bastion keys rotate-pepper`,
`pepper-status`, `retire-pepper`), with a server running throughout: credentials hashed
under the old version keep working and move to the new one on their next use."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bastion.agents.models import Run
from bastion.core.keyring import PEPPER_FILE, read_keyring
from bastion.core.revisions import INSTANCE, REHASH_OPTION, AuthRevision
from bastion.identity.models import ApiKey, SetupToken, UserSession
from tests.factories import PASSWORD, bearer, unique_email
from tests.identity.mfa_support import enrol_totp, finish, login
from tests.instance import Instance, fresh_instance


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Instance]:
    with fresh_instance(tmp_path, monkeypatch) as made:
        yield made


def _stored(inst: Instance, model: type, row_id: str) -> tuple[str, int]:
    column = model.secret_hash if model is ApiKey else model.token_hash  # type: ignore[attr-defined]
    with inst.state.sessions() as db:
        row = db.execute(
            select(column, model.pepper_version).where(model.id == row_id)  # type: ignore[attr-defined]
        ).one()
    return str(row[0]), int(row[1])


def _revision(inst: Instance, org_id: str) -> int:
    with inst.state.sessions() as db:
        found = db.get(AuthRevision, org_id)
        return found.revision if found is not None else 0


def _row_id(token: str) -> str:
    return token.split("_", 1)[1][:30]


def test_old_credentials_keep_working_and_are_rehashed_on_use(instance: Instance) -> None:
    client, factory = instance.client, instance.factory
    org = factory.org()
    base = f"/v1/orgs/{org.id}"
    agent = client.post(
        f"{base}/agents", json={"name": "a", "visibility": "org", "tools": []}, headers=org.headers
    )
    assert agent.status_code == 201, agent.text
    agent_id = agent.json()["id"]
    run = client.post(f"{base}/agents/{agent_id}/runs", json={}, headers=org.admin.headers)
    assert run.status_code == 201, run.text
    run_id, run_token = run.json()["run_id"], run.json()["token"]
    invited = client.post(
        f"{base}/users",
        json={"email": unique_email("invited"), "name": "I", "role": "viewer"},
        headers=org.headers,
    ).json()
    key_id, session_id = _row_id(org.admin_key), _row_id(org.admin.token)
    # Used once before the rotation: the server's cache holds the key and the session.
    for headers in (org.headers, org.admin.headers):
        assert client.get(f"{base}/api-keys", headers=headers).status_code == 200
    before = {
        "key": _stored(instance, ApiKey, key_id),
        "session": _stored(instance, UserSession, session_id),
        "run": _stored(instance, Run, run_id),
    }
    assert {version for _, version in before.values()} == {1}

    rotated = instance.cli("keys", "rotate-pepper", "--json")
    assert rotated["active_version"] == 2
    keys = read_keyring(instance.data_dir / PEPPER_FILE)
    assert (keys.active, sorted(keys.versions)) == (2, [1, 2])
    assert stat.S_IMODE((instance.data_dir / PEPPER_FILE).stat().st_mode) == 0o600

    revision = _revision(instance, org.id)
    for headers in (org.headers, org.admin.headers):
        assert client.get(f"{base}/api-keys", headers=headers).status_code == 200
    assert client.get(f"/v1/runs/{run_id}", headers=bearer(run_token)).status_code == 200
    after = {
        "key": _stored(instance, ApiKey, key_id),
        "session": _stored(instance, UserSession, session_id),
        "run": _stored(instance, Run, run_id),
    }
    for name, (digest, version) in after.items():
        assert version == 2, name
        assert digest != before[name][0], name
    # A rehash changes nothing a credential may do: no revision bump, so every worker's
    # cached answers stay, and the rehashed credentials keep hitting the cache.
    assert _revision(instance, org.id) == revision
    hits = instance.state.auth_cache.hits
    for headers in (org.headers, org.admin.headers):
        assert client.get(f"{base}/api-keys", headers=headers).status_code == 200
    assert instance.state.auth_cache.hits == hits + 2
    assert _stored(instance, ApiKey, key_id) == after["key"]

    # Still a credential under the old pepper: a setup token, redeemable as before.
    with instance.state.sessions() as db:
        invite = db.execute(
            select(SetupToken.pepper_version).where(SetupToken.user_id == invited["id"])
        ).scalar_one()
    assert invite == 1
    done = client.post(
        "/v1/auth/setup", json={"token": invited["setup_token"], "password": PASSWORD}
    )
    assert done.status_code == 200, done.text

    # What is issued from now on is hashed under the new version, by this server too.
    new_key = factory.api_key(org)
    assert _stored(instance, ApiKey, new_key["id"])[1] == 2
    assert client.get(f"{base}/api-keys", headers=bearer(new_key["key"])).status_code == 200
    assert _stored(instance, UserSession, _row_id(factory.org().admin.token))[1] == 2


def test_a_version_is_retired_only_once_nothing_uses_it(instance: Instance) -> None:
    client, factory = instance.client, instance.factory
    org = factory.org()
    base = f"/v1/orgs/{org.id}"
    instance.cli("keys", "rotate-pepper", "--json")

    status = instance.cli("keys", "pepper-status", "--json")
    assert status["active_version"] == 2
    v1 = status["versions"]["1"]
    assert (v1["api_keys"], v1["sessions"], v1["in_keyring"]) == (1, 1, True)
    assert status["versions"]["2"]["total"] == 0

    refused = instance.cli("keys", "retire-pepper", "1", code=1)
    assert "2 credentials are still hashed" in refused.output
    assert sorted(read_keyring(instance.data_dir / PEPPER_FILE).versions) == [1, 2]
    active = instance.cli("keys", "retire-pepper", "2", code=1)
    assert "active" in active.output

    for headers in (org.headers, org.admin.headers):  # each rehashed on use
        assert client.get(f"{base}/api-keys", headers=headers).status_code == 200
    status = instance.cli("keys", "pepper-status", "--json")
    assert status["versions"]["1"]["total"] == 0
    assert status["versions"]["2"]["total"] == 2

    retired = instance.cli("keys", "retire-pepper", "1", "--json")
    assert retired == {"retired": 1, "versions": [2], "active_version": 2}
    keys = read_keyring(instance.data_dir / PEPPER_FILE)
    assert (keys.active, sorted(keys.versions)) == (2, [2])
    assert stat.S_IMODE((instance.data_dir / PEPPER_FILE).stat().st_mode) == 0o600
    for headers in (org.headers, org.admin.headers):
        assert client.get(f"{base}/api-keys", headers=headers).status_code == 200


def test_forced_retirement_ends_what_was_not_rehashed(instance: Instance) -> None:
    client, factory = instance.client, instance.factory
    org = factory.org()
    base = f"/v1/orgs/{org.id}"
    assert client.get(f"{base}/api-keys", headers=org.headers).status_code == 200  # cached
    instance.cli("keys", "rotate-pepper")
    assert client.get(f"{base}/api-keys", headers=org.admin.headers).status_code == 200
    instance.cli("keys", "retire-pepper", "1", code=1)

    instance.cli("keys", "retire-pepper", "1", "--force")
    # The running server drops the retired version at once, cached answers included.
    assert client.get(f"{base}/api-keys", headers=org.headers).status_code == 401
    assert client.get(f"{base}/api-keys", headers=org.admin.headers).status_code == 200
    assert instance.cli("keys", "pepper-status", "--json")["versions"]["1"]["in_keyring"] is False


def test_a_pepper_from_the_environment_is_not_rotated_here(
    instance: Instance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_PEPPER", "a-pepper-from-the-orchestrator-0123456789abcdef")
    refused = instance.cli("keys", "rotate-pepper", code=2)
    assert "BASTION_PEPPER" in refused.output


def test_only_a_rehash_is_spared_the_revision_bump(instance: Instance) -> None:
    """A stored digest changed for any other reason (a new secret) must still drop every
    cached answer; only the rehash's own statement is spared."""
    org = instance.factory.org()
    key_id = _row_id(org.admin_key)
    digest, _ = _stored(instance, ApiKey, key_id)
    rehash = update(ApiKey).where(ApiKey.id == key_id).execution_options(**{REHASH_OPTION: True})
    changes = [
        (rehash.values(secret_hash=digest, pepper_version=1), False),
        (update(ApiKey).where(ApiKey.id == key_id).values(secret_hash="0" * 64), True),
        (rehash.values(secret_hash=digest, role="viewer"), True),
    ]
    for statement, bumps in changes:
        before = _revision(instance, INSTANCE)
        with instance.state.write_sessions() as db:
            db.execute(statement)
            db.commit()
        assert (_revision(instance, INSTANCE) > before) is bumps, statement


def test_recovery_codes_are_counted_and_keep_working_after_rotation(instance: Instance) -> None:
    client, factory = instance.client, instance.factory
    org = factory.org()
    enrolled = enrol_totp(client, org.admin.headers)
    instance.cli("keys", "rotate-pepper")
    status = instance.cli("keys", "pepper-status", "--json")
    assert status["versions"]["1"]["recovery_codes"] == 10
    owed = login(client, org.admin.email)  # its mfa token under the new version
    assert (
        finish(client, owed["mfa_token"], "recovery_code", enrolled.recovery_codes[0]).status_code
        == 200
    )
    status = instance.cli("keys", "pepper-status", "--json")
    assert status["versions"]["1"]["recovery_codes"] == 9
    assert status["versions"]["2"]["mfa_tokens"] == 0  # redeemed: no longer counted
