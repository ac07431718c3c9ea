"""Customer-managed keys through the API, against a real OpenBao dev server (Transit) and
a SoftHSM2 token: configuring needs step-up and never shows the credentials; the
customer revoking access makes reveals, secret writes and agents' reveals answer 503
`key_unavailable` within the cache lifetime (at once on this worker after "lock now",
within a recheck on another), audited and alerted, nothing else of the organisation
touched; access restored brings everything back without rewriting anything; a
destroyed key leaves the secrets unrecoverable even with a database dump and the
instance root key."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bastion.alerts import evaluate as alerts_evaluate
from bastion.api.app import create_app
from bastion.core.clock import clock
from bastion.core.db import begin_write
from bastion.core.keyring import ROOT_KEY_FILE, read_keyring
from bastion.secrets import cmk
from bastion.secrets import vault as vault_mod
from bastion.secrets.keys import KeyDestroyedError, KeyUnavailableError
from bastion.secrets.models import OrgEncryptionKey, OrgKey, SecretVersion
from tests.conftest import make_settings
from tests.factories import Factory, Org, bearer, step_up
from tests.secrets.keypeers import OpenBao, SoftHsm

STALE = 601  # past the default step_up_max_age
VALUE = "Cmk-s3ntinel-value"


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Move the vault's monotonic clock forward: `later[0] += seconds`."""
    offset = [0.0]

    def shifted() -> float:
        return time.monotonic() + offset[0]

    monkeypatch.setattr(vault_mod, "_monotonic", shifted)
    monkeypatch.setattr(cmk, "_monotonic", shifted)
    return offset


def _url(org: Org, path: str = "") -> str:
    return f"/v1/orgs/{org.id}/encryption-key{path}"


def _configure(
    client: TestClient, org: Org, config: dict[str, str], provider: str = "vault_transit"
) -> Any:
    return client.put(
        _url(org), json={"provider": provider, "config": config}, headers=org.admin.headers
    )


def _put(client: TestClient, org: Org, name: str, value: str = VALUE) -> Any:
    return client.put(
        f"/v1/orgs/{org.id}/secrets/{name}", json={"value": value}, headers=org.headers
    )


def _reveal(client: TestClient, org: Org, name: str, headers: dict[str, str] | None = None) -> Any:
    return client.post(
        f"/v1/orgs/{org.id}/secrets/{name}/reveal", json={}, headers=headers or org.headers
    )


def _events(client: TestClient, org: Org, type_: str) -> list[dict[str, Any]]:
    found = client.get(
        f"/v1/orgs/{org.id}/audit-events", params={"type": type_}, headers=org.headers
    )
    assert found.status_code == 200, found.text
    return list(found.json()["data"])


def _key_rows(factory: Factory, org_id: str) -> list[tuple[int, int, bytes]]:
    with factory.state.sessions() as db:
        rows = db.execute(
            select(OrgKey.version, OrgKey.root_version, OrgKey.wrapped)
            .where(OrgKey.org_id == org_id)
            .order_by(OrgKey.version)
        ).all()
    return [(int(v), int(r), bytes(w)) for v, r, w in rows]


def _check_all(factory: Factory) -> None:
    state = factory.state
    cmk.check_all(state.sessions, state.write_sessions, state.vault.customer)


def _unavailable(answer: Any, status: str = "key_unavailable") -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] == "key_unavailable"
    assert ("destroyed" in answer.json()["detail"]) == (status == "destroyed")


