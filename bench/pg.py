"""Throwaway PostgreSQL databases for benchmarks (`BENCH_DATABASE_URL`, default the
local `test` database's server)."""

from __future__ import annotations

import os
import uuid

from bench.scale import SCALE

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def create_database() -> str | None:
    """A new empty database's URL, or None when PostgreSQL is not reachable or in a smoke
    run (which measures SQLite only: each PostgreSQL server would add its start-up)."""
    if SCALE.smoke:
        return None
    base = os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG)
    try:
        import psycopg

        name = f"bastion_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(base, autocommit=True, connect_timeout=2) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return base.rsplit("/", 1)[0] + "/" + name
    except Exception:
        return None


def drop_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    name = url.rsplit("/", 1)[1]
    base = os.environ.get("BENCH_DATABASE_URL", DEFAULT_PG)
    with psycopg.connect(base, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
