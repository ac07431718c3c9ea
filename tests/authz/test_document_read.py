"""A document's record (`GET …/documents/{doc}`: its metadata and ACL) is read as the
engine decides `read` on it: whoever may not read it finds nothing (404, as for a
missing document), unless they manage sources."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.factories import Factory, Member, Org, bearer


def _doc(client: TestClient, org: Org, **acl: Any) -> tuple[str, str]:
    base = f"/v1/orgs/{org.id}"
    source = client.post(f"{base}/sources", json={"name": "drive"}, headers=org.headers).json()
    body = {"external_id": "x", "metadata": {"level": 1}, "acl": acl or {"inherit": True}}
    doc = client.post(f"{base}/sources/{source['id']}/documents", json=body, headers=org.headers)
    assert doc.status_code == 201, doc.text
    return source["id"], doc.json()["id"]


def _get(client: TestClient, org: Org, doc: str, headers: dict[str, str]) -> int:
    response = client.get(f"/v1/orgs/{org.id}/documents/{doc}", headers=headers)
    assert response.status_code in (200, 404), response.text
    return response.status_code


def test_without_read_the_record_is_not_found(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org, "member")
    viewer = factory.member(org, "viewer")
    _, doc = _doc(client, org)
    assert _get(client, org, doc, member.headers) == 404
    assert _get(client, org, doc, viewer.headers) == 404
    missing = client.get(f"/v1/orgs/{org.id}/documents/doc_nope", headers=member.headers)
    assert (
        missing.json()["detail"]
        == client.get(f"/v1/orgs/{org.id}/documents/{doc}", headers=member.headers).json()["detail"]
    )


def test_a_reader_of_the_document_or_its_source_reads_the_record(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    direct, inherited = factory.member(org, "viewer"), factory.member(org, "viewer")
    entry = {"principal": direct.user_id, "relation": "reader"}
    _, own = _doc(client, org, inherit=True, entries=[entry])
    assert _get(client, org, own, direct.headers) == 200
    source, doc = _doc(client, org)
    assert _get(client, org, doc, inherited.headers) == 404
    url = f"/v1/orgs/{org.id}/sources/{source}/acl/{inherited.user_id}"
    assert client.put(url, json={"relation": "reader"}, headers=org.headers).status_code == 200
    assert _get(client, org, doc, inherited.headers) == 200


def test_a_deny_rule_hides_the_record_from_a_reader(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    reader: Member = factory.member(org, "member")
    _, doc = _doc(
        client, org, inherit=False, entries=[{"principal": reader.user_id, "relation": "reader"}]
    )
    assert _get(client, org, doc, reader.headers) == 200
    rule = {
        "effect": "deny",
        "action": "read",
        "resource_type": "document",
        "condition": "resource.metadata.level == 1",
    }
    made = client.post(f"/v1/orgs/{org.id}/authz/rules", json=rule, headers=org.headers)
    assert made.status_code == 201, made.text
    assert _get(client, org, doc, reader.headers) == 404


def test_whoever_manages_sources_reads_every_record(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    manager = factory.member(org, "manager")
    _, doc = _doc(client, org, inherit=False)
    assert _get(client, org, doc, manager.headers) == 200
    assert _get(client, org, doc, org.headers) == 200  # the bootstrap admin key
    # A person's key acts as them, cut to its own role: a viewer key of an admin does
    # not manage sources, so it reads only what the admin may read by the ACL.
    key = factory.api_key(org, "viewer", headers=org.admin.headers)
    assert _get(client, org, doc, bearer(key["key"])) == 404


def test_a_documents_acl_tokens_need_read_on_it_too(client: TestClient, factory: Factory) -> None:
    """Its tokens name who may read it: the same rule as its record (an indexing
    pipeline holding sources:manage or authz:check may always ask)."""
    org = factory.org()
    member = factory.member(org, "member")
    base = f"/v1/orgs/{org.id}"
    source = client.post(f"{base}/sources", json={"name": "hr"}, headers=org.headers).json()["id"]
    doc = client.post(
        f"{base}/sources/{source}/documents",
        json={"external_id": "d", "metadata": {}},
        headers=org.headers,
    ).json()["id"]
    url = f"{base}/documents/{doc}/acl-tokens"
    assert client.get(url, headers=member.headers).status_code == 404
    assert client.get(url, headers=org.headers).status_code == 200
    acl = f"{base}/sources/{source}/acl/{member.user_id}"
    assert client.put(acl, json={"relation": "reader"}, headers=org.headers).status_code == 200
    assert client.get(url, headers=member.headers).status_code == 200
