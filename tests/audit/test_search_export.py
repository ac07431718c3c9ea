"""Search filters, cursors and the streamed, audited export."""

from __future__ import annotations

import csv
import io
import json

from fastapi.testclient import TestClient

from tests.factories import Factory, Org


def _org_with_users(factory: Factory, n: int = 4) -> Org:
    org = factory.org()
    for _ in range(n):
        factory.member(org, "viewer")
    return org


def test_filters_and_text_search(client: TestClient, factory: Factory) -> None:
    org = _org_with_users(factory)
    target = next(iter(org.members.values()))
    url = f"/v1/orgs/{org.id}/audit-events"
    by_resource = client.get(
        url, params={"resource": target.user_id, "type": "user.created"}, headers=org.headers
    )
    assert [e["resource"]["id"] for e in by_resource.json()["data"]] == [target.user_id]
    by_text = client.get(
        url, params={"q": target.email.split("@")[0].upper()}, headers=org.headers
    ).json()["data"]
    assert {e["type"] for e in by_text} == {"user.created"}
    assert client.get(url, params={"q": "100%_no_such"}, headers=org.headers).json()["data"] == []
    failures = client.get(url, params={"outcome": "failure"}, headers=org.headers).json()["data"]
    assert failures == []
    future = client.get(url, params={"since": "2999-01-01T00:00:00Z"}, headers=org.headers).json()[
        "data"
    ]
    assert future == []


def test_cursor_pages_have_no_gaps_or_duplicates_while_writes_happen(
    client: TestClient, factory: Factory
) -> None:
    org = _org_with_users(factory, 5)
    url = f"/v1/orgs/{org.id}/audit-events"
    first = client.get(url, params={"limit": 3}, headers=org.headers).json()
    seen = [e["seq"] for e in first["data"]]
    factory.member(org, "viewer")  # new events arrive between pages
    cursor = first["next_cursor"]
    while cursor:
        page = client.get(url, params={"limit": 3, "cursor": cursor}, headers=org.headers).json()
        seen += [e["seq"] for e in page["data"]]
        cursor = page["next_cursor"]
    assert seen == sorted(seen, reverse=True)
    assert seen == list(range(seen[0], 0, -1))  # contiguous down to the first event


def test_jsonl_export_streams_every_matching_event_and_is_audited(
    client: TestClient, factory: Factory
) -> None:
    org = _org_with_users(factory)
    response = client.get(
        f"/v1/orgs/{org.id}/audit-events/export", params={"format": "jsonl"}, headers=org.headers
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))
    assert {"hash", "prev_hash", "actor", "metadata"} <= set(lines[0])
    exported = client.get(
        f"/v1/orgs/{org.id}/audit-events", params={"type": "audit.exported"}, headers=org.headers
    ).json()["data"]
    assert len(exported) == 1
    assert exported[0]["metadata"]["format"] == "jsonl"


def test_csv_export_neutralises_formulas(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    hostile = {**org.headers, "User-Agent": "=cmd|' /C calc'!A0"}
    client.post(f"/v1/orgs/{org.id}/teams", json={"name": "csv"}, headers=hostile)
    response = client.get(
        f"/v1/orgs/{org.id}/audit-events/export",
        params={"format": "csv", "type": "team.created"},
        headers=org.headers,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 1
    assert rows[0]["type"] == "team.created"
    assert rows[0]["actor_user_agent"] == "'=cmd|' /C calc'!A0"
    assert json.loads(rows[0]["metadata"]) == {"name": "csv"}


def test_export_needs_audit_export_permission(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    manager = factory.member(org, "manager")  # may read the trail, not export it
    assert client.get(f"/v1/orgs/{org.id}/audit-events", headers=manager.headers).status_code == 200
    denied = client.get(f"/v1/orgs/{org.id}/audit-events/export", headers=manager.headers)
    assert denied.status_code == 403
    other = factory.org()
    assert (
        client.get(f"/v1/orgs/{org.id}/audit-events/export", headers=other.headers).status_code
        == 404
    )
