"""The instance signing keys as a JWKS, and their rotation with overlap: tokens signed
before a rotation keep working until they expire; the previous key signs nothing new
(a token it verifies must have been issued before the rotation), and audit checkpoints
are signed by the same key set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import jwt as pyjwt
import pytest
from fastapi.testclient import TestClient

from bastion.core.clock import clock
from bastion.core.signing import thumbprint
from tests.factories import Factory
from tests.instance import Instance, fresh_instance
from tests.oauth.support import access_token, bearer, machine, verify_independently


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Instance]:
    with fresh_instance(tmp_path, monkeypatch) as made:
        yield made


def test_jwks_is_public_cacheable_and_names_each_key(client: TestClient, factory: Factory) -> None:
    response = client.get("/.well-known/jwks.json")  # no credential
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/jwk-set+json")
    assert response.headers["cache-control"] == "public, max-age=300"
    keys = response.json()["keys"]
    assert keys
    assert all(
        set(k) == {"kty", "crv", "x", "kid", "use", "alg"}
        and (k["kty"], k["crv"], k["use"], k["alg"]) == ("OKP", "Ed25519", "sig", "EdDSA")
        for k in keys
    )
    assert not any("d" in k for k in keys)  # never a private part
    org = factory.org()
    listed = client.get("/v1/audit/signing-keys", headers=org.headers).json()["data"]
    assert {k["kid"] for k in listed} == {k["kid"] for k in keys}
    for key in listed:
        assert key["kid"] == thumbprint(bytes.fromhex(key["public_key"]))
    # Every other response stays uncacheable.
    assert client.get("/healthz").headers["cache-control"] == "no-store"


def test_rotation_keeps_earlier_tokens_working_until_they_expire(instance: Instance) -> None:
    client, settings = instance.client, instance.state.settings
    org = instance.factory.org()
    m = machine(client, org)
    before = access_token(client, m)
    old_kid = pyjwt.get_unverified_header(before)["kid"]
    assert client.get("/v1/me", headers=bearer(before)).status_code == 200

    rotated = instance.cli("keys", "rotate-signing", "--json")
    assert rotated["active_version"] == 2
    new_kid = rotated["kid"]
    assert new_kid != old_kid

    after = access_token(client, m)  # the running server signs with the new key at once
    assert pyjwt.get_unverified_header(after)["kid"] == new_kid
    published = client.get("/.well-known/jwks.json").json()["keys"]
    assert [k["kid"] for k in published] == [new_kid, old_kid]  # active first
    for token in (before, after):
        verify_independently(client, token, settings.public_url)
        assert client.get("/v1/me", headers=bearer(token)).status_code == 200

    checkpoint = client.post(f"/v1/orgs/{org.id}/audit-checkpoints", headers=org.headers)
    assert checkpoint.json()["key_version"] == 2  # the same key set signs checkpoints
    verified = client.post(f"/v1/orgs/{org.id}/audit-events/verify", headers=org.headers)
    assert verified.json()["valid"] is True

    clock.advance(settings.oauth_token_ttl + 1)
    assert client.get("/v1/me", headers=bearer(before)).status_code == 401


def test_a_previous_key_verifies_no_token_issued_after_the_rotation(instance: Instance) -> None:
    client = instance.client
    org = instance.factory.org()
    m = machine(client, org)
    token = access_token(client, m)
    signer = instance.state.signer
    header = pyjwt.get_unverified_header(token)
    claims = pyjwt.decode(token, options={"verify_signature": False})
    instance.cli("keys", "rotate-signing", "--json")
    # Someone holding the previous key (say it leaked) signs a token dated after the
    # rotation: the previous key no longer signs anything.
    clock.advance(120)
    old = signer.keys.versions[1]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    now = int(clock.now().timestamp())
    forged = pyjwt.encode(
        {**claims, "iat": now, "exp": now + 600},
        Ed25519PrivateKey.from_private_bytes(old),
        algorithm="EdDSA",
        headers={"kid": header["kid"], "typ": "at+jwt"},
    )
    assert client.get("/v1/me", headers=bearer(forged)).status_code == 401
    assert client.get("/v1/me", headers=bearer(token)).status_code == 200  # issued before


def test_client_secrets_count_in_pepper_status(instance: Instance) -> None:
    org = instance.factory.org()
    machine(instance.client, org)
    status = instance.cli("keys", "pepper-status", "--json")
    assert status["versions"]["1"]["oauth_clients"] == 1
