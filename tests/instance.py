"""A whole instance of its own for a test: a data directory with fresh key files, a
fresh database (SQLite, or PostgreSQL under `BASTION_TEST_DATABASE_URL`), a server and
the CLI pointed at the same two. For tests that rotate or retire instance keys, which
the shared session fixtures must never see."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bastion.api.app import create_app
from bastion.api.state import AppState
from bastion.cli.main import app as cli_app
from bastion.core import keyring
from bastion.core.keyring import AUDIT_SIGNING_KEY_FILE, PEPPER_FILE, ROOT_KEY_FILE, create_keyring
from bastion.migrations.runner import upgrade
from tests.conftest import _admin_sql, _postgres_database, make_settings
from tests.factories import Factory

runner = CliRunner()


@dataclass
class Instance:
    data_dir: Path
    database_url: str
    state: AppState
    client: TestClient
    factory: Factory

    def cli(self, *args: str, code: int = 0) -> Any:
        """Run `bastion ARGS`; the parsed JSON when `--json` is given and it succeeded."""
        result = runner.invoke(cli_app, list(args))
        assert result.exit_code == code, result.output
        return json.loads(result.stdout) if code == 0 and "--json" in args else result


@contextmanager
def fresh_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Instance]:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    for name in (PEPPER_FILE, ROOT_KEY_FILE, AUDIT_SIGNING_KEY_FILE):
        create_keyring(data / name)
    base = os.environ.get("BASTION_TEST_DATABASE_URL")
    url, name = _postgres_database(base) if base else (f"sqlite:///{data / 'bastion.db'}", None)
    try:
        upgrade(url)
        monkeypatch.setenv("BASTION_DATA_DIR", str(data))
        monkeypatch.setenv("BASTION_DATABASE_URL", url)
        monkeypatch.delenv("BASTION_PEPPER", raising=False)
        monkeypatch.setenv("BASTION_ARGON2_MEMORY_KIB", "8")
        monkeypatch.setenv("BASTION_ARGON2_TIME_COST", "1")
        # Servers look at their key files again at once, not after a second.
        monkeypatch.setattr(keyring, "RECHECK_SECONDS", 0.0)
        app = create_app(make_settings(data, url))
        state = app.state.bastion
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Instance(data, url, state, client, Factory(state, client))
    finally:
        if base and name is not None:
            _admin_sql(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
