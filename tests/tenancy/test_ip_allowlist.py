"""Per-organisation IP allowlists: every credential kind (session, API key, service
account key, agent run token) refused from outside with 403 `ip_not_allowed`, cached or
not, IPv4 and IPv6; audited and sampled; lockout protection for the admin saving it;
X-Forwarded-For believed only from a trusted proxy (rightmost untrusted hop).

The app here sits behind a "proxy" at 127.0.0.1 (`BASTION_TRUSTED_PROXIES`), so each
request says its client address in X-Forwarded-For; by default 10.1.2.3.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from bastion.api.app import create_app
from bastion.core.clock import clock
from tests.conftest import make_settings
from tests.factories import PASSWORD, Factory, Org, bearer, step_up
from tests.identity.mfa_support import code, enrol_totp, next_step
from tests.identity.test_webauthn import registered
from tests.identity.webauthn_authenticator import SoftAuthenticator

INSIDE = "10.1.2.3"
OUTSIDE = "192.0.2.7"


@pytest.fixture(scope="module")
def world(data_dir: Path, database_url: str) -> Iterator[tuple[TestClient, Any]]:
    settings = make_settings(data_dir, database_url, trusted_proxies=["127.0.0.1/32"])
    app = create_app(settings)
    with TestClient(
        app,
        raise_server_exceptions=False,
        client=("127.0.0.1", 50000),
        headers={"X-Forwarded-For": INSIDE},
    ) as c:
        yield c, app.state.bastion


@pytest.fixture
def client(world: tuple[TestClient, Any]) -> TestClient:
    return world[0]


@pytest.fixture
def factory(world: tuple[TestClient, Any]) -> Factory:
    return Factory(world[1], world[0])


def _from(ip: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    return {**(headers or {}), "X-Forwarded-For": ip}


def _save(
    client: TestClient, org: Org, allowlist: list[str], ip: str = INSIDE, **extra: Any
) -> Any:
    return client.patch(
        f"/v1/orgs/{org.id}",
        json={"ip_allowlist": allowlist, **extra},
        headers=_from(ip, org.headers),
    )


def _me(client: TestClient, headers: dict[str, str], ip: str) -> Any:
    return client.get("/v1/me", headers=_from(ip, headers))


def _refused(response: Any) -> bool:
    return response.status_code == 403 and response.json()["code"] == "ip_not_allowed"


def test_every_credential_is_refused_from_outside(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org)
    account = client.post(
        f"/v1/orgs/{org.id}/service-accounts",
        json={"name": "ci", "role": "viewer"},
        headers=org.headers,
    ).json()
    sa_key = client.post(
        f"/v1/orgs/{org.id}/api-keys",
        json={"name": "ci", "role": "viewer", "service_account_id": account["id"]},
        headers=org.headers,
    ).json()["key"]
    agent = client.post(
        f"/v1/orgs/{org.id}/agents",
        json={"name": "helper", "visibility": "org", "tools": [{"name": "t", "risk": "low"}]},
        headers=org.headers,
    ).json()["id"]
    run = client.post(
        f"/v1/orgs/{org.id}/agents/{agent}/runs", json={}, headers=member.headers
    ).json()
    credentials = {
        "session": member.headers,
        "api_key": org.headers,
        "service_account": bearer(sa_key),
        "run_token": bearer(run["token"]),
    }
    for name, headers in credentials.items():  # each cached by a first use
        assert _me(client, headers, OUTSIDE).status_code == 200, name

    saved = _save(client, org, ["10.1.0.0/16", "2001:db8::/32", "10.1.9.9"])
    assert saved.status_code == 200, saved.text
    assert saved.json()["ip_allowlist"] == ["10.1.0.0/16", "2001:db8::/32", "10.1.9.9/32"]

    for name, headers in credentials.items():
        assert _refused(_me(client, headers, OUTSIDE)), name  # the very next request
        assert _refused(_me(client, headers, "2001:db9::1")), name
        assert _me(client, headers, "10.1.250.1").status_code == 200, name
        assert _me(client, headers, "2001:db8:ffff::1").status_code == 200, name
        assert _me(client, headers, "::ffff:10.1.0.1").status_code == 200, name
        assert _refused(_me(client, headers, OUTSIDE)), name  # cached, still refused
    # Refused before anything else: not even a validation error leaks through.
    refused = client.post(
        f"/v1/orgs/{org.id}/authz/check", json={"bogus": 1}, headers=_from(OUTSIDE, org.headers)
    )
    assert _refused(refused)
    assert refused.headers["content-type"] == "application/problem+json"
    # The run's own routes too.
    call = client.post(
        f"/v1/runs/{run['run_id']}/tool-calls",
        json={"tool": "t", "arguments": {}},
        headers=_from(OUTSIDE, bearer(run["token"])),
    )
    assert _refused(call)

    assert _save(client, org, []).status_code == 200  # empty: any address again
    for name, headers in credentials.items():
        assert _me(client, headers, OUTSIDE).status_code == 200, name


def test_other_organisations_are_not_affected(client: TestClient, factory: Factory) -> None:
    org, other = factory.org(), factory.org("Other")
    assert _save(client, org, ["10.1.0.0/16"]).status_code == 200
    assert _me(client, other.headers, OUTSIDE).status_code == 200
    assert _refused(_me(client, org.headers, OUTSIDE))


def test_refusals_are_audited_and_sampled(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    assert _save(client, org, ["10.1.0.0/16"]).status_code == 200
    for _ in range(9):
        assert _refused(_me(client, org.headers, OUTSIDE))
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "auth.ip_not_allowed"},
        headers=org.headers,
    ).json()["data"]
    counts = sorted(e["metadata"]["count"] for e in events)
    assert counts == [1, 2, 4, 8]  # nine refusals, four events: log2 of a flood
    assert {e["outcome"] for e in events} == {"denied"}
    assert {e["actor"]["ip"] for e in events} == {OUTSIDE}
    changed = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "org.ip_allowlist_changed"},
        headers=org.headers,
    ).json()["data"]
    assert changed[0]["metadata"] == {"from": [], "to": ["10.1.0.0/16"], "excludes_caller": False}


def test_an_admin_cannot_lock_themselves_out_without_confirming(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    refused = _save(client, org, ["10.9.0.0/16"])
    assert refused.status_code == 422
    fields = [e["field"] for e in refused.json()["errors"]]
    assert fields == ["ip_allowlist", "confirm_lockout"]
    shown = client.get(f"/v1/orgs/{org.id}", headers=org.headers).json()
    assert shown["ip_allowlist"] == []  # nothing saved
    assert _save(client, org, ["10.9.0.0/16"], confirm_lockout=False).status_code == 422
    confirmed = _save(client, org, ["10.9.0.0/16"], confirm_lockout=True)
    assert confirmed.status_code == 200
    assert _refused(client.get(f"/v1/orgs/{org.id}", headers=org.headers))
    assert client.get(f"/v1/orgs/{org.id}", headers=_from("10.9.1.1", org.headers)).is_success


@pytest.mark.parametrize(
    ("allowlist", "field"),
    [
        (["10.0.0.0/8", "not-a-network"], "ip_allowlist.1"),
        (["10.0.0.0/33"], "ip_allowlist.0"),
        (["*"], "ip_allowlist.0"),
        ([""], "ip_allowlist.0"),
        ("10.0.0.0/8", "ip_allowlist"),
        ([10], "ip_allowlist.0"),
        (["10.0.0.0/8"] * 201, "ip_allowlist"),
    ],
)
def test_bad_allowlists_are_refused(
    client: TestClient, factory: Factory, allowlist: Any, field: str
) -> None:
    org = factory.org()
    answer = _save(client, org, allowlist)
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == field
    assert client.get(f"/v1/orgs/{org.id}", headers=org.headers).json()["ip_allowlist"] == []


def test_forwarded_for_is_read_from_the_right_and_only_from_a_trusted_proxy(
    client: TestClient, factory: Factory, world: tuple[TestClient, Any]
) -> None:
    org = factory.org()
    assert _save(client, org, ["10.1.0.0/16"]).status_code == 200
    # The client wrote the left part; the proxy appended what it saw: the client is OUTSIDE.
    spoofed = client.get("/v1/me", headers=_from(f"{INSIDE}, {OUTSIDE}", org.headers))
    assert _refused(spoofed)
    # A chain of trusted proxies is walked through.
    chained = client.get("/v1/me", headers=_from(f"{OUTSIDE}, {INSIDE}, 127.0.0.1", org.headers))
    assert chained.status_code == 200
    # A peer that is not a trusted proxy: its header is ignored, its own address counts.
    # (No `with`: the app is already running; these clients only change the peer.)
    app = world[0].app
    direct = TestClient(app, client=("203.0.113.5", 1), raise_server_exceptions=False)
    assert _refused(direct.get("/v1/me", headers=_from(INSIDE, org.headers)))
    inside = TestClient(app, client=("10.1.7.7", 1), raise_server_exceptions=False)
    assert inside.get("/v1/me", headers=_from(OUTSIDE, org.headers)).status_code == 200


def test_no_session_is_handed_out_from_outside(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org)
    assert _save(client, org, ["10.1.0.0/16"]).status_code == 200
    login = {"email": member.email, "password": PASSWORD}
    outside = client.post("/v1/auth/login", json=login, headers=_from(OUTSIDE))
    assert _refused(outside)
    assert "token" not in outside.json()
    # A wrong password from outside stays the usual 401: the list is consulted only for
    # a person who proved who they are, so it tells a guesser nothing.
    wrong = client.post(
        "/v1/auth/login",
        json={"email": member.email, "password": "not the password at all"},
        headers=_from(OUTSIDE),
    )
    assert wrong.status_code == 401
    inside = client.post("/v1/auth/login", json=login, headers=_from(INSIDE))
    assert inside.status_code == 200
    listed = client.get(
        f"/v1/orgs/{org.id}/users/{member.user_id}/sessions", headers=org.headers
    ).json()["data"]
    assert {s["ip"] for s in listed} == {INSIDE}  # the outside attempt left no session


def test_a_cached_credential_is_checked_without_a_query(
    client: TestClient, factory: Factory, world: tuple[TestClient, Any]
) -> None:
    """The list is parsed once, into the cache entry; a hit reads no row for it."""
    state = world[1]
    org = factory.org()
    assert _save(client, org, ["10.1.0.0/16", "2001:db8::/32"]).status_code == 200
    assert _me(client, org.admin.headers, INSIDE).status_code == 200  # a miss: cached now
    session_id = org.admin.token.split("_")[1] + "_" + org.admin.token.split("_")[2]
    entry = state.auth_cache.get(session_id)
    assert entry is not None
    assert [str(n) for n in entry.allowlist] == ["10.1.0.0/16", "2001:db8::/32"]
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(state.engine, "before_cursor_execute", count)
    try:
        hits = state.auth_cache.hits
        assert _me(client, org.admin.headers, INSIDE).status_code == 200
        assert _refused(_me(client, org.admin.headers, OUTSIDE))
        assert state.auth_cache.hits == hits + 2
    finally:
        event.remove(state.engine, "before_cursor_execute", count)
    assert not [s for s in statements if "organizations" in s]


def test_a_second_forwarded_for_line_is_read_after_the_first(
    client: TestClient, factory: Factory
) -> None:
    """A proxy that adds its own header line after the client's: the last hop counts."""
    org = factory.org()
    assert _save(client, org, ["10.1.0.0/16"]).status_code == 200
    headers = [
        ("authorization", org.headers["Authorization"]),
        ("x-forwarded-for", INSIDE),  # written by the client
        ("x-forwarded-for", OUTSIDE),  # appended by the proxy
    ]
    app = client.app
    with_lines = TestClient(app, client=("127.0.0.1", 1), raise_server_exceptions=False)
    assert _refused(with_lines.get("/v1/me", headers=headers))
    reversed_lines = [headers[0], headers[2], headers[1]]
    assert with_lines.get("/v1/me", headers=reversed_lines).status_code == 200


