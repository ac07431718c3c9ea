"""Test fixtures shared by the whole suite.

Backends: SQLite always. PostgreSQL when `BASTION_TEST_DATABASE_URL` is set (each xdist
worker gets its own database, created on the fly); Redis when `BASTION_TEST_REDIS_URL`
is set. `scripts/test.sh` runs the suite once per backend; under `CI=true` it insists on
PostgreSQL and Redis.

Isolation: every test builds its own organisations with unique emails (see `factories`),
and every row belongs to an organisation, so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bastion.api.app import create_app
from bastion.core.clock import clock
from bastion.core.config import Settings
from bastion.core.keyring import AUDIT_SIGNING_KEY_FILE, PEPPER_FILE, ROOT_KEY_FILE, create_keyring
from bastion.migrations.runner import upgrade
from tests.factories import Factory

pytest_plugins = ["tests.receivers"]  # real syslog/HTTP receivers and a throwaway PKI


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _admin_sql(base: str, statement: str) -> None:
    admin = create_engine(
        make_url(base).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    try:
        with admin.connect() as conn:
            conn.execute(text(statement))
    finally:
        admin.dispose()


def _postgres_database(base: str) -> tuple[str, str]:
    """A database of this run and worker's own, created fresh: (url, name)."""
    name = f"bastion_test_{_worker()}_{uuid.uuid4().hex[:8]}"
    _admin_sql(base, f'CREATE DATABASE "{name}"')
    url = make_url(base).set(drivername="postgresql+psycopg", database=name)
    return url.render_as_string(hide_password=False), name


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bastion-data")
    create_keyring(path / PEPPER_FILE)
    create_keyring(path / ROOT_KEY_FILE)
    create_keyring(path / AUDIT_SIGNING_KEY_FILE)
    return path


# `BASTION_TEST_REGIONS=2`: the suite with data residency on, two regions (two SQLite
# files, or two PostgreSQL databases under BASTION_TEST_DATABASE_URL) and a directory;
# the factory creates organisations in the regions in turn (docs/residency.md).
TEST_REGIONS = int(os.environ.get("BASTION_TEST_REGIONS") or 0)
REGION_NAMES = ("eu", "us", "ap", "sa")
# Directory URL -> its regions: every app a test builds on the session's database
# (`make_settings(data_dir, database_url)`) is a regional one too.
REGION_SETS: dict[str, dict[str, str]] = {}


def _fresh_database(data_dir: Path, name: str) -> tuple[str, str | None]:
    """A new empty database: (url, PostgreSQL database name to drop, or None)."""
    base = os.environ.get("BASTION_TEST_DATABASE_URL")
    if not base:
        return f"sqlite:///{data_dir / name}.db", None
    return _postgres_database(base)


def prepare_regions(directory: str, regional: dict[str, str]) -> None:
    """Each region's database at head with its residency guards; the directory's tables."""
    from bastion.core.db import make_engine
    from bastion.core.db.regions import DIRECTORY, install_guards

    for url in regional.values():
        upgrade(url)
        engine = make_engine(url)
        install_guards(engine)
        engine.dispose()
    engine = make_engine(directory)
    DIRECTORY.create_all(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def region_urls(database_url: str) -> dict[str, str]:
    """The regions' databases under `BASTION_TEST_REGIONS` (made with the directory by
    `database_url`); empty without."""
    return REGION_SETS.get(database_url, {})


@contextmanager
def _test_database(where: Path) -> Iterator[str]:
    """A fresh database at head (SQLite files under `where`, or PostgreSQL databases
    under BASTION_TEST_DATABASE_URL), dropped afterwards; under BASTION_TEST_REGIONS the
    directory's URL, with its regions' databases made alongside (`REGION_SETS`)."""
    base = os.environ.get("BASTION_TEST_DATABASE_URL")
    if TEST_REGIONS:  # the directory (routing tables only) and the regions' databases
        names = ("directory", *REGION_NAMES[:TEST_REGIONS])
        made = {n: _fresh_database(where, n) for n in names}
        url = made["directory"][0]
        REGION_SETS[url] = {n: u for n, (u, _) in made.items() if n != "directory"}
        prepare_regions(url, REGION_SETS[url])
        yield url
        for _, name in made.values():
            if base and name:
                _admin_sql(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    if not base:
        url = f"sqlite:///{where / 'bastion.db'}"
        upgrade(url)
        yield url
        return
    url, name = _postgres_database(base)
    upgrade(url)
    yield url
    _admin_sql(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(data_dir: Path) -> Iterator[str]:
    with _test_database(data_dir) as url:
        yield url


@pytest.fixture(scope="module")
def module_database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of this test module's own, for tests whose background rounds serve
    every organisation in the database (outbound deliveries, notices): other modules'
    backlogs in the shared one would decide what a round reaches."""
    with _test_database(tmp_path_factory.mktemp("module-db")) as url:
        yield url


@pytest.fixture(scope="session")
def backend(database_url: str) -> str:
    return "postgresql" if database_url.startswith("postgresql") else "sqlite"


def make_settings(data_dir: Path, database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "redis_url": os.environ.get("BASTION_TEST_REDIS_URL") or None,
        # Cheap hashing keeps the suite fast; production defaults are tested separately.
        "argon2_time_cost": 1,
        "argon2_memory_kib": 8,
        "argon2_parallelism": 1,
        "api_requests_per_minute": 1_000_000,
        # A loaded CI machine can stall a writer past the 5 s default (seen as a 503 in
        # test_rank_rules); the tests of the busy answer set their own, shorter wait.
        "database_write_wait": 30,
        "login_failures_per_ip": 1_000_000,
        "log_json": False,
        # Tests send to receivers on loopback; sink and webhook delivery run when a test asks.
        "outbound_allow": ["127.0.0.0/8"],
        # … over plain http:// and TCP (production needs TLS or an explicit allowance).
        "outbound_plaintext_allow": ["127.0.0.0/8"],
        "audit_sink_poll_interval": 60,
        "alert_poll_interval": 60,
        "webhook_poll_interval": 60,
        "approval_notify_interval": 60,
        # Controls are evaluated and their history stored when a test asks.
        "compliance_evaluate_interval": 0,
        # Each app gets its own rate-limit counters, even when they share one Redis.
        "rate_limit_namespace": f"test-{uuid.uuid4().hex}",
    }
    if database_url in REGION_SETS:
        values["regions"] = REGION_SETS[database_url]
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def settings(data_dir: Path, database_url: str, region_urls: dict[str, str]) -> Settings:
    return make_settings(data_dir, database_url)


@pytest.fixture(scope="session")
def app(settings: Settings):  # type: ignore[no-untyped-def]
    return create_app(settings)


@pytest.fixture(scope="session")
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def factory(app, client: TestClient) -> Factory:  # type: ignore[no-untyped-def]
    return Factory(app.state.bastion, client)


@pytest.fixture(autouse=True)
def _reset_clock() -> Iterator[None]:
    yield
    clock.reset()
