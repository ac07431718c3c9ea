"""A destroyed fork's diff is a run artifact: kept the organisation's
`run_artifacts_hours` (retention), by the sweep and by the hourly purge."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi.testclient import TestClient

from bastion.core.clock import utcnow
from bastion.privacy import retention
from bastion.sandboxes import execs
from bastion.sandboxes.bwrap import BwrapProvider
from tests.factories import Factory
from tests.sandboxes.test_api import World, bwrap

__all__ = ["bwrap"]  # the fixture, shared with test_api


def _ended_run_with_a_change(client: TestClient, w: World) -> str:
    run = w.run()
    assert w.exec(run, "/bin/sh", "-c", "echo x > made.txt").status_code == 200
    revoked = client.post(w.url(f"runs/{run[0]}/revoke"), json={}, headers=w.user.headers)
    assert revoked.status_code == 200, revoked.text
    return run[0]


def _sweep(client: TestClient, provider: BwrapProvider, now: datetime) -> None:
    with client.app.state.bastion.write_sessions() as db:  # type: ignore[attr-defined]
        execs.sweep(db, provider, now)
        db.commit()


def _diff(client: TestClient, w: World, run_id: str) -> int:
    url = f"/v1/runs/{run_id}/sandbox/{w.workspace}/diff"
    return client.get(url, headers=w.user.headers).status_code


def _set_hours(client: TestClient, w: World, hours: int) -> None:
    put = client.put(w.url("retention"), json={"run_artifacts_hours": hours}, headers=w.org.headers)
    assert put.status_code == 200, put.text


def test_an_org_keeping_artifacts_1_hour_keeps_the_diff_1_hour(
    client: TestClient, factory: Factory, bwrap: BwrapProvider
) -> None:
    w, other = World(client, factory), World(client, factory)
    _set_hours(client, w, 1)
    run, others = _ended_run_with_a_change(client, w), _ended_run_with_a_change(client, other)
    t0 = utcnow()
    _sweep(client, bwrap, t0)
    assert _diff(client, w, run) == 200
    _sweep(client, bwrap, t0 + timedelta(minutes=59))
    assert _diff(client, w, run) == 200
    _sweep(client, bwrap, t0 + timedelta(minutes=61))
    assert _diff(client, w, run) == 404  # "this fork's diff is no longer kept"
    # The other organisation keeps the default 24 hours.
    assert _diff(client, other, others) == 200
    _sweep(client, bwrap, t0 + timedelta(hours=23))
    assert _diff(client, other, others) == 200
    _sweep(client, bwrap, t0 + timedelta(hours=24, minutes=1))
    assert _diff(client, other, others) == 404


def test_a_shortened_period_reaches_diffs_already_kept(
    client: TestClient, factory: Factory, bwrap: BwrapProvider
) -> None:
    w, other = World(client, factory), World(client, factory)
    run, others = _ended_run_with_a_change(client, w), _ended_run_with_a_change(client, other)
    t0 = utcnow()
    _sweep(client, bwrap, t0)  # destroyed with the default 24 h
    _set_hours(client, w, 1)
    state = client.app.state.bastion  # type: ignore[attr-defined]
    with state.write_sessions() as db:
        assert retention.purge_org(db, w.org.id, t0 + timedelta(minutes=30)).total == 0
        purged = retention.purge_org(db, w.org.id, t0 + timedelta(hours=2))
        assert purged.counts == {"sandbox_diffs": 1}
        assert retention.purge_org(db, w.org.id, t0 + timedelta(hours=3)).total == 0
        assert retention.purge_org(db, other.org.id, t0 + timedelta(hours=2)).total == 0
        db.commit()
    assert _diff(client, w, run) == 404
    assert _diff(client, other, others) == 200
