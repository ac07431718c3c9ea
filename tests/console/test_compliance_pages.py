"""Compliance and Access reviews over HTTP (in process), checked through the API: the
controls the page shows are the API's, the downloaded report verifies against the
instance's published keys, a campaign started and decided on the page is the API's,
and nobody decides their own access."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from bastion.compliance.verify import ReportInvalid, verify_report
from bastion.core.clock import utcnow
from tests.console.helpers import csrf_of, sign_in
from tests.factories import Factory, Org


def _signed_in(factory: Factory, email: str) -> TestClient:
    client = TestClient(factory.client.app, raise_server_exceptions=False)
    sign_in(client, email)
    return client


def _post(client: TestClient, page: str, action: str, **data: Any) -> httpx.Response:
    token = csrf_of(client.get(page).text)
    return client.post(action, data={"csrf": token, **data}, follow_redirects=False)


def _api(factory: Factory, org: Org, path: str) -> Any:
    answer = factory.client.get(f"/v1/orgs/{org.id}{path}", headers=org.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _cell(html: str, control_id: str) -> str:
    found = re.search(rf'<tr id="control-{re.escape(control_id)}">(.*?)</tr>', html, re.S)
    assert found, control_id
    return found.group(1)


def test_compliance_page_shows_the_apis_controls_per_framework(factory: Factory) -> None:
    org = factory.org()
    client = _signed_in(factory, org.admin.email)
    for framework in ("soc2", "gdpr"):
        page = client.get(f"/console/compliance?framework={framework}")
        assert page.status_code == 200, page.text
        assert "<h1>Compliance</h1>" in page.text
        controls = _api(factory, org, f"/compliance/controls?framework={framework}")["data"]
        assert controls
        for control in controls:
            row = _cell(page.text, control["id"])
            assert f">{control['status']}</span>" in row
            for check in control["checks"]:
                assert f"<code>{check['name']}</code>" in row
    assert client.get("/console/compliance?framework=nope").status_code == 422


def test_report_downloads_signed_and_verifies(factory: Factory) -> None:
    org = factory.org()
    client = _signed_in(factory, org.admin.email)
    answer = _post(client, "/console/compliance", "/console/compliance/reports",
                   framework="soc2", format="html")  # fmt: skip
    assert answer.status_code == 200, answer.text
    disposition = answer.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="bastion-soc2-html-rpt_')
    assert answer.headers["cache-control"] == "no-store"
    report = answer.json()
    assert set(report) == {"id", "format", "content", "sha256", "signature", "kid"}
    assert report["format"] == "html"
    assert "<html" in report["content"].lower()
    jwks = factory.client.get("/.well-known/jwks.json").json()
    assert verify_report(report, jwks) == report["kid"]
    tampered = {**report, "content": report["content"].replace("SOC", "S0C")}
    with pytest.raises(ReportInvalid, match="changed"):
        verify_report(tampered, jwks)
    events = _api(factory, org, "/audit-events?type=compliance_report.created")["data"]
    assert [e["resource"]["id"] for e in events] == [report["id"]]


def test_report_is_refused_without_the_permission_or_csrf(factory: Factory) -> None:
    org = factory.org()
    member = factory.member(org, "member")
    admin = _signed_in(factory, org.admin.email)
    refused = admin.post("/console/compliance/reports", data={"framework": "soc2"},
                         follow_redirects=False)  # fmt: skip
    assert refused.status_code == 403
    client = _signed_in(factory, member.email)
    page = client.get("/console/compliance")
    assert page.status_code == 403  # the API refuses a member the controls too
    answer = client.post(
        "/console/compliance/reports",
        data={"csrf": csrf_of(page.text), "framework": "soc2", "format": "json"},
        follow_redirects=False,
    )
    assert answer.status_code == 403
    assert _api(factory, org, "/audit-events?type=compliance_report.created")["data"] == []


def _due() -> str:
    return (utcnow() + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M")


def test_access_review_started_and_decided_on_the_page(factory: Factory) -> None:
    org = factory.org()
    reviewer = factory.member(org, "manager")
    member = factory.member(org, "member")
    leaver = factory.member(org, "member")
    admin = _signed_in(factory, org.admin.email)
    token = csrf_of(admin.get("/console/access-reviews").text)
    started = admin.post(
        "/console/access-reviews",
        data={
            "csrf": token,
            "name": "Q4 people",
            "scope": "users",
            "due_at": _due(),
            "on_due": "keep",
            "reviewer_users": reviewer.user_id,
        },
        follow_redirects=False,
    )
    assert started.status_code == 303, started.text
    review_id = started.headers["location"].split("?")[0].rsplit("/", 1)[1]
    [review] = _api(factory, org, "/access-reviews")["data"]
    assert review["id"] == review_id
    assert (review["name"], review["scope"], review["on_due"]) == ("Q4 people", ["users"], "keep")
    assert review["reviewers"]["users"] == [reviewer.user_id]
    items = {
        i["subject_id"]: i for i in _api(factory, org, f"/access-reviews/{review_id}/items")["data"]
    }

    client = _signed_in(factory, reviewer.email)
    page_path = f"/console/access-reviews/{review_id}"
    listing = client.get("/console/access-reviews")
    assert "Q4 people" in listing.text
    page = client.get(page_path)
    assert page.status_code == 200
    assert f'aria-label="Keep {member.email}"' in page.text
    assert f'aria-label="Revoke {leaver.email}"' in page.text
    # The reviewer's own access has no buttons, and posting a decision on it is refused.
    assert f'aria-label="Keep {reviewer.email}"' not in page.text
    assert "Your own access" in page.text
    own = items[reviewer.user_id]["id"]
    refused = _post(client, page_path, f"{page_path}/items/{own}/decision", decision="keep")
    assert refused.status_code == 403
    assert "own access" in refused.text

    kept = _post(client, page_path, f"{page_path}/items/{items[member.user_id]['id']}/decision",
                 decision="keep", comment="still on the team")  # fmt: skip
    assert kept.status_code == 303
    assert factory.client.get("/v1/me", headers=leaver.headers).status_code == 200
    revoked = _post(client, page_path, f"{page_path}/items/{items[leaver.user_id]['id']}/decision",
                    decision="revoke")  # fmt: skip
    assert revoked.status_code == 303
    assert factory.client.get("/v1/me", headers=leaver.headers).status_code == 401
    after = {
        i["subject_id"]: i for i in _api(factory, org, f"/access-reviews/{review_id}/items")["data"]
    }
    assert (after[member.user_id]["decision"], after[member.user_id]["comment"]) == (
        "keep", "still on the team",
    )  # fmt: skip
    assert after[leaver.user_id]["decision"] == "revoke"
    assert after[leaver.user_id]["decided_by"] == reviewer.user_id
    shown = client.get(page_path).text
    assert "still on the team" in shown
    again = _post(client, page_path, f"{page_path}/items/{items[member.user_id]['id']}/decision",
                  decision="revoke")  # fmt: skip
    assert again.status_code == 409
    bad = _post(client, page_path, f"{page_path}/items/{items[org.admin.user_id]['id']}/decision",
                decision="maybe")  # fmt: skip
    assert bad.status_code == 422
    assert "decision" in bad.text


def test_access_reviews_refusals(factory: Factory) -> None:
    org = factory.org()
    other = factory.org("Other")
    member = factory.member(org, "member")
    admin = _signed_in(factory, org.admin.email)
    no_reviewer = _post(admin, "/console/access-reviews", "/console/access-reviews",
                        name="x", scope="users", due_at=_due(), on_due="keep")  # fmt: skip
    assert no_reviewer.status_code == 422
    assert "reviewers" in no_reviewer.text
    past = _post(admin, "/console/access-reviews", "/console/access-reviews", name="x",
                 scope="users", due_at="2020-01-01T00:00", on_due="keep",
                 reviewer_users=org.admin.user_id)  # fmt: skip
    assert past.status_code == 422
    assert "due_at" in past.text
    assert _api(factory, org, "/access-reviews")["data"] == []
    # Another organisation's campaign is not found; a member may not start one.
    made = factory.client.post(
        f"/v1/orgs/{other.id}/access-reviews",
        json={
            "name": "theirs",
            "scope": ["users"],
            "reviewers": {"roles": ["admin"]},
            "due_at": (utcnow() + timedelta(days=3)).isoformat(),
            "on_due": "keep",
        },
        headers=other.headers,
    )
    assert made.status_code == 201, made.text
    assert admin.get(f"/console/access-reviews/{made.json()['id']}").status_code == 404
    client = _signed_in(factory, member.email)
    page = client.get("/console/access-reviews")
    assert page.status_code == 200
    assert "Start an access review" not in page.text
    refused = client.post(
        "/console/access-reviews",
        data={
            "csrf": csrf_of(page.text),
            "name": "x",
            "scope": "users",
            "due_at": _due(),
            "on_due": "keep",
            "reviewer_users": member.user_id,
        },
        follow_redirects=False,
    )
    assert refused.status_code == 403
    assert json.dumps(_api(factory, org, "/access-reviews")["data"]) == "[]"


def test_attesting_a_manual_control(factory: Factory) -> None:
    org = factory.org()
    client = _signed_in(factory, org.admin.email)
    controls = _api(factory, org, "/compliance/controls?framework=gdpr")["data"]
    manual = next(c for c in controls if c["status"] == "manual" and not c["evidence"])
    live = next(c for c in controls if c["status"] != "manual")
    page = client.get("/console/compliance?framework=gdpr").text
    assert f"Attest {manual['id']}</summary>" in _cell(page, manual["id"])
    assert "Attest " not in _cell(page, live["id"])
    done = _post(client, "/console/compliance?framework=gdpr", "/console/compliance/attestations",
                 framework="gdpr", control=manual["id"], statement="Requests answered in 30 days",
                 evidence_url="https://wiki.example.com/dsar")  # fmt: skip
    assert done.status_code == 303, done.text
    assert done.headers["location"].startswith("/console/compliance?")
    assert "framework=gdpr" in done.headers["location"]
    after = {c["id"]: c for c in _api(factory, org, "/compliance/controls?framework=gdpr")["data"]}
    [evidence] = after[manual["id"]]["evidence"]
    assert (evidence["type"], evidence["statement"], evidence["attested_by"]) == (
        "attestation", "Requests answered in 30 days", org.admin.user_id,
    )  # fmt: skip
    assert "Requests answered in 30 days" in _cell(
        client.get("/console/compliance?framework=gdpr").text, manual["id"]
    )
    for fields, named in (
        ({"control": live["id"], "statement": "x"}, "control"),
        (
            {"control": manual["id"], "statement": "x", "evidence_url": "http://plain"},
            "evidence_url",
        ),
        ({"control": manual["id"], "statement": ""}, "statement"),
    ):
        refused = _post(client, "/console/compliance", "/console/compliance/attestations",
                        framework="gdpr", **fields)  # fmt: skip
        assert refused.status_code == 422, fields
        assert named in refused.text, (fields, refused.text)
    final = {c["id"]: c for c in _api(factory, org, "/compliance/controls?framework=gdpr")["data"]}
    assert len(final[manual["id"]]["evidence"]) == 1  # the refusals wrote nothing
