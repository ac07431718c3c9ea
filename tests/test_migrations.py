"""Every migration upgrades and downgrades cleanly, on the suite's backend (SQLite, or
PostgreSQL when the suite runs there), and the models match the head schema."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import column, create_engine, delete, insert, select, table, text
from sqlalchemy.exc import IntegrityError

from bastion.core.clock import utcnow
from bastion.core.db import UTCDateTime, make_engine
from bastion.migrations.runner import alembic_config, head_revision
from bastion.registry import metadata
from bastion.secrets.models import OrgKey, Secret, SecretVersion
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


_ORGS_AT_0012 = table(
    "organizations",
    *(column(name) for name in ("id", "name", "status", "audit_retention_days")),
    column("created_at", UTCDateTime()),
    column("updated_at", UTCDateTime()),
)


def test_0013_keeps_readable_versions_drops_shredded_ones_and_holds_keys(tmp_path: Path) -> None:
    """Secret versions get a foreign key to the data key they name: rows whose key was
    already destroyed (organisations shredded before 0013) are dropped, the rest kept,
    and from then on a key still named by a row cannot be deleted."""
    url, pg_name = _fresh_url(tmp_path)
    engine = make_engine(url)  # SQLite with foreign keys on, as the app runs it
    try:
        config = alembic_config(url)
        command.upgrade(config, "0012")
        with engine.begin() as conn:
            # The columns organisations had at 0012 (the model's later ones do not exist yet).
            conn.execute(
                insert(_ORGS_AT_0012).values(
                    id="org_A", name="A", status="active", audit_retention_days=365,
                    created_at=utcnow(), updated_at=utcnow(),
                )
            )  # fmt: skip
            conn.execute(
                insert(OrgKey.__table__).values(
                    org_id="org_A", version=1, wrapped=b"wrapped", root_version=1
                )
            )
            for secret_id, key_version in (("sec_KEPT", 1), ("sec_SHREDDED", 7)):
                conn.execute(
                    insert(Secret.__table__).values(
                        id=secret_id, org_id="org_A", name=secret_id, scope_type="org"
                    )
                )
                conn.execute(
                    insert(SecretVersion.__table__).values(
                        secret_id=secret_id,
                        version=1,
                        org_id="org_A",
                        ciphertext=b"sealed",
                        key_version=key_version,
                    )
                )
        command.upgrade(config, "0013")
        with engine.connect() as conn:
            kept = conn.execute(select(SecretVersion.secret_id, SecretVersion.key_version)).all()
            assert [tuple(row) for row in kept] == [("sec_KEPT", 1)]
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(delete(OrgKey.__table__))
        with engine.begin() as conn:  # a version's own deletion frees its key
            conn.execute(delete(SecretVersion.__table__))
            conn.execute(delete(OrgKey.__table__))
        command.downgrade(config, "0012")
    finally:
        engine.dispose()
        if pg_name is not None:
            _admin_sql(
                os.environ["BASTION_TEST_DATABASE_URL"], f'DROP DATABASE "{pg_name}" WITH (FORCE)'
            )


def test_0015_builds_its_index_concurrently_and_replaces_an_invalid_one(tmp_path: Path) -> None:
    """On PostgreSQL the audit index is built CONCURRENTLY (appends go on meanwhile); an
    INVALID index left by a failed concurrent build is dropped and built again."""
    if not os.environ.get("BASTION_TEST_DATABASE_URL"):
        pytest.skip("PostgreSQL only: set BASTION_TEST_DATABASE_URL (make test does in CI)")
    url, pg_name = _fresh_url(tmp_path)
    engine = make_engine(url)
    try:
        config = alembic_config(url)
        command.upgrade(config, "0014")
        with engine.begin() as conn:  # what a failed concurrent build leaves: INVALID
            conn.exec_driver_sql(
                "CREATE INDEX ix_audit_events_chain_type_seq ON audit_events (chain, type, seq)"
            )
            conn.exec_driver_sql(
                "UPDATE pg_index SET indisvalid = false"
                " WHERE indexrelid = 'ix_audit_events_chain_type_seq'::regclass"
            )
        command.upgrade(config, "0015")
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT c.relname, i.indisvalid FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE i.indrelid = 'audit_events'::regclass"
            ).all()
        indexes = {str(name): bool(valid) for name, valid in rows}
        assert indexes["ix_audit_events_chain_type_seq"] is True
        assert "ix_audit_events_org_id_id" not in indexes
        assert "ix_audit_events_org_type_id" not in indexes
    finally:
        engine.dispose()
        if pg_name is not None:
            _admin_sql(
                os.environ["BASTION_TEST_DATABASE_URL"], f'DROP DATABASE "{pg_name}" WITH (FORCE)'
            )


def test_0016_keeps_configurers_and_turns_free_text_workflows_into_objects(
    tmp_path: Path,
) -> None:
    """Existing agents are configured by their owner; each free-text workflow id of an
    organisation's secrets and runs becomes a workflow with that id, admitting no agent
    (binding a run to it needs an administrator to list the agent)."""
    url, pg_name = _fresh_url(tmp_path)
    engine = make_engine(url)
    try:
        config = alembic_config(url)
        command.upgrade(config, "0015")
        with engine.begin() as conn:
            for org in ("org_a", "org_b"):
                conn.execute(
                    text(
                        "INSERT INTO organizations (id, name, status, audit_retention_days,"
                        " created_at, updated_at) VALUES (:org, 'o', 'active', 365,"
                        " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                    ),
                    {"org": org},
                )
            conn.exec_driver_sql(
                "INSERT INTO agents (id, org_id, name, description, owner_id, visibility,"
                " team_ids, tools, connections, secrets, version, created_at, updated_at)"
                " VALUES ('agt_1', 'org_a', 'a', '', 'usr_owner', 'org', '[]', '[]', '[]',"
                " '[]', 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
            for org in ("org_a", "org_b"):
                conn.execute(
                    text(
                        "INSERT INTO secrets (id, org_id, name, scope_type, scope_id,"
                        " description, current_version, created_at, updated_at) VALUES"
                        " (:id, :org, 'k', 'workflow', 'payments', '', 0,"
                        " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                    ),
                    {"id": f"sec_{org}", "org": org},
                )
            conn.exec_driver_sql(
                "INSERT INTO agent_runs (id, org_id, agent_id, started_by, on_behalf_of,"
                " workflow_id, token_hash, pepper_version, expires_at, max_tool_calls,"
                " max_pending_approvals, tool_calls, created_at) VALUES ('run_1', 'org_a',"
                " 'agt_1', 'usr_owner', 'usr_owner', 'nightly', 'h', 1, '2026-01-01 00:00:00',"
                " 10, 10, 0, '2026-01-01 00:00:00')"
            )
        command.upgrade(config, "0016")
        with engine.connect() as conn:
            configured = conn.exec_driver_sql("SELECT configured_by FROM agents").scalar_one()
            # Nothing cascades: a rebuilt `agents` table would have taken the run with it.
            runs = conn.exec_driver_sql("SELECT count(*) FROM agent_runs").scalar_one()
            workflows = conn.exec_driver_sql(
                "SELECT org_id, id, name, agent_ids FROM workflows ORDER BY org_id, id"
            ).all()
        assert (configured, runs) == ("usr_owner", 1)
        assert [tuple(row[:3]) for row in workflows] == [
            ("org_a", "nightly", "nightly"),
            ("org_a", "payments", "payments"),
            ("org_b", "payments", "payments"),
        ]
        assert all(row[3] in ([], "[]") for row in workflows)
        command.downgrade(config, "0015")
    finally:
        engine.dispose()
        if pg_name is not None:
            _admin_sql(
                os.environ["BASTION_TEST_DATABASE_URL"], f'DROP DATABASE "{pg_name}" WITH (FORCE)'
            )


def test_0035_gives_new_orgs_90_days_and_keeps_existing_ones(tmp_path: Path) -> None:
    """Only the server default changes: an organisation made before 0035 keeps its period
    (365 by the old default, or what it set); one made after gets 90."""
    url, pg_name = _fresh_url(tmp_path)
    engine = make_engine(url)

    def add(conn: Any, org_id: str, days: int | None = None) -> None:
        values: dict[str, Any] = {"id": org_id, "name": org_id, "status": "active"}
        if days is not None:
            values["audit_retention_days"] = days
        conn.execute(
            insert(_ORGS_AT_0012).values(**values, created_at=utcnow(), updated_at=utcnow())
        )

    def days_of(org_id: str) -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT audit_retention_days FROM organizations WHERE id = :id"),
                    {"id": org_id},
                ).scalar_one()
            )

    try:
        config = alembic_config(url)
        command.upgrade(config, "0034_mcp_credentials")
        with engine.begin() as conn:
            add(conn, "org_old_default")
            add(conn, "org_old_set", 730)
        command.upgrade(config, "0035_retention_default")
        with engine.begin() as conn:
            add(conn, "org_new")
        assert days_of("org_old_default") == 365
        assert days_of("org_old_set") == 730
        assert days_of("org_new") == 90
        command.downgrade(config, "0034_mcp_credentials")
        with engine.begin() as conn:
            add(conn, "org_after_downgrade")
        assert days_of("org_after_downgrade") == 365
        assert days_of("org_new") == 90
    finally:
        engine.dispose()
        if pg_name is not None:
            _admin_sql(
                os.environ["BASTION_TEST_DATABASE_URL"], f'DROP DATABASE "{pg_name}" WITH (FORCE)'
            )
