"""Validation failures (422) and rate-limit refusals (429) leave security events (OWASP
ASVS V16), aggregated per caller and minute like not-found answers: recorded at the 1st,
2nd, 4th, 8th… of a minute, in the principal's organisation, or for an address in the
instance chain."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from bastion.api.app import create_app
from bastion.audit.models import INSTANCE_CHAIN, AuditEvent
from tests.audit.test_enumeration_trail import start_of_a_minute
from tests.conftest import make_settings
from tests.factories import Factory, Org


def _events(client: TestClient, org: Org, type_: str, headers: dict[str, str]) -> list[Any]:
    response = client.get(
        f"/v1/orgs/{org.id}/audit-events", params={"type": type_}, headers=headers
    )
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def test_validation_failures_are_recorded_per_principal_and_minute(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    start_of_a_minute()
    teams = f"/v1/orgs/{org.id}/teams"
    for _ in range(3):  # refused by the schema
        sent = {"name": ["sentinel-name"]}
        assert client.post(teams, json=sent, headers=org.headers).status_code == 422
    bad_rule = {"name": "r", "kind": "failed_signins_ip", "params": {"threshold": 0}}
    rules = f"/v1/orgs/{org.id}/alert-rules"  # refused by the service (InvalidInput)
    assert client.post(rules, json=bad_rule, headers=org.headers).status_code == 422
    events = _events(client, org, "request.invalid", org.headers)
    assert [e["metadata"]["count"] for e in events] == [4, 2, 1]
    assert events[0]["metadata"]["path"] == rules
    assert events[0]["actor"]["type"] == "api_key"
    assert events[0]["outcome"] == "failure"
    assert "sentinel" not in str(events)  # what was sent is never recorded


@pytest.fixture
def limited(data_dir: Path, database_url: str) -> Iterator[FastAPI]:
    # Two requests a minute per credential; eight per address without one.
    app = create_app(make_settings(data_dir, database_url, api_requests_per_minute=2))
    with TestClient(app, raise_server_exceptions=False):
        yield app


def test_rate_limit_refusals_are_recorded(limited: FastAPI, factory: Factory) -> None:
    org = factory.org()
    start_of_a_minute()
    client = TestClient(limited, raise_server_exceptions=False)
    answers = [
        client.get(f"/v1/orgs/{org.id}/teams", headers=org.headers).status_code for _ in range(6)
    ]
    assert answers.count(429) >= 2
    # Read with another credential (the admin's session): its quota is its own.
    events = _events(client, org, "request.rate_limited", org.admin.headers)
    assert [e["metadata"]["count"] for e in events][-2:] == [2, 1]
    assert events[-1]["outcome"] == "denied"
    assert events[-1]["metadata"]["status"] == 429


def test_an_address_over_its_quota_is_recorded_in_the_instance_chain(
    limited: FastAPI, factory: Factory
) -> None:
    address = "192.0.2.77"
    start_of_a_minute()
    anonymous = TestClient(limited, raise_server_exceptions=False, client=(address, 1))
    answers = [anonymous.get("/v1/me").status_code for _ in range(12)]
    assert 429 in answers
    with limited.state.bastion.sessions() as db:
        rows = db.execute(
            select(AuditEvent).where(
                AuditEvent.chain == INSTANCE_CHAIN,
                AuditEvent.type == "request.rate_limited",
                AuditEvent.actor_ip == address,
            )
        ).scalars()
        counts = sorted(e.event_metadata["count"] for e in rows)
    assert counts[:2] == [1, 2]
