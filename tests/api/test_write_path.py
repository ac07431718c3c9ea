"""The write path of the hot audited writes (team create, secret reveal, webhook accept):
reads outside the writer, writes as units of the app's group commit.

Each request's change and audit event still commit together before it is answered; a
unit that fails answers its own request alone; concurrent requests share transactions;
and a forged webhook delivery never costs a write of its own."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi.testclient import TestClient

from bastion.core.revisions import AuthzRevision
from tests.factories import Factory, Org, in_org_region
from tests.webhooks.test_gateway import (
    audit_events,
    body_for,
    create_endpoint,
    new_secret,
    post_hook,
    sign,
)


def _writer(app: Any) -> Any:
    return app.state.bastion.writer


def _teams(client: TestClient, org: Org) -> list[dict[str, Any]]:
    response = client.get(f"/v1/orgs/{org.id}/teams?limit=100", headers=org.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def _verify(client: TestClient, org: Org) -> None:
    verified = client.post(f"/v1/orgs/{org.id}/audit-events/verify", headers=org.headers)
    assert verified.status_code == 200, verified.text
    assert verified.json()["valid"] is True, verified.text


def test_concurrent_creates_share_batches_and_each_is_answered_after_its_commit(
    app: Any, client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    before = _writer(app).units

    def create(i: int) -> Any:
        return client.post(
            f"/v1/orgs/{org.id}/teams", json={"name": f"team-{i}"}, headers=org.headers
        )

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(create, range(48)))

    assert [a.status_code for a in answers] == [201] * 48, answers[0].text
    created = {a.json()["id"] for a in answers}
    assert {t["id"] for t in _teams(client, org)} >= created  # each answer: committed
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "team.created", "limit": 100},
        headers=org.headers,
    ).json()["data"]
    assert {e["resource"]["id"] for e in events} == created
    assert _writer(app).units - before >= 48
    _verify(client, org)


def test_a_unit_that_fails_answers_its_own_request_alone(
    client: TestClient, factory: Factory
) -> None:
    """The same name asked for by many at once: the name check runs again in the writer's
    transaction, so exactly one wins and the others get the same 409 as a late caller,
    while other names created in the same batches are unaffected."""
    org = factory.org()

    def create(i: int) -> Any:
        name = "contested" if i % 2 else f"free-{i}"
        return client.post(f"/v1/orgs/{org.id}/teams", json={"name": name}, headers=org.headers)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(create, range(32)))

    contested = [a for i, a in enumerate(answers) if i % 2]
    free = [a for i, a in enumerate(answers) if not i % 2]
    assert [a.status_code for a in free] == [201] * 16
    assert sorted(a.status_code for a in contested) == [201] + [409] * 15
    refused = next(a for a in contested if a.status_code == 409)
    assert refused.json()["detail"] == "a team with this name already exists"
    assert refused.headers["content-type"] == "application/problem+json"
    names = [t["name"] for t in _teams(client, org)]
    assert names.count("contested") == 1
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "team.created", "limit": 100},
        headers=org.headers,
    ).json()["data"]
    assert len(events) == 17  # no event for a refused create
    _verify(client, org)


def test_reveals_are_audited_each_and_read_outside_the_writer(
    app: Any, client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    base = f"/v1/orgs/{org.id}/secrets"
    put = client.put(f"{base}/db-password", json={"value": "s3cret-value"}, headers=org.headers)
    assert put.status_code in (200, 201), put.text

    def reveal(_: int) -> Any:
        return client.post(f"{base}/db-password/reveal", json={}, headers=org.headers)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(reveal, range(24)))

    assert {a.status_code for a in answers} == {200}
    assert {a.json()["value"] for a in answers} == {"s3cret-value"}
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "secret.revealed", "limit": 100},
        headers=org.headers,
    ).json()["data"]
    assert len(events) == 24
    assert all("s3cret-value" not in str(e) for e in events)
    _verify(client, org)


def test_a_flood_of_forged_deliveries_costs_about_log2_writes(
    app: Any, client: TestClient, factory: Factory
) -> None:
    """Anyone can send forged deliveries: each is refused (401) after reading and checking
    the signature, and only the 1st, 2nd, 4th, 8th… of a minute is recorded, with its
    count, so the flood does not queue a write per request."""
    org = factory.org()
    secret = new_secret("github")
    endpoint = create_endpoint(client, org, "github", secret)
    before = _writer(app).units

    def forge(_: int) -> Any:
        body = body_for("github")
        return post_hook(client, endpoint["url"], body, sign("github", "wrong-secret", body))

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(forge, range(40)))

    assert {a.status_code for a in answers} == {401}
    recorded = audit_events(client, org, "webhook_event.rejected", endpoint["id"])
    assert sorted(e["metadata"]["count"] for e in recorded) == [1, 2, 4, 8, 16, 32]
    assert {e["reason"] for e in recorded} == {"signature_mismatch"}
    assert _writer(app).units - before <= 6
    # A genuine delivery is accepted and written as ever.
    body = body_for("github")
    accepted = post_hook(client, endpoint["url"], body, sign("github", secret, body))
    assert accepted.status_code == 202, accepted.text
    _verify(client, org)


def test_a_batch_advances_an_orgs_revision_once_and_caches_still_see_each_change(
    app: Any, client: TestClient, factory: Factory
) -> None:
    """Teams created in the same batches bump the org's authorization revision once per
    batch, not once per team (still before any of them is answered)."""
    org = factory.org()
    state = app.state.bastion

    def revision() -> int:
        with in_org_region(state, org.id), state.sessions() as db:
            found = db.get(AuthzRevision, org.id)
            return found.revision if found is not None else 0

    before, batches = revision(), _writer(app).batches

    def create(i: int) -> Any:
        body = {"name": f"batched-{i}"}
        return client.post(f"/v1/orgs/{org.id}/teams", json=body, headers=org.headers)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(create, range(32)))
    assert [a.status_code for a in answers] == [201] * 32
    used = _writer(app).batches - batches
    assert 1 <= revision() - before <= used < 32  # shared batches, one bump each
