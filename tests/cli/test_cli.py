"""The bootstrap CLI, run as a user would: init, org create, apikey create, audit verify."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from bastion.cli.main import app

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("BASTION_DATA_DIR", str(data))
    monkeypatch.delenv("BASTION_DATABASE_URL", raising=False)
    monkeypatch.delenv("BASTION_PEPPER", raising=False)
    monkeypatch.setenv("BASTION_ARGON2_MEMORY_KIB", "8")
    monkeypatch.setenv("BASTION_ARGON2_TIME_COST", "1")
    return data


def _ok(args: list[str], stdin: str | None = None) -> str:
    result = runner.invoke(app, args, input=stdin)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_init_is_idempotent_and_keys_are_private(env: Path) -> None:
    _ok(["init"])
    for name in ("pepper.key", "root.key"):
        assert stat.S_IMODE((env / name).stat().st_mode) == 0o600
    pepper = (env / "pepper.key").read_bytes()
    _ok(["init"])
    assert (env / "pepper.key").read_bytes() == pepper  # never regenerated


def test_bootstrap_flow(env: Path) -> None:
    _ok(["init"])
    created = json.loads(
        _ok(
            [
                "org",
                "create",
                "Acme",
                "--admin-email",
                "root@example.com",
                "--admin-password-stdin",
                "--json",
            ],
            stdin="a-long-admin-password\n",
        )
    )
    assert set(created) == {"org_id", "user_id", "region"}
    assert created["region"] == "default"
    key = json.loads(
        _ok(
            [
                "apikey",
                "create",
                "--org",
                created["org_id"],
                "--name",
                "ci",
                "--role",
                "admin",
                "--expires-in",
                "3600",
                "--json",
            ]
        )
    )
    assert key["key"].startswith(f"bsk_{key['id']}_")
    missing = runner.invoke(
        app, ["apikey", "create", "--org", "org_nope", "--name", "x", "--role", "admin"]
    )
    assert missing.exit_code == 1
    bad_role = runner.invoke(
        app, ["apikey", "create", "--org", created["org_id"], "--name", "x", "--role", "god"]
    )
    assert bad_role.exit_code == 1
    assert "unknown role" in bad_role.output


def test_invited_admin_gets_a_setup_token(env: Path) -> None:
    _ok(["init"])
    created = json.loads(_ok(["org", "create", "Beta", "--admin-email", "b@example.com", "--json"]))
    assert created["setup_token"].startswith("bsu_inv_")


def test_audit_verify_exit_codes(env: Path) -> None:
    _ok(["init"])
    org = json.loads(
        _ok(
            [
                "org",
                "create",
                "Acme",
                "--admin-email",
                "v@example.com",
                "--admin-password-stdin",
                "--json",
            ],
            stdin="a-long-admin-password\n",
        )
    )["org_id"]
    _ok(["apikey", "create", "--org", org, "--name", "a", "--role", "viewer"])
    assert "intact" in _ok(["audit", "verify", "--org", org])
    engine = create_engine(f"sqlite:///{env / 'bastion.db'}")
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE audit_events SET reason = 'forged' WHERE chain = :c AND seq = 2"),
            {"c": org},
        )
    engine.dispose()
    result = runner.invoke(app, ["audit", "verify", "--org", org, "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert report["chains"][0]["first_invalid"].startswith("evt_")


def test_placeholder_pepper_is_refused(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_PEPPER", "changeme")
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "BASTION_PEPPER" in result.output
    monkeypatch.setenv("BASTION_PEPPER", "changeme-changeme-changeme-changeme-123")
    assert runner.invoke(app, ["serve"]).exit_code == 2


def test_serve_refuses_without_init(env: Path) -> None:
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "bastion init" in result.output


def test_audit_export_to_file(env: Path, tmp_path: Path) -> None:
    _ok(["init"])
    org = json.loads(
        _ok(
            [
                "org",
                "create",
                "Acme",
                "--admin-email",
                "x@example.com",
                "--admin-password-stdin",
                "--json",
            ],
            stdin="a-long-admin-password\n",
        )
    )["org_id"]
    out = tmp_path / "audit.jsonl"
    _ok(["audit", "export", "--org", org, "--output", str(out)])
    events = [json.loads(line) for line in out.read_text().splitlines()]
    # The export is recorded before the first row is read, so it lists itself last.
    assert [e["type"] for e in events] == ["org.created", "user.created", "audit.exported"]
    _ok(["audit", "export", "--org", org, "--output", str(tmp_path / "a.csv"), "--format", "csv"])
    assert (tmp_path / "a.csv").read_text().startswith("id,seq,time,type")
    assert "intact" in _ok(
        ["audit", "verify", "--org", org]
    )  # the export was recorded, chain intact
    assert json.loads(_ok(["audit", "checkpoint", "--json"])) == {"created": 1}
    assert json.loads(_ok(["audit", "checkpoint", "--json"])) == {"created": 0}
