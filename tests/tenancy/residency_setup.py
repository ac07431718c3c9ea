"""Two real regions and a directory (two SQLite files, or two PostgreSQL databases under
BASTION_TEST_DATABASE_URL), set up by the CLI as an operator does: the residency tests'
install (the `install` fixture is in this package's conftest)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bastion.api.app import create_app
from bastion.cli.main import app as cli_app
from bastion.core.keyring import AUDIT_SIGNING_KEY_FILE, PEPPER_FILE, ROOT_KEY_FILE, create_keyring
from tests.conftest import _admin_sql, _fresh_database, make_settings

runner = CliRunner()
PASSWORD = "correct horse battery staple"


@dataclass
class Install:
    data: Path
    directory: str
    regions: dict[str, str]
    dropped: list[str]

    def cli(self, *args: str, stdin: str | None = None, code: int = 0) -> Any:
        result = runner.invoke(cli_app, list(args), input=stdin)
        assert result.exit_code == code, result.output
        return json.loads(result.stdout) if code == 0 and "--json" in args else result

    def app(self) -> Any:
        return create_app(make_settings(self.data, self.directory, regions=self.regions))

    def org(self, region: str, email: str) -> dict[str, Any]:
        made = self.cli(
            "org", "create", f"Org {region}", "--admin-email", email,
            "--admin-password-stdin", "--region", region, "--json", stdin=PASSWORD + "\n",
        )  # fmt: skip
        key = self.cli(
            "apikey", "create", "--org", made["org_id"], "--name", "k", "--role", "admin", "--json"
        )
        return {**made, "headers": {"Authorization": f"Bearer {key['key']}"}, "email": email}


def make_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    for name in (PEPPER_FILE, ROOT_KEY_FILE, AUDIT_SIGNING_KEY_FILE):
        create_keyring(data / name)
    made = {n: _fresh_database(data, n) for n in ("directory", "eu", "us")}
    urls = {n: url for n, (url, _) in made.items()}
    found = Install(
        data,
        urls.pop("directory"),
        urls,
        [name for _, name in made.values() if name is not None],
    )
    monkeypatch.setenv("BASTION_DATA_DIR", str(data))
    monkeypatch.setenv("BASTION_DATABASE_URL", found.directory)
    monkeypatch.setenv("BASTION_REGIONS", json.dumps(found.regions))
    monkeypatch.setenv("BASTION_ARGON2_MEMORY_KIB", "8")
    monkeypatch.setenv("BASTION_ARGON2_TIME_COST", "1")
    monkeypatch.delenv("BASTION_PEPPER", raising=False)
    found.cli("migrate", "--json")
    try:
        yield found
    finally:
        base = os.environ.get("BASTION_TEST_DATABASE_URL")
        for name in found.dropped:
            if base:
                _admin_sql(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
