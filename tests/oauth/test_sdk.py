"""The SDK with a service account's OAuth client as its credential: it fetches an access
token, reuses it, fetches a new one when it runs out or is revoked, and surfaces OAuth
errors as typed errors."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bastion.client import AsyncClient, AuthenticationError, Client, ClientCredentials
from bastion.core.clock import clock
from tests.factories import Factory
from tests.oauth.support import FORM, machine


def test_the_sync_client_fetches_reuses_and_renews_tokens(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    admin = Client(http_client=client, token=org.admin_key)
    account = admin.service_accounts.create(org.id, name="robot", role="viewer")["id"]
    made = admin.oauth_clients.create(org.id, account, name="ci", scopes=["users:read"])
    assert [c["client_id"] for c in admin.oauth_clients.list(org.id, account)] == [
        made["client_id"]
    ]
    creds = ClientCredentials(made["client_id"], made["client_secret"])
    assert made["client_secret"] not in repr(creds)
    sdk = Client(http_client=client, token=creds)
    me = sdk.me()
    assert (me["principal_type"], me["id"]) == ("service_account", account)
    first = creds.current()
    assert first is not None
    assert sdk.me()["permissions"] == ["users:read"]
    assert creds.current() == first  # reused, not fetched again

    # Revoked behind its back: the next call fetches a new token and goes through.
    revoked = client.post(
        "/v1/oauth/revoke",
        data={"token": first, "client_id": made["client_id"], "client_secret": creds.client_secret},
        headers=FORM,
    )
    assert revoked.status_code == 200
    assert sdk.me()["id"] == account
    assert creds.current() not in (None, first)

    admin.oauth_clients.delete(org.id, account, made["client_id"])
    with pytest.raises(AuthenticationError) as raised:
        sdk.me()
    assert raised.value.code == "invalid_client"


def test_a_wrong_secret_is_a_typed_error(client: TestClient, factory: Factory) -> None:
    m = machine(client, factory.org())
    sdk = Client(http_client=client, token=ClientCredentials(m.client_id, "wrong"))
    with pytest.raises(AuthenticationError) as raised:
        sdk.me()
    assert (raised.value.status, raised.value.code) == (401, "invalid_client")
    scoped = Client(
        http_client=client, token=ClientCredentials(m.client_id, m.secret, scope="no:such")
    )
    with pytest.raises(Exception) as bad_scope:
        scoped.me()
    assert getattr(bad_scope.value, "code", None) == "invalid_scope"


@pytest.mark.anyio
async def test_the_async_client_renews_a_token_that_ran_out(app, factory: Factory) -> None:  # type: ignore[no-untyped-def]
    import httpx

    org = factory.org()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        m = machine(factory.client, org)
        creds = ClientCredentials(m.client_id, m.secret)
        sdk = AsyncClient(http_client=http, token=creds)
        assert (await sdk.me())["id"] == m.account_id
        first = creds.current()
        clock.advance(901)  # the server's clock: the token has expired there
        assert (await sdk.me())["id"] == m.account_id
        assert creds.current() not in (None, first)
