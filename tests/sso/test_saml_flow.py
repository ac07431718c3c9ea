"""SAML sign-in through the whole flow against a real IdP (samlify, tests/sso/saml/idp.js):
start → signed AuthnRequest → IdP (reads our published SP metadata, verifies our request's
signature) → signed response posted to the ACS → one-time code → session."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from lxml import etree

from bastion.secrets import sealed
from bastion.sso import connections, saml_sp
from tests.factories import Factory, Org, bearer
from tests.sso.conftest import query, start, verified_domain
from tests.sso.peers import DnsServer, MetadataServer
from tests.sso.saml.conftest import IDP_SSO_URL, Idp

MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"


@pytest.fixture(scope="module")
def metadata_server() -> Iterator[MetadataServer]:
    server = MetadataServer()
    yield server
    server.stop()


def saml_connection(browser: TestClient, org: Org, idp: Idp, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "saml", "name": "Test IdP", **extra}
    if "idp_metadata_url" not in body and "idp_metadata_xml" not in body:
        body["idp_metadata_xml"] = idp.metadata((idp.keys.primary,))
    created = browser.post(f"/v1/orgs/{org.id}/sso-connections", json=body, headers=org.headers)
    assert created.status_code == 201, created.text
    return dict(created.json())


def sp_metadata(browser: TestClient, conn_id: str) -> str:
    answer = browser.get(f"/v1/auth/sso/{conn_id}/saml/metadata")
    assert answer.status_code == 200, answer.text
    return answer.text


def post_acs(
    browser: TestClient, conn_id: str, saml_response: str, relay_state: str | None
) -> httpx.Response:
    form = {"SAMLResponse": saml_response}
    if relay_state is not None:
        form["RelayState"] = relay_state
    return browser.post(f"/v1/auth/sso/{conn_id}/saml/acs", data=form, follow_redirects=False)


def idp_answer(
    browser: TestClient, idp: Idp, conn_id: str, email: str, **login: Any
) -> dict[str, Any]:
    """Start at Bastion with the connection, let the IdP answer our AuthnRequest for
    `email`."""
    started = start(browser, connection=conn_id)
    assert started.status_code == 302, started.text
    location = started.headers["location"]
    assert location.startswith(IDP_SSO_URL + "?"), location
    answer = idp.login(
        None, location, sp_metadata_xml=sp_metadata(browser, conn_id), email=email, **login
    )
    assert answer["relay_state"], answer
    return answer


def sign_in(
    browser: TestClient, idp: Idp, conn_id: str, email: str, **login: Any
) -> httpx.Response:
    answer = idp_answer(browser, idp, conn_id, email, **login)
    return post_acs(browser, conn_id, answer["saml_response"], answer["relay_state"])


def events(browser: TestClient, org: Org, type_: str) -> list[dict[str, Any]]:
    found = browser.get(
        f"/v1/orgs/{org.id}/audit-events", params={"type": type_}, headers=org.headers
    )
    assert found.status_code == 200, found.text
    return list(found.json()["data"])


def failures(browser: TestClient, org: Org) -> list[str]:
    return [e["reason"] for e in events(browser, org, "sso.signin_failed")]


def org_with_saml(
    browser: TestClient, factory: Factory, dns: DnsServer, idp: Idp, **extra: Any
) -> tuple[Org, str, dict[str, Any]]:
    org = factory.org()
    domain = verified_domain(browser, dns, org)
    return org, domain, saml_connection(browser, org, idp, **extra)


def person(domain: str) -> str:
    return f"p{uuid.uuid4().hex[:8]}@{domain}"


# --- SP-initiated ------------------------------------------------------------------------


def test_sp_initiated_sign_in_end_to_end(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, idp: Idp
) -> None:
    org, domain, conn = org_with_saml(browser, sso_factory, dns, idp)
    email = person(domain)

    started = start(browser, email=email)
    assert started.status_code == 302, started.text
    params = parse_qs(urlsplit(started.headers["location"]).query)
    # A signed AuthnRequest (HTTP-Redirect) carrying the state as its RelayState.
    assert set(params) == {"SAMLRequest", "RelayState", "SigAlg", "Signature"}
    relay_state = params["RelayState"][0]
    assert len(relay_state) <= 80
    answer = idp.login(
        None,
        started.headers["location"],
        sp_metadata_xml=sp_metadata(browser, conn["id"]),
        email=email,
        attributes={"groups": []},
    )
    # The IdP read our request, verified its signature with our published certificate,
    # and saw an ID derived from the state (an xs:ID), not the state itself.
    assert answer["relay_state"] == relay_state
    assert answer["request_id"].startswith("_")
    assert relay_state not in answer["request_id"]

    done = post_acs(browser, conn["id"], answer["saml_response"], relay_state)
    assert done.status_code == 302, done.text
    assert done.headers["location"].startswith("/console/?code="), done.headers["location"]
    code = query(done.headers["location"])["code"]
    exchanged = browser.post("/v1/auth/sso/exchange", json={"code": code})
    assert exchanged.status_code == 200, exchanged.text
    me = browser.get("/v1/me", headers=bearer(exchanged.json()["token"]))
    assert me.status_code == 200, me.text
    assert me.json()["org_id"] == org.id
    assert me.json()["user_id"] == exchanged.json()["user_id"]
    assert me.json()["role"] == "member"
    assert "ext" in me.json()["amr"]
    succeeded = events(browser, org, "sso.signin_succeeded")
    assert succeeded[0]["metadata"]["connection_id"] == conn["id"]
    assert succeeded[0]["metadata"]["subject"] == email  # the NameID


def test_jit_maps_saml_groups_to_role_and_teams_at_each_sign_in(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, idp: Idp
) -> None:
    org = sso_factory.org()
    domain = verified_domain(browser, dns, org)
    teams = {}
    for name in ("ops", "eng"):
        made = browser.post(f"/v1/orgs/{org.id}/teams", json={"name": name}, headers=org.headers)
        assert made.status_code == 201, made.text
        teams[name] = made.json()["id"]
    conn = saml_connection(
        browser,
        org,
        idp,
        groups_attribute="memberOf",
        role_mapping=[{"group": "bastion-managers", "role": "manager"}],
        team_mapping=[{"group": g, "team_id": t} for g, t in teams.items()],
        default_role="viewer",
    )
    email = person(domain)

    first = sign_in(
        browser, idp, conn["id"], email, attributes={"memberOf": ["bastion-managers", "ops"]}
    )
    assert "code=" in first.headers["location"], first.headers["location"]
    users = browser.get(f"/v1/orgs/{org.id}/users", params={"limit": 200}, headers=org.headers)
    user = next(u for u in users.json()["data"] if u["email"] == email)
    assert user["role"] == "manager"

    def members(team: str) -> list[str]:
        found = browser.get(f"/v1/orgs/{org.id}/teams/{teams[team]}", headers=org.headers)
        return list(found.json()["member_ids"])

    assert members("ops") == [user["id"]]
    assert members("eng") == []
    assert events(browser, org, "sso.user_provisioned")[0]["resource"]["id"] == user["id"]

    browser.cookies.clear()
    again = sign_in(browser, idp, conn["id"], email, attributes={"memberOf": ["eng"]})
    assert "code=" in again.headers["location"], again.headers["location"]
    users = browser.get(f"/v1/orgs/{org.id}/users", params={"limit": 200}, headers=org.headers)
    assert next(u for u in users.json()["data"] if u["email"] == email)["role"] == "viewer"
    assert members("ops") == []
    assert members("eng") == [user["id"]]
    applied = events(browser, org, "sso.mapping_applied")[0]["metadata"]
    assert applied["role"] == {"from": "manager", "to": "viewer"}
    assert applied["teams_added"] == [teams["eng"]]
    assert applied["teams_removed"] == [teams["ops"]]


def test_a_replayed_response_is_refused(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, idp: Idp
) -> None:
    org, domain, conn = org_with_saml(browser, sso_factory, dns, idp)
    answer = idp_answer(browser, idp, conn["id"], person(domain))
    first = post_acs(browser, conn["id"], answer["saml_response"], answer["relay_state"])
    assert "code=" in first.headers["location"], first.headers["location"]

    again = post_acs(browser, conn["id"], answer["saml_response"], answer["relay_state"])
    assert again.status_code == 302
    assert again.headers["location"] == "/console/?error=state_replayed"
    # Without its state (as if unsolicited), the assertion is refused too.
    alone = post_acs(browser, conn["id"], answer["saml_response"], None)
    assert alone.headers["location"] == "/console/?error=idp_initiated_disabled"
    assert failures(browser, org)[:2] == ["idp_initiated_disabled", "state_replayed"]


def test_an_assertion_is_accepted_once(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, idp: Idp
) -> None:
    """The one-time store of assertion ids, met on its own: an IdP-initiated response
    (no state to replay) posted twice."""
    org, domain, conn = org_with_saml(browser, sso_factory, dns, idp, allow_idp_initiated=True)
    answer = idp.login(
        None, None, sp_metadata_xml=sp_metadata(browser, conn["id"]), email=person(domain)
    )
    first = post_acs(browser, conn["id"], answer["saml_response"], None)
    assert first.headers["location"].startswith("/console/?code="), first.headers["location"]
    browser.cookies.clear()
    again = post_acs(browser, conn["id"], answer["saml_response"], None)
    assert again.headers["location"] == "/console/?error=assertion_replayed"
    assert failures(browser, org)[0] == "assertion_replayed"


def test_a_response_for_another_connection_is_refused(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, idp: Idp
) -> None:
    org, domain, conn_a = org_with_saml(browser, sso_factory, dns, idp)
    conn_b = saml_connection(browser, org, idp, name="Second")
    email = person(domain)

    # A's sign-in, answered by the IdP, posted to B's ACS.
    answer = idp_answer(browser, idp, conn_a["id"], email)
    wrong_acs = post_acs(browser, conn_b["id"], answer["saml_response"], answer["relay_state"])
    assert wrong_acs.headers["location"] == "/console/?error=connection_mismatch"

    # B's sign-in answered by the IdP, posted to A's ACS with a state of A's.
    started_a = start(browser, connection=conn_a["id"])
    state_a = parse_qs(urlsplit(started_a.headers["location"]).query)["RelayState"][0]
    started_b = start(browser, connection=conn_b["id"])
    answer_b = idp.login(
        None,
        started_b.headers["location"],
        sp_metadata_xml=sp_metadata(browser, conn_b["id"]),
        email=email,
    )
    crossed = post_acs(browser, conn_a["id"], answer_b["saml_response"], state_a)
    assert crossed.headers["location"] == "/console/?error=destination_mismatch"
    assert failures(browser, org)[:2] == ["destination_mismatch", "connection_mismatch"]


def test_the_response_must_answer_this_sign_ins_request(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, idp: Idp
) -> None:
    org, domain, conn = org_with_saml(browser, sso_factory, dns, idp)
    email = person(domain)
    started = start(browser, email=email)
    relay_state = parse_qs(urlsplit(started.headers["location"]).query)["RelayState"][0]
    answer = idp.login(
        None,
        started.headers["location"],
        sp_metadata_xml=sp_metadata(browser, conn["id"]),
        email=email,
        InResponseTo="_" + "0" * 40,
    )
    done = post_acs(browser, conn["id"], answer["saml_response"], relay_state)
    assert done.headers["location"] == "/console/?error=in_response_to_mismatch"

    # The answer to one sign-in, replayed with another sign-in's state, is refused too.
    first = idp_answer(browser, idp, conn["id"], email)
    second = start(browser, email=email)
    other_state = parse_qs(urlsplit(second.headers["location"]).query)["RelayState"][0]
    swapped = post_acs(browser, conn["id"], first["saml_response"], other_state)
    assert swapped.headers["location"] == "/console/?error=in_response_to_mismatch"
    assert failures(browser, org)[:2] == ["in_response_to_mismatch"] * 2


def test_errors_of_the_idp_are_refused_and_audited(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, idp: Idp
) -> None:
    org, domain, conn = org_with_saml(browser, sso_factory, dns, idp)
    rogue = sign_in(browser, idp, conn["id"], person(domain), key=idp.keys.rogue)
    assert rogue.headers["location"] == "/console/?error=signature_invalid"
    browser.cookies.clear()
    outsider = sign_in(browser, idp, conn["id"], "someone@unverified.example")
    assert outsider.headers["location"] == "/console/?error=domain_not_verified"
    assert failures(browser, org)[:2] == ["domain_not_verified", "signature_invalid"]


def test_a_state_nobody_issued_is_a_400(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, idp: Idp
) -> None:
    _, domain, conn = org_with_saml(browser, sso_factory, dns, idp)
    answer = idp_answer(browser, idp, conn["id"], person(domain))
    tampered = post_acs(browser, conn["id"], answer["saml_response"], "x" * 43)
    assert tampered.status_code == 400, tampered.text
    assert tampered.json()["code"] == "sso_state_invalid"


# --- IdP-initiated -------------------------------------------------------------------------


def test_idp_initiated_is_refused_by_default_and_accepted_when_enabled(
    browser: TestClient, sso_factory: Factory, dns: DnsServer, idp: Idp
) -> None:
    org, domain, conn = org_with_saml(browser, sso_factory, dns, idp)
    assert conn["allow_idp_initiated"] is False
    email = person(domain)
    metadata = sp_metadata(browser, conn["id"])

    unsolicited = idp.login(None, None, sp_metadata_xml=metadata, email=email)
    refused = post_acs(browser, conn["id"], unsolicited["saml_response"], None)
    assert refused.status_code == 302
    assert refused.headers["location"] == "/console/?error=idp_initiated_disabled"
    assert failures(browser, org)[0] == "idp_initiated_disabled"

    url = f"/v1/orgs/{org.id}/sso-connections/{conn['id']}"
    changed = browser.patch(url, json={"allow_idp_initiated": True}, headers=org.headers)
    assert changed.status_code == 200, changed.text
    assert changed.json()["allow_idp_initiated"] is True

    browser.cookies.clear()
    fresh = idp.login(None, None, sp_metadata_xml=metadata, email=email)
    # An IdP's own RelayState (not a state of ours) does not get in the way.
    done = post_acs(browser, conn["id"], fresh["saml_response"], "https://evil.example/")
    assert done.status_code == 302, done.text
    assert done.headers["location"].startswith("/console/?code="), done.headers["location"]
    # The browser that posted is bound to the code: it gets the binding cookie.
    assert "bastion-sso" in done.headers["set-cookie"]
    code = query(done.headers["location"])["code"]
    # A browser exchange (with Origin) without that cookie fails; with it, it works.
    origin = {"Origin": "http://localhost:8400"}
    browser.cookies.clear()
    stolen = browser.post("/v1/auth/sso/exchange", json={"code": code}, headers=origin)
    assert stolen.status_code == 401
    again = idp.login(None, None, sp_metadata_xml=metadata, email=email)
    done = post_acs(browser, conn["id"], again["saml_response"], None)
    code = query(done.headers["location"])["code"]
    exchanged = browser.post("/v1/auth/sso/exchange", json={"code": code}, headers=origin)
    assert exchanged.status_code == 200, exchanged.text
    me = browser.get("/v1/me", headers=bearer(exchanged.json()["token"]))
    assert me.status_code == 200, me.text
    assert me.json()["org_id"] == org.id

    # Enabled, a response claiming to answer a request we never sent is still refused.
    claimed = idp.login(None, None, sp_metadata_xml=metadata, email=email, InResponseTo="_x" * 10)
    browser.cookies.clear()
    refused = post_acs(browser, conn["id"], claimed["saml_response"], None)
    assert refused.headers["location"] == "/console/?error=in_response_to_mismatch"


# --- SP metadata --------------------------------------------------------------------------


def test_sp_metadata_names_the_entity_id_acs_and_our_certificate(
    browser: TestClient, sso_factory: Factory, idp: Idp
) -> None:
    org = sso_factory.org()
    conn = saml_connection(browser, org, idp)
    base = f"http://localhost:8400/v1/auth/sso/{conn['id']}/saml"
    assert conn["sp_entity_id"] == f"{base}/metadata"
    assert conn["acs_url"] == f"{base}/acs"
    assert conn["sp_certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert conn["redirect_uri"] is None

    answer = browser.get(f"/v1/auth/sso/{conn['id']}/saml/metadata")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/samlmetadata+xml")
    root = etree.fromstring(answer.content)
    assert root.get("entityID") == conn["sp_entity_id"]
    descriptor = root.find(f"{{{MD}}}SPSSODescriptor")
    assert descriptor is not None
    assert descriptor.get("AuthnRequestsSigned") == "true"
    acs = descriptor.find(f"{{{MD}}}AssertionConsumerService")
    assert acs is not None
    assert acs.get("Location") == conn["acs_url"]
    assert acs.get("Binding") == "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
    published = "".join(root.findtext(f".//{{{DS}}}X509Certificate", "").split())
    pem_body = "".join(conn["sp_certificate"].strip().splitlines()[1:-1])
    assert published == pem_body
    assert b"PRIVATE" not in answer.content

    assert browser.get("/v1/auth/sso/ssoc_nonexistent/saml/metadata").status_code == 404
    oidc = browser.post(
        f"/v1/orgs/{org.id}/sso-connections",
        json={"type": "oidc", "name": "o", "preset": "okta", "tenant": "acme", "client_id": "c"},
        headers=org.headers,
    )
    assert oidc.status_code == 201, oidc.text
    assert browser.get(f"/v1/auth/sso/{oidc.json()['id']}/saml/metadata").status_code == 404
    acs_of_oidc = post_acs(browser, oidc.json()["id"], "PHg+", None)
    assert acs_of_oidc.status_code == 404


def test_each_connection_has_its_own_sp_key_never_shown(
    browser: TestClient, sso_factory: Factory, sso_app: Any, dns: DnsServer, idp: Idp
) -> None:
    org, domain, conn = org_with_saml(browser, sso_factory, dns, idp)
    other = saml_connection(browser, org, idp, name="Other")
    assert other["sp_certificate"] != conn["sp_certificate"]
    state = sso_app.state.bastion
    with state.sessions() as db:
        row = connections.find_any(db, conn["id"])
        assert row is not None
        key_pem = saml_sp.sp_credentials(db, state.vault, row).key_pem
        key_id = row.sp_key_secret_id
    assert "PRIVATE KEY" in key_pem
    key_lines = [line for line in key_pem.splitlines() if "-----" not in line]

    url = f"/v1/orgs/{org.id}/sso-connections/{conn['id']}"
    sign_in(browser, idp, conn["id"], person(domain))
    seen = [
        browser.get(url, headers=org.headers).text,
        browser.get(f"/v1/orgs/{org.id}/sso-connections", headers=org.headers).text,
        browser.patch(url, json={"name": "Renamed"}, headers=org.headers).text,
        browser.get(f"/v1/auth/sso/{conn['id']}/saml/metadata").text,
        browser.get(
            f"/v1/orgs/{org.id}/audit-events", params={"limit": 200}, headers=org.headers
        ).text,
        browser.get(f"/v1/orgs/{org.id}/secrets", headers=org.headers).text,
    ]
    for text in seen:
        assert "PRIVATE" not in text
        assert not any(line in text for line in key_lines)

    # Deleting the connection destroys its sealed key.
    assert browser.delete(url, headers=org.headers).status_code == 204
    with state.sessions() as db, pytest.raises(sealed.Unreadable):
        sealed.read_current(db, state.vault, str(key_id))


# --- IdP metadata -------------------------------------------------------------------------


def test_bad_idp_metadata_is_a_422_naming_the_field(
    browser: TestClient, sso_factory: Factory, idp: Idp
) -> None:
    org = sso_factory.org()
    listed = browser.get(f"/v1/orgs/{org.id}/sso-connections", headers=org.headers).json()
    bad_documents = [
        "not xml at all",
        "<root/>",
        '<!DOCTYPE x [<!ENTITY e "boom">]><x>&e;</x>',
        idp.metadata((idp.keys.primary,)).replace("https://idp.example.test", "http://idp.test"),
    ]
    for document in bad_documents:
        created = browser.post(
            f"/v1/orgs/{org.id}/sso-connections",
            json={"type": "saml", "name": "Bad", "idp_metadata_xml": document},
            headers=org.headers,
        )
        assert created.status_code == 422, created.text
        assert created.json()["errors"][0]["field"] == "idp_metadata_xml"
    # Nothing half-written.
    assert browser.get(f"/v1/orgs/{org.id}/sso-connections", headers=org.headers).json() == listed

    conn = saml_connection(browser, org, idp)
    url = f"/v1/orgs/{org.id}/sso-connections/{conn['id']}"
    patched = browser.patch(url, json={"idp_metadata_xml": "<root/>"}, headers=org.headers)
    assert patched.status_code == 422, patched.text
    assert patched.json()["errors"][0]["field"] == "idp_metadata_xml"
    kept = browser.get(url, headers=org.headers).json()
    assert kept["idp_metadata_xml"] == conn["idp_metadata_xml"]
    both = browser.patch(
        url,
        json={"idp_metadata_xml": conn["idp_metadata_xml"], "idp_metadata_url": "https://a.b/"},
        headers=org.headers,
    )
    assert both.status_code == 422, both.text


def test_idp_metadata_from_a_url_and_certificate_rollover(
    browser: TestClient,
    sso_factory: Factory,
    dns: DnsServer,
    idp: Idp,
    metadata_server: MetadataServer,
) -> None:
    metadata_server.body = idp.metadata((idp.keys.primary,))
    metadata_server.status = 200
    org, domain, conn = org_with_saml(
        browser, sso_factory, dns, idp, idp_metadata_url=metadata_server.url
    )
    assert conn["idp_metadata_url"] == metadata_server.url
    assert conn["idp_metadata_xml"] is None
    assert conn["idp_metadata_fetched_at"] is not None
    email = person(domain)
    first = sign_in(browser, idp, conn["id"], email)
    assert "code=" in first.headers["location"], first.headers["location"]

    # The IdP rolls its key: its metadata lists the new certificate, and it signs with
    # it. The first response that does not verify fetches the metadata again.
    metadata_server.body = idp.metadata((idp.keys.secondary, idp.keys.primary))
    hits = metadata_server.hits
    browser.cookies.clear()
    rolled = sign_in(browser, idp, conn["id"], email, key=idp.keys.secondary)
    assert "code=" in rolled.headers["location"], rolled.headers["location"]
    assert metadata_server.hits == hits + 1
    refreshed = events(browser, org, "sso_connection.metadata_refreshed")
    assert refreshed[0]["metadata"]["certificates"] == 2

    # A key the metadata does not list is still refused, after one more look.
    browser.cookies.clear()
    rogue = sign_in(browser, idp, conn["id"], email, key=idp.keys.rogue)
    assert rogue.headers["location"] == "/console/?error=signature_invalid"

    # The URL is fetched when set: an unusable one is a 422 naming it.
    url = f"/v1/orgs/{org.id}/sso-connections/{conn['id']}"
    metadata_server.status = 404
    broken = browser.patch(url, json={"idp_metadata_url": metadata_server.url}, headers=org.headers)
    assert broken.status_code == 422, broken.text
    assert broken.json()["errors"][0]["field"] == "idp_metadata_url"
    metadata_server.status = 200
    internal = browser.patch(
        url, json={"idp_metadata_url": "https://10.1.2.3/metadata"}, headers=org.headers
    )
    assert internal.status_code == 422, internal.text
    assert internal.json()["errors"][0]["field"] == "idp_metadata_url"


# --- the ACS endpoint's input ---------------------------------------------------------------


def test_the_acs_takes_a_form_post_only(
    browser: TestClient, sso_factory: Factory, idp: Idp
) -> None:
    org = sso_factory.org()
    conn = saml_connection(browser, org, idp)
    acs = f"/v1/auth/sso/{conn['id']}/saml/acs"
    as_json = browser.post(acs, json={"SAMLResponse": "PHg+"})
    assert as_json.status_code == 415, as_json.text
    missing = browser.post(acs, data={"RelayState": "x"})
    assert missing.status_code == 422, missing.text
    assert missing.json()["errors"][0]["field"] == "SAMLResponse"
    twice = browser.post(
        acs,
        content=b"SAMLResponse=a&SAMLResponse=b",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert twice.status_code == 422, twice.text
    garbage = post_acs(browser, conn["id"], base64.b64encode(b"<x/>").decode(), None)
    assert garbage.headers["location"] == "/console/?error=idp_initiated_disabled"
    assert (
        browser.post("/v1/auth/sso/ssoc_nope/saml/acs", data={"SAMLResponse": "x"}).status_code
        == 404
    )