def _finish(client: TestClient, mfa_token: str, value: str, ip: str) -> Any:
    return client.post(
        "/v1/auth/mfa",
        json={"mfa_token": mfa_token, "method": "totp", "code": value},
        headers=_from(ip),
    )


def test_no_mfa_token_is_handed_out_or_redeemed_from_outside(
    client: TestClient, factory: Factory
) -> None:
    """The allowlist comes before the second factor: a right password from outside earns
    no mfa token, and a token earned inside is refused outside, its code not spent."""
    org = factory.org()
    member = factory.member(org)
    enrolled = enrol_totp(client, member.headers)
    assert _save(client, org, ["10.1.0.0/16"]).status_code == 200
    login = {"email": member.email, "password": PASSWORD}
    next_step()
    outside = client.post("/v1/auth/login", json=login, headers=_from(OUTSIDE))
    assert _refused(outside)
    assert "mfa_token" not in outside.json()
    owed = client.post("/v1/auth/login", json=login, headers=_from(INSIDE)).json()
    assert owed["mfa_required"] is True
    value = code(enrolled.secret)
    assert _refused(_finish(client, owed["mfa_token"], value, OUTSIDE))
    done = _finish(client, owed["mfa_token"], value, INSIDE)  # neither token nor code used
    assert done.status_code == 200, done.text
    assert _me(client, bearer(done.json()["token"]), INSIDE).json()["amr"] == ["pwd", "otp", "mfa"]
    listed = client.get(
        f"/v1/orgs/{org.id}/users/{member.user_id}/sessions", headers=org.headers
    ).json()["data"]
    assert {s["ip"] for s in listed} == {INSIDE}
    challenged = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "auth.mfa_challenged"},
        headers=org.headers,
    ).json()["data"]
    assert {e["actor"]["ip"] for e in challenged} == {INSIDE}


