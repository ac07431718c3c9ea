"""Test data built through the real services (the same code paths the API uses)."""

from __future__ import annotations

import contextlib
import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient

from bastion.api.state import AppState
from bastion.core.context import Actor
from bastion.core.db import begin_write
from bastion.core.db.regions import in_region
from bastion.core.ids import new_id
from bastion.identity import apikeys
from bastion.identity import service as users
from bastion.tenancy import service as tenancy

PASSWORD = "correct horse battery staple"
ACTOR = Actor(type="system", id="tests")
_counter = itertools.count()


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}-{next(_counter)}@example.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def step_up(client: TestClient, headers: dict[str, str], password: str = PASSWORD) -> None:
    """Verify a person (without a factor) again: a session whose sign-in is older than
    its organisation's `step_up_max_age` may then take sensitive actions again."""
    response = client.post(
        "/v1/auth/step-up", json={"method": "password", "password": password}, headers=headers
    )
    assert response.status_code == 200, response.text


@dataclass
class Member:
    user_id: str
    email: str
    role: str
    token: str  # a session token from a real sign-in

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


@dataclass
class Org:
    id: str
    admin: Member
    admin_key: str
    members: dict[str, Member] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.admin_key)


class Factory:
    def __init__(self, state: AppState, client: TestClient, *, region: str | None = None) -> None:
        """`region`: every organisation in that region (under data residency), for tests
        that run rounds or read rows outside a request (those are the home region's)."""
        self.state = state
        self.client = client
        self.region = region

    def _tx(self) -> Any:
        db = self.state.sessions()
        begin_write(db)
        return db

    def org(self, name: str = "Acme", region: str | None = None) -> Org:
        regions = self.state.regions
        if regions is None:
            return self._org(name, "default")
        # Data residency on (BASTION_TEST_REGIONS): the regions in turn, routed first.
        Factory._turn += 1
        chosen = region or self.region or regions.names[Factory._turn % len(regions.names)]
        org_id = new_id("org")
        regions.register_org(org_id, chosen)
        with in_region(chosen):
            return self._org(name, chosen, org_id)

    _turn = 0

    def _org(self, name: str, region: str, org_id: str | None = None) -> Org:
        email = unique_email("admin")
        with self._tx() as db:
            org = tenancy.create_org(db, ACTOR, name=name, region=region, org_id=org_id)
            created = users.create_user(
                db,
                ACTOR,
                org.id,
                email=email,
                name="Admin",
                role="admin",
                password=PASSWORD,
                hasher=self.state.hasher,
                setup_ttl=3600,
            )
            key = apikeys.create_key(
                db,
                ACTOR,
                org.id,
                name="admin-key",
                role="admin",
                expires_at=None,
                hasher=self.state.hasher,
            )
            db.commit()
        admin = Member(created.user.id, email, "admin", self.login(email))
        return Org(org.id, admin, key.token)

    def login(self, email: str, password: str = PASSWORD) -> str:
        response = self.client.post("/v1/auth/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        return str(response.json()["token"])

    def member(self, org: Org, role: str = "member") -> Member:
        email = unique_email(role)
        response = self.client.post(
            f"/v1/orgs/{org.id}/users",
            json={"email": email, "name": role.title(), "role": role, "password": PASSWORD},
            headers=org.headers,
        )
        assert response.status_code == 201, response.text
        member = Member(response.json()["id"], email, role, self.login(email))
        org.members[member.user_id] = member
        return member

    def api_key(
        self, org: Org, role: str = "admin", headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        response = self.client.post(
            f"/v1/orgs/{org.id}/api-keys",
            json={"name": f"key-{role}", "role": role},
            headers=headers or org.headers,
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    def pending_tool_call(self, org: Org, tool: str = "refund") -> dict[str, Any]:
        """A member's run of an org-wide agent asks for a high-risk tool: with no policy,
        an approval is requested. The call's JSON (with `approval_id`, `run_id`)."""
        member = self.member(org, "member")
        base = f"/v1/orgs/{org.id}"
        body = {"name": "agent", "visibility": "org", "tools": [{"name": tool, "risk": "high"}]}
        agent = self.client.post(f"{base}/agents", json=body, headers=org.headers).json()["id"]
        run = self.client.post(f"{base}/agents/{agent}/runs", json={}, headers=member.headers)
        call = self.client.post(
            f"/v1/runs/{run.json()['run_id']}/tool-calls",
            json={"tool": tool, "arguments": {"amount": 5}},
            headers=bearer(run.json()["token"]),
        ).json()
        assert call["decision"] == "pending", call
        return dict(call)


def home_factory(state: AppState, client: TestClient) -> Factory:
    """A factory whose organisations live in the home region (under data residency): for
    tests that read or change rows directly, outside a request, where the home region is
    what an unrouted session reaches."""
    return Factory(state, client, region=state.regions.home if state.regions else None)


@contextlib.contextmanager
def in_org_region(state: AppState, org_id: str) -> Iterator[None]:
    """Run the block's database work (a round, a direct read or write, outside a
    request) in the organisation's region, as a request or a region's worker would;
    nothing changes without data residency."""
    regions = state.regions
    if regions is None:
        yield
        return
    with in_region(regions.region_of(org_id) or regions.home):
        yield
