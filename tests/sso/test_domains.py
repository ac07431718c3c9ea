"""Verified domains: DNS TXT lookups against a real DNS server (dnslib)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.factories import Factory
from tests.sso.conftest import new_domain
from tests.sso.peers import DnsServer


def test_a_domain_is_verified_by_its_txt_record(
    browser: TestClient, sso_factory: Factory, dns: DnsServer
) -> None:
    org = sso_factory.org()
    domain = new_domain()
    created = browser.post(
        f"/v1/orgs/{org.id}/domains", json={"domain": domain.upper()}, headers=org.headers
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["domain"] == domain
    assert body["verified"] is False
    assert body["id"].startswith("dom_")
    assert body["txt_record"].startswith("bastion-verification=")
    verify = f"/v1/orgs/{org.id}/domains/{body['id']}/verify"

    dns.records[domain] = ["v=spf1 -all"]
    absent = browser.post(verify, headers=org.headers)
    assert absent.status_code == 422
    assert absent.json()["code"] == "domain_not_verified"
    assert body["txt_record"] in absent.json()["detail"]
    failed = browser.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "sso_domain.verification_failed"},
        headers=org.headers,
    ).json()["data"]
    assert failed[0]["reason"] == "record_absent"

    dns.records[domain] = ["v=spf1 -all", body["txt_record"]]
    verified = browser.post(verify, headers=org.headers)
    assert verified.status_code == 200, verified.text
    assert verified.json()["verified"] is True
    listed = browser.get(f"/v1/orgs/{org.id}/domains", headers=org.headers).json()["data"]
    assert [d["verified"] for d in listed if d["id"] == body["id"]] == [True]


def test_a_domain_without_any_record_is_not_verified(
    browser: TestClient, sso_factory: Factory
) -> None:
    org = sso_factory.org()
    created = browser.post(
        f"/v1/orgs/{org.id}/domains", json={"domain": new_domain()}, headers=org.headers
    ).json()
    answer = browser.post(f"/v1/orgs/{org.id}/domains/{created['id']}/verify", headers=org.headers)
    assert answer.status_code == 422
    assert answer.json()["code"] == "domain_not_verified"


def test_one_organisation_per_domain(
    browser: TestClient, sso_factory: Factory, dns: DnsServer
) -> None:
    first, second = sso_factory.org(), sso_factory.org()
    domain = new_domain()
    claims = [
        browser.post(f"/v1/orgs/{o.id}/domains", json={"domain": domain}, headers=o.headers).json()
        for o in (first, second)
    ]
    dns.records[domain] = [c["txt_record"] for c in claims]  # both published
    ok = browser.post(
        f"/v1/orgs/{first.id}/domains/{claims[0]['id']}/verify", headers=first.headers
    )
    assert ok.status_code == 200, ok.text
    taken = browser.post(
        f"/v1/orgs/{second.id}/domains/{claims[1]['id']}/verify", headers=second.headers
    )
    assert taken.status_code == 409
    again = browser.post(
        f"/v1/orgs/{second.id}/domains", json={"domain": domain}, headers=second.headers
    )
    assert again.status_code == 409
    # Removed by its owner, the domain can be verified by the other organisation.
    gone = browser.delete(f"/v1/orgs/{first.id}/domains/{claims[0]['id']}", headers=first.headers)
    assert gone.status_code == 204
    now = browser.post(
        f"/v1/orgs/{second.id}/domains/{claims[1]['id']}/verify", headers=second.headers
    )
    assert now.status_code == 200, now.text


def test_domains_are_scoped_and_permission_checked(
    browser: TestClient, sso_factory: Factory
) -> None:
    org, other = sso_factory.org(), sso_factory.org()
    created = browser.post(
        f"/v1/orgs/{org.id}/domains", json={"domain": new_domain()}, headers=org.headers
    ).json()
    url = f"/v1/orgs/{org.id}/domains/{created['id']}"
    assert browser.get(url).status_code == 401
    assert browser.get(url, headers=other.headers).status_code == 404
    assert (
        browser.get(
            f"/v1/orgs/{other.id}/domains/{created['id']}", headers=other.headers
        ).status_code
        == 404
    )
    member = sso_factory.member(org, "member")
    assert browser.delete(url, headers=member.headers).status_code == 403
    assert browser.post(f"{url}/verify", headers=member.headers).status_code == 403
    bad = browser.post(
        f"/v1/orgs/{org.id}/domains", json={"domain": "not a domain"}, headers=org.headers
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "domain"
    assert browser.get(f"/v1/orgs/{org.id}/domains/dom_x", headers=org.headers).status_code == 404