def test_configure_needs_step_up_rewraps_and_never_shows_credentials(
    client: TestClient,
    factory: Factory,
    openbao: OpenBao,
) -> None:
    org = factory.org()
    assert _put(client, org, "db").status_code == 200
    before = _key_rows(factory, org.id)
    assert [r[1] for r in before] == [1] or all(r[1] > 0 for r in before)
    shown = client.get(_url(org), headers=org.headers).json()
    assert (shown["provider"], shown["status"]) == ("local", "active")

    key = openbao.new_key()
    token = openbao.token_for(key)
    member = factory.member(org, "member")
    refused = client.put(
        _url(org),
        json={"provider": "vault_transit", "config": openbao.config(key, token)},
        headers=member.headers,
    )
    assert refused.status_code == 403
    clock.advance(STALE)
    stale = _configure(client, org, openbao.config(key, token))
    assert stale.status_code == 401
    assert stale.json()["code"] == "step_up_required"
    step_up(client, org.admin.headers)

    missing = _configure(client, org, {"address": openbao.address, "key_name": key})
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "config.token"
    wrong = _configure(client, org, openbao.config(key, "s.not-a-token"))
    assert wrong.status_code == 422
    assert wrong.json()["errors"][0]["field"] == "config"
    assert "not-a-token" not in wrong.text
    unknown = _configure(client, org, {"x": "y"}, provider="aws_kms")
    assert unknown.status_code == 422
    assert _key_rows(factory, org.id) == before  # nothing half-written

    done = _configure(client, org, openbao.config(key, token))
    assert done.status_code == 200, done.text
    assert done.json()["provider"] == "vault_transit"
    assert done.json()["status"] == "active"
    assert token not in done.text
    got = client.get(_url(org), headers=org.headers)
    assert token not in got.text
    assert got.json()["last_checked_at"] is not None
    after = _key_rows(factory, org.id)
    assert [r[0] for r in after] == [r[0] for r in before]
    assert all(r[1] == cmk.CUSTOMER_WRAPPED and r[2].startswith(b"vault:v") for r in after)
    with factory.state.sessions() as db:
        row = db.get(OrgEncryptionKey, org.id)
        assert row is not None
        assert token.encode() not in row.config_sealed
    configured = _events(client, org, "org.encryption_key.configured")
    assert configured[0]["metadata"] == {
        "provider": "vault_transit",
        "previous_provider": "local",
        "rewrapped": len(before),
    }
    assert token not in str(configured)
    assert _reveal(client, org, "db").json()["value"] == VALUE  # re-wrapped, still readable
    assert _put(client, org, "db", "second").status_code == 200
    assert _reveal(client, org, "db").json()["value"] == "second"
    # A data key wrapped by the root key while the key was configured (a racing
    # rotation) is moved under the customer's key by the background check.
    vault = factory.state.vault
    with factory.state.sessions() as db:
        begin_write(db)
        stray = db.get(OrgKey, (org.id, after[0][0]))
        assert stray is not None
        plain = vault.data_key(db, org.id, stray.version)
        aad = vault_mod._key_aad(org.id, stray.version)
        stray.root_version, stray.wrapped = vault.provider.wrap(plain, aad)
        db.commit()
    _check_all(factory)
    assert all(r[1] == cmk.CUSTOMER_WRAPPED for r in _key_rows(factory, org.id))
    client.post(_url(org, "/lock"), headers=org.headers)
    assert _reveal(client, org, "db").json()["value"] == "second"


def test_revoked_access_then_lock_then_restored(
    client: TestClient,
    factory: Factory,
    openbao: OpenBao,
) -> None:
    org, bystander = factory.org(), factory.org()
    _put(client, bystander, "db")
    key = openbao.new_key()
    token = openbao.token_for(key)
    assert _configure(client, org, openbao.config(key, token)).status_code == 200
    assert _put(client, org, "db").status_code == 200
    rule = client.post(
        f"/v1/orgs/{org.id}/alert-rules",
        json={"name": "cmk", "kind": "encryption_key_unavailable"},
        headers=org.headers,
    )
    assert rule.status_code == 201, rule.text
    # An agent given the secret, with a run token.
    agent = client.post(
        f"/v1/orgs/{org.id}/agents",
        json={
            "name": "support",
            "visibility": "org",
            "tools": [{"name": "lookup", "input_schema": {"type": "object"}, "risk": "low"}],
        },
        headers=org.headers,
    ).json()["id"]
    client.patch(f"/v1/orgs/{org.id}/agents/{agent}", json={"secrets": ["db"]}, headers=org.headers)
    started = client.post(
        f"/v1/orgs/{org.id}/agents/{agent}/runs", json={}, headers=org.admin.headers
    ).json()
    run_headers = bearer(started["token"])
    assert _reveal(client, org, "db", run_headers).json()["value"] == VALUE
    keys_before = _key_rows(factory, org.id)

    # The customer takes the policy away: the token no longer may use the key.
    policy = openbao.call("GET", f"sys/policies/acl/p-{key}")["data"]["policy"]
    openbao.call("DELETE", f"sys/policies/acl/p-{key}")
    assert _reveal(client, org, "db").status_code == 200  # cached (≤ 60 s)
    locked = client.post(_url(org, "/lock"), headers=org.headers)
    assert locked.status_code == 200, locked.text
    _unavailable(_reveal(client, org, "db"))
    _unavailable(_put(client, org, "db", "new"))
    _unavailable(_put(client, org, "another", "new"))
    _unavailable(_reveal(client, org, "db", run_headers))  # the agent fails closed
    # Nothing else of the organisation is touched; other organisations not at all.
    assert client.get(f"/v1/orgs/{org.id}", headers=org.headers).status_code == 200
    assert client.get(f"/v1/orgs/{org.id}/secrets", headers=org.headers).status_code == 200
    call = client.post(
        f"/v1/runs/{started['run_id']}/tool-calls",
        json={"tool": "lookup", "arguments": {}},
        headers=run_headers,
    )
    assert call.status_code == 201, call.text
    assert _reveal(client, bystander, "db").json()["value"] == VALUE
    shown = client.get(_url(org), headers=org.headers).json()
    assert (shown["status"], shown["reason"]) == ("key_unavailable", "access_denied")
    unavailable = _events(client, org, "org.encryption_key.unavailable")
    assert unavailable[0]["metadata"]["reason"] == "access_denied"
    assert _events(client, org, "org.encryption_key.locked")
    with factory.state.write_sessions() as db:
        begin_write(db)
        alerts_evaluate.evaluate_org(db, org.id)
        db.commit()
    alerts = client.get(f"/v1/orgs/{org.id}/alerts", headers=org.headers).json()["data"]
    mine = [a for a in alerts if a["kind"] == "encryption_key_unavailable"]
    assert len(mine) == 1
    assert mine[0]["status"] == "open"

    # Access restored: everything back, nothing re-written.
    openbao.call("PUT", f"sys/policies/acl/p-{key}", {"policy": policy})
    client.post(_url(org, "/lock"), headers=org.headers)
    assert _reveal(client, org, "db").json()["value"] == VALUE
    assert _reveal(client, org, "db", run_headers).json()["value"] == VALUE
    assert _put(client, org, "db", "after").status_code == 200
    _check_all(factory)
    assert client.get(_url(org), headers=org.headers).json()["status"] == "active"
    assert _events(client, org, "org.encryption_key.restored")
    assert _key_rows(factory, org.id) == keys_before
    with factory.state.write_sessions() as db:
        begin_write(db)
        alerts_evaluate.evaluate_org(db, org.id)
        db.commit()
    alerts = client.get(f"/v1/orgs/{org.id}/alerts", headers=org.headers).json()["data"]
    assert [a["status"] for a in alerts if a["kind"] == "encryption_key_unavailable"] == [
        "resolved"
    ]


