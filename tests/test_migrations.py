"""Every migration upgrades and downgrades cleanly, on the suite's backend (SQLite, or
PostgreSQL when the suite runs there), and the models match the head schema."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from bastion.migrations.runner import alembic_config, head_revision
from bastion.registry import metadata
from tests.conftest import _admin_sql, _postgres_database


def _fresh_url(tmp_path: Path) -> tuple[str, str | None]:
    base = os.environ.get("BASTION_TEST_DATABASE_URL")
    if not base:
        return f"sqlite:///{tmp_path / 'migrations.db'}", None
    url, name = _postgres_database(base)
    return url, name


def test_upgrade_downgrade_upgrade(tmp_path: Path) -> None:
    url, pg_name = _fresh_url(tmp_path)
    try:
        config = alembic_config(url)
        command.upgrade(config, "head")
        command.downgrade(config, "base")
        command.upgrade(config, "head")
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                context = MigrationContext.configure(conn)
                assert context.get_current_revision() == head_revision()
                assert compare_metadata(context, metadata) == []
        finally:
            engine.dispose()
    finally:
        if pg_name is not None:
            _admin_sql(
                os.environ["BASTION_TEST_DATABASE_URL"], f'DROP DATABASE "{pg_name}" WITH (FORCE)'
            )
