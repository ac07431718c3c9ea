"""Crash safety of the audit trail: `kill -9` a two-worker server in the middle of a
burst of audited writes; afterwards the chain verifies and every write that was
answered 2xx has its audit event (the event commits in the same transaction)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.e2e.server import Server, server_env
from tests.factories import Factory

pytestmark = pytest.mark.e2e

WRITERS = 6


def test_kill_9_during_a_burst_keeps_the_chain_whole(
    client: TestClient, factory: Factory, data_dir: Path, database_url: str
) -> None:
    org = factory.org()
    extra = {}
    if os.environ.get("BASTION_TEST_REDIS_URL"):
        extra["BASTION_REDIS_URL"] = os.environ["BASTION_TEST_REDIS_URL"]
    server = Server(server_env(data_dir, database_url, **extra), workers=2).start()
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def write() -> None:
        with httpx.Client(base_url=server.url, headers=org.headers, timeout=5) as http:
            while not stop.is_set():
                try:
                    response = http.post(
                        f"/v1/orgs/{org.id}/teams", json={"name": f"t-{uuid.uuid4().hex}"}
                    )
                except httpx.HTTPError:
                    return  # the server is gone
                if response.status_code == 201:
                    with lock:
                        acknowledged.append(response.json()["id"])

    threads = [threading.Thread(target=write) for _ in range(WRITERS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()  # mid-burst: requests are in flight
    stop.set()
    for thread in threads:
        thread.join(10)
    assert len(acknowledged) >= 40

    verified = client.post(f"/v1/orgs/{org.id}/audit-events/verify", headers=org.headers).json()
    assert verified["valid"] is True, verified
    for team_id in acknowledged:
        found = client.get(
            f"/v1/orgs/{org.id}/audit-events",
            params={"resource": team_id, "type": "team.created"},
            headers=org.headers,
        ).json()["data"]
        assert len(found) == 1, team_id

    # The restarted server carries on the same chain.
    with Server(server.env, workers=2) as again:
        made = httpx.post(
            f"{again.url}/v1/orgs/{org.id}/teams", json={"name": "after"}, headers=org.headers
        )
        assert made.status_code == 201
    verified = client.post(f"/v1/orgs/{org.id}/audit-events/verify", headers=org.headers).json()
    assert verified["valid"] is True, verified
