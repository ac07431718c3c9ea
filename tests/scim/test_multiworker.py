"""SCIM de-provisioning and token revocation take effect on the very next request on
every worker: a real `bastion serve --workers 2` sharing the suite's database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import Server, server_env
from tests.factories import Factory, bearer
from tests.scim.conftest import PATCH_URN, SCIM, new_token

pytestmark = pytest.mark.e2e

TRIES = 12  # fresh connections per check, spread over the workers by the kernel


@pytest.fixture(scope="module")
def server(data_dir: Path, database_url: str) -> Iterator[Server]:
    extra = {}
    if os.environ.get("BASTION_TEST_REDIS_URL"):
        extra["BASTION_REDIS_URL"] = os.environ["BASTION_TEST_REDIS_URL"]
    with Server(server_env(data_dir, database_url, **extra), workers=2) as running:
        yield running


def statuses(server: Server, path: str, headers: dict[str, str]) -> set[int]:
    seen = set()
    for _ in range(TRIES):
        with httpx.Client(base_url=server.url, timeout=10) as c:  # a new connection each time
            seen.add(c.get(path, headers=headers).status_code)
    return seen


def test_scim_deactivation_and_deletion_end_access_on_every_worker(
    server: Server, factory: Factory
) -> None:
    org = factory.org()
    token, token_id = new_token(factory.client, org)
    scim = {**bearer(token), "Content-Type": SCIM}
    first, second = factory.member(org, "admin"), factory.member(org, "admin")
    key = factory.api_key(org, "viewer", headers=first.headers)["key"]
    for headers in (first.headers, bearer(key), second.headers):
        assert statuses(server, "/v1/me", headers) == {200}
    assert statuses(server, "/scim/v2/Users?count=1", scim) == {200}
    body = {"schemas": [PATCH_URN], "Operations": [{"op": "replace", "value": {"active": False}}]}
    off = httpx.patch(f"{server.url}/scim/v2/Users/{first.user_id}", json=body, headers=scim)
    assert off.status_code == 200, off.text
    assert statuses(server, "/v1/me", first.headers) == {401}
    assert statuses(server, "/v1/me", bearer(key)) == {401}
    gone = httpx.delete(f"{server.url}/scim/v2/Users/{second.user_id}", headers=scim)
    assert gone.status_code == 204, gone.text
    assert statuses(server, "/v1/me", second.headers) == {401}
    revoked = httpx.delete(
        f"{server.url}/v1/orgs/{org.id}/scim-tokens/{token_id}", headers=org.headers
    )
    assert revoked.status_code == 204
    assert statuses(server, "/scim/v2/Users?count=1", scim) == {401}