def test_revocation_takes_effect_within_the_cache_lifetime_without_lock(
    client: TestClient,
    factory: Factory,
    openbao: OpenBao,
    later: list[float],
) -> None:
    org = factory.org()
    key = openbao.new_key()
    token = openbao.token_for(key)
    assert _configure(client, org, openbao.config(key, token)).status_code == 200
    _put(client, org, "db")
    assert _reveal(client, org, "db").status_code == 200
    openbao.revoke(token)
    later[0] += 30  # past the 1 s recheck: the generation is unchanged, the key held
    assert _reveal(client, org, "db").json()["value"] == VALUE
    later[0] += 31  # past 60 s since the provider last unwrapped it
    _unavailable(_reveal(client, org, "db"))
    _unavailable(_put(client, org, "db", "x"))


def test_lock_reaches_another_worker_within_a_recheck(
    client: TestClient,
    factory: Factory,
    openbao: OpenBao,
    later: list[float],
) -> None:
    org = factory.org()
    key = openbao.new_key()
    token = openbao.token_for(key)
    assert _configure(client, org, openbao.config(key, token)).status_code == 200
    _put(client, org, "db")
    other_app = create_app(factory.state.settings)  # another worker: its own caches
    with TestClient(other_app, raise_server_exceptions=False) as other:
        assert _reveal(other, org, "db").json()["value"] == VALUE
        openbao.revoke(token)
        assert client.post(_url(org, "/lock"), headers=org.headers).status_code == 200
        _unavailable(_reveal(client, org, "db"))
        later[0] += cmk.CMK_RECHECK_SECONDS + 0.1  # ≤ 2 s after the lock
        _unavailable(_reveal(other, org, "db"))
        _unavailable(_put(other, org, "db", "x"))


