"""Data residency with two real regions (two SQLite files, or two PostgreSQL databases
under BASTION_TEST_DATABASE_URL) and a directory, set up by the CLI as an operator does:
every row of an organisation lands in its region's database and nowhere else, the
directory holds routing columns only, a misrouted write is refused by the database, a
region that is down answers 503 for its own organisations only, and an organisation
moves between regions leaving no row behind."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.core.db.regions import ALLOWED_DIRECTORY_COLUMNS, directory_emails, directory_orgs
from bastion.tenancy.models import Team
from tests.conftest import _admin_sql
from tests.tenancy.residency_setup import PASSWORD, Install


def _org_ids_by_table(url: str) -> dict[str, set[str]]:
    """Every table of the live database with an `org_id` column (or the audit chains'
    `chain`), and the organisations its rows name."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            found = {}
            for table in inspect(conn).get_table_names():
                columns = {c["name"] for c in inspect(conn).get_columns(table)}
                column = (
                    "org_id" if "org_id" in columns else "chain" if "chain" in columns else None
                )
                if column is not None:
                    rows = conn.execute(text(f'SELECT DISTINCT "{column}" FROM "{table}"'))  # noqa: S608
                    found[table] = {row[0] for row in rows}
            orgs = {row[0] for row in conn.execute(text("SELECT id FROM organizations"))}
            found["organizations"] = orgs
            return found
    finally:
        engine.dispose()


def _write_a_lot(client: TestClient, org: dict[str, Any], rounds: int) -> None:
    base = f"/v1/orgs/{org['org_id']}"
    for i in range(rounds):
        team = client.post(f"{base}/teams", json={"name": f"t{i}"}, headers=org["headers"])
        assert team.status_code == 201, team.text
        user = client.post(
            f"{base}/users",
            json={
                "email": f"u{i}-{org['org_id'].lower()}@example.com",
                "name": "U",
                "role": "member",
                "password": PASSWORD,
            },
            headers=org["headers"],
        )
        assert user.status_code == 201, user.text
        key = client.post(
            f"{base}/api-keys", json={"name": f"k{i}", "role": "viewer"}, headers=org["headers"]
        )
        assert key.status_code == 201, key.text


