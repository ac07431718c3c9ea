"""The lean routes (`bastion.api.fast`) answer exactly as the framework's routes do.

Two apps share one database: one serves `/v1/me`, the authorization questions and the
tool-call gate on the fast path, the other (`fast_path=False`) through FastAPI. Every
request of the corpus goes to both, in lockstep (each app has its own rate-limit
counters, so quotas and failure sampling advance alike), and the answers must agree:
status, headers (but the request id and the date), the JSON body (but the request id,
and the ids and times of rows each request created) and the audit events each request
left (failure events included). The clock of the rate-limit windows and failure tallies
stands still meanwhile, so a window never ends between the two requests of a pair.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bastion.api import failures, fast
from bastion.api.app import create_app
from bastion.audit.models import AuditEvent
from bastion.core import ratelimit
from bastion.core.events import EventType
from tests.conftest import make_settings
from tests.factories import PASSWORD, Factory, Org, bearer

# Values that differ between two requests doing the same thing: ids and times of rows
# each one created (compared by presence and type only).
_VOLATILE_FIELDS = {"id", "created_at", "decided_at", "approval_id", "event_id"}


@dataclass
class Pair:
    fast: TestClient
    slow: TestClient
    served: list[str]  # paths the fast path served

    def same(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request to both apps; assert they answer alike; the fast answer."""
        return self.alike(method, path, kwargs, kwargs)

    def alike(
        self,
        method: str,
        path: str,
        fast: dict[str, Any],
        slow: dict[str, Any],
        volatile: frozenset[str] = frozenset(),
    ) -> Any:
        """`same`, for two requests that must differ (each app's own delivery, its own
        team name: `volatile` names the answer's fields that differ with them)."""
        before = len(self.served)
        fast_rid, slow_rid = f"f-{uuid.uuid4().hex}", f"s-{uuid.uuid4().hex}"
        got = _send(self.fast, method, path, fast_rid, fast)
        lean = len(self.served) > before
        want = _send(self.slow, method, path, slow_rid, slow)
        assert len(self.served) == before + lean, "the app without the fast path used it"
        assert got.status_code == want.status_code, (got.text, want.text)
        assert _headers(got) == _headers(want), (method, path, fast)
        assert _body(got, volatile) == _body(want, volatile), (method, path, fast)
        assert _events(self.fast, fast_rid) == _events(self.slow, slow_rid)
        got.lean = lean
        return got


def _send(client: TestClient, method: str, path: str, rid: str, kwargs: dict[str, Any]) -> Any:
    headers = {**kwargs.get("headers", {}), "x-request-id": rid}
    return client.request(method, path, **{**kwargs, "headers": headers})


def _headers(response: Any) -> list[tuple[str, str]]:
    pairs = [(k.lower(), v) for k, v in response.headers.multi_items()]
    length = dict(pairs).get("content-length")
    if length is not None and response.request.method != "HEAD":
        assert int(length) == len(response.content)
    skip = {"x-request-id", "date", "content-length"}
    # Names in order (content-length's place included); values but the volatile ones.
    return [(k, "" if k in skip else v) for k, v in pairs]


def _normalise(value: Any, volatile: frozenset[str] = frozenset()) -> Any:
    if isinstance(value, dict):
        return {
            k: (
                type(v).__name__
                if k in _VOLATILE_FIELDS or k in volatile
                else _normalise(v, volatile)
            )
            for k, v in value.items()
            if k != "request_id"
        }
    if isinstance(value, list):
        return [_normalise(v, volatile) for v in value]
    return value


def _body(response: Any, volatile: frozenset[str] = frozenset()) -> Any:
    if not response.content:
        return None
    try:
        return _normalise(response.json(), volatile)
    except ValueError:
        return response.content


