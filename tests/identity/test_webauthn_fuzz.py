"""No WebAuthn response, however malformed, makes a 500: each is a 422 naming the field
or the same 401 (property-based, against the real endpoints)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import Factory
from tests.identity.mfa_support import login
from tests.identity.webauthn_authenticator import SoftAuthenticator, b64url

_B64 = st.one_of(
    st.binary(max_size=80).map(b64url),
    st.text(alphabet="ABCabc012-_=", min_size=1, max_size=40),
    st.sampled_from(["e30", "eyJ0eXBlIjoid2ViYXV0aG4uZ2V0In0", "oA", "AA", "A"]),
)
_LEAF = st.one_of(_B64, st.none(), st.integers(), st.booleans(), st.text(max_size=10))
_RESPONSE = st.dictionaries(
    st.sampled_from(["clientDataJSON", "authenticatorData", "signature", "userHandle", "x"]),
    _LEAF,
    max_size=5,
)
_CREDENTIAL = st.one_of(
    st.fixed_dictionaries(
        {"id": _B64, "rawId": _B64, "type": st.just("public-key"), "response": _RESPONSE}
    ),
    st.dictionaries(st.sampled_from(["id", "rawId", "type", "response"]), _LEAF, max_size=4),
    _LEAF,
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(credential=_CREDENTIAL)
def test_no_assertion_breaks_sign_in(client: TestClient, factory: Factory, credential: Any) -> None:
    org = factory.org()
    key = SoftAuthenticator()
    options = client.post("/v1/me/mfa/webauthn/registration-options", headers=org.admin.headers)
    done = client.post(
        "/v1/me/mfa/webauthn",
        json={"credential": key.create(options.json())},
        headers=org.admin.headers,
    )
    assert done.status_code == 200, done.text
    owed = login(client, org.admin.email)
    client.post("/v1/auth/mfa/webauthn-options", json={"mfa_token": owed["mfa_token"]})
    for response in (
        client.post(
            "/v1/auth/mfa",
            json={"mfa_token": owed["mfa_token"], "method": "webauthn", "credential": credential},
        ),
        client.post("/v1/auth/passkey", json={"credential": credential}),
        client.post(
            "/v1/me/mfa/webauthn", json={"credential": credential}, headers=org.admin.headers
        ),
    ):
        assert response.status_code in (401, 422), response.text
        if response.status_code == 422:
            assert response.json()["errors"][0]["field"].startswith("credential")
