"""Routing across an organisation's move, with two real regions and a directory: every
running worker's routing caches follow a move (`bastion org import --region`) within
the routing revision's recheck, without a restart."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from bastion.core.db.regions import ROUTING_RECHECK_SECONDS
from tests.tenancy.residency_setup import Install


def _teams_of(url: str, org_id: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT name FROM teams WHERE org_id = :o"), {"o": org_id})
            return sorted(row[0] for row in rows)
    finally:
        engine.dispose()


def test_a_move_reaches_every_running_worker(install: Install, tmp_path: Path) -> None:
    org = install.org("eu", "moving@example.com")
    base = f"/v1/orgs/{org['org_id']}"
    # Two workers of one running server: each its own routing caches, both warm.
    with (
        TestClient(install.app(), raise_server_exceptions=False) as one,
        TestClient(install.app(), raise_server_exceptions=False) as two,
    ):
        for client in (one, two):
            shown = client.get(base, headers=org["headers"])
            assert shown.status_code == 200, shown.text
            assert shown.json()["region"] == "eu"
            assert client.get("/v1/me", headers=org["headers"]).status_code == 200
        dump = tmp_path / "org.json"
        install.cli("org", "export", org["org_id"], "--output", str(dump), "--json")
        moved = install.cli("org", "import", str(dump), "--region", "us", "--json")
        assert (moved["from"], moved["left_behind"]) == ("eu", 0)
        time.sleep(ROUTING_RECHECK_SECONDS + 0.2)  # each worker re-reads the revision
        for i, client in enumerate((one, two)):
            shown = client.get(base, headers=org["headers"])
            assert shown.status_code == 200, shown.text
            assert shown.json()["region"] == "us"
            assert client.get("/v1/me", headers=org["headers"]).status_code == 200
            made = client.post(f"{base}/teams", json={"name": f"after-{i}"}, headers=org["headers"])
            assert made.status_code == 201, made.text
    # The writes after the move landed in the new region, none in the old one.
    assert _teams_of(install.regions["us"], org["org_id"]) == ["after-0", "after-1"]
    assert _teams_of(install.regions["eu"], org["org_id"]) == []
