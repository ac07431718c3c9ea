"""A worker writing under a cached active data-key version that another worker's
rotation has replaced, racing the destruction of the older key: nothing is lost.
Either the destruction fails (the row keeps its key and stays readable), or the write
fails with the retryable `DataKeyChanged` and its retry uses the newest key.

"Another worker" is a second `Vault` over the same key provider and database, as a
second process would be; each test uses a fresh organisation."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from bastion.secrets import service as secrets_service
from bastion.secrets import vault as vault_mod
from bastion.secrets.errors import DataKeyChanged
from bastion.secrets.models import OrgKey, Secret, SecretVersion
from bastion.secrets.vault import Vault
from tests.factories import Factory
from tests.races import second_while_first_is_open
from tests.secrets.seeding import seed_secrets

DEADLINE = 20.0


@pytest.fixture
def no_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Destroy older keys as soon as nothing uses them: the races below are what the
    settling delay makes rare, forced here."""
    monkeypatch.setattr(vault_mod, "DESTROY_AFTER_SECONDS", 0.0)


def _key_versions(state: Any, org_id: str) -> list[int]:
    with state.sessions() as db:
        stmt = select(OrgKey.version).where(OrgKey.org_id == org_id).order_by(OrgKey.version)
        return list(db.execute(stmt).scalars())


def _new_secret(db: Any, org_id: str) -> Secret:
    secret = Secret(
        id=f"sec_{uuid.uuid4().hex[:26].upper()}",
        org_id=org_id,
        name=f"raced-{uuid.uuid4().hex[:8]}",
        scope_type="org",
        scope_id="",
        current_version=1,
    )
    db.add(secret)
    return secret


def _read(state: Any, org_id: str, secret_id: str) -> tuple[int, bytes]:
    """(key version, plaintext) of version 1, through a vault with nothing cached."""
    vault = Vault(state.vault.provider)
    with state.sessions() as db:
        row = db.get(SecretVersion, (secret_id, 1))
        assert row is not None
        plain = vault.decrypt(db, org_id, secret_id, 1, row.key_version, row.ciphertext)
        return row.key_version, plain


def _rotate_and_move(state: Any, other: Vault, org_id: str) -> None:
    """Another worker rotates to version 2 and re-encrypts every row (no destroy yet)."""
    with state.write_sessions() as db:
        other.rotate(db, org_id)
        db.commit()
    with state.write_sessions() as db:
        vault_mod.reencrypt_batch(db, other, org_id, 2, limit=10_000)
        db.commit()


def _stale_vault(state: Any, org_id: str) -> Vault:
    """A worker that read the active version (1) just before the rotation, and keeps it
    cached for as long as the test needs."""
    stale = Vault(state.vault.provider, active_ttl=3600)
    with state.sessions() as db:
        assert stale.active_version(db, org_id) == 1
    return stale


def _wait_for_lock_wait(state: Any, backend: str, done: Callable[[], bool]) -> None:
    """PostgreSQL: return once some session of this database waits on a lock (the
    other thread is blocked where the test wants it). SQLite serialises writers on a
    lock file: nothing to observe, and the outcome does not depend on the timing."""
    if backend != "postgresql":
        return
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline and not done():
        with state.sessions() as db:
            waiting = db.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        if waiting:
            return
        time.sleep(0.01)
    pytest.fail("the other transaction never waited on a lock")


def test_a_stale_write_after_the_destroy_fails_retryably_and_its_retry_succeeds(
    factory: Factory,
    app,  # type: ignore[no-untyped-def]
    no_settle: None,
) -> None:
    state = app.state.bastion
    org = factory.org()
    seed_secrets(state, org.id, 2)
    stale = _stale_vault(state, org.id)
    other = Vault(state.vault.provider)
    _rotate_and_move(state, other, org.id)
    with state.write_sessions() as db:
        assert vault_mod.destroy_older_keys(db, other, org.id, 2) == [1]
        db.commit()

    with state.write_sessions() as db:
        secret = _new_secret(db, org.id)
        with pytest.raises(DataKeyChanged) as raised:
            vault_mod.add_version(db, stale, org.id, secret.id, 1, b"first-try")
        db.rollback()
    assert raised.value.status == 503
    assert raised.value.retry_after == 1
    with state.write_sessions() as db:  # the retry: the stale version was forgotten
        secret = _new_secret(db, org.id)
        row = vault_mod.add_version(db, stale, org.id, secret.id, 1, b"second-try")
        assert row.key_version == 2
        db.commit()
    assert _read(state, org.id, secret.id) == (2, b"second-try")
    assert _key_versions(state, org.id) == [2]


