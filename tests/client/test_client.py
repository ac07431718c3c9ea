"""The SDK against the real app (sync and async), and offline with the mock transport."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

import bastion.client
from bastion.client import (
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    MockBastion,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RetryPolicy,
    ValidationError,
)
from tests.factories import PASSWORD, Factory, unique_email


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_public_surface_is_pinned() -> None:
    assert bastion.client.__all__ == [
        "APIError",
        "ActionDenied",
        "AsyncClient",
        "AsyncRun",
        "AuthenticationError",
        "BastionError",
        "Client",
        "ClientCredentials",
        "ConflictError",
        "FieldError",
        "MockBastion",
        "NotFoundError",
        "PermissionDeniedError",
        "RateLimitError",
        "RetryPolicy",
        "Run",
        "ServerError",
        "StepUpRequired",
        "TransportError",
        "ValidationError",
    ]


def test_login_me_and_paginated_users(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    sdk = Client(http_client=client)
    sdk.auth.login(org.admin.email, PASSWORD)
    assert sdk.me()["id"] == org.admin.user_id
    for _ in range(3):
        sdk.users.create(org.id, email=unique_email(), role="viewer", password=PASSWORD)
    users = list(sdk.users.list(org.id, page_size=2))
    assert len(users) == 4
    assert len({u["id"] for u in users}) == 4
    page = sdk.users.page(org.id, limit=2)
    assert len(page["data"]) == 2
    assert page["next_cursor"]


def test_errors_are_typed_with_fields(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    sdk = Client(http_client=client, token=org.admin_key)
    with pytest.raises(NotFoundError) as missing:
        sdk.users.get(org.id, "usr_01ZZZZZZZZZZZZZZZZZZZZZZZZ")
    assert missing.value.status == 404
    assert missing.value.request_id
    with pytest.raises(ValidationError) as invalid:
        sdk.users.create(org.id, email="not-an-email", role="viewer")
    assert [e.field for e in invalid.value.errors] == ["email"]
    viewer = factory.member(org, "viewer")
    with pytest.raises(PermissionDeniedError):
        Client(http_client=client, token=viewer.token).teams.create(org.id, name="x")
    with pytest.raises(AuthenticationError):
        Client(http_client=client, token="bsk_nonsense").me()


def test_api_key_lifecycle(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    sdk = Client(http_client=client, token=org.admin_key)
    created = sdk.api_keys.create(org.id, name="ci", role="viewer")
    as_key = Client(http_client=client, token=created["key"])
    assert as_key.me()["role"] == "viewer"
    rotated = sdk.api_keys.rotate(org.id, created["id"], overlap_seconds=0)
    with pytest.raises(AuthenticationError):
        as_key.me()
    sdk.api_keys.revoke(org.id, rotated["id"])
    with pytest.raises(AuthenticationError):
        Client(http_client=client, token=rotated["key"]).me()
    assert sdk.audit_events.verify(org.id)["valid"] is True


def test_password_change_reset_and_user_sessions(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org)
    admin = Client(http_client=client, token=org.admin_key)
    assert len(list(admin.users.sessions(org.id, member.user_id))) == 1
    person = Client(http_client=client)
    person.auth.login(member.email, PASSWORD)
    person.auth.change_password(PASSWORD, "a brand new passphrase")
    with pytest.raises(AuthenticationError):
        Client(http_client=client, token=member.token).me()  # the other session ended
    assert person.me()["id"] == member.user_id  # this one stayed
    with pytest.raises(ValidationError) as weak:
        person.auth.change_password("a brand new passphrase", "qwerty123456")
    assert weak.value.code == "password_breached"
    assert [e.field for e in weak.value.errors] == ["new_password"]
    admin.users.end_sessions(org.id, member.user_id)
    with pytest.raises(AuthenticationError):
        person.me()
    assert list(admin.users.sessions(org.id, member.user_id)) == []
    # One session of a user; then every user's sessions in the organisation.
    one = factory.login(member.email, "a brand new passphrase")
    listed = list(admin.users.sessions(org.id, member.user_id))
    admin.users.end_sessions(org.id, member.user_id, listed[0]["id"])
    with pytest.raises(AuthenticationError):
        Client(http_client=client, token=one).me()
    two = factory.login(member.email, "a brand new passphrase")
    Client(http_client=client, token=org.admin.token).orgs.end_sessions(org.id)
    with pytest.raises(AuthenticationError):
        Client(http_client=client, token=two).me()
    Client(http_client=client).auth.request_password_reset(unique_email("ghost"))  # 202, None
    with pytest.raises(AuthenticationError):
        Client(http_client=client).auth.confirm_password_reset("bsr_bogus", "a long new passphrase")


@pytest.mark.anyio
async def test_async_client_against_the_app(app, factory: Factory) -> None:  # type: ignore[no-untyped-def]
    org = factory.org()
    transport = httpx.ASGITransport(app=app)
    async with AsyncClient("http://bastion.test", token=org.admin_key, transport=transport) as sdk:
        me = await sdk.me()
        assert me["org_id"] == org.id
        team = await sdk.teams.create(org.id, name="async")
        await sdk.teams.add_member(org.id, team["id"], org.admin.user_id)
        teams = [t["id"] async for t in sdk.teams.list(org.id)]
        assert team["id"] in teams
        with pytest.raises(NotFoundError):
            await sdk.teams.get(org.id, "team_01ZZZZZZZZZZZZZZZZZZZZZZZZ")
        sessions = [s async for s in sdk.users.sessions(org.id, org.admin.user_id)]
        assert len(sessions) == 1
        await sdk.users.end_sessions(org.id, org.admin.user_id)
        assert [s async for s in sdk.users.sessions(org.id, org.admin.user_id)] == []
        await sdk.auth.request_password_reset(unique_email("ghost"))


TEAM = {
    "id": "team_1",
    "org_id": "org_1",
    "name": "a",
    "description": "",
    "created_at": "2030-01-01T00:00:00Z",
    "member_ids": [],
}


def test_mock_transport_retries_429_and_503_reusing_the_idempotency_key() -> None:
    mock = MockBastion()
    mock.add(
        "POST",
        "/v1/orgs/org_1/teams",
        {"status": 429, "code": "rate_limited", "detail": "slow"},
        status=429,
        headers={"retry-after": "1"},
    )
    mock.add(
        "POST",
        "/v1/orgs/org_1/teams",
        {"status": 503, "code": "unavailable", "detail": "x"},
        status=503,
    )
    mock.add("POST", "/v1/orgs/org_1/teams", TEAM, status=201)
    sdk = Client(
        "http://bastion.test",
        token="bsk_secret_value",
        transport=mock.transport(),
        retry=RetryPolicy(max_retries=3, sleep_scale=0),
    )
    assert sdk.teams.create("org_1", name="a")["id"] == "team_1"
    keys = {r.headers["idempotency-key"] for r in mock.requests}
    assert len(mock.requests) == 3
    assert len(keys) == 1


def test_an_idempotency_key_in_use_is_retried_and_other_conflicts_are_not() -> None:
    in_use = {"status": 409, "code": "idempotency_key_in_use", "detail": "answered meanwhile"}
    mock = MockBastion()
    mock.add("POST", "/v1/orgs/org_1/teams", in_use, status=409)
    mock.add("POST", "/v1/orgs/org_1/teams", TEAM, status=201)
    mock.add("POST", "/v1/orgs/org_1/teams", {"status": 409, "code": "conflict"}, status=409)
    sdk = Client(
        "http://bastion.test",
        token="t",
        transport=mock.transport(),
        retry=RetryPolicy(max_retries=3, sleep_scale=0),
    )
    assert sdk.teams.create("org_1", name="a")["id"] == "team_1"  # the replayed answer
    assert len({r.headers["idempotency-key"] for r in mock.requests}) == 1
    with pytest.raises(ConflictError):
        sdk.teams.create("org_1", name="a")
    assert len(mock.requests) == 3  # the plain conflict was not asked again


def test_retries_give_up_with_a_typed_error() -> None:
    mock = MockBastion().add(
        "GET",
        "/v1/me",
        {"status": 429, "code": "rate_limited", "detail": "x"},
        status=429,
        headers={"retry-after": "7"},
    )
    sdk = Client(
        "http://bastion.test",
        token="t",
        transport=mock.transport(),
        retry=RetryPolicy(max_retries=2, sleep_scale=0),
    )
    with pytest.raises(RateLimitError) as limited:
        sdk.me()
    assert limited.value.retry_after == 7
    assert len(mock.requests) == 3


def test_token_never_shows_in_repr_or_errors() -> None:
    token = "bsk_key_01SENTINEL_do-not-print-me"
    mock = MockBastion().add(
        "GET", "/v1/me", {"status": 401, "code": "unauthenticated", "detail": "bad"}, status=401
    )
    sdk = Client("http://bastion.test", token=token, transport=mock.transport())
    assert token not in repr(sdk)
    with pytest.raises(AuthenticationError) as err:
        sdk.me()
    assert token not in str(err.value)
    assert token not in repr(err.value)
