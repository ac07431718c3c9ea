"""The PostgreSQL pool per server process is bounded by configuration (issue 13: a few
servers' pools once outnumbered PostgreSQL's connections)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy.exc

from bastion.api.app import create_app
from tests.conftest import make_settings


def test_a_server_opens_at_most_pool_size_plus_overflow_connections(
    data_dir: Path, database_url: str, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("the ORM pool is bounded on PostgreSQL (SQLite connections are files)")
    app = create_app(
        make_settings(
            data_dir,
            database_url,
            database_pool_size=2,
            database_pool_overflow=1,
            database_write_wait=0.2,
        )
    )
    engine = app.state.bastion.engine
    held = []
    try:
        held = [engine.connect() for _ in range(3)]  # the pool's 2, and 1 more in a burst
        with pytest.raises(sqlalchemy.exc.TimeoutError):
            engine.connect()  # a fourth waits write_wait for one back, then fails
        held.pop().close()
        held.append(engine.connect())  # a returned connection serves the next caller
    finally:
        for conn in held:
            conn.close()
        engine.dispose()
