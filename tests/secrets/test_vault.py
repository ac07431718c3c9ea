"""The secrets vault: values never stored in clear, ciphertexts bound to their row and
org, scope precedence, reveal audited without the value, root-key rotation and rewrap
while requests keep succeeding, crypto-shredding."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from bastion.api.app import create_app
from bastion.core.db import begin_write
from bastion.core.keyring import PEPPER_FILE, ROOT_KEY_FILE, read_keyring
from bastion.migrations.runner import upgrade
from bastion.secrets import vault as vault_mod
from bastion.secrets.errors import SecretUnreadable
from bastion.secrets.models import OrgKey, Secret, SecretVersion
from tests.conftest import _admin_sql, _postgres_database, make_settings
from tests.e2e.server import BIN, server_env
from tests.factories import Factory, Org, in_org_region
from tests.secrets.seeding import seed_secrets

SENTINEL = "Vlt5ntnl"


def _put(client: TestClient, org: Org, name: str, value: str, **body: Any) -> dict[str, Any]:
    response = client.put(
        f"/v1/orgs/{org.id}/secrets/{name}", json={"value": value, **body}, headers=org.headers
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _reveal(client: TestClient, org: Org, name: str, **body: Any) -> Any:
    return client.post(f"/v1/orgs/{org.id}/secrets/{name}/reveal", json=body, headers=org.headers)


def test_versions_scopes_and_metadata_without_values(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    assert _put(client, org, "github", f"{SENTINEL}-v1")["version"] == 1
    assert _put(client, org, "github", f"{SENTINEL}-v2", description="bot token")["version"] == 2
    _put(client, org, "github", f"{SENTINEL}-wf", scope={"workflow_id": "wf_1"})
    _put(client, org, "github", f"{SENTINEL}-run", scope={"run_id": "run_9"})
    assert _reveal(client, org, "github").json()["value"] == f"{SENTINEL}-v2"
    assert _reveal(client, org, "github", version=1).json()["value"] == f"{SENTINEL}-v1"
    assert _reveal(client, org, "github", workflow_id="wf_1").json()["scope"] == "workflow"
    run = _reveal(client, org, "github", workflow_id="wf_1", run_id="run_9").json()
    assert (run["value"], run["scope"]) == (f"{SENTINEL}-run", "run")
    other_run = _reveal(client, org, "github", workflow_id="wf_2", run_id="run_x").json()
    assert other_run["scope"] == "org"  # falls back: run > workflow > org
    listed = client.get(f"/v1/orgs/{org.id}/secrets", headers=org.headers).text
    one = client.get(f"/v1/orgs/{org.id}/secrets/github", headers=org.headers)
    assert one.status_code == 200
    assert [v["version"] for v in one.json()["scopes"][0]["versions"]] == [2, 1]
    events = client.get(f"/v1/orgs/{org.id}/audit-events", headers=org.headers).text
    for text in (listed, one.text, events):
        assert SENTINEL not in text
    assert "secret.revealed" in events
    assert _reveal(client, org, "nope").status_code == 404


def test_viewers_cannot_reveal(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    _put(client, org, "k", "v")
    member = factory.member(org, "member")
    assert client.get(f"/v1/orgs/{org.id}/secrets", headers=member.headers).status_code == 200
    refused = client.post(f"/v1/orgs/{org.id}/secrets/k/reveal", json={}, headers=member.headers)
    assert refused.status_code == 403


def test_a_ciphertext_moved_to_another_row_or_org_does_not_decrypt(
    client: TestClient,
    factory: Factory,
    app,  # type: ignore[no-untyped-def]
) -> None:
    a, b = factory.org("A"), factory.org("B")
    _put(client, a, "one", "first")
    _put(client, a, "two", "second")
    _put(client, b, "one", "bees")
    state = app.state.bastion

    def version_row(org: Org, name: str) -> SecretVersion:
        with in_org_region(state, org.id), state.sessions() as db:
            secret = db.execute(
                select(Secret).where(Secret.org_id == org.id, Secret.name == name)
            ).scalar_one()
            row = db.get(SecretVersion, (secret.id, 1))
            db.expunge(row)
            return row

    source = version_row(a, "one")
    for target_org, target_name in ((a, "two"), (b, "one")):
        target = version_row(target_org, target_name)
        with in_org_region(state, target_org.id), state.sessions() as db:
            begin_write(db)
            db.execute(
                update(SecretVersion)
                .where(
                    SecretVersion.secret_id == target.secret_id,
                    SecretVersion.version == 1,
                )
                .values(ciphertext=source.ciphertext, key_version=source.key_version)
            )
            db.commit()
        response = _reveal(client, target_org, target_name)
        assert response.status_code == 500  # the authentication tag does not verify
        assert response.json()["code"] == "secret_unreadable"
        assert "first" not in response.text


ORGS, PER_ORG = 50, 200  # 10,000 secrets


def test_rotate_and_rewrap_while_serving(tmp_path: Path) -> None:
    """10,000 secrets in 50 orgs reveal before, during and after `bastion keys rotate`
    and `bastion keys rewrap` run in another process; no request fails."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    from bastion.core.keyring import AUDIT_SIGNING_KEY_FILE, create_keyring

    for name in (PEPPER_FILE, ROOT_KEY_FILE, AUDIT_SIGNING_KEY_FILE):
        create_keyring(data_dir / name)
    # Its own database: the rewrap must see exactly this test's organisations.
    base = os.environ.get("BASTION_TEST_DATABASE_URL")
    url, pg_name = _postgres_database(base) if base else (f"sqlite:///{data_dir}/b.db", None)
    try:
        upgrade(url)
        _rotate_under_load(data_dir, url)
    finally:
        if base and pg_name:
            _admin_sql(base, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


def _rotate_under_load(data_dir: Path, url: str) -> None:
    app = create_app(make_settings(data_dir, url))
    with TestClient(app, raise_server_exceptions=False) as client:
        factory = Factory(app.state.bastion, client)
        orgs = [factory.org(f"O{i}") for i in range(ORGS)]
        for org in orgs:
            seed_secrets(app.state.bastion, org.id, PER_ORG)
        failures: list[str] = []
        stop = threading.Event()

        def read_loop() -> None:
            while not stop.is_set():
                for org in orgs:
                    got = _reveal(client, org, "s3")
                    if got.status_code != 200 or got.json()["value"] != f"value-{org.id}-3":
                        failures.append(got.text)

        reader = threading.Thread(target=read_loop)
        reader.start()
        env = server_env(data_dir, url)
        try:
            for command in (["keys", "rotate", "--json"], ["keys", "rewrap", "--json"]):
                done = subprocess.run(
                    [str(BIN / "bastion"), *command],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                assert done.returncode == 0, done.stderr
            rewrapped = json.loads(done.stdout)
        finally:
            stop.set()
            reader.join(30)
        assert failures == []
        assert rewrapped == {"rewrapped": ORGS, "active_version": 2}
        with app.state.bastion.sessions() as db:
            roots = set(db.execute(select(OrgKey.root_version)).scalars())
        assert roots == {2}
        state = app.state.bastion
        state.vault.forget()  # no cached data keys: unwrap with the new root
        with state.sessions() as db:
            rows = db.execute(
                select(Secret.org_id, Secret.name, SecretVersion).join(
                    SecretVersion, SecretVersion.secret_id == Secret.id
                )
            ).all()
            assert len(rows) >= ORGS * PER_ORG
            for org_id, name, row in rows:
                plain = state.vault.decrypt(
                    db, org_id, row.secret_id, row.version, row.key_version, row.ciphertext
                )
                if name.startswith("s"):
                    assert plain == f"value-{org_id}-{name[1:]}".encode()
        assert _reveal(client, orgs[-1], "s7").json()["value"] == f"value-{orgs[-1].id}-7"
        assert read_keyring(data_dir / ROOT_KEY_FILE).active == 2


def test_crypto_shredding(client: TestClient, factory: Factory, app) -> None:  # type: ignore[no-untyped-def]
    org = factory.org()
    _put(client, org, "gone", "soon")
    state = app.state.bastion
    with in_org_region(state, org.id), state.sessions() as db:
        row = db.execute(select(SecretVersion).where(SecretVersion.org_id == org.id)).scalar_one()
        db.expunge(row)  # a copy of the ciphertext taken before the shredding
    with in_org_region(state, org.id), state.sessions() as db:
        begin_write(db)
        assert vault_mod.shred_org(db, org.id, state.vault) == 1
        db.commit()
    with in_org_region(state, org.id), state.sessions() as db:
        left = db.execute(select(SecretVersion).where(SecretVersion.org_id == org.id)).all()
        assert left == []  # the versions go first: they hold their keys by foreign key
        with pytest.raises(SecretUnreadable):
            state.vault.decrypt(
                db, org.id, row.secret_id, row.version, row.key_version, row.ciphertext
            )


def test_no_value_or_key_in_the_database_or_data_dir(tmp_path: Path) -> None:
    """A fresh SQLite instance: the sentinel value and the unwrapped data key appear in
    no file of the data dir (database, WAL, key files)."""
    from bastion.core.keyring import AUDIT_SIGNING_KEY_FILE, create_keyring

    data_dir = tmp_path / "d"
    data_dir.mkdir()
    for name in (PEPPER_FILE, ROOT_KEY_FILE, AUDIT_SIGNING_KEY_FILE):
        create_keyring(data_dir / name)
    url = f"sqlite:///{data_dir}/bastion.db"
    upgrade(url)
    value = f"{SENTINEL}-{uuid.uuid4().hex}"
    app = create_app(make_settings(data_dir, url))
    with TestClient(app, raise_server_exceptions=False) as client:
        org = Factory(app.state.bastion, client).org()
        _put(client, org, "token", value)
        assert _reveal(client, org, "token").json()["value"] == value
        with app.state.bastion.sessions() as db:
            data_key = app.state.bastion.vault.data_key(db, org.id, 1)
    for path in (p for p in data_dir.rglob("*") if p.is_file()):  # sandboxes/ is a folder
        blob = path.read_bytes()
        assert value.encode() not in blob, path.name
        assert SENTINEL.encode() not in blob, path.name
        assert data_key not in blob, path.name
        assert data_key.hex().encode() not in blob, path.name


def test_a_version_past_64_bits_is_a_422_naming_it(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    _put(client, org, "big", f"{SENTINEL}-1")
    for version in (2**63, 2**64 + 1):
        refused = _reveal(client, org, "big", version=version)
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["field"] == "version"
    assert _reveal(client, org, "big", version=2**63 - 1).status_code == 404


def test_webhook_signing_secrets_stay_out_of_the_secrets_api(
    client: TestClient, factory: Factory
) -> None:
    from tests.webhooks.test_gateway import create_endpoint, new_secret

    org = factory.org()
    create_endpoint(client, org, "github", new_secret("github"))
    _put(client, org, "mine", f"{SENTINEL}-1")
    listed = client.get(f"/v1/orgs/{org.id}/secrets", headers=org.headers)
    assert listed.status_code == 200, listed.text
    assert [s["name"] for s in listed.json()["data"]] == ["mine"]
    slashed = client.put(
        f"/v1/orgs/{org.id}/secrets/team%2Fdb", json={"value": "x"}, headers=org.headers
    )
    assert slashed.status_code in (404, 422), slashed.text  # never stored under such a name
    assert [s["name"] for s in client.get(
        f"/v1/orgs/{org.id}/secrets", headers=org.headers
    ).json()["data"]] == ["mine"]  # fmt: skip
