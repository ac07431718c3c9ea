"""`bastion privacy` from the host: retention shown and set (audited), data policies
listed, an access package written, an erasure that needs --yes, and a purge."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from bastion.cli.main import app

runner = CliRunner()
PASSWORD = "a-long-admin-password"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("BASTION_DATA_DIR", str(data))
    for name in ("BASTION_DATABASE_URL", "BASTION_PEPPER", "BASTION_REDIS_URL", "BASTION_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BASTION_ARGON2_MEMORY_KIB", "8")
    monkeypatch.setenv("BASTION_ARGON2_TIME_COST", "1")
    return data


def _run(args: list[str], stdin: str | None = None, code: int = 0) -> str:
    result = runner.invoke(app, args, input=stdin)
    assert result.exit_code == code, result.output
    return result.stdout


def _json(args: list[str], stdin: str | None = None, code: int = 0) -> Any:
    return json.loads(_run([*args, "--json"], stdin, code))


def _types(env: Path, org: str) -> list[str]:
    engine = create_engine(f"sqlite:///{env / 'bastion.db'}")
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT type FROM audit_events WHERE chain = :c ORDER BY seq"), {"c": org}
        )
        found = [r[0] for r in rows]
    engine.dispose()
    return found


def test_privacy_from_the_host(env: Path, tmp_path: Path) -> None:
    _run(["init"])
    org = _json(
        ["org", "create", "Acme", "--admin-email", "root@example.com", "--admin-password-stdin"],
        stdin=PASSWORD + "\n",
    )
    org_id = org["org_id"]
    member = _json(
        ["user", "create", "--org", org_id, "--email", "m@example.com", "--role", "member"]
    )
    shown = _json(["privacy", "retention", org_id])
    assert shown["tool_calls_days"] == 90
    changed = _json(["privacy", "retention", org_id, "--set", "tool_calls_days=10"])
    assert changed["tool_calls_days"] == 10
    _run(["privacy", "retention", org_id, "--set", "forever=1"], code=2)
    assert _json(["privacy", "policies", org_id]) == {"data": []}
    out = tmp_path / "package.zip"
    made = _json(["privacy", "access", org_id, "--email", "m@example.com", "-o", str(out)])
    assert made["subject_id"] == member["id"]
    with zipfile.ZipFile(io.BytesIO(out.read_bytes())) as archive:
        assert json.loads(archive.read("profile.json"))[0]["email"] == "m@example.com"
    _run(["privacy", "erase", org_id, "--user", member["id"]], code=2)  # no --yes
    erased = _json(["privacy", "erase", org_id, "--user", member["id"], "--yes"])
    assert erased["subject_id"] == member["id"]
    _run(["user", "show", member["id"], "--org", org_id], code=1)  # gone
    assert _json(["privacy", "purge"]) == {"orgs": []}  # nothing old yet
    types = _types(env, org_id)
    for kind in (
        "privacy.retention_updated",
        "privacy_subject.access",
        "privacy_subject.package_read",
        "privacy_subject.erased",
    ):
        assert kind in types
    verified = _json(["audit", "verify", "--org", org_id])
    assert verified["valid"] is True
