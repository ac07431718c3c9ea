"""A metadata rule's condition has a cost budget: refused when saved over it (422 naming
`condition`), stopped when an evaluation spends it (the rule fails: refused, counted),
and no evaluation holds the process long enough to stall other requests (issue 12,
finding 2: four nested comprehensions over 60-element lists ran 2.9 s per check)."""

from __future__ import annotations

import time
from typing import Any

import cel
import pytest
from fastapi.testclient import TestClient

from bastion.authz import conditions
from bastion.authz.models import AuthzRule
from bastion.core.ids import new_id
from tests.factories import Factory, Org
from tests.responsive import slowest_healthz_while

SIXTY = "[" + ",".join(str(i) for i in range(60)) + "]"
# The attacker's condition: 60**4 iterations, about 1 kB.
NESTED_4 = f"{SIXTY}.all(a, {SIXTY}.all(b, {SIXTY}.all(c, {SIXTY}.all(d, a + b + c + d >= 0))))"
# Within the nesting limit, over the estimated cost: 60**3 iterations.
NESTED_3 = f"{SIXTY}.all(a, {SIXTY}.all(b, {SIXTY}.all(c, a + b + c >= 0)))"
# Cheap as estimated (context lists assumed short); costly on a document with long tags.
SCAN = "resource.metadata.tags.exists(t, t == 'none')"


def _rule(effect: str, condition: str) -> dict[str, str]:
    return {"effect": effect, "action": "read", "resource_type": "document", "condition": condition}


def _readable_doc(client: TestClient, org: Org, reader: str, metadata: dict[str, Any]) -> str:
    base = f"/v1/orgs/{org.id}"
    source = client.post(f"{base}/sources", json={"name": "drive"}, headers=org.headers).json()
    acl = {"inherit": False, "entries": [{"principal": reader, "relation": "reader"}]}
    body = {"external_id": "x", "metadata": metadata, "acl": acl}
    doc = client.post(f"{base}/sources/{source['id']}/documents", json=body, headers=org.headers)
    assert doc.status_code == 201, doc.text
    return str(doc.json()["id"])


