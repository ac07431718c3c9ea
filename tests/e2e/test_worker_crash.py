"""`kill -9` of one worker during sustained audited writes (team creates, secret reveals,
webhook deliveries through the group commit): no change that was acknowledged is lost,
each has its audit event, and the chain verifies. The client names every request
(`X-Request-Id`) and keeps the ids answered 2xx; afterwards each must be found."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.e2e.server import Server, server_env
from tests.factories import Factory
from tests.webhooks.test_gateway import body_for, create_endpoint, new_secret, sign

pytestmark = pytest.mark.e2e

WRITERS = 6


def _workers(server: Server) -> list[int]:
    assert server.process is not None
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    return [int(pid) for pid in children.read_text().split()]


def _events(client: TestClient, org: Any, type_: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"type": type_, "limit": 200, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/v1/orgs/{org.id}/audit-events", params=params, headers=org.headers)
        assert page.status_code == 200, page.text
        found += page.json()["data"]
        cursor = page.json().get("next_cursor")
        if not cursor:
            return found


def test_kill_9_of_a_worker_loses_no_acknowledged_write(
    client: TestClient, factory: Factory, data_dir: Path, database_url: str
) -> None:
    org = factory.org()
    secret = "crash-secret"
    hook_secret = new_secret("github")
    endpoint = create_endpoint(client, org, "github", hook_secret)
    put = client.put(
        f"/v1/orgs/{org.id}/secrets/{secret}", json={"value": "v" * 32}, headers=org.headers
    )
    assert put.status_code == 200, put.text
    extra = {}
    if os.environ.get("BASTION_TEST_REDIS_URL"):
        extra["BASTION_REDIS_URL"] = os.environ["BASTION_TEST_REDIS_URL"]
    server = Server(server_env(data_dir, database_url, **extra), workers=2).start(timeout=90)
    acknowledged: dict[str, list[str]] = {"team": [], "reveal": [], "hook": []}
    created: list[str] = []  # the acknowledged teams' ids
    lock = threading.Lock()
    stop = threading.Event()

    def write(n: int) -> None:
        kinds = ("team", "reveal", "hook")
        with httpx.Client(base_url=server.url, timeout=10) as http:
            i = 0
            while not stop.is_set():
                kind = kinds[(n + i) % 3]
                i += 1
                rid = f"crash-{kind}-{uuid.uuid4().hex}"
                headers = {**org.headers, "X-Request-Id": rid}
                try:
                    if kind == "team":
                        answer = http.post(
                            f"/v1/orgs/{org.id}/teams",
                            json={"name": f"t-{uuid.uuid4().hex}"},
                            headers=headers,
                        )
                    elif kind == "reveal":
                        answer = http.post(
                            f"/v1/orgs/{org.id}/secrets/{secret}/reveal", json={}, headers=headers
                        )
                    else:
                        body = body_for("github")
                        signed = {**sign("github", hook_secret, body), "X-Request-Id": rid}
                        answer = http.post(endpoint["url"], content=body, headers=signed)
                except httpx.HTTPError:
                    continue  # that worker died mid-request: not acknowledged
                if answer.status_code < 300:
                    with lock:
                        acknowledged[kind].append(rid)
                        if kind == "team":
                            created.append(answer.json()["id"])

    threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 20
        while sum(map(len, acknowledged.values())) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        victim = _workers(server)[0]
        os.kill(victim, signal.SIGKILL)  # mid-burst: its requests are in flight
        before = sum(map(len, acknowledged.values()))
        deadline = time.monotonic() + 20
        while sum(map(len, acknowledged.values())) < before + 30 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
        server.stop()

    assert all(len(ids) >= 10 for ids in acknowledged.values()), {
        k: len(v) for k, v in acknowledged.items()
    }
    verified = client.post(f"/v1/orgs/{org.id}/audit-events/verify", headers=org.headers).json()
    assert verified["valid"] is True, verified
    recorded = {
        "team": {e["request_id"] for e in _events(client, org, "team.created")},
        "reveal": {e["request_id"] for e in _events(client, org, "secret.revealed")},
        "hook": {e["request_id"] for e in _events(client, org, "webhook_event.accepted")},
    }
    for kind, ids in acknowledged.items():
        missing = set(ids) - recorded[kind]
        assert not missing, (kind, len(missing), sorted(missing)[:3])
    stored: set[str] = set()
    cursor = None
    while True:  # and each acknowledged team is there itself
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/v1/orgs/{org.id}/teams", params=params, headers=org.headers).json()
        stored |= {team["id"] for team in page["data"]}
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert set(created) <= stored
