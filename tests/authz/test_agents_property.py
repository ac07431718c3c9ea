"""Agents in the authorization engine against a naive reference written from the model
(docs/authorization.md, docs/agents.md). Hypothesis builds random organisations — users
of every role, some suspended, teams, agents owned by different people with every
visibility, connected to some sources, documents with reader ACLs and a deny rule —
through the API; every answer about agents as resources (check, filter, list) and about
agents reading documents for a user (`on_behalf_of`: check, filter) must match."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import PASSWORD, Factory, bearer, unique_email

ROLES = ["admin", "manager", "member", "viewer"]
CAN_CREATE = {"admin", "manager", "member"}  # agents:create (docs/roles.md)
CAN_USE = {"admin", "manager", "member"}  # agents:use
MANAGES_AGENTS = {"admin"}  # agents:manage
MANAGES_SOURCES = {"admin", "manager"}  # sources:manage
ACTIONS = ["read", "use", "edit", "share", "delete"]
VISIBILITIES = ["private", "team", "org", "public"]
N_TEAMS, N_SOURCES = 2, 2


@dataclass
class World:
    users: list[tuple[str, bool]]  # (role, active)
    memberships: set[tuple[int, int]]  # (user, team)
    agents: list[tuple[int, str, frozenset[int], frozenset[int]]]  # owner, vis, teams, sources
    readers: set[tuple[int, int]]  # (source, principal: users first, then teams)
    docs: list[tuple[int, int]]  # (source, level); a rule denies level >= 2


@st.composite
def worlds(draw: st.DrawFn) -> World:
    users = draw(
        st.lists(
            st.tuples(st.sampled_from(ROLES), st.sampled_from([True, True, True, False])),
            min_size=2,
            max_size=4,
        )
    )
    creators = [i for i, (role, _) in enumerate(users) if role in CAN_CREATE]
    if not creators:
        users[0] = ("member", users[0][1])
        creators = [0]
    memberships = draw(
        st.sets(st.tuples(st.integers(0, len(users) - 1), st.integers(0, N_TEAMS - 1)), max_size=4)
    )
    teams = st.frozensets(st.integers(0, N_TEAMS - 1), min_size=1)
    agents = draw(
        st.lists(
            st.tuples(
                st.sampled_from(creators),
                st.sampled_from(VISIBILITIES),
                teams,
                st.frozensets(st.integers(0, N_SOURCES - 1)),
            ),
            min_size=1,
            max_size=4,
        )
    )
    readers = draw(
        st.sets(
            st.tuples(st.integers(0, N_SOURCES - 1), st.integers(0, len(users) + N_TEAMS - 1)),
            max_size=4,
        )
    )
    docs = draw(
        st.lists(
            st.tuples(st.integers(0, N_SOURCES - 1), st.integers(0, 2)), min_size=1, max_size=4
        )
    )
    return World(users, memberships, agents, readers, docs)


# --- the reference ----------------------------------------------------------------------


def _teams_of(world: World, user: int) -> set[int]:
    return {t for u, t in world.memberships if u == user}


def agent_allows(world: World, user: int, agent: int, action: str) -> bool:
    role, active = world.users[user]
    owner, visibility, agent_teams, _ = world.agents[agent]
    if not active:
        return False
    if role in MANAGES_AGENTS or user == owner:
        return True
    visible = visibility in ("org", "public") or (
        visibility == "team" and bool(_teams_of(world, user) & agent_teams)
    )
    if not visible:
        return False
    if action == "read":
        return True  # every built-in role holds agents:read
    if action == "use":
        return role in CAN_USE
    return False


def user_reads(world: World, user: int, doc: int) -> bool:
    role, active = world.users[user]
    source, level = world.docs[doc]
    if not active or level >= 2:  # the deny rule binds everyone
        return False
    if role in MANAGES_SOURCES:
        return True
    principals = {user} | {len(world.users) + t for t in _teams_of(world, user)}
    return any((source, p) in world.readers for p in principals)


def agent_reads_for(world: World, agent: int, user: int, doc: int) -> bool:
    source, level = world.docs[doc]
    agent_side = source in world.agents[agent][3] and level < 2
    return agent_side and user_reads(world, user, doc)


# --- building it through the API ----------------------------------------------------------


@dataclass
class Built:
    org: str
    headers: dict[str, str]
    users: list[str]
    agents: list[str]
    docs: list[str]


def _build(client: TestClient, factory: Factory, world: World) -> Built:
    org = factory.org()
    h, base = org.headers, f"/v1/orgs/{org.id}"

    def ok(response: Any) -> Any:
        assert response.status_code in (200, 201, 204), response.text
        return response.json() if response.status_code != 204 else None

    users, sessions = [], []
    for role, _ in world.users:
        email = unique_email()
        body = {"email": email, "name": "U", "role": role, "password": PASSWORD}
        users.append(ok(client.post(f"{base}/users", json=body, headers=h))["id"])
        sessions.append(bearer(factory.login(email)))
    teams = [
        ok(client.post(f"{base}/teams", json={"name": f"t{i}-{uuid.uuid4().hex[:6]}"}, headers=h))[
            "id"
        ]
        for i in range(N_TEAMS)
    ]
    for u, t in sorted(world.memberships):
        ok(client.put(f"{base}/teams/{teams[t]}/members/{users[u]}", headers=h))
    sources = [
        ok(client.post(f"{base}/sources", json={"name": f"s{i}"}, headers=h))["id"]
        for i in range(N_SOURCES)
    ]
    principals = users + teams
    for s, p in sorted(world.readers):
        body = {"relation": "reader"}
        ok(client.put(f"{base}/sources/{sources[s]}/acl/{principals[p]}", json=body, headers=h))
    docs = [
        ok(
            client.post(
                f"{base}/sources/{sources[s]}/documents",
                json={"external_id": f"d{i}", "metadata": {"level": level}},
                headers=h,
            )
        )["id"]
        for i, (s, level) in enumerate(world.docs)
    ]
    rule = {
        "effect": "deny",
        "action": "read",
        "resource_type": "document",
        "condition": "resource.metadata.level >= 2",
    }
    ok(client.post(f"{base}/authz/rules", json=rule, headers=h))
    agents = []
    for i, (owner, visibility, agent_teams, connected) in enumerate(world.agents):
        body = {
            "name": f"agent-{i}",
            "visibility": visibility,
            "team_ids": [teams[t] for t in sorted(agent_teams)] if visibility == "team" else [],
        }
        agent = ok(client.post(f"{base}/agents", json=body, headers=sessions[owner]))["id"]
        # Connected by the admin: a member may connect only sources they edit.
        connections = {"connections": [sources[s] for s in sorted(connected)]}
        ok(client.patch(f"{base}/agents/{agent}", json=connections, headers=h))
        agents.append(agent)
    for user, (_, active) in zip(users, world.users, strict=True):
        if not active:
            ok(client.patch(f"{base}/users/{user}", json={"status": "suspended"}, headers=h))
    return Built(org.id, h, users, agents, docs)


def _post(client: TestClient, b: Built, path: str, body: dict[str, Any]) -> Any:
    response = client.post(f"/v1/orgs/{b.org}/authz/{path}", json=body, headers=b.headers)
    assert response.status_code == 200, response.text
    return response.json()


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(world=worlds())
def test_agents_match_the_reference(client: TestClient, factory: Factory, world: World) -> None:
    b = _build(client, factory, world)
    questions = [
        (u, a, action)
        for u in range(len(b.users))
        for a in range(len(b.agents))
        for action in ACTIONS
    ]
    for start in range(0, len(questions), 100):
        chunk = questions[start : start + 100]
        checks = [
            {"subject": b.users[u], "action": action, "resource": f"agent:{b.agents[a]}"}
            for u, a, action in chunk
        ]
        results = _post(client, b, "check-batch", {"checks": checks})["results"]
        for (u, a, action), result in zip(chunk, results, strict=True):
            expected = agent_allows(world, u, a, action)
            assert result["allowed"] == expected, (world, u, a, action, result)
    for u, user in enumerate(b.users):
        for action in ("read", "use"):
            expected = [
                b.agents[a] for a in range(len(b.agents)) if agent_allows(world, u, a, action)
            ]
            body = {"subject": user, "action": action, "resource_type": "agent"}
            filtered = _post(client, b, "filter", {**body, "resource_ids": b.agents})
            assert filtered["allowed_ids"] == expected, (world, u, action)
            listed = _post(client, b, "list", body)["data"]
            assert listed == sorted(expected), (world, u, action)
    for a, agent in enumerate(b.agents):
        for u, user in enumerate(b.users):
            expected = [b.docs[d] for d in range(len(b.docs)) if agent_reads_for(world, a, u, d)]
            body = {
                "subject": agent,
                "on_behalf_of": user,
                "action": "read",
                "resource_type": "document",
            }
            filtered = _post(client, b, "filter", {**body, "resource_ids": b.docs})
            assert filtered["allowed_ids"] == expected, (world, a, u)
            for d, doc in enumerate(b.docs):
                check = {k: v for k, v in body.items() if k != "resource_type"}
                answer = _post(client, b, "check", {**check, "resource": doc})
                assert answer["allowed"] == agent_reads_for(world, a, u, d), (world, a, u, d)