def _check(client: TestClient, org: Org, reader: str, doc: str) -> dict[str, Any]:
    response = client.post(
        f"/v1/orgs/{org.id}/authz/check",
        json={"subject": reader, "action": "read", "resource": doc},
        headers=org.headers,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _store_unchecked(factory: Factory, org: Org, effect: str, condition: str) -> str:
    """A rule written straight to the database, as one saved before the budget was."""
    rule_id = new_id("arl")
    with factory._tx() as db:
        db.add(
            AuthzRule(
                id=rule_id,
                org_id=org.id,
                effect=effect,
                action="read",
                resource_type="document",
                condition=condition,
            )
        )
        db.commit()
    return rule_id


def test_the_attackers_rule_is_refused_when_saved(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    manager = factory.member(org, "manager")
    url = f"/v1/orgs/{org.id}/authz/rules"
    for condition, limit in ((NESTED_4, "nesting depth 4"), (NESTED_3, "estimated cost")):
        response = client.post(url, json=_rule("deny", condition), headers=manager.headers)
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["errors"][0]["field"] == "condition"
        assert limit in problem["errors"][0]["message"]
    assert client.get(url, headers=org.headers).json()["data"] == []
    cheap = client.post(url, json=_rule("deny", SCAN), headers=manager.headers)
    assert cheap.status_code == 201, cheap.text


def test_a_rule_costly_only_at_run_time_is_stopped_and_refuses(
    client: TestClient, factory: Factory, app: Any
) -> None:
    """Saved (its list is read from the document, assumed short), but a document of
    20,000 tags: the evaluation runs out of budget, the deny rule fails, and a failing
    rule refuses (before, it ran to the end, matched nothing: the document was read)."""
    org = factory.org()
    viewer = factory.member(org, "viewer").user_id
    url = f"/v1/orgs/{org.id}/authz/rules"
    made = client.post(url, json=_rule("deny", SCAN), headers=org.headers)
    assert made.status_code == 201, made.text
    short = _readable_doc(client, org, viewer, {"tags": ["a", "b"]})
    long = _readable_doc(client, org, viewer, {"tags": [f"t{i}" for i in range(20_000)]})
    assert _check(client, org, viewer, short)["allowed"] is True
    errors, stopped = app.state.bastion.authz.stats.rule_errors, conditions.exhausted
    started = time.perf_counter()
    checked = _check(client, org, viewer, long)
    elapsed = time.perf_counter() - started
    assert (checked["allowed"], checked["reason"]) == (False, f"rule_error:{made.json()['id']}")
    assert app.state.bastion.authz.stats.rule_errors == errors + 1
    assert conditions.exhausted == stopped + 1
    assert elapsed < 1.0


def test_a_stored_rule_over_the_budget_refuses_quickly(
    client: TestClient, factory: Factory, app: Any
) -> None:
    """The attacker's rule already in the database (saved before the budget existed):
    it no longer runs 60**4 iterations; it fails, so the check is refused and counted."""
    org = factory.org()
    viewer = factory.member(org, "viewer").user_id
    rule_id = _store_unchecked(factory, org, "deny", NESTED_4)
    doc = _readable_doc(client, org, viewer, {"level": 1})
    errors = app.state.bastion.authz.stats.rule_errors
    started = time.perf_counter()
    checked = _check(client, org, viewer, doc)
    assert time.perf_counter() - started < 1.0
    assert (checked["allowed"], checked["reason"]) == (False, f"rule_error:{rule_id}")
    assert app.state.bastion.authz.stats.rule_errors == errors + 1


def test_healthz_stays_responsive_while_costly_rules_are_evaluated(
    client: TestClient, factory: Factory
) -> None:
    """Checks keep evaluating the stored attacker's rule (each on a document with new
    metadata, so nothing is memoized) while /healthz is asked: it answers promptly."""
    org = factory.org()
    viewer = factory.member(org, "viewer").user_id
    # As the attacker's, but reading the document: evaluated for each document.
    _store_unchecked(factory, org, "deny", NESTED_4.replace(">= 0", ">= resource.metadata.n"))
    docs = [_readable_doc(client, org, viewer, {"n": i}) for i in range(4)]

    def load() -> None:
        for doc in docs:
            _check(client, org, viewer, doc)

    slowest = slowest_healthz_while(client, load, limit=120)
    assert slowest < 1.0, f"/healthz waited {slowest:.3f} s"  # before: 3 s and more


def test_the_estimate_and_the_meter() -> None:
    """Unit level: the limits by name, a reserved meter name, and a metered program
    that answers as the plain one does within the budget."""
    with_depth = "[1, 2].all(a, [1].all(b, [1].all(c, [1].all(d, true))))"
    with pytest.raises(conditions.TooCostly, match="nesting depth 4"):
        conditions.validate(with_depth)
    wide = "[" + ",".join(["1"] * 1001) + "].exists(x, x == 2)"
    with pytest.raises(conditions.TooCostly, match="range of 1001"):
        conditions.validate(wide)
    conditions.validate(f"{SIXTY} + {SIXTY} == {SIXTY}")  # no comprehension: cheap
    with pytest.raises(conditions.RuleError, match="reserved"):
        conditions.validate("bastion_budget(-100000) ? true : false")
    context = {"resource": {"metadata": {"tags": ["a", "pub-b"], "m": {"k": [1, 2]}}}}
    for condition in (
        "[1, 2, 3].map(x, x > 1, x * 2) == [4, 6]",  # charged upfront: a literal range
        "resource.metadata.tags.exists(t, t.startsWith('pub'))",  # upfront: a path
        "[1, 2, 3].filter(x, x > 1).map(y, [y].map(z, z * 2)) == [[4], [6]]",  # per item
        "resource.metadata.m.k.all(x, x > 0 ? true : false) && !has(resource.metadata.x)",
    ):
        program = conditions.validate(condition)
        assert isinstance(program, conditions.Metered)
        assert program.execute(context) is cel.compile(condition).execute(context) is True
    assert not isinstance(conditions.compile_condition("1 == 1"), conditions.Metered)
