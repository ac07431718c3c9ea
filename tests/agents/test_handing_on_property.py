"""The invariant of docs/threat-model.md, as a property: an agent's effective rights —
secrets, connected sources, workflows — are always a subset of the current rights of
whoever last configured it, and (for secrets) of whoever started its run and the user
it acts for. Hypothesis generates sequences of role changes, ACL changes, agent edits,
runs and reveals; after each step the API's answers are compared with a reference
model that knows only the roles and ACL entries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.authz.roles import BUILTIN_PERMISSIONS, BuiltinRole
from bastion.core.permissions import Permission
from tests.factories import Factory, Member, bearer

ROLES = ("admin", "manager", "member", "viewer")
PEOPLE = 3  # besides the org's own admin, who never changes (an org keeps an admin)

role = st.sampled_from(ROLES)
# Worlds start with admins more often: handing on needs someone who holds the rights.
first_role = st.sampled_from(("admin", "admin", *ROLES))
person = st.integers(0, PEOPLE - 1)
configure = st.tuples(st.just("configure"), person, st.booleans(), st.booleans())
change = st.one_of(
    st.tuples(st.just("role"), st.just(None), role),  # None: whoever configured it last
    st.tuples(st.just("role"), person, role),
    st.tuples(st.just("acl"), person, st.sampled_from(("none", "reader", "editor"))),
    configure,
)
USE = [("reveal", i) for i in range(4)] + [("read",)]  # every run reveals, the agent reads
# A shape that reaches the interesting states often: someone configures the agent,
# runs start and use it, rights change, and the runs use it again.
steps = st.tuples(
    st.lists(st.tuples(st.just("acl"), person, st.sampled_from(("reader", "editor"))), max_size=2),
    st.lists(configure, min_size=1, max_size=2),
    st.lists(st.tuples(st.just("run"), person, person), min_size=2, max_size=4),
    st.lists(change, min_size=1, max_size=3),
).map(lambda p: [*p[0], *p[1], *p[2], *USE, *p[3], *USE])


def _perms(role_name: str) -> frozenset[Permission]:
    return BUILTIN_PERMISSIONS[BuiltinRole(role_name)]


@dataclass
class Model:
    roles: list[str] = field(default_factory=lambda: ["member"] * PEOPLE)
    acl: list[str] = field(default_factory=lambda: ["none"] * PEOPLE)
    configurer: int | None = None  # who last set the agent's secrets/connections
    has_secret: bool = False
    has_source: bool = False
    runs: list[tuple[str, str, int, int]] = field(default_factory=list)  # id, token, by, for

    def reveals(self, who: int) -> bool:
        return Permission.SECRETS_REVEAL in _perms(self.roles[who])

    def connects(self, who: int) -> bool:
        held = _perms(self.roles[who])
        if Permission.SOURCES_MANAGE in held:
            return True
        return self.acl[who] == "editor"  # the relation counts, whatever the role


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(initial=st.lists(first_role, min_size=PEOPLE, max_size=PEOPLE), plan=steps)
def test_an_agent_never_holds_more_than_its_people(
    client: TestClient, factory: Factory, initial: list[str], plan: list[tuple[Any, ...]]
) -> None:
    org = factory.org()
    url = f"/v1/orgs/{org.id}"
    people: list[Member] = [factory.member(org, r) for r in initial]
    assert client.put(f"{url}/secrets/key", json={"value": "v"}, headers=org.headers).is_success
    source = client.post(f"{url}/sources", json={"name": "s"}, headers=org.headers).json()["id"]
    doc = client.post(
        f"{url}/sources/{source}/documents",
        json={"external_id": "d", "metadata": {}},
        headers=org.headers,
    ).json()["id"]
    agent = client.post(
        f"{url}/agents", json={"name": "a", "visibility": "org"}, headers=org.headers
    ).json()["id"]
    m = Model(roles=list(initial))

    for step in plan:
        kind = step[0]
        if kind == "role":
            _, who, new = step
            who = m.configurer if who is None else who
            if who is None:
                continue
            answer = client.patch(
                f"{url}/users/{people[who].user_id}", json={"role": new}, headers=org.headers
            )
            assert answer.status_code == 200, answer.text
            m.roles[who] = new
        elif kind == "acl":
            _, who, relation = step
            acl = f"{url}/sources/{source}/acl/{people[who].user_id}"
            if relation == "none":
                client.delete(acl, headers=org.headers)
            else:
                put = client.put(acl, json={"relation": relation}, headers=org.headers)
                assert put.status_code == 200, put.text
            m.acl[who] = relation
        elif kind == "configure":
            _, who, secret, connect = step
            body = {
                "secrets": ["key"] if secret else [],
                "connections": [source] if connect else [],
            }
            answer = client.patch(f"{url}/agents/{agent}", json=body, headers=people[who].headers)
            may_edit = Permission.AGENTS_MANAGE in _perms(m.roles[who])
            may_give = (not secret or m.reveals(who)) and (not connect or m.connects(who))
            if not may_edit:
                assert answer.status_code in (403, 404), answer.text
            else:
                assert (answer.status_code == 200) == may_give, (answer.text, m, step)
                if may_give:
                    m.configurer, m.has_secret, m.has_source = who, secret, connect
        elif kind == "run":
            _, by, for_ = step
            body = {"on_behalf_of": people[for_].user_id}
            answer = client.post(
                f"{url}/agents/{agent}/runs", json=body, headers=people[by].headers
            )
            if answer.status_code == 201:
                started = answer.json()
                m.runs.append((started["run_id"], started["token"], by, for_))
        elif kind == "reveal" and step[1] < len(m.runs):
            _, token, by, for_ = m.runs[step[1]]
            answer = client.post(f"{url}/secrets/key/reveal", json={}, headers=bearer(token))
            if answer.status_code == 401:  # the run's user was suspended or demoted away
                continue
            expected = (
                m.has_secret
                and m.configurer is not None
                and m.reveals(m.configurer)
                and m.reveals(by)
                and m.reveals(for_)
            )
            assert (answer.status_code == 200) == expected, (answer.text, m, step)
        elif kind == "read":
            answer = client.post(
                f"{url}/authz/check",
                json={"subject": agent, "action": "read", "resource": doc},
                headers=org.headers,
            )
            expected = m.has_source and m.configurer is not None and m.connects(m.configurer)
            assert answer.json()["allowed"] == expected, (answer.json(), m, step)