def test_an_enrolment_mfa_token_is_refused_from_outside(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    member = factory.member(org)
    policy = client.patch(f"/v1/orgs/{org.id}", json={"mfa_policy": "all"}, headers=org.headers)
    assert policy.status_code == 200, policy.text
    assert _save(client, org, ["10.1.0.0/16"]).status_code == 200
    login = {"email": member.email, "password": PASSWORD}
    owed = client.post("/v1/auth/login", json=login, headers=_from(INSIDE)).json()
    assert owed["mfa_enrolment_required"] is True
    enrolment = bearer(owed["mfa_token"])
    assert _refused(client.post("/v1/me/mfa/totp", headers=_from(OUTSIDE, enrolment)))
    assert _refused(client.get("/v1/me/mfa", headers=_from(OUTSIDE, enrolment)))
    assert client.post("/v1/me/mfa/totp", headers=_from(INSIDE, enrolment)).status_code == 200


def test_changing_the_allowlist_needs_step_up(client: TestClient, factory: Factory) -> None:
    """An IP setting (the contract's step-up list): a person whose last verification is
    older than `step_up_max_age` must step up first; keys are not people."""
    org = factory.org()
    person = org.admin.headers

    def by_person(allowlist: list[str]) -> Any:
        return client.patch(
            f"/v1/orgs/{org.id}", json={"ip_allowlist": allowlist}, headers=_from(INSIDE, person)
        )

    clock.advance(601)  # past the default step_up_max_age
    refused = by_person(["10.1.0.0/16"])
    assert refused.status_code == 401, refused.text
    assert refused.json()["code"] == "step_up_required"
    assert refused.headers["www-authenticate"] == (
        'Bearer error="insufficient_user_authentication", max_age=600'
    )
    assert client.get(f"/v1/orgs/{org.id}", headers=org.headers).json()["ip_allowlist"] == []
    # The password and session settings of the same page are not on that list.
    other = {"password_policy": {"min_length": 14}, "max_sessions_per_user": 5}
    assert client.patch(f"/v1/orgs/{org.id}", json=other, headers=person).status_code == 200
    step_up(client, person)
    assert by_person(["10.1.0.0/16"]).status_code == 200
    clock.advance(601)
    # Saving the list unchanged changes nothing and needs nothing; emptying it does.
    assert by_person(["10.1.0.0/16"]).status_code == 200
    assert by_person([]).status_code == 401
    assert _save(client, org, []).status_code == 200  # an API key: step-up does not apply
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "auth.step_up_required"},
        headers=org.headers,
    ).json()["data"]
    assert {e["metadata"]["action"] for e in events} == {"org.ip_allowlist"}