def test_a_destroyed_key_leaves_the_secrets_unrecoverable_with_dump_and_root_key(
    client: TestClient,
    factory: Factory,
    openbao: OpenBao,
) -> None:
    org = factory.org()
    key = openbao.new_key()
    token = openbao.token_for(key)
    assert _configure(client, org, openbao.config(key, token)).status_code == 200
    _put(client, org, "db")
    client.post(f"/v1/orgs/{org.id}/secrets-key/rotate", headers=org.headers)  # 2 data keys
    _put(client, org, "db", "v2")
    openbao.delete_key(key)
    client.post(_url(org, "/lock"), headers=org.headers)
    _unavailable(_reveal(client, org, "db"), "destroyed")
    _check_all(factory)
    shown = client.get(_url(org), headers=org.headers).json()
    assert (shown["status"], shown["reason"]) == ("destroyed", "key_not_found")

    # Everything the database holds, and the instance root key, in an attacker's hands.
    with factory.state.sessions() as db:
        dump_keys = db.execute(select(OrgKey).where(OrgKey.org_id == org.id)).scalars().all()
        config_row = db.get(OrgEncryptionKey, org.id)
        values = (
            db.execute(select(SecretVersion).where(SecretVersion.org_id == org.id)).scalars().all()
        )
        assert config_row is not None
        assert len(dump_keys) >= 1
        assert len(values) >= 2
    root = vault_mod.LocalKeyProvider(factory.state.settings.data_dir / ROOT_KEY_FILE)
    keyring = read_keyring(factory.state.settings.data_dir / ROOT_KEY_FILE)
    config = cmk.open_config(root, org.id, config_row.config_root_version, config_row.config_sealed)
    assert config["token"] == token  # the root key opens the sealed credentials …
    provider = cmk.build_provider(config_row.provider, config, factory.state.vault.customer.policy)
    for row in dump_keys:
        with pytest.raises(KeyDestroyedError):  # … but the key they reach is gone
            provider.unwrap(row.wrapped, cmk.data_key_context(org.id, row.version))
        for version in keyring.versions:  # no root-key version unwraps a data key
            with pytest.raises(Exception):  # noqa: B017
                root.unwrap(version, row.wrapped, vault_mod._key_aad(org.id, row.version))
    # Not even the customer's own root token brings it back.
    admin = cmk.build_provider(
        "vault_transit",
        {"address": openbao.address, "token": "bastion-test-root", "key_name": key},
        factory.state.vault.customer.policy,
    )
    with pytest.raises(KeyUnavailableError):
        admin.unwrap(dump_keys[0].wrapped, cmk.data_key_context(org.id, dump_keys[0].version))
    assert all(VALUE.encode() not in bytes(v.ciphertext) for v in values)


def test_switch_to_pkcs11_and_back_to_the_instance_key(
    factory: Factory,
    openbao: OpenBao,
    softhsm: SoftHsm,
) -> None:
    settings = make_settings(
        factory.state.settings.data_dir,
        factory.state.settings.database_url,
        pkcs11_libraries=[softhsm.library],
    )
    plain = factory.client  # a server whose operator allows no PKCS#11 library
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        local = Factory(client.app.state.bastion, client)  # type: ignore[attr-defined]
        org = local.org()
        _put(client, org, "db")
        key = openbao.new_key()
        assert (
            _configure(client, org, openbao.config(key, openbao.token_for(key))).status_code == 200
        )
        label = softhsm.new_key()
        switched = _configure(client, org, softhsm.config(label), provider="pkcs11")
        assert switched.status_code == 200, switched.text
        assert softhsm.pin not in switched.text
        assert (
            _events(client, org, "org.encryption_key.configured")[0]["metadata"][
                "previous_provider"
            ]
            == "vault_transit"
        )
        rows = _key_rows(local, org.id)
        assert all(r[1] == cmk.CUSTOMER_WRAPPED and not r[2].startswith(b"vault:") for r in rows)
        assert _reveal(client, org, "db").json()["value"] == VALUE
        back = client.delete(_url(org), headers=org.admin.headers)
        assert back.status_code == 200, back.text
        assert back.json()["provider"] == "local"
        assert all(r[1] > 0 for r in _key_rows(local, org.id))
        assert _reveal(client, org, "db").json()["value"] == VALUE
        # Back under the root key: the HSM key may go, the secrets stay.
        softhsm.destroy_key(label)
        client.post(f"/v1/orgs/{org.id}/secrets-key/rotate", headers=org.headers)
        assert _reveal(client, org, "db").json()["value"] == VALUE

        # And a destroyed HSM key: 503 `destroyed`, never a 500.
        other = local.org()
        _put(client, other, "db")
        label2 = softhsm.new_key()
        assert _configure(client, other, softhsm.config(label2), "pkcs11").status_code == 200
        refused = _reveal(plain, other, "db")  # a library this server may not load: 503
        _unavailable(refused)
        assert "configuration_not_allowed" in refused.json()["detail"]
        assert _reveal(client, other, "db").json()["value"] == VALUE
        softhsm.destroy_key(label2)
        client.post(_url(other, "/lock"), headers=other.headers)
        _unavailable(_reveal(client, other, "db"), "destroyed")


def test_a_wrapped_key_moved_to_another_org_never_unwraps(
    client: TestClient,
    factory: Factory,
    openbao: OpenBao,
) -> None:
    key = openbao.new_key()
    token = openbao.token_for(key)
    a, b = factory.org(), factory.org()
    for org in (a, b):
        assert _configure(client, org, openbao.config(key, token)).status_code == 200
        _put(client, org, "db")
    a_blob = _key_rows(factory, a.id)[0][2]
    with factory.state.sessions() as db:
        begin_write(db)
        row = db.get(OrgKey, (b.id, 1))
        assert row is not None
        row.wrapped = a_blob
        db.commit()
    client.post(_url(b, "/lock"), headers=b.headers)
    moved = _reveal(client, b, "db")
    assert moved.status_code == 500  # an integrity failure, as any altered value
    assert moved.json()["code"] == "secret_unreadable"
    assert _reveal(client, a, "db").json()["value"] == VALUE
