"""The API's cross-cutting HTTP behaviour: body limit, content type, request ids, security
and rate-limit headers, 429 with Retry-After, and Idempotency-Key replay."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bastion.api.app import create_app
from bastion.core.idempotency import IdempotencyRecord
from bastion.identity import tokens
from tests.conftest import make_settings
from tests.factories import Factory


def _assert_problem(response, status: int) -> dict:  # type: ignore[no-untyped-def,type-arg]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    return body  # type: ignore[no-any-return]


def test_body_over_the_limit_is_413(client: TestClient, factory: Factory, app) -> None:  # type: ignore[no-untyped-def]
    org = factory.org()
    limit = app.state.bastion.settings.body_limit_bytes
    big = b'{"name": "' + b"x" * limit + b'"}'
    response = client.post(
        f"/v1/orgs/{org.id}/teams",
        content=big,
        headers={**org.headers, "content-type": "application/json"},
    )
    _assert_problem(response, 413)
    # Nothing was written.
    teams = client.get(f"/v1/orgs/{org.id}/teams", headers=org.headers).json()["data"]
    assert teams == []


def test_non_json_body_is_415(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    response = client.post(
        f"/v1/orgs/{org.id}/teams",
        content=b"name=x",
        headers={**org.headers, "content-type": "application/x-www-form-urlencoded"},
    )
    _assert_problem(response, 415)


def test_nul_bytes_are_a_clear_4xx(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    body = _assert_problem(
        client.post(f"/v1/orgs/{org.id}/teams", json={"name": "a\x00b"}, headers=org.headers),
        422,
    )
    assert body["errors"][0]["field"] == "name"
    _assert_problem(client.get(f"/v1/orgs/{org.id}/users/usr_%00", headers=org.headers), 400)
    _assert_problem(client.get(f"/v1/orgs/{org.id}/users?email=%00", headers=org.headers), 400)


def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    echoed = client.get("/healthz", headers={"X-Request-ID": "abc-123.x:y"})
    assert echoed.headers["x-request-id"] == "abc-123.x:y"
    generated = client.get("/healthz", headers={"X-Request-ID": "not valid <script>"})
    assert generated.headers["x-request-id"].startswith("req_")
    assert client.get("/healthz").headers["x-request-id"] != generated.headers["x-request-id"]


def test_security_headers_on_api_and_errors(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    for response in (
        client.get("/v1/me", headers=org.headers),
        client.get("/v1/me"),
        client.get(f"/v1/orgs/{org.id}/users/usr_missing", headers=org.headers),
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "strict-transport-security" not in response.headers  # no TLS here


def test_hsts_only_when_serving_tls(data_dir: Path, database_url: str) -> None:
    settings = make_settings(
        data_dir, database_url, tls_certfile=data_dir / "c.pem", tls_keyfile=data_dir / "k.pem"
    )
    with TestClient(create_app(settings)) as tls_client:
        assert "max-age=" in tls_client.get("/healthz").headers["strict-transport-security"]


@pytest.fixture
def limited(data_dir: Path, database_url: str) -> Iterator[tuple[TestClient, Factory]]:
    settings = make_settings(data_dir, database_url, api_requests_per_minute=3)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, Factory(app.state.bastion, c)


def test_rate_limit_headers_and_429(limited: tuple[TestClient, Factory]) -> None:
    client, factory = limited
    org = factory.org()
    remaining = []
    for _ in range(3):
        response = client.get("/v1/me", headers=org.headers)
        assert response.status_code == 200
        assert response.headers["ratelimit-limit"] == "3"
        remaining.append(int(response.headers["ratelimit-remaining"]))
    assert remaining == [2, 1, 0]
    refused = client.get("/v1/me", headers=org.headers)
    _assert_problem(refused, 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # Another credential has its own budget.
    assert client.get("/v1/me", headers=org.admin.headers).status_code == 200


def test_a_signed_out_session_gets_no_replay(client: TestClient, factory: Factory) -> None:
    """The stored answer of a key's creation holds the key: after signing out, the same
    request with the same Idempotency-Key is a 401, not that answer again."""
    org = factory.org()
    session = org.admin.headers  # a signed-in person's session
    headers = {**session, "Idempotency-Key": "create-after-logout"}
    url = f"/v1/orgs/{org.id}/api-keys"
    first = client.post(url, json={"name": "ci", "role": "viewer"}, headers=headers)
    assert first.status_code == 201, first.text
    assert client.post(url, json={"name": "ci", "role": "viewer"}, headers=headers).is_success
    assert client.post("/v1/auth/logout", headers=session).status_code == 204
    again = client.post(url, json={"name": "ci", "role": "viewer"}, headers=headers)
    assert again.status_code == 401, again.text
    assert first.json()["key"] not in again.text


def test_idempotent_post_replays_the_first_response(
    client: TestClient, factory: Factory, app
) -> None:  # type: ignore[no-untyped-def]
    org = factory.org()
    headers = {**org.headers, "Idempotency-Key": "create-ci-key-1"}
    url = f"/v1/orgs/{org.id}/api-keys"
    first = client.post(url, json={"name": "ci", "role": "viewer"}, headers=headers)
    assert first.status_code == 201, first.text
    again = client.post(url, json={"name": "ci", "role": "viewer"}, headers=headers)
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    keys = client.get(url, headers=org.headers).json()["data"]
    assert [k["name"] for k in keys].count("ci") == 1

    other = client.post(url, json={"name": "other", "role": "viewer"}, headers=headers)
    body = _assert_problem(other, 422)
    assert body["errors"][0]["field"] == "Idempotency-Key"

    # The stored response holds the one-time key secret: it is encrypted at rest.
    token = first.json()["key"]
    with app.state.bastion.sessions() as db:
        stored = db.execute(select(IdempotencyRecord.response)).scalars().all()
    assert stored
    assert not any(token.encode() in blob for blob in stored)
    parsed = tokens.parse(token)  # the secret itself may hold "_": split by the format
    assert parsed is not None
    assert len(parsed.secret) >= 40
    assert not any(parsed.secret.encode() in blob for blob in stored)


def test_idempotency_keys_are_per_credential(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    url = f"/v1/orgs/{org.id}/teams"
    key = {"Idempotency-Key": "same-key"}
    a = client.post(url, json={"name": "alpha"}, headers={**org.headers, **key})
    b = client.post(url, json={"name": "alpha"}, headers={**org.admin.headers, **key})
    assert a.status_code == 201
    assert "idempotent-replayed" not in b.headers  # a different caller is not replayed
    assert b.status_code == 409  # ... and really ran: the team name is taken


def test_an_unexpected_error_is_a_500_problem(data_dir: Path, database_url: str) -> None:
    """A route that fails in a way nothing answers: the client gets the problem document
    (not Starlette's plain text) with the request id, and nothing of the error."""
    app = create_app(make_settings(data_dir, database_url))

    @app.post("/v1/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/boom", json={}, headers={"x-request-id": "req-boom-1"})
        body = _assert_problem(response, 500)
        assert body["request_id"] == "req-boom-1"
        assert "a bug" not in response.text
        assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("route", ["teams", "api-keys"])  # a lean route and a framework one
def test_a_body_that_is_not_json_says_where(
    client: TestClient, factory: Factory, route: str
) -> None:
    """Not "invalid fields: 15" (the byte offset as a field name): the body, and where."""
    org = factory.org()
    response = client.post(
        f"/v1/orgs/{org.id}/{route}",
        content=b'{"name": "x",\n  oops}',
        headers={**org.headers, "content-type": "application/json"},
    )
    body = _assert_problem(response, 422)
    assert body["detail"] == "body: invalid JSON at line 2 column 3"
    assert body["errors"] == [{"field": "body", "message": "invalid JSON at line 2 column 3"}]
