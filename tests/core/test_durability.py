"""SQLite commits survive a power loss by default (issue 13): the write-ahead log is
synced at every commit (`synchronous=FULL`) unless the operator chooses NORMAL."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.api.app import create_app
from tests.conftest import make_settings


def _synchronous(app: object) -> int:
    with app.state.bastion.engine.connect() as conn:  # type: ignore[attr-defined]
        return int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())


@pytest.mark.parametrize(("setting", "pragma"), [(None, 2), ("NORMAL", 1)])
def test_sqlite_commits_are_full_sync_unless_lowered(
    tmp_path: Path, data_dir: Path, setting: str | None, pragma: int
) -> None:
    url = f"sqlite:///{tmp_path / 'durable.db'}"
    overrides = {} if setting is None else {"sqlite_synchronous": setting}
    app = create_app(make_settings(data_dir, url, **overrides))
    try:
        assert _synchronous(app) == pragma  # FULL is 2, NORMAL 1
    finally:
        app.state.bastion.engine.dispose()