def _events(client: TestClient, rid: str) -> list[dict[str, Any]]:
    state = client.app.state.bastion  # type: ignore[attr-defined]
    with state.sessions() as db:
        rows = db.scalars(
            select(AuditEvent).where(AuditEvent.request_id == rid).order_by(AuditEvent.seq)
        ).all()
        out = []
        for e in rows:
            metadata = dict(e.event_metadata or {})
            out.append(
                {
                    "type": e.type,
                    "org_id": e.org_id,
                    "actor": (e.actor_type, e.actor_id, e.actor_ip, e.actor_user_agent),
                    "resource_type": e.resource_type,
                    "outcome": e.outcome,
                    "reason": e.reason,
                    # A row created by the request has its own id on each side.
                    "metadata": sorted(metadata) if e.resource_type else metadata,
                }
            )
        return sorted(out, key=lambda x: json.dumps(x, sort_keys=True, default=str))


def _pair(data_dir: Path, database_url: str, **overrides: Any) -> Iterator[Pair]:
    served: list[str] = []
    original = fast.serve

    async def counting(state, route, param, scope, receive, send):  # type: ignore[no-untyped-def]
        served.append(scope["path"])
        await original(state, route, param, scope, receive, send)

    original_gateway = fast.serve_gateway

    async def counting_gateway(state, gateway, run, scope, receive, send):  # type: ignore[no-untyped-def]
        served.append(scope["path"])
        await original_gateway(state, gateway, run, scope, receive, send)

    # Mid-minute, and standing still: windows and tallies never end between two sends.
    frozen = (time.time() // 60) * 60 + 30
    fast_app = create_app(make_settings(data_dir, database_url, **overrides))
    slow_app = create_app(make_settings(data_dir, database_url, fast_path=False, **overrides))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fast, "serve", counting)
        patch.setattr(fast, "serve_gateway", counting_gateway)
        patch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: frozen))
        patch.setattr(failures, "utcnow", lambda: datetime.fromtimestamp(frozen, UTC))
        with (
            TestClient(fast_app, raise_server_exceptions=False) as f,
            TestClient(slow_app, raise_server_exceptions=False) as s,
        ):
            yield Pair(f, s, served)


@pytest.fixture(scope="module")
def pair(data_dir: Path, database_url: str) -> Iterator[Pair]:
    yield from _pair(data_dir, database_url)


@dataclass
class World:
    org: Org
    other: Org
    member_session: dict[str, str]
    run: str
    run_token: dict[str, str]
    other_run: str
    revoked_key: dict[str, str]
    revoked_run: str
    revoked_run_token: dict[str, str]
    held_session: dict[str, str]  # password only, in an org that now requires MFA
    mfa_token: dict[str, str]
    oauth_token: dict[str, str]  # an OAuth access token (JWT) of a manager service account


@pytest.fixture(scope="module")
def world(app: Any, client: TestClient) -> World:
    """Made through a third app on the same database, so the pair's rate-limit counters
    start alike."""
    factory = Factory(app.state.bastion, client)
    org, other = factory.org(), factory.org("Other")
    member = factory.member(org, "member")
    base = f"/v1/orgs/{org.id}"
    tools = [{"name": "lookup", "risk": "low"}, {"name": "refund", "risk": "high"}]
    body = {"name": "agent", "visibility": "org", "tools": tools}
    agent = client.post(f"{base}/agents", json=body, headers=org.headers).json()["id"]

    def start() -> tuple[str, str]:
        run = client.post(f"{base}/agents/{agent}/runs", json={}, headers=member.headers)
        assert run.status_code == 201, run.text
        return run.json()["run_id"], run.json()["token"]

    run, token = start()
    other_run, _ = start()
    revoked_run, revoked_token = start()
    ended = client.post(f"{base}/runs/{revoked_run}/revoke", headers=org.headers)
    assert ended.status_code == 200, ended.text
    key = factory.api_key(org)
    gone = client.delete(f"{base}/api-keys/{key['id']}", headers=org.headers)
    assert gone.status_code == 204, gone.text
    strict = factory.org("Strict")
    held = factory.member(strict, "member")
    policy = {"mfa_policy": "all"}
    assert (
        client.patch(f"/v1/orgs/{strict.id}", json=policy, headers=strict.headers).status_code
        == 200
    )
    login = {"email": held.email, "password": PASSWORD}
    enrolment = client.post("/v1/auth/login", json=login).json()["mfa_token"]
    account = client.post(
        f"{base}/service-accounts", json={"name": "robot", "role": "manager"}, headers=org.headers
    ).json()["id"]
    oauth = client.post(
        f"{base}/service-accounts/{account}/oauth-clients", json={"name": "c"}, headers=org.headers
    ).json()
    issued = client.post(
        "/v1/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": oauth["client_id"],
            "client_secret": oauth["client_secret"],
        },
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert issued.status_code == 200, issued.text
    return World(
        org,
        other,
        member.headers,
        run,
        bearer(token),
        other_run,
        bearer(key["key"]),
        revoked_run,
        bearer(revoked_token),
        held.headers,
        bearer(enrolment),
        bearer(issued.json()["access_token"]),
    )


