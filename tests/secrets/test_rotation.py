"""Org data-key rotation with background re-encryption, tampered ciphertexts as a typed
error, and crypto-shredding when an organisation is deleted."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from bastion.api.app import create_app
from bastion.audit.models import AuditEvent
from bastion.core.clock import clock
from bastion.core.crypto import Aead, derive_key
from bastion.core.keyring import (
    AUDIT_SIGNING_KEY_FILE,
    PEPPER_FILE,
    ROOT_KEY_FILE,
    create_keyring,
    read_keyring,
)
from bastion.migrations.runner import upgrade
from bastion.secrets import service as secrets_service
from bastion.secrets import vault as vault_mod
from bastion.secrets.errors import KeyUnavailable, SecretUnreadable
from bastion.secrets.models import OrgKey, Secret, SecretVersion
from bastion.tenancy.models import Organization
from tests.conftest import make_settings
from tests.factories import PASSWORD, Factory, Org
from tests.secrets.seeding import seed_secrets

DEADLINE = 90.0


def _put(client: TestClient, org: Org, name: str, value: str) -> None:
    url = f"/v1/orgs/{org.id}/secrets/{name}"
    response = client.put(url, json={"value": value}, headers=org.headers)
    assert response.status_code == 200, response.text


def _reveal(client: TestClient, org: Org, name: str, **body: Any) -> Any:
    return client.post(f"/v1/orgs/{org.id}/secrets/{name}/reveal", json=body, headers=org.headers)


def _key_versions(state: Any, org_id: str) -> list[int]:
    with state.sessions() as db:
        stmt = select(OrgKey.version).where(OrgKey.org_id == org_id).order_by(OrgKey.version)
        return list(db.execute(stmt).scalars())


def _row_key_versions(state: Any, org_id: str) -> set[int]:
    with state.sessions() as db:
        stmt = select(SecretVersion.key_version).where(SecretVersion.org_id == org_id)
        return set(db.execute(stmt).scalars())


def _events(state: Any, org_id: str, type_: str) -> list[AuditEvent]:
    with state.sessions() as db:
        stmt = select(AuditEvent).where(AuditEvent.chain == org_id, AuditEvent.type == type_)
        return list(db.execute(stmt).scalars())


# --- tampering ------------------------------------------------------------------------


def test_a_tampered_ciphertext_is_a_typed_problem_and_the_failed_reveal_is_audited(
    client: TestClient,
    factory: Factory,
    app,  # type: ignore[no-untyped-def]
) -> None:
    org = factory.org()
    _put(client, org, "tampered", "original-value")
    state = app.state.bastion
    with state.write_sessions() as db:
        row = db.execute(select(SecretVersion).where(SecretVersion.org_id == org.id)).scalar_one()
        secret_id = row.secret_id
        blob = bytearray(row.ciphertext)
        blob[-1] ^= 0x01  # one bit of the tag
        db.execute(
            update(SecretVersion)
            .where(SecretVersion.secret_id == secret_id)
            .values(ciphertext=bytes(blob))
        )
        db.commit()
    response = _reveal(client, org, "tampered")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    doc = response.json()
    assert doc["code"] == "secret_unreadable"
    assert doc["type"].endswith("/secret_unreadable")
    for internal in ("Traceback", "InvalidTag", "cryptography", "original-value", "key_version"):
        assert internal not in response.text
    failed = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "secret.revealed", "outcome": "failure"},
        headers=org.headers,
    ).json()["data"]
    assert len(failed) == 1
    assert failed[0]["reason"] == "secret_unreadable"
    assert failed[0]["metadata"]["cause"] == "authentication_failed"
    assert failed[0]["resource"]["id"] == secret_id
    assert "original-value" not in str(failed[0])
    # A truncated blob (shorter than a nonce and a tag) is the same typed error.
    with state.write_sessions() as db:
        db.execute(
            update(SecretVersion)
            .where(SecretVersion.secret_id == secret_id)
            .values(ciphertext=b"\x00")
        )
        db.commit()
    assert _reveal(client, org, "tampered").json()["code"] == "secret_unreadable"


# --- data-key rotation ----------------------------------------------------------------


def test_rotation_reencrypts_in_the_background_while_reveals_keep_working(
    client: TestClient,
    factory: Factory,
    app,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many secrets, rotate over the API, reveal continuously while the servers'
    background task re-encrypts in small batches; at the end every secret reveals, none
    uses the old key version and the old wrapped key is gone."""
    monkeypatch.setattr(secrets_service, "REENCRYPT_BATCH", 10)
    monkeypatch.setattr(vault_mod, "DESTROY_AFTER_SECONDS", 1.0)
    state = app.state.bastion
    org = factory.org()
    count = 400
    seed_secrets(state, org.id, count)
    _put(client, org, "api", "written-before")
    url = f"/v1/orgs/{org.id}/secrets-key"
    before = client.get(url, headers=org.headers).json()
    assert before == {
        "active_version": 1,
        "older_versions": [],
        "pending": 0,
        "total": count + 1,
        "status": "current",
    }

    failures: list[str] = []
    reads = 0
    stop = threading.Event()

    def read_loop() -> None:
        nonlocal reads
        i = 0
        while not stop.is_set():
            i = (i * 7 + 13) % count
            got = _reveal(client, org, f"s{i}")
            if got.status_code != 200 or got.json()["value"] != f"value-{org.id}-{i}":
                failures.append(got.text)
            reads += 1

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        rotated = client.post(f"{url}/rotate", headers=org.headers)
        assert rotated.status_code == 202, rotated.text
        assert rotated.json()["active_version"] == 2
        assert rotated.json()["older_versions"] == [1]
        assert rotated.json()["status"] == "reencrypting"
        assert 0 < rotated.json()["pending"] <= count + 1
        # New writes use the new key at once.
        _put(client, org, "api", "written-after")
        seen_midway = False
        deadline = time.monotonic() + DEADLINE
        while True:
            progress = client.get(url, headers=org.headers).json()
            if 0 < progress["pending"] < count:
                seen_midway = True
            if progress["status"] == "current":
                break
            assert time.monotonic() < deadline, progress
    finally:
        stop.set()
        reader.join(30)
    assert failures == []
    assert reads > 0
    assert seen_midway, "no read of the progress fell inside the re-encryption"
    assert progress == {
        "active_version": 2,
        "older_versions": [],
        "pending": 0,
        "total": count + 2,
        "status": "current",
    }
    assert _key_versions(state, org.id) == [2]
    assert _row_key_versions(state, org.id) == {2}
    state.vault.forget()
    for i in range(count):
        assert _reveal(client, org, f"s{i}").json()["value"] == f"value-{org.id}-{i}"
    assert _reveal(client, org, "api", version=1).json()["value"] == "written-before"
    assert _reveal(client, org, "api").json()["value"] == "written-after"
    assert len(_events(state, org.id, "data_key.rotated")) == 1
    destroyed = _events(state, org.id, "data_key.destroyed")
    assert len(destroyed) == 1
    assert destroyed[0].event_metadata["versions"] == [1]
    assert destroyed[0].actor_type == "system"


