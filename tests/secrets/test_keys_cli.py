"""`bastion keys retire`, `bastion keys rotate-org` and `bastion org delete`, run as an
operator would (a fresh SQLite instance per test)."""

from __future__ import annotations

import json
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from bastion.cli.main import app
from bastion.core.keyring import ROOT_KEY_FILE, read_keyring
from bastion.secrets import vault as vault_mod
from bastion.secrets.models import OrgKey, Secret, SecretVersion
from bastion.secrets.vault import LocalKeyProvider, Vault

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("BASTION_DATA_DIR", str(data))
    monkeypatch.delenv("BASTION_DATABASE_URL", raising=False)
    monkeypatch.delenv("BASTION_PEPPER", raising=False)
    monkeypatch.setenv("BASTION_ARGON2_MEMORY_KIB", "8")
    monkeypatch.setenv("BASTION_ARGON2_TIME_COST", "1")
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    return data


def _run(args: list[str], code: int = 0) -> Any:
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout) if code == 0 and "--json" in args else result


def _org(name: str = "Acme") -> str:
    args = ["org", "create", name, "--admin-email", f"{uuid.uuid4().hex[:8]}@example.com"]
    return str(_run([*args, "--json"])["org_id"])


def _db(env: Path) -> Session:
    return Session(create_engine(f"sqlite:///{env}/bastion.db"))


def _write_secrets(env: Path, org_id: str, count: int) -> None:
    vault = Vault(LocalKeyProvider(env / ROOT_KEY_FILE))
    with _db(env) as db:
        for i in range(count):
            secret = Secret(
                id=f"sec_{uuid.uuid4().hex[:26].upper()}",
                org_id=org_id,
                name=f"s{i}",
                scope_type="org",
                scope_id="",
                current_version=1,
            )
            db.add(secret)
            key_version, blob = vault.encrypt(db, org_id, secret.id, 1, f"v{i}".encode())
            db.add(
                SecretVersion(
                    secret_id=secret.id,
                    version=1,
                    org_id=org_id,
                    ciphertext=blob,
                    key_version=key_version,
                )
            )
        db.commit()


def _read_all(env: Path, org_id: str) -> dict[str, str]:
    vault = Vault(LocalKeyProvider(env / ROOT_KEY_FILE))
    with _db(env) as db:
        rows = db.execute(
            select(Secret.name, SecretVersion)
            .join(SecretVersion, SecretVersion.secret_id == Secret.id)
            .where(Secret.org_id == org_id)
        ).all()
        return {
            name: vault.decrypt(
                db, org_id, row.secret_id, row.version, row.key_version, row.ciphertext
            ).decode()
            for name, row in rows
        }


def test_retire_refuses_the_active_version_and_versions_still_wrapping_keys(env: Path) -> None:
    org = _org()
    _write_secrets(env, org, 2)
    refused = _run(["keys", "retire", "1"], code=1)
    assert "active version" in refused.output
    assert _run(["keys", "rotate", "--json"])["active_version"] == 2
    refused = _run(["keys", "retire", "1"], code=1)
    assert "1 organisation data keys are still wrapped by root key version 1" in refused.output
    assert "bastion keys rewrap" in refused.output
    assert read_keyring(env / ROOT_KEY_FILE).versions.keys() == {1, 2}
    missing = _run(["keys", "retire", "7"], code=1)
    assert "not in the keyring" in missing.output

    _run(["keys", "rewrap", "--json"])
    assert _run(["keys", "retire", "1", "--json"]) == {
        "retired": 1,
        "versions": [2],
        "active_version": 2,
    }
    path = env / ROOT_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(read_keyring(path).versions) == [2]
    assert _read_all(env, org) == {"s0": "v0", "s1": "v1"}  # still opens without version 1


def test_rotate_org_reencrypts_and_destroys_the_old_key(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The command waits until no server can still hold the old version as active.
    monkeypatch.setattr(vault_mod, "DESTROY_AFTER_SECONDS", 0.5)
    org, other = _org("A"), _org("B")
    _write_secrets(env, org, 120)
    _write_secrets(env, other, 3)
    result = _run(["keys", "rotate-org", "--org", org, "--json"])
    assert result == {
        "org_id": org,
        "active_version": 2,
        "reencrypted": 120,
        "unreadable": 0,
        "destroyed_versions": [1],
    }
    with _db(env) as db:
        versions = db.execute(select(OrgKey.org_id, OrgKey.version)).all()
        assert sorted(v for o, v in versions if o == org) == [2]
        assert sorted(v for o, v in versions if o == other) == [1]  # untouched
        assert set(
            db.execute(
                select(SecretVersion.key_version).where(SecretVersion.org_id == org)
            ).scalars()
        ) == {2}
    assert _read_all(env, org) == {f"s{i}": f"v{i}" for i in range(120)}
    background = _run(["keys", "rotate-org", "--org", org, "--background", "--json"])
    assert background == {"org_id": org, "active_version": 3, "pending": 120}
    assert _run(["audit", "verify", "--org", org]).exit_code == 0


def test_org_delete_shreds(env: Path) -> None:
    org, other = _org("A"), _org("B")
    _write_secrets(env, org, 2)
    _write_secrets(env, other, 1)
    not_confirmed = runner.invoke(app, ["org", "delete", org], input="n\n")
    assert not_confirmed.exit_code == 1
    assert _run(["org", "delete", org, "--yes", "--json"]) == {
        "org_id": org,
        "status": "deleted",
        "data_keys_destroyed": 1,
    }
    again = _run(["org", "delete", org, "--yes"], code=1)
    assert "not found" in again.output
    with _db(env) as db:
        assert db.execute(select(OrgKey).where(OrgKey.org_id == org)).first() is None
    assert _read_all(env, other) == {"s0": "v0"}
    assert _run(["audit", "verify", "--org", org]).exit_code == 0
