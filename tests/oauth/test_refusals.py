"""Access tokens that are not exactly ours are refused (401), whatever they claim: no
`none`, no HMAC keyed with the public key, no key of the token's choosing, no unknown
`kid`, no other issuer or audience, nothing expired or too long-lived. And anything
that is neither one of our typed credentials nor a JWT is refused too (default deny)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from bastion.core.crypto import hmac_sha256
from bastion.core.signing import InstanceSigner
from tests.factories import Factory
from tests.oauth.support import Machine, access_token, bearer, machine


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _part(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    head, body, sig = token.split(".")
    pad = "=="
    header = json.loads(base64.urlsafe_b64decode(head + pad))
    claims = json.loads(base64.urlsafe_b64decode(body + pad))
    return header, claims, sig


@pytest.fixture
def genuine(client: TestClient, factory: Factory) -> tuple[Machine, str]:
    m = machine(client, factory.org())
    token = access_token(client, m)
    assert client.get("/v1/me", headers=bearer(token)).status_code == 200
    return m, token


def _refused(client: TestClient, token: str) -> None:
    response = client.get("/v1/me", headers=bearer(token))
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/problem+json"


def _signer(client: TestClient) -> InstanceSigner:
    signer: InstanceSigner = client.app.state.bastion.signer  # type: ignore[attr-defined]
    return signer


def test_alg_none_is_refused(client: TestClient, genuine: tuple[Machine, str]) -> None:
    _m, token = genuine
    header, claims, _sig = _split(token)
    for alg in ("none", "None", "NONE"):
        forged = f"{_part({**header, 'alg': alg})}.{_part(claims)}."
        _refused(client, forged)
        _refused(client, forged + "AAAA")


def test_hmac_keyed_with_the_public_key_is_refused(
    client: TestClient, genuine: tuple[Machine, str]
) -> None:
    _m, token = genuine
    header, claims, _sig = _split(token)
    jwk = client.get("/.well-known/jwks.json").json()["keys"][0]
    public_raw = base64.urlsafe_b64decode(jwk["x"] + "==")
    for secret in (public_raw, jwk["x"].encode(), json.dumps(jwk).encode()):
        signing_input = f"{_part({**header, 'alg': 'HS256'})}.{_part(claims)}"
        sig = _b64(hmac_sha256(secret, signing_input.encode()))
        _refused(client, f"{signing_input}.{sig}")


def test_another_key_is_refused_whatever_kid_it_names(
    client: TestClient, genuine: tuple[Machine, str]
) -> None:
    _m, token = genuine
    header, claims, _sig = _split(token)
    foreign = Ed25519PrivateKey.generate()
    for kid in (header["kid"], "someone-elses-kid"):
        forged = pyjwt.encode(claims, foreign, algorithm="EdDSA", headers={**header, "kid": kid})
        _refused(client, forged)
    # ... nor a key the token carries along with it.
    public = pyjwt.algorithms.OKPAlgorithm.to_jwk(foreign.public_key(), as_dict=True)
    embedded = pyjwt.encode(claims, foreign, algorithm="EdDSA", headers={**header, "jwk": public})
    _refused(client, embedded)
    no_kid = {k: v for k, v in header.items() if k != "kid"}
    _refused(client, pyjwt.encode(claims, foreign, algorithm="EdDSA", headers=no_kid))


def test_a_tampered_token_is_refused(client: TestClient, genuine: tuple[Machine, str]) -> None:
    m, token = genuine
    header, claims, sig = _split(token)
    other = machine(client, m.org, role="admin")
    tampered = f"{_part(header)}.{_part({**claims, 'sub': other.account_id})}.{sig}"
    _refused(client, tampered)
    _refused(client, token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))


def _with(
    client: TestClient, token: str, change: Callable[[dict[str, Any]], dict[str, Any]]
) -> str:
    """The token's claims changed, signed with the instance's own key: only the claim
    checks stand between it and acceptance."""
    header, claims, _sig = _split(token)
    forged, _kid = _signer(client).sign_jws(change(dict(claims)), header["typ"])
    return forged


def test_claims_are_checked_even_under_our_own_signature(
    client: TestClient, genuine: tuple[Machine, str]
) -> None:
    _m, token = genuine
    now = int(time.time())
    # The control: re-signed unchanged, it is accepted.
    same = _with(client, token, lambda c: c)
    assert client.get("/v1/me", headers=bearer(same)).status_code == 200
    for change in (
        lambda c: {**c, "aud": "https://elsewhere.example/v1"},
        lambda c: {**c, "aud": [c["aud"] + "x"]},
        lambda c: {**c, "iss": "https://evil.example"},
        lambda c: {k: v for k, v in c.items() if k != "aud"},
        lambda c: {**c, "exp": now - 10, "iat": now - 100},
        lambda c: {**c, "exp": now + 7200, "iat": now},  # longer than any token lives
        lambda c: {**c, "iat": now + 600, "exp": now + 900},  # issued in the future
        lambda c: {**c, "exp": str(c["exp"])},
        lambda c: {**c, "jti": "not-an-id"},
        lambda c: {**c, "scope": "no:such"},
        lambda c: {**c, "client_id": "oac_" + "0" * 26},  # no such client
        lambda c: {**c, "org": "org_" + "0" * 26},  # not the client's organisation
    ):
        _refused(client, _with(client, token, change))


def test_another_type_is_refused(client: TestClient, genuine: tuple[Machine, str]) -> None:
    _m, token = genuine
    _header, claims, _sig = _split(token)
    forged, _kid = _signer(client).sign_jws(claims, "JWT")
    _refused(client, forged)


@pytest.mark.parametrize(
    "credential",
    [
        "eyJhbGciOiJub25lIn0.e30.",
        "eyJ.eyJ.eyJ",
        "a.b.c",
        "boc_oac_01ZZZZZZZZZZZZZZZZZZZZZZZZ_secret",  # a client secret is no bearer
        "bxx_key_01ZZZZZZZZZZZZZZZZZZZZZZZZ_secret",
        "eyJ" + "A" * 9000 + ".e30.AA",
    ],
)
def test_unrecognised_credentials_are_refused(client: TestClient, credential: str) -> None:
    _refused(client, credential)


def test_a_client_secret_is_not_a_bearer_credential(client: TestClient, factory: Factory) -> None:
    m = machine(client, factory.org())
    _refused(client, m.secret)