def test_two_workers_reencrypting_the_same_org_are_harmless(
    factory: Factory,
    app,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vault_mod, "DESTROY_AFTER_SECONDS", 0.5)  # each worker waits it out
    state = app.state.bastion
    org = factory.org()
    seed_secrets(state, org.id, 300)
    with state.write_sessions() as db:
        secrets_service.rotate_data_key(db, state.vault, secrets_service.REENCRYPT_ACTOR, org.id)
        db.commit()
    results: list[secrets_service.Reencrypted] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(
                secrets_service.reencrypt_org(state.write_sessions, state.vault, org.id, batch=20)
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    # Every row moved exactly once across the two workers (and the app's own task).
    assert sum(r.moved for r in results) <= 300
    assert _row_key_versions(state, org.id) == {2}
    assert _key_versions(state, org.id) == [2]
    assert len(_events(state, org.id, "data_key.destroyed")) == 1
    state.vault.forget()
    with state.sessions() as db:
        rows = db.execute(
            select(Secret.name, SecretVersion)
            .join(SecretVersion, SecretVersion.secret_id == Secret.id)
            .where(Secret.org_id == org.id)
        ).all()
        assert len(rows) == 300
        for name, row in rows:
            plain = state.vault.decrypt(
                db, org.id, row.secret_id, row.version, row.key_version, row.ciphertext
            )
            assert plain == f"value-{org.id}-{name[1:]}".encode()


def test_an_older_key_still_used_by_a_row_is_not_destroyed(
    factory: Factory,
    app,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database refuses to delete a key a row still names (foreign key): the
    destroy step fails, and the caller rolls back."""
    state = app.state.bastion
    org = factory.org()
    seed_secrets(state, org.id, 3)
    with state.write_sessions() as db:
        state.vault.rotate(db, org.id)
        db.commit()
    monkeypatch.setattr(vault_mod, "DESTROY_AFTER_SECONDS", 0.0)
    with state.write_sessions() as db, pytest.raises(vault_mod.KeysStillInUse):
        vault_mod.destroy_older_keys(db, state.vault, org.id, 2)
    assert _key_versions(state, org.id) == [1, 2]
    secrets_service.reencrypt_org(state.write_sessions, state.vault, org.id)
    assert _key_versions(state, org.id) == [2]


def test_older_keys_outlive_the_cached_active_version(
    factory: Factory,
    app,  # type: ignore[no-untyped-def]
) -> None:
    """Until the rotation is older than any worker's cached active version, the older
    key is kept even with nothing left under it; then a later pass destroys it."""
    state = app.state.bastion
    org = factory.org()
    seed_secrets(state, org.id, 3)
    with state.write_sessions() as db:
        state.vault.rotate(db, org.id)
        db.commit()
    assert vault_mod.DESTROY_AFTER_SECONDS > vault_mod.ACTIVE_VERSION_TTL_SECONDS
    young = secrets_service.reencrypt_org(state.write_sessions, state.vault, org.id, wait=False)
    assert (young.moved, young.destroyed) == (3, ())
    assert _key_versions(state, org.id) == [1, 2]
    clock.advance(vault_mod.DESTROY_AFTER_SECONDS)
    settled = secrets_service.reencrypt_org(state.write_sessions, state.vault, org.id, wait=False)
    assert (settled.moved, settled.destroyed) == (0, (1,))
    assert _key_versions(state, org.id) == [2]


# --- organisation deletion (crypto-shredding) -----------------------------------------


def test_deleting_an_organisation_stops_its_credentials_and_shreds_its_secrets(
    client: TestClient,
    factory: Factory,
    app,  # type: ignore[no-untyped-def]
) -> None:
    state = app.state.bastion
    org, bystander = factory.org(), factory.org()
    _put(client, org, "one", "gone-with-the-org")
    _put(client, bystander, "one", "still-here")
    with state.sessions() as db:
        kept = db.execute(select(SecretVersion).where(SecretVersion.org_id == org.id)).scalar_one()
        db.expunge(kept)  # a copy of the ciphertext, as an attacker's older dump would hold
    session = org.admin.headers
    assert client.get(f"/v1/orgs/{org.id}", headers=session).status_code == 200
    manager = factory.member(org, "manager")
    refused = client.delete(f"/v1/orgs/{org.id}", headers=manager.headers)
    assert refused.status_code == 403
    assert client.delete(f"/v1/orgs/{org.id}", headers=bystander.headers).status_code == 404

    assert client.delete(f"/v1/orgs/{org.id}", headers=org.headers).status_code == 204
    for headers in (org.headers, session, manager.headers):
        assert client.get(f"/v1/orgs/{org.id}", headers=headers).status_code == 401
    login = client.post("/v1/auth/login", json={"email": org.admin.email, "password": PASSWORD})
    assert login.status_code == 401
    with state.sessions() as db:
        assert db.get(Organization, org.id).status == "deleted"  # type: ignore[union-attr]
    assert _key_versions(state, org.id) == []
    deleted = _events(state, org.id, "org.deleted")
    assert len(deleted) == 1
    assert deleted[0].event_metadata["data_keys_destroyed"] == 1
    # Its secret versions are gone with its keys, and nothing left in the database opens
    # a copy of a ciphertext: not this org's keys (gone), not any other org's key (bound
    # to its org by the associated data).
    state.vault.forget()
    with state.sessions() as db:
        left = db.execute(select(SecretVersion).where(SecretVersion.org_id == org.id)).all()
        assert left == []
        row = kept
        with pytest.raises(SecretUnreadable):
            state.vault.decrypt(
                db, org.id, row.secret_id, row.version, row.key_version, row.ciphertext
            )
        for other in db.execute(select(OrgKey)).scalars():
            try:
                key = state.vault.data_key(db, other.org_id, other.version)
            except (KeyUnavailable, SecretUnreadable):
                # another test's org whose customer-managed key was revoked, or destroyed
                # (its data key opens nothing at all)
                continue
            aad = vault_mod.value_aad(org.id, row.secret_id, row.version)
            with pytest.raises(InvalidTag):
                Aead(key).decrypt(row.ciphertext, aad)
    assert _reveal(client, bystander, "one").json()["value"] == "still-here"


def test_a_backup_taken_after_deletion_holds_no_usable_key(tmp_path: Path) -> None:
    """SQLite: the destroyed wrapped key's bytes are overwritten, so neither the live
    files nor a backup taken after the deletion contain them; with the root keys of the
    data dir nothing decrypts the kept ciphertexts."""
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    for name in (PEPPER_FILE, ROOT_KEY_FILE, AUDIT_SIGNING_KEY_FILE):
        create_keyring(data_dir / name)
    db_file = data_dir / "bastion.db"
    url = f"sqlite:///{db_file}"
    upgrade(url)
    app = create_app(make_settings(data_dir, url))
    with TestClient(app, raise_server_exceptions=False) as client:
        state = app.state.bastion
        org = Factory(state, client).org()
        _put(client, org, "token", "shred-me-please")
        with state.write_sessions() as db:  # a second data key, so two blobs to look for
            state.vault.rotate(db, org.id)
            db.commit()
        with state.sessions() as db:
            wrapped = [k.wrapped for k in db.execute(select(OrgKey)).scalars()]
            rows = db.execute(
                select(SecretVersion.secret_id, SecretVersion.version, SecretVersion.ciphertext)
            ).all()
        assert len(wrapped) == 2
        assert len(rows) == 1
        assert client.delete(f"/v1/orgs/{org.id}", headers=org.headers).status_code == 204
    backup = tmp_path / "backup.db"
    with sqlite3.connect(db_file) as live, sqlite3.connect(backup) as copy:
        live.backup(copy)
    with sqlite3.connect(db_file) as live:  # what a file copy sees once the WAL is folded in
        live.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    secret_id, version, ciphertext = rows[0]
    for path in (backup, db_file):
        blob = path.read_bytes()
        for key in wrapped:
            assert key not in blob, path.name
        assert ciphertext not in blob, path.name
    with sqlite3.connect(backup) as copy:
        assert copy.execute("SELECT count(*) FROM org_keys").fetchone() == (0,)
        assert copy.execute("SELECT count(*) FROM secret_versions").fetchone() == (0,)
    # Every root-key version of the data dir, every key row of the backup: nothing opens
    # a copy of the ciphertext taken before the deletion.
    keys = read_keyring(data_dir / ROOT_KEY_FILE)
    assert keys.versions  # the root keys are there; what is missing is the data key
    assert b"shred-me-please" not in ciphertext
    aad = vault_mod.value_aad(org.id, secret_id, version)
    for root in keys.versions.values():
        for candidate in (root, derive_key(root, "org-data-key-wrap:v1")):
            with pytest.raises(InvalidTag):
                Aead(candidate).decrypt(ciphertext, aad)
