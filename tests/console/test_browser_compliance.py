"""Compliance and Access reviews in Chromium: each renders with its heading, with no
serious or critical axe-core finding, no console error or CSP violation and no request
leaving the origin; a signed report generated and downloaded; an access review started
and decided with the keyboard, the reviewer's own access offered no buttons."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from bastion.compliance.verify import verify_report
from bastion.core.clock import utcnow
from tests.console.browser import Watched, screenshot, sign_in, wait_for_path
from tests.factories import Factory

pytestmark = pytest.mark.e2e


def test_compliance_controls_and_a_signed_report_download(
    watched: Watched, console_factory: Factory, axe: str, tmp_path: Path
) -> None:
    org = console_factory.org()
    sign_in(watched, org.admin.email, start="/console/compliance")
    wait_for_path(watched.page, "/console/compliance")
    page = watched.page
    page.set_viewport_size({"width": 1280, "height": 860})
    assert page.get_by_role("heading", name="Compliance", exact=True).is_visible()
    page.get_by_role("link", name="GDPR", exact=False).first.click()
    page.wait_for_url("**/console/compliance?framework=gdpr")
    assert page.locator("table.controls tbody tr").count() >= 3
    page.get_by_label("Report format").select_option("json")
    with page.expect_download() as got:
        page.get_by_role("button", name="Generate report").click()
    download = got.value
    assert download.suggested_filename.startswith("bastion-gdpr-json-rpt_")
    report = json.loads(Path(download.path()).read_text())
    jwks = console_factory.client.get("/.well-known/jwks.json").json()
    assert verify_report(report, jwks) == report["kid"]
    assert json.loads(report["content"])["report"]["framework"] == "gdpr"
    assert watched.axe(axe) == []
    screenshot(page, "compliance", tmp_path)
    watched.clean()


def test_an_access_review_started_and_decided(
    watched: Watched, console_factory: Factory, axe: str, tmp_path: Path
) -> None:
    org = console_factory.org()
    member = console_factory.member(org, "member")
    page = watched.page
    page.set_viewport_size({"width": 1280, "height": 860})
    sign_in(watched, org.admin.email, start="/console/access-reviews")
    wait_for_path(page, "/console/access-reviews")
    assert page.get_by_role("heading", name="Access reviews", exact=True).is_visible()
    assert watched.axe(axe) == []
    page.get_by_label("Campaign name").fill("Quarterly people review")
    due = (utcnow() + timedelta(days=14)).strftime("%Y-%m-%dT%H:%M")
    page.get_by_label("Due (UTC)").fill(due)
    page.get_by_label("Reviewers (people)").select_option(label=org.admin.email)
    page.get_by_role("button", name="Start review").click()
    page.wait_for_url("**/console/access-reviews/arv_*")
    assert page.get_by_role("heading", name="Quarterly people review").is_visible()
    assert page.get_by_role("status").filter(has_text="Access review started").is_visible()
    # The admin's own access: no buttons. The member's: Keep / Revoke, by keyboard.
    assert page.get_by_role("button", name=f"Keep {org.admin.email}").count() == 0
    assert page.get_by_text("Your own access").is_visible()
    page.get_by_label(f"Comment on {member.email}").fill("needs it for support")
    page.get_by_label(f"Comment on {member.email}").press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Keep"
    page.keyboard.press("Enter")
    page.get_by_role("status").filter(has_text="Decision recorded").wait_for()
    assert page.get_by_text("needs it for support").is_visible()
    assert watched.axe(axe) == []
    screenshot(page, "access-review", tmp_path)
    items = console_factory.client.get(
        f"/v1/orgs/{org.id}/access-reviews", headers=org.headers
    ).json()["data"]
    assert items[0]["items"]["kept"] == 1
    watched.clean()
