"""Routing overhead of data residency (issue 22): `/v1/me` and an audited write (team
create) through one app with a single region and one with two regions and a directory,
in the same run, same process, interleaved round by round so machine noise hits both
alike. Goal: the two-region app within 5 % of the single-region one (ratio <= 1.05).

In-process (httpx over ASGI, no sockets): what is measured is the app's own cost per
request, where routing's extra work (a cached credential lookup, a context variable,
the routed session's bind) would show. SQLite files in a temporary directory.

    python -m bench.residency [--rounds 7] [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bastion.api.app import create_app
from bastion.core.config import Settings
from bastion.core.context import Actor
from bastion.core.db import begin_write, make_engine
from bastion.core.db.regions import DIRECTORY, in_region, install_guards
from bastion.core.keyring import AUDIT_SIGNING_KEY_FILE, PEPPER_FILE, ROOT_KEY_FILE, create_keyring
from bastion.identity import apikeys
from bastion.migrations.runner import upgrade
from bastion.tenancy import service as tenancy

GOAL_RATIO = 1.05
ACTOR = Actor(type="system", id="bench")


def _settings(data: Path, url: str, regions: dict[str, str] | None = None) -> Settings:
    return Settings(
        data_dir=data,
        database_url=url,
        regions=regions or {},  # type: ignore[arg-type]
        api_requests_per_minute=10_000_000,
        log_json=False,
        log_level="warning",
        sqlite_synchronous="NORMAL",
    )


def _org(app: Any, region: str) -> tuple[str, str]:
    state = app.state.bastion
    if state.regions is not None:
        from bastion.core.ids import new_id

        org_id = new_id("org")
        state.regions.register_org(org_id, region)
    else:
        org_id = None
    with in_region(region) if state.regions is not None else contextlib.nullcontext():
        db = state.sessions()
        begin_write(db)
        with db:
            org = tenancy.create_org(db, ACTOR, name="bench", region=region, org_id=org_id)
            key = apikeys.create_key(
                db, ACTOR, org.id, name="k", role="admin", expires_at=None, hasher=state.hasher
            )
            db.commit()
    return org.id, key.token


def _build(root: Path) -> dict[str, tuple[Any, str, str]]:
    data = root / "data"
    data.mkdir()
    for name in (PEPPER_FILE, ROOT_KEY_FILE, AUDIT_SIGNING_KEY_FILE):
        create_keyring(data / name)
    single = f"sqlite:///{root / 'single.db'}"
    upgrade(single)
    directory = f"sqlite:///{root / 'directory.db'}"
    regions = {"eu": f"sqlite:///{root / 'eu.db'}", "us": f"sqlite:///{root / 'us.db'}"}
    for url in regions.values():
        upgrade(url)
        engine = make_engine(url)
        install_guards(engine)
        engine.dispose()
    engine = make_engine(directory)
    DIRECTORY.create_all(engine)
    engine.dispose()
    apps = {}
    one = create_app(_settings(data, single))
    apps["single region"] = (one, *_org(one, "default"))
    two = create_app(_settings(data, directory, regions))
    _org(two, "eu")  # a neighbour in the other region
    apps["two regions"] = (two, *_org(two, "us"))
    return apps


async def _time(client: httpx.AsyncClient, method: str, path: str, n: int, body: Any) -> float:
    """Mean seconds per request over n sequential requests (all must succeed)."""
    started = time.perf_counter()
    for i in range(n):
        json_body = {"name": f"{body}-{i}-{time.perf_counter_ns()}"} if body else None
        response = await client.request(method, path, json=json_body)
        if response.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
    return (time.perf_counter() - started) / n


async def _run(rounds: int, requests: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        apps = _build(Path(tmp))
        clients = {
            label: httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://bench",
                headers={"Authorization": f"Bearer {token}"},
            )
            for label, (app, _, token) in apps.items()
        }
        cases = {
            "GET /v1/me": lambda label: ("GET", "/v1/me", None),
            "POST teams (audited write)": lambda label: (
                "POST",
                f"/v1/orgs/{apps[label][1]}/teams",
                "t",
            ),
        }
        results: dict[str, Any] = {}
        for case, make in cases.items():
            samples: dict[str, list[float]] = {label: [] for label in apps}
            for label in apps:  # warm caches and connections
                method, path, body = make(label)
                await _time(clients[label], method, path, 50, body)
            for round_ in range(rounds):
                order = list(apps) if round_ % 2 == 0 else list(reversed(apps))
                for label in order:
                    method, path, body = make(label)
                    samples[label].append(await _time(clients[label], method, path, requests, body))
            single = statistics.median(samples["single region"])
            two = statistics.median(samples["two regions"])
            results[case] = {
                "single_region_us": round(single * 1e6, 1),
                "two_regions_us": round(two * 1e6, 1),
                "ratio": round(two / single, 3),
                "goal_met": two / single <= GOAL_RATIO,
            }
        for client in clients.values():
            await client.aclose()
        for app, _, _ in apps.values():
            state = app.state.bastion
            state.writer.close()
            if state.regions is not None:
                state.regions.dispose()
            else:
                state.engine.dispose()
        return results


def main(rounds: int = 7, requests: int = 300) -> dict[str, Any]:
    results = asyncio.run(_run(rounds, requests))
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    main(args.rounds, args.requests)