def _credentials(world: World) -> dict[str, dict[str, str]]:
    return {
        "admin key": world.org.headers,
        "admin session": world.org.admin.headers,
        "member session": world.member_session,
        "run token": world.run_token,
        "none": {},
        "garbage": bearer("bsk_nothing_here"),
        "garbage session": bearer("bss_" + "x" * 40),
        "not bearer": {"Authorization": "Basic dXNlcjpwYXNz"},
        "scheme only": {"Authorization": "Bearer"},
        "spaced": {"Authorization": "bearer   " + world.org.headers["Authorization"][7:] + " "},
        "revoked key": world.revoked_key,
        "ended run": world.revoked_run_token,
        "held for MFA": world.held_session,
        "enrolment mfa token": world.mfa_token,
        "oauth access token": world.oauth_token,
        "unsigned jwt": bearer("eyJhbGciOiJub25lIn0.eyJzdWIiOiJzYV94In0."),
        "jwt-shaped garbage": bearer("eyJhbGciOiJFZERTQSJ9.eyJ9.c2ln"),
    }


def test_me_answers_alike_for_every_credential(pair: Pair, world: World) -> None:
    for name, headers in _credentials(world).items():
        response = pair.same("GET", "/v1/me", headers=headers)
        assert response.lean, name
    assert pair.same("GET", "/v1/me", headers=world.org.headers).status_code == 200
    assert pair.same("GET", "/v1/me", headers=world.run_token).status_code == 200
    assert pair.same("GET", "/v1/me", headers={}).status_code == 401
    assert pair.same("GET", "/v1/me", headers=world.revoked_key).status_code == 401
    assert pair.same("GET", "/v1/me", headers=world.oauth_token).status_code == 200
    assert pair.same("GET", "/v1/me", headers=world.held_session).status_code == 403
    assert pair.same("GET", "/v1/me", headers=world.mfa_token).status_code == 401
    # Near misses are the framework's on both sides.
    for method, path in [("HEAD", "/v1/me"), ("GET", "/v1/me/"), ("POST", "/v1/me")]:
        response = pair.same(method, path, headers=world.org.headers, follow_redirects=False)
        assert not response.lean


def _check(world: World, **changes: Any) -> dict[str, Any]:
    body = {"subject": world.org.admin.user_id, "action": "read", "resource": "document:doc_x"}
    return {**body, **changes}


def _bodies(world: World) -> list[Any]:
    """Bodies for a route taking `valid`: good, undecodable, mistyped, unknown fields."""
    good = _check(world)
    return [
        {"json": good},
        {"json": _check(world, explain=True)},
        {"json": _check(world, on_behalf_of=world.org.admin.user_id)},
        {"content": b""},
        {"content": b"{"},
        {"content": b'{"subject": '},
        {"content": b"null"},
        {"content": b"[]"},
        {"content": b'"text"'},
        {"content": b"12"},
        {"json": {**good, "subject": 1}},
        {"json": {**good, "explain": "yes"}},
        {"json": {**good, "explain": 1}},
        {"json": {**good, "password": "hunter2"}},
        {"json": {"subject": "x"}},
        {"json": {**good, "action": ""}},
        {"json": {**good, "resource": "a" * 61}},
        {"json": {**good, "subject": "a\x00b"}},
        {"content": b'{"subject": NaN, "action": "read", "resource": "doc"}'},
        {"content": b'{"subject": "\\ud800", "action": "read", "resource": "doc"}'},
        {"content": json.dumps(good).replace('"read"', '"read", "action": "write"').encode()},
        {"content": b'{"subject": "\xff\xfe", "action": "read", "resource": "doc"}'},
        {"content": json.dumps(good).encode("utf-16")},
        {"content": b"\xef\xbb\xbf" + json.dumps(good).encode()},
        {"content": b"[" * 3000 + b"]" * 3000},
        {"content": json.dumps(good).encode() + b" trailing"},
    ]


_CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "application/vnd.bastion+json",
    "text/plain+json",
    "text/plain",
    None,
]


def _every_credential(
    pair: Pair, world: World, path: str, bodies: list[dict[str, Any]]
) -> set[int]:
    """Each body with each credential, on both paths (each served lean): the statuses."""
    statuses = set()
    for name, headers in _credentials(world).items():
        for body in bodies:
            response = _post(pair, path, headers, body)
            assert response.lean, (name, body)
            statuses.add(response.status_code)
    return statuses


def _post(pair: Pair, path: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
    if "content" in body:
        headers = {"content-type": "application/json", **headers}
    return pair.same("POST", path, headers=headers, **body)


@pytest.mark.parametrize("route", ["check", "check-batch", "filter"])
def test_authz_routes_answer_alike(pair: Pair, world: World, route: str) -> None:
    path = f"/v1/orgs/{world.org.id}/authz/{route}"
    bodies = _bodies(world)
    if route == "check-batch":
        bodies = [{"json": {"checks": [b["json"], b["json"]]}} for b in bodies if "json" in b]
        bodies += [
            {"json": {"checks": []}},
            {"json": {"checks": [_check(world)] * 101}},
            {"json": {"checks": [_check(world), {"subject": 2}]}},
            {"content": b'{"checks": ['},
        ]
    elif route == "filter":
        good = {
            "subject": world.org.admin.user_id,
            "action": "read",
            "resource_type": "document",
            "resource_ids": ["doc_a", "doc_b"],
        }
        bodies += [
            {"json": good},
            {"json": {**good, "resource_type": "planet"}},
            {"json": {**good, "resource_ids": ["x"]}},
        ]
    statuses = _every_credential(pair, world, path, bodies)
    # Each kind of answer was seen (the corpus can fail).
    assert {200, 401, 403, 422} <= statuses, statuses
    good_body = bodies[0] if route != "filter" else bodies[-3]
    for content_type in _CONTENT_TYPES:
        headers = {**world.org.headers, **({"content-type": content_type} if content_type else {})}
        pair.same("POST", path, headers=headers, content=json.dumps(good_body["json"]).encode())
    # Another organisation's id, an unknown one, and no organisation at all.
    for org in (world.other.id, "org_missing"):
        pair.same("POST", f"/v1/orgs/{org}/authz/{route}", headers=world.org.headers, **good_body)
    assert not pair.same("POST", f"/v1/orgs//authz/{route}", json={}).lean


def test_oversized_and_idempotent_authz_checks(pair: Pair, world: World) -> None:
    path = f"/v1/orgs/{world.org.id}/authz/check"
    limit = pair.fast.app.state.bastion.settings.body_limit_bytes  # type: ignore[attr-defined]
    big = json.dumps(_check(world, subject="x" * limit)).encode()
    headers = {**world.org.headers, "content-type": "application/json"}
    assert pair.same("POST", path, headers=headers, content=big).status_code == 413
    key, auth = uuid.uuid4().hex, world.org.headers
    # A check writes nothing, so nothing is stored for a replay (on both sides alike).
    for body in (_check(world), _check(world), _check(world, action="write")):
        assert _idempotent(pair, path, auth, key, body)[0].status_code == 200
    long_key = {**world.org.headers, "Idempotency-Key": "k" * 256}
    assert pair.same("POST", path, headers=long_key, json=_check(world)).status_code == 422


def _idempotent(
    pair: Pair, path: str, auth: dict[str, str], key: str, body: dict[str, Any]
) -> tuple[Any, Any]:
    """The same request with an Idempotency-Key of each app's own (a shared key would
    replay one app's answer in the other): the answers must agree."""
    responses = []
    for prefix, client in (("f", pair.fast), ("s", pair.slow)):
        rid = f"{prefix}-{uuid.uuid4().hex}"
        response = _send(
            client,
            "POST",
            path,
            rid,
            {"json": body, "headers": {**auth, "Idempotency-Key": f"{prefix}-{key}"}},
        )
        responses.append(response)
    got, want = responses
    assert got.status_code == want.status_code, (got.text, want.text)
    assert _headers(got) == _headers(want)
    assert _body(got) == _body(want)
    return got, want


def test_secret_reveal_answers_alike(pair: Pair, world: World) -> None:
    base = f"/v1/orgs/{world.org.id}/secrets"
    for client in (pair.fast, pair.slow):  # versions 1 and 2; each app's quota used once
        put = client.put(f"{base}/api-token", json={"value": "v"}, headers=world.org.headers)
        assert put.status_code == 200, put.text
    path = f"{base}/api-token/reveal"
    bodies: list[dict[str, Any]] = [
        {"json": {}},
        {"json": {"version": 1}},
        {"json": {"version": 2}},
        {"json": {"version": 3}},
        {"json": {"version": 0}},
        {"json": {"version": "one", "extra": 1}},
        {"json": {"workflow_id": "wf_1", "run_id": "run_1"}},
        {"json": [1]},
        {"content": b'{"version": '},
        {"content": b""},
    ]
    statuses = _every_credential(pair, world, path, bodies)
    assert {200, 401, 403, 404, 422} <= statuses, statuses
    # Names FastAPI refuses (alone, and with a bad body), secrets not there, other orgs.
    for name in ("a b", "x" * 201, "missing", "api-token"):
        for body in ({"json": {}}, {"json": {"version": 0}}, {"content": b""}):
            response = _post(pair, f"{base}/{name}/reveal", world.org.headers, body)
            assert response.lean, (name, body)
    for org in (world.other.id, "org_missing"):
        other = f"/v1/orgs/{org}/secrets/api-token/reveal"
        assert pair.same("POST", other, headers=world.org.headers, json={}).status_code == 404
    for content_type in _CONTENT_TYPES:
        headers = {**world.org.headers, **({"content-type": content_type} if content_type else {})}
        pair.same("POST", path, headers=headers, content=b"{}")
    # Near misses are the framework's on both sides.
    for near in (f"{base}//reveal", f"{base}/a/b/reveal", f"{base}/api-token/reveal/"):
        response = pair.same(
            "POST", near, headers=world.org.headers, json={}, follow_redirects=False
        )
        assert not response.lean, near
    key = uuid.uuid4().hex
    first, again = (_idempotent(pair, path, world.org.headers, key, {})[0] for _ in range(2))
    assert first.status_code == again.status_code == 200


def test_privacy_scan_answers_alike(pair: Pair, world: World) -> None:
    path = f"/v1/orgs/{world.org.id}/privacy/scan"
    texts = [
        "Mail jane.doe@example.com or call +44 20 7946 0958",
        "card 4111 1111 1111 1111, order 4111 1111 1111 1112",
        "nothing here",
        "Ünïcode first: Jean Dupont lives at 12 Rue de Rivoli, 75001 Paris",
    ]
    bodies: list[dict[str, Any]] = [
        {"json": {"texts": texts}},
        {"json": {"texts": texts, "types": ["EMAIL", "CREDIT_CARD"]}},
        {"json": {"texts": []}},
        {"json": {"texts": ["x"], "types": []}},
        {"json": {"texts": ["x"], "types": ["NOPE"]}},
        {"json": {"texts": [5]}},
        {"json": {"texts": ["x"], "extra": 1}},
        {"json": {"texts": ["x" * 100_001]}},
        {"json": {"texts": ["x" * 100_000] * 6}},
        {"json": {}},
        {"json": ["x"]},
        {"content": b'{"texts": '},
        {"content": b""},
    ]
    statuses = _every_credential(pair, world, path, bodies)
    assert {200, 401, 403, 422} <= statuses, statuses
    found = _post(pair, path, world.org.headers, bodies[0]).json()["results"]
    assert [f["type"] for f in found[0]["findings"]] == ["EMAIL", "PHONE"], found
    card = {"type": "CREDIT_CARD", "start": 5, "end": 24, "score": 1.0}
    assert found[1]["findings"] == [card], found  # the Luhn-invalid number is not a card
    for org in (world.other.id, "org_missing"):
        other = f"/v1/orgs/{org}/privacy/scan"
        answer = pair.same("POST", other, headers=world.org.headers, json={"texts": ["x"]})
        assert answer.status_code == 404
    for content_type in _CONTENT_TYPES:
        headers = {**world.org.headers, **({"content-type": content_type} if content_type else {})}
        pair.same("POST", path, headers=headers, content=b'{"texts": ["x"]}')
    near = pair.same(
        "POST", f"{path}/", headers=world.org.headers, json={"texts": ["x"]}, follow_redirects=False
    )
    assert not near.lean


def _delivery(secret: str, **changes: Any) -> dict[str, Any]:
    """A GitHub delivery signed with `secret`, distinct from every other."""
    body = json.dumps({"action": "opened", "nonce": uuid.uuid4().hex}).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "pull_request",
        "X-Hub-Signature-256": signature,
    }
    return {"headers": {**headers, **changes.pop("headers", {})}, "content": body, **changes}


