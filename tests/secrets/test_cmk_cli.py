"""`bastion org encryption-key show|set|lock|remove`, run as an operator would (a fresh
SQLite instance), against the OpenBao dev server: the configuration comes on stdin and
is never printed; a revoked token makes `set` of another org fail with the reason."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from bastion.cli.main import app
from bastion.secrets.cmk import CUSTOMER_WRAPPED
from bastion.secrets.models import OrgKey
from tests.secrets.keypeers import OpenBao

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv("BASTION_DATA_DIR", str(data))
    monkeypatch.delenv("BASTION_DATABASE_URL", raising=False)
    monkeypatch.delenv("BASTION_PEPPER", raising=False)
    monkeypatch.setenv("BASTION_ARGON2_MEMORY_KIB", "8")
    monkeypatch.setenv("BASTION_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("BASTION_OUTBOUND_ALLOW", '["127.0.0.0/8"]')
    monkeypatch.setenv("BASTION_OUTBOUND_PLAINTEXT_ALLOW", '["127.0.0.0/8"]')
    assert runner.invoke(app, ["init"]).exit_code == 0
    return data


def _run(args: list[str], stdin: str | None = None, code: int = 0) -> Any:
    result = runner.invoke(app, args, input=stdin)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout) if code == 0 and "--json" in args else result


def test_set_show_lock_remove(env: Path, openbao: OpenBao) -> None:
    org = _run(
        ["org", "create", "Acme", "--admin-email", f"{uuid.uuid4().hex[:8]}@x.com", "--json"]
    )["org_id"]
    _run(["keys", "rotate-org", "--org", org])  # a data key to re-wrap
    assert _run(["org", "encryption-key", "show", org, "--json"])["provider"] == "local"
    key = openbao.new_key()
    token = openbao.token_for(key)
    config = json.dumps(openbao.config(key, token))
    set_ = runner.invoke(
        app, ["org", "encryption-key", "set", org, "--provider", "vault_transit", "--json"],
        input=config,
    )  # fmt: skip
    assert set_.exit_code == 0, set_.output
    assert token not in set_.output
    assert json.loads(set_.stdout)["status"] == "active"
    with Session(create_engine(f"sqlite:///{env}/bastion.db")) as db:
        roots = db.execute(select(OrgKey.root_version).where(OrgKey.org_id == org)).scalars()
        assert set(roots) == {CUSTOMER_WRAPPED}
    assert _run(["org", "encryption-key", "lock", org, "--json"])["provider"] == "vault_transit"
    assert _run(["org", "encryption-key", "remove", org, "--json"])["provider"] == "local"
    openbao.revoke(token)
    other = _run(
        ["org", "create", "Other", "--admin-email", f"{uuid.uuid4().hex[:8]}@x.com", "--json"]
    )["org_id"]
    refused = _run(
        ["org", "encryption-key", "set", other, "--provider", "vault_transit"], config, code=1
    )
    assert "access_denied" in refused.output
    assert token not in refused.output
