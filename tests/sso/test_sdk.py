"""The SDK speaks the SSO endpoints: connections, domains and the code exchange."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from bastion.client import APIError, Client
from tests.factories import Factory
from tests.sso.conftest import new_domain, query, sign_in
from tests.sso.peers import CLIENTS, DnsServer, NodeProvider


def test_the_sdk_configures_sso_and_exchanges_the_code(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, oidc_provider: NodeProvider
) -> None:
    org = sso_factory.org()
    sdk = Client(base_url="http://testserver", token=org.admin_key, http_client=browser)
    domain = new_domain()
    claimed = sdk.domains.create(org.id, domain=domain)
    with pytest.raises(APIError) as absent:
        sdk.domains.verify(org.id, claimed["id"])
    assert absent.value.code == "domain_not_verified"
    dns.records[domain] = [claimed["txt_record"]]
    assert sdk.domains.verify(org.id, claimed["id"])["verified"] is True
    conn: Any = sdk.sso_connections.create(
        org.id,
        type="oidc",
        name="idp",
        issuer=oidc_provider.issuer,
        client_id=CLIENTS[0]["client_id"],
        client_secret=CLIENTS[0]["client_secret"],
    )
    assert [c["id"] for c in sdk.sso_connections.list(org.id)] == [conn["id"]]
    oidc_provider.add_account("sdk-user", email=f"sdk@{domain}", email_verified=True)
    done = sign_in(browser, oidc_provider, "sdk-user", connection=conn["id"])
    person = Client(base_url="http://testserver", http_client=browser)
    session = person.auth.sso_exchange(query(done.headers["location"])["code"])
    assert person.me()["id"] == session["user_id"]