def test_a_passkey_signs_in_only_from_inside_and_under_the_session_cap(
    client: TestClient, factory: Factory
) -> None:
    """Passwordless sign-in makes its session where every other sign-in does: the
    allowlist refuses it from outside (the passkey's challenge not spent), and the
    organisation's cap on parallel sessions ends the oldest."""
    org = factory.org()
    member = factory.member(org)
    key = SoftAuthenticator()
    registered(client, _from(INSIDE, member.headers), key)
    assert _save(client, org, ["10.1.0.0/16"]).status_code == 200
    capped = client.patch(
        f"/v1/orgs/{org.id}", json={"max_sessions_per_user": 1}, headers=org.headers
    )
    assert capped.status_code == 200, capped.text

    def sign_in(ip: str) -> Any:
        options = client.post("/v1/auth/passkey/options", headers=_from(ip)).json()
        return client.post(
            "/v1/auth/passkey", json={"credential": key.get(options)}, headers=_from(ip)
        )

    outside = sign_in(OUTSIDE)
    assert _refused(outside), outside.text
    first = sign_in(INSIDE)
    assert first.status_code == 200, first.text
    second = sign_in(INSIDE)
    assert second.status_code == 200, second.text
    # The cap is one session: the first passkey session was ended by the second.
    assert _me(client, bearer(first.json()["token"]), INSIDE).status_code == 401
    assert _me(client, bearer(second.json()["token"]), INSIDE).status_code == 200