def test_every_row_stays_in_its_region(install: Install) -> None:
    eu = install.org("eu", "admin-eu@example.com")
    us = install.org("us", "admin-us@example.com")
    with TestClient(install.app(), raise_server_exceptions=False) as client:
        _write_a_lot(client, eu, 5)
        _write_a_lot(client, us, 5)
        # Sessions from sign-in are routed by the email's region, too.
        for org in (eu, us):
            login = client.post(
                "/v1/auth/login", json={"email": org["email"], "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
            me = client.get("/v1/me", headers={"Authorization": f"Bearer {login.json()['token']}"})
            assert me.status_code == 200, me.text
            assert me.json()["org_id"] == org["org_id"]
            shown = client.get(f"/v1/orgs/{org['org_id']}", headers=org["headers"]).json()
            assert shown["region"] == org["region"]
        # Another region's organisation is not found, as another organisation always is.
        assert client.get(f"/v1/orgs/{us['org_id']}", headers=eu["headers"]).status_code == 404

    mine = {"eu": {eu["org_id"]}, "us": {us["org_id"]}}
    for region, url in install.regions.items():
        tables = _org_ids_by_table(url)
        assert len(tables) > 50  # every tenant table was looked at
        for table, org_ids in tables.items():
            assert org_ids <= mine[region], (region, table, org_ids)
        # The writes did land: the region's own rows are there.
        for table in ("organizations", "teams", "users", "api_keys", "audit_events"):
            assert tables[table] == mine[region], (region, table)


def test_the_directory_holds_routing_columns_only(install: Install) -> None:
    eu = install.org("eu", "who-eu@example.com")
    with TestClient(install.app(), raise_server_exceptions=False) as client:
        login = client.post("/v1/auth/login", json={"email": eu["email"], "password": PASSWORD})
        assert login.status_code == 200
    engine = create_engine(install.directory)
    try:
        with engine.connect() as conn:
            schema = inspect(conn)
            tables = set(schema.get_table_names())
            assert tables == set(ALLOWED_DIRECTORY_COLUMNS)
            for table in tables:
                columns = {c["name"] for c in schema.get_columns(table)}
                assert columns == ALLOWED_DIRECTORY_COLUMNS[table], table
            routed = conn.execute(select(directory_orgs)).all()
            assert [(r.org_id, r.region) for r in routed] == [(eu["org_id"], "eu")]
            hashes = [r.email_hash for r in conn.execute(select(directory_emails))]
            assert len(hashes) == 1
            assert "@" not in hashes[0]
            assert eu["email"] not in hashes[0]
            # No email, name or secret anywhere in the directory.
            dump = " ".join(
                str(value)
                for table in tables
                for row in conn.execute(text(f'SELECT * FROM "{table}"'))  # noqa: S608
                for value in row
            )
            assert "example.com" not in dump
            assert "Org eu" not in dump
    finally:
        engine.dispose()


def test_a_misrouted_write_is_refused_by_the_database(install: Install) -> None:
    eu = install.org("eu", "mis-eu@example.com")
    install.org("us", "mis-us@example.com")
    engine = create_engine(install.regions["us"])
    refused = 0
    try:
        for i in range(20):
            with Session(engine) as db:
                db.add(
                    Team(
                        id=f"team_{i:026d}",
                        org_id=eu["org_id"],  # an eu organisation, written to us
                        name=f"misrouted {i}",
                        description="",
                    )
                )
                with pytest.raises(IntegrityError):
                    db.commit()
            refused += 1
        # Moving an existing row to another region's organisation is refused as well.
        move = text("UPDATE users SET org_id = :org")
        with Session(engine) as db, pytest.raises(IntegrityError):
            db.execute(move, {"org": eu["org_id"]})
    finally:
        engine.dispose()
    assert refused == 20
    assert _org_ids_by_table(install.regions["us"])["teams"] == set()


def test_the_region_is_fixed_at_creation(install: Install) -> None:
    eu = install.org("eu", "fixed-eu@example.com")
    with TestClient(install.app(), raise_server_exceptions=False) as client:
        path = f"/v1/orgs/{eu['org_id']}"
        same = client.patch(path, json={"region": "eu"}, headers=eu["headers"])
        assert same.status_code == 200
        assert same.json()["region"] == "eu"
        moved = client.patch(path, json={"region": "us"}, headers=eu["headers"])
        assert moved.status_code == 409, moved.text
        assert client.get(path, headers=eu["headers"]).json()["region"] == "eu"
    install.cli("org", "create", "X", "--admin-email", "x@example.com", "--region", "mars", code=2)


def _take_down(install: Install, region: str) -> Any:
    """Make a region's database unreachable; returns how to bring it back."""
    url = install.regions[region]
    base = os.environ.get("BASTION_TEST_DATABASE_URL")
    if base:
        name = url.rsplit("/", 1)[1]
        _admin_sql(base, f'ALTER DATABASE "{name}" RENAME TO "{name}_away"')
        return lambda: _admin_sql(base, f'ALTER DATABASE "{name}_away" RENAME TO "{name}"')
    path = Path(url.removeprefix("sqlite:///"))
    aside = path.with_suffix(".away")
    path.rename(aside)
    path.mkdir()  # a directory where the database file was: it cannot be opened

    def restore() -> None:
        shutil.rmtree(path)
        aside.rename(path)

    return restore


def test_a_region_down_is_503_for_its_orgs_only(install: Install) -> None:
    eu = install.org("eu", "down-eu@example.com")
    us = install.org("us", "down-us@example.com")
    restore = _take_down(install, "us")
    try:
        with TestClient(install.app(), raise_server_exceptions=False) as client:
            for path in ("/v1/me", f"/v1/orgs/{us['org_id']}", f"/v1/orgs/{us['org_id']}/teams"):
                down = client.get(path, headers=us["headers"])
                assert down.status_code == 503, (path, down.text)
                assert down.json()["code"] in ("database_busy", "region_unavailable")
            wrote = client.post(
                f"/v1/orgs/{us['org_id']}/teams", json={"name": "x"}, headers=us["headers"]
            )
            assert wrote.status_code == 503, wrote.text
            for path in ("/v1/me", f"/v1/orgs/{eu['org_id']}"):
                assert client.get(path, headers=eu["headers"]).status_code == 200
            made = client.post(
                f"/v1/orgs/{eu['org_id']}/teams", json={"name": "up"}, headers=eu["headers"]
            )
            assert made.status_code == 201, made.text
    finally:
        restore()
    with TestClient(install.app(), raise_server_exceptions=False) as client:
        assert client.get("/v1/me", headers=us["headers"]).status_code == 200


def test_export_and_import_move_an_org_leaving_no_row(install: Install, tmp_path: Path) -> None:
    eu = install.org("eu", "move-eu@example.com")
    stays = install.org("eu", "stay-eu@example.com")
    with TestClient(install.app(), raise_server_exceptions=False) as client:
        _write_a_lot(client, eu, 3)
        _write_a_lot(client, stays, 1)
        before = client.get(f"/v1/orgs/{eu['org_id']}/teams", headers=eu["headers"]).json()
    dump = tmp_path / "org.json"
    exported = install.cli("org", "export", eu["org_id"], "--output", str(dump), "--json")
    assert exported["rows"] > 20
    assert dump.stat().st_mode & 0o777 == 0o600
    moved = install.cli("org", "import", str(dump), "--region", "us", "--json")
    assert moved["from"] == "eu"
    assert moved["left_behind"] == 0
    assert moved["rows"] == exported["rows"]
    left = _org_ids_by_table(install.regions["eu"])
    assert all(eu["org_id"] not in org_ids for org_ids in left.values())
    assert stays["org_id"] in left["teams"]  # the other organisation is untouched
    arrived = _org_ids_by_table(install.regions["us"])
    assert arrived["teams"] == {eu["org_id"]}
    with TestClient(install.app(), raise_server_exceptions=False) as client:
        shown = client.get(f"/v1/orgs/{eu['org_id']}", headers=eu["headers"])
        assert shown.status_code == 200, shown.text
        assert shown.json()["region"] == "us"
        after = client.get(f"/v1/orgs/{eu['org_id']}/teams", headers=eu["headers"]).json()
        assert after == before
        verified = client.get(f"/v1/orgs/{eu['org_id']}/audit/verify", headers=eu["headers"])
        assert verified.status_code in (200, 404), verified.text
    install.cli("org", "import", str(dump), "--region", "us", code=1)  # there already