def test_a_destroy_racing_a_stale_write_in_flight_fails_and_the_row_stays_readable(
    factory: Factory,
    app,  # type: ignore[no-untyped-def]
    backend: str,
    no_settle: None,
) -> None:
    """The write under the older key is flushed but not committed when the destroy
    starts: on PostgreSQL the DELETE waits for the write's key lock, then fails on the
    foreign key; on SQLite it waits for the writer slot, then fails the same way."""
    state = app.state.bastion
    org = factory.org()
    seed_secrets(state, org.id, 2)
    stale = _stale_vault(state, org.id)
    other = Vault(state.vault.provider)
    _rotate_and_move(state, other, org.id)

    outcome: list[object] = []

    def destroy() -> None:
        with state.write_sessions() as db:
            try:
                outcome.append(vault_mod.destroy_older_keys(db, other, org.id, 2))
                db.commit()
            except Exception as exc:
                db.rollback()
                outcome.append(exc)

    with state.write_sessions() as db:
        secret = _new_secret(db, org.id)
        row = vault_mod.add_version(db, stale, org.id, secret.id, 1, b"in-flight")
        assert row.key_version == 1
        destroyer = threading.Thread(target=destroy)
        destroyer.start()
        _wait_for_lock_wait(state, backend, lambda: bool(outcome))
        db.commit()
    destroyer.join(DEADLINE)
    assert not destroyer.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], vault_mod.KeysStillInUse), outcome
    assert _key_versions(state, org.id) == [1, 2]
    assert _read(state, org.id, secret.id) == (1, b"in-flight")

    # The next pass moves the late row and then destroys the older key.
    done = secrets_service.reencrypt_org(state.write_sessions, other, org.id, wait=False)
    assert _key_versions(state, org.id) == [2]
    assert done.destroyed in ((1,), ())  # () if the app's own background pass won
    assert _read(state, org.id, secret.id) == (2, b"in-flight")


def test_a_stale_write_racing_a_destroy_in_flight_fails_retryably(
    factory: Factory,
    app,  # type: ignore[no-untyped-def]
    backend: str,
    no_settle: None,
) -> None:
    """The destroy has deleted the older key but not committed when the write comes:
    on PostgreSQL the write's foreign-key check waits for the key row, then finds it
    gone; on SQLite the write waits for the writer slot. Either way `DataKeyChanged`,
    nothing stored, and the retry writes under the newest key."""
    state = app.state.bastion
    org = factory.org()
    seed_secrets(state, org.id, 2)
    stale = _stale_vault(state, org.id)
    other = Vault(state.vault.provider)
    _rotate_and_move(state, other, org.id)

    outcome: list[object] = []
    secret_ids: list[str] = []

    def write() -> None:
        with state.write_sessions() as db:
            secret = _new_secret(db, org.id)
            secret_ids.append(secret.id)
            try:
                vault_mod.add_version(db, stale, org.id, secret.id, 1, b"raced")
                db.commit()
                outcome.append("stored")
            except Exception as exc:
                db.rollback()
                outcome.append(exc)

    with state.write_sessions() as db:
        assert vault_mod.destroy_older_keys(db, other, org.id, 2) == [1]
        writer = threading.Thread(target=write)
        writer.start()
        _wait_for_lock_wait(state, backend, lambda: bool(outcome))
        db.commit()
    writer.join(DEADLINE)
    assert not writer.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], DataKeyChanged), outcome
    with state.sessions() as db:
        assert db.get(Secret, secret_ids[0]) is None  # nothing of the failed write stayed
    assert _key_versions(state, org.id) == [2]

    with state.write_sessions() as db:
        secret = _new_secret(db, org.id)
        assert vault_mod.add_version(db, stale, org.id, secret.id, 1, b"retried").key_version == 2
        db.commit()
    assert _read(state, org.id, secret.id) == (2, b"retried")


def test_over_http_the_stale_write_is_a_503_problem_and_the_retry_succeeds(
    client: TestClient,
    factory: Factory,
    app,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    no_settle: None,
) -> None:
    state = app.state.bastion
    org = factory.org()
    url = f"/v1/orgs/{org.id}/secrets/token"
    monkeypatch.setattr(state.vault, "active_ttl", 3600.0)  # the app's worker is the stale one
    assert client.put(url, json={"value": "v1"}, headers=org.headers).status_code == 200
    assert client.put(url, json={"value": "v2"}, headers=org.headers).status_code == 200
    other = Vault(state.vault.provider)
    _rotate_and_move(state, other, org.id)
    with state.write_sessions() as db:
        assert vault_mod.destroy_older_keys(db, other, org.id, 2) == [1]
        db.commit()

    refused = client.put(url, json={"value": "v3-lost?"}, headers=org.headers)
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "data_key_changed"
    assert "v3-lost?" not in refused.text
    retried = client.put(url, json={"value": "v3"}, headers=org.headers)
    assert retried.status_code == 200, retried.text
    assert retried.json()["version"] == 3
    reveal = client.post(f"{url}/reveal", json={}, headers=org.headers).json()
    assert (reveal["value"], reveal["version"]) == ("v3", 3)
    older = client.post(f"{url}/reveal", json={"version": 1}, headers=org.headers).json()
    assert older["value"] == "v1"


def test_two_first_writes_in_a_new_organisation_both_succeed(
    app: Any, factory: Factory, backend: str
) -> None:
    """Both find no data key and create version 1; the second's insert waits for the
    first to commit, conflicts, and then uses the first's key instead of failing (409
    for distinct secrets on PostgreSQL before)."""
    state = app.state.bastion
    org = factory.org()
    first_vault, second_vault = Vault(state.vault.provider), Vault(state.vault.provider)

    def write(vault: Vault) -> Callable[[Any], object]:
        def run(db: Any) -> object:
            secret = _new_secret(db, org.id)
            db.flush()
            return vault_mod.add_version(db, vault, org.id, secret.id, 1, b"value")

        return run

    failure = second_while_first_is_open(
        state.write_sessions, write(first_vault), write(second_vault)
    )
    assert failure is None, repr(failure)
    assert _key_versions(state, org.id) == [1]
    with state.sessions() as db:
        ids = list(db.execute(select(Secret.id).where(Secret.org_id == org.id)).scalars())
    assert sorted(_read(state, org.id, i)[1] for i in ids) == [b"value", b"value"]