def test_webhook_deliveries_answer_alike(pair: Pair, world: World) -> None:
    secret = "s" * 32
    created = {
        side: client.post(
            f"/v1/orgs/{world.org.id}/webhook-endpoints",
            json={"name": f"hook {side}", "provider": "github", "secret": secret},
            headers=world.org.headers,
        )
        for side, client in (("fast", pair.fast), ("slow", pair.slow))
    }
    assert all(r.status_code == 201 for r in created.values()), created
    path = created["fast"].json()["url"]  # both apps serve it: one database
    accepted = pair.alike("POST", path, _delivery(secret), _delivery(secret))
    assert accepted.lean
    assert accepted.status_code == 202, accepted.text
    # The same delivery again (each app's own): a replay.
    first, again = _delivery(secret), _delivery(secret)
    pair.alike("POST", path, first, again)
    assert pair.alike("POST", path, first, again).status_code == 409
    refusals = [
        _delivery("wrong-secret-" + "x" * 20),
        _delivery(secret, headers={"X-Hub-Signature-256": "sha256=00"}),
        _delivery(secret, headers={"X-Hub-Signature-256": ""}),
        {"content": b"", "headers": {"X-GitHub-Event": "ping"}},
        {"content": b"a=1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
    ]
    statuses = {pair.same("POST", path, **body).status_code for body in refusals}
    assert statuses == {401}, statuses
    for other in ("whe_01ARZ3NDEKTSV4RRFFQ69G5FAV", "org_01ARZ3NDEKTSV4RRFFQ69G5FAV", "x"):
        response = pair.same("POST", f"/v1/hooks/{other}", **_delivery(secret))
        assert response.lean
        assert response.status_code == 404
    for near in (f"{path}/", f"{path}/more", "/v1/hooks/"):
        response = pair.same("POST", near, **_delivery(secret), follow_redirects=False)
        assert not response.lean, near


_NAME = frozenset({"name"})


def test_team_create_answers_alike(pair: Pair, world: World) -> None:
    path = f"/v1/orgs/{world.org.id}/teams"

    def named(**body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """Each app's own team (a name is taken once)."""
        unique = uuid.uuid4().hex[:8]
        return (
            {"json": {"name": f"f-{unique}", **body}},
            {"json": {"name": f"s-{unique}", **body}},
        )

    statuses = set()
    for name, headers in _credentials(world).items():
        fast, slow = named(description="on both paths")
        response = pair.alike(
            "POST", path, {**fast, "headers": headers}, {**slow, "headers": headers}, _NAME
        )
        assert response.lean, name
        statuses.add(response.status_code)
    assert {201, 401, 403} <= statuses, statuses
    # A name taken (by either app: one database), bad bodies, other orgs.
    taken = pair.fast.post(path, json={"name": "taken-once"}, headers=world.org.headers)
    pair.slow.get("/v1/me", headers=world.org.headers)  # each app's key quota used once
    assert taken.status_code == 201, taken.text
    assert (
        pair.same("POST", path, headers=world.org.headers, json={"name": "taken-once"}).status_code
        == 409
    )
    for body in (
        {"json": {}},
        {"json": {"name": ""}},
        {"json": {"name": "x" * 500}},
        {"json": {"name": "ok", "extra": 1}},
        {"json": {"name": 5}},
        {"json": ["name"]},
        {"content": b'{"name": '},
        {"content": b""},
    ):
        response = _post(pair, path, world.org.headers, body)
        assert response.lean, body
        assert response.status_code == 422, body
    for org in (world.other.id, "org_missing"):
        fast, slow = named()
        other = f"/v1/orgs/{org}/teams"
        answer = pair.alike(
            "POST",
            other,
            {**fast, "headers": world.org.headers},
            {**slow, "headers": world.org.headers},
        )
        assert answer.status_code == 404
    fast, slow = named()
    near = pair.alike(
        "POST",
        f"{path}/",
        {**fast, "headers": world.org.headers, "follow_redirects": False},
        {**slow, "headers": world.org.headers, "follow_redirects": False},
        _NAME,
    )
    assert not near.lean


def test_tool_call_gate_answers_alike(pair: Pair, world: World) -> None:
    path = f"/v1/runs/{world.run}/tool-calls"
    calls = [
        {"json": {"tool": "lookup", "arguments": {"q": "x"}}},
        {"json": {"tool": "refund", "arguments": {"amount": 5}}},
        {"json": {"tool": "unknown"}},
        {"json": {"tool": "lookup", "arguments": []}},
        {"json": {"tool": "lookup", "extra": 1}},
        {"json": {"tool": 5}},
        {"content": b""},
        {"content": b'{"tool": '},
        {"content": b'{"tool": "lookup", "arguments": {"n": NaN}}'},
    ]
    statuses = _every_credential(pair, world, path, calls)
    assert {201, 401, 404, 422} <= statuses, statuses
    good = calls[0]
    # Another run's id with this run's token, an ended run's, a missing one.
    for run in (world.other_run, world.revoked_run, "run_missing"):
        pair.same("POST", f"/v1/runs/{run}/tool-calls", headers=world.run_token, **good)
    # Idempotent: the call is made in the request's transaction and replayed.
    for tool in ("lookup", "refund"):
        first = _gate_twice(pair, path, world, uuid.uuid4().hex, {"tool": tool})
        assert first[0].status_code == 201
    # A run token may not ask the authorization routes.
    check = f"/v1/orgs/{world.org.id}/authz/check"
    response = pair.same("POST", check, headers=world.run_token, json=_check(world))
    assert response.status_code == 403


_MCP_HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
}


def test_mcp_gateway_answers_alike(pair: Pair, world: World) -> None:
    """The MCP gateway, handed its requests by the middleware: the same refusals (as
    problem documents) and the same MCP answers as through the framework's route."""
    path = f"/v1/runs/{world.run}/mcp"
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    statuses = set()
    for name, headers in _credentials(world).items():
        response = pair.same("POST", path, headers={**_MCP_HEADERS, **headers}, json=listing)
        assert response.lean, name
        statuses.add(response.status_code)
    assert {200, 401, 404} <= statuses, statuses
    token = {**_MCP_HEADERS, **world.run_token}
    for run in (world.other_run, world.revoked_run, "run_missing"):
        response = pair.same("POST", f"/v1/runs/{run}/mcp", headers=token, json=listing)
        assert response.lean
        assert response.status_code == 404
    revoked = {**_MCP_HEADERS, **world.revoked_run_token}
    response = pair.same("POST", f"/v1/runs/{world.revoked_run}/mcp", headers=revoked, json=listing)
    assert response.lean
    assert response.status_code == 401
    # GET and DELETE are the gateway's too (refused here: a run's GET opens a stream).
    for method in ("GET", "DELETE"):
        response = pair.same(method, path, headers=_MCP_HEADERS)
        assert response.lean
        assert response.status_code == 401
    # Methods the route does not serve, and paths that are not the gateway's: the app.
    assert not pair.same("PUT", path, headers=token, json=listing).lean
    for other in (f"/v1/runs/{world.run}/mcp/x", "/v1/runs//mcp"):
        assert not pair.same("POST", other, headers=token, json=listing).lean


def _gate_twice(
    pair: Pair, path: str, world: World, key: str, body: dict[str, Any]
) -> tuple[Any, Any]:
    first = _idempotent(pair, path, world.run_token, key, body)
    replay = _idempotent(pair, path, world.run_token, key, body)
    assert replay[0].headers.get("idempotent-replayed") == "true"
    assert replay[0].json()["id"] == first[0].json()["id"]
    return first


def test_rate_limits_answer_alike(
    data_dir: Path, database_url: str, app: Any, client: TestClient
) -> None:
    for limited in _pair(data_dir, database_url, api_requests_per_minute=2):
        factory = Factory(app.state.bastion, client)
        org = factory.org()
        key_fast = factory.api_key(org)["key"]
        key_slow = factory.api_key(org)["key"]
        statuses = []
        for _ in range(4):
            got = _send(limited.fast, "GET", "/v1/me", "f-x", {"headers": bearer(key_fast)})
            want = _send(limited.slow, "GET", "/v1/me", "s-x", {"headers": bearer(key_slow)})
            assert got.status_code == want.status_code
            assert _headers(got) == _headers(want)
            assert _body(got) == _body(want)
            statuses.append(got.status_code)
        assert statuses[-1] == 429, statuses
        # Bad credentials count against the address, on both sides alike.
        path = f"/v1/orgs/{org.id}/authz/check"
        seen = set()
        for _ in range(10):
            response = limited.same("POST", path, headers=bearer("bsk_bad"), json={})
            seen.add(response.status_code)
        assert seen == {401, 429}, seen


def test_openapi_is_unchanged(pair: Pair) -> None:
    got, want = pair.fast.get("/openapi.json"), pair.slow.get("/openapi.json")
    assert got.status_code == 200
    assert got.content == want.content


def test_failures_leave_the_same_audit_trail(pair: Pair, world: World) -> None:
    """A denied run token and a probe of another organisation are traced alike."""
    check = f"/v1/orgs/{world.other.id}/authz/check"
    pair.same("POST", check, headers=world.org.headers, json=_check(world))
    response = pair.same("POST", check, headers=world.run_token, json=_check(world))
    assert response.status_code == 403
    state = pair.fast.app.state.bastion  # type: ignore[attr-defined]
    with state.sessions() as db:
        denied = db.scalars(
            select(AuditEvent).where(AuditEvent.type == EventType.AUTHZ_DENIED)
        ).all()
    assert denied


def test_ip_allowlist_refusals_answer_alike(pair: Pair, app: Any, client: TestClient) -> None:
    """An organisation whose allowlist excludes the caller: refused alike on both paths,
    cached or not, with the same sampled audit events."""
    factory = Factory(app.state.bastion, client)
    org = factory.org("Fenced")
    body = {"ip_allowlist": ["10.0.0.0/8"], "confirm_lockout": True}  # tests come from nowhere
    saved = client.patch(f"/v1/orgs/{org.id}", json=body, headers=org.headers)
    assert saved.status_code == 200, saved.text
    check = {"subject": org.admin.user_id, "action": "read", "resource": "document:doc_x"}
    for _ in range(3):
        for headers in (org.headers, org.admin.headers):
            me = pair.same("GET", "/v1/me", headers=headers)
            assert me.status_code == 403
            assert me.json()["code"] == "ip_not_allowed"
            assert me.lean
            asked = pair.same("POST", f"/v1/orgs/{org.id}/authz/check", headers=headers, json=check)
            assert asked.json()["code"] == "ip_not_allowed"
