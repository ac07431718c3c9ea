"""ID token validation, with tokens a certified provider would never issue: a fake
provider signs what the test asks with a key the test holds (or no key at all)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient
from joserfc.jwk import RSAKey

from tests.factories import Factory, Org
from tests.sso.conftest import oidc_connection, query, start, verified_domain
from tests.sso.peers import DnsServer, FakeProvider


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def world(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, fake_idp: FakeProvider
) -> Iterator[tuple[Org, str]]:
    org = sso_factory.org()
    domain = verified_domain(browser, dns, org)
    body = {"client_id": "fake-client", "scopes": ["openid", "email"]}
    oidc_connection(browser, org, fake_idp.issuer, **body)
    fake_idp.discovery_issuer = None
    yield org, domain
    fake_idp.discovery_issuer = None


def _run(browser: TestClient, fake: FakeProvider, domain: str, token: Callable[[str], str]) -> str:
    """Start a sign-in, let the fake provider answer with `token(nonce)`, return where
    Bastion sends the browser."""
    started = start(browser, email=f"p@{domain}")
    assert started.status_code == 302, started.text
    params = query(started.headers["location"])
    fake.last_nonce = params["nonce"]
    fake.make_token = token
    answer = browser.get(
        "/v1/auth/sso/oidc/callback",
        params={"code": "abc", "state": params["state"]},
        follow_redirects=False,
    )
    assert answer.status_code == 302, answer.text
    return str(answer.headers["location"])


def _email(domain: str) -> str:
    return f"p{uuid.uuid4().hex[:6]}@{domain}"


def test_a_well_formed_token_signs_in(
    browser: TestClient, world: tuple[Org, str], fake_idp: FakeProvider
) -> None:
    """The control case: the fake provider's tokens are accepted when right, so each
    refusal below is for the one thing changed."""
    _, domain = world
    email = _email(domain)
    location = _run(
        browser, fake_idp, domain, lambda n: fake_idp.sign(fake_idp.claims(n, email=email))
    )
    assert "code=" in location, location
    request = fake_idp.token_requests[-1]
    assert request["authorization"].startswith("Basic ")  # client_secret_basic
    assert len(request["form"]["code_verifier"][0]) >= 43


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"exp": -300, "iat": -600}, "token_expired"),
        ({"aud": "another-client"}, "audience_mismatch"),
        ({"aud": ["fake-client", "another-client"]}, "audience_mismatch"),
        ({"aud": ["fake-client", "x"], "azp": "x"}, "audience_mismatch"),
        ({"nonce": "not-the-nonce"}, "nonce_mismatch"),
        ({"iss": "http://127.0.0.1:1"}, "issuer_mismatch"),
        ({"iat": 3600}, "token_invalid"),
        ({"nbf": 3600}, "token_invalid"),
        ({"email_verified": False}, "email_unverified"),
        ({"at_hash": "AAAAAAAAAAAAAAAAAAAAAA"}, "token_invalid"),
    ],
)
def test_claims_are_checked(
    browser: TestClient,
    world: tuple[Org, str],
    fake_idp: FakeProvider,
    overrides: dict[str, Any],
    error: str,
) -> None:
    org, domain = world
    now = int(time.time())
    fixed = {
        k: (now + v if k in ("exp", "iat", "nbf") and isinstance(v, int) else v)
        for k, v in overrides.items()
    }
    location = _run(
        browser,
        fake_idp,
        domain,
        lambda n: fake_idp.sign(fake_idp.claims(n, email=_email(domain), **fixed)),
    )
    assert location == f"/console/?error={error}"
    failed = browser.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "sso.signin_failed"},
        headers=org.headers,
    ).json()["data"][0]
    assert failed["reason"] == error
    assert "eyJ" not in json.dumps(failed)  # never a token in the trail


def test_two_minutes_of_clock_skew_are_tolerated(
    browser: TestClient, world: tuple[Org, str], fake_idp: FakeProvider
) -> None:
    _, domain = world
    now = int(time.time())
    location = _run(
        browser,
        fake_idp,
        domain,
        lambda n: fake_idp.sign(
            fake_idp.claims(n, email=_email(domain), exp=now - 60, iat=now + 60)
        ),
    )
    assert "code=" in location, location


def test_alg_none_is_refused(
    browser: TestClient, world: tuple[Org, str], fake_idp: FakeProvider
) -> None:
    _, domain = world

    def unsigned(nonce: str) -> str:
        header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        body = _b64(json.dumps(fake_idp.claims(nonce, email=_email(domain))).encode())
        return f"{header}.{body}."

    assert _run(browser, fake_idp, domain, unsigned) == "/console/?error=token_invalid"


def test_hmac_keyed_with_the_providers_public_key_is_refused(
    browser: TestClient, world: tuple[Org, str], fake_idp: FakeProvider
) -> None:
    """The algorithm-confusion attack: HS256 whose secret is the public key."""
    _, domain = world
    public_pem = fake_idp.key.public_key.public_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def confused(nonce: str) -> str:
        header = _b64(json.dumps({"alg": "HS256", "kid": "fake-1"}).encode())
        body = _b64(json.dumps(fake_idp.claims(nonce, email=_email(domain))).encode())
        mac = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
        return f"{header}.{body}.{_b64(mac)}"

    assert _run(browser, fake_idp, domain, confused) == "/console/?error=token_invalid"


def test_a_token_signed_by_another_key_is_refused(
    browser: TestClient, world: tuple[Org, str], fake_idp: FakeProvider
) -> None:
    _, domain = world
    stranger = RSAKey.generate_key(2048, parameters={"kid": "fake-1"})

    def forged(nonce: str) -> str:
        from joserfc import jwt

        claims = fake_idp.claims(nonce, email=_email(domain))
        return jwt.encode({"alg": "RS256", "kid": "fake-1"}, claims, stranger)

    assert _run(browser, fake_idp, domain, forged) == "/console/?error=token_invalid"


def test_a_rotated_key_is_fetched_when_its_kid_is_new(
    browser: TestClient, world: tuple[Org, str], fake_idp: FakeProvider
) -> None:
    _, domain = world
    first = _run(
        browser, fake_idp, domain,
        lambda n: fake_idp.sign(fake_idp.claims(n, email=_email(domain))),
    )  # fmt: skip
    assert "code=" in first  # the old key set is cached now
    old = fake_idp.key
    fake_idp.key = RSAKey.generate_key(2048, parameters={"kid": "fake-2", "use": "sig"})
    try:
        browser.cookies.clear()
        rotated = _run(
            browser,
            fake_idp,
            domain,
            lambda n: fake_idp.sign(
                fake_idp.claims(n, email=_email(domain)), {"alg": "RS256", "kid": "fake-2"}
            ),
        )
        assert "code=" in rotated, rotated
    finally:
        fake_idp.key = old


def test_a_discovery_document_naming_another_issuer_is_refused(
    browser: TestClient, world: tuple[Org, str], fake_idp: FakeProvider, sso_app: Any
) -> None:
    _, domain = world
    fake_idp.discovery_issuer = fake_idp.issuer + "/"
    sso_app.state.bastion.sso_rp._metadata.clear()
    try:
        started = start(browser, email=f"p@{domain}")
        assert started.headers["location"] == "/console/?error=issuer_mismatch"
    finally:
        fake_idp.discovery_issuer = None
        sso_app.state.bastion.sso_rp._metadata.clear()


@pytest.mark.parametrize(
    "payload",
    [b"[1, 2]", b"not json", b'{"iss": 1, "aud": {"x": 1}, "exp": "soon", "iat": true}'],
)
def test_malformed_payloads_are_refused_never_a_500(
    browser: TestClient, world: tuple[Org, str], fake_idp: FakeProvider, payload: bytes
) -> None:
    _, domain = world

    def odd(nonce: str) -> str:
        from joserfc import jws

        header = {"alg": "RS256", "kid": "fake-1"}
        return str(jws.serialize_compact(header, payload, fake_idp.key))

    location = _run(browser, fake_idp, domain, odd)
    assert location.startswith("/console/?error=")
    assert location.split("=", 1)[1] in {"token_invalid", "issuer_mismatch", "provider_invalid"}
