"""Agents, Audit log, Alerts, Secrets and Webhooks in Chromium: each renders with its
heading, with no serious or critical axe-core finding, no console error or CSP
violation and no request leaving the origin; the Audit log's search, event detail and
chain verification; a secret revealed once after step-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.console.browser import Watched, screenshot, sign_in, wait_for_path
from tests.factories import Factory, Org

pytestmark = pytest.mark.e2e


def _seed(factory: Factory, org: Org) -> None:
    client, base = factory.client, f"/v1/orgs/{org.id}"
    tool = {"name": "refund", "risk": "high"}
    made = client.post(
        f"{base}/agents",
        json={
            "name": "Refund bot",
            "visibility": "org",
            "tools": [tool],
            "secrets": ["stripe_key"],
        },
        headers=org.headers,
    )
    assert made.status_code == 201, made.text
    put = client.put(
        f"{base}/secrets/stripe_key", json={"value": "sk_live_console_test"}, headers=org.headers
    )
    assert put.status_code in (200, 201), put.text
    rule = {"name": "Exports", "kind": "data_export", "channels": [
        {"type": "email", "to": ["security@example.com"]}]}  # fmt: skip
    made = client.post(f"{base}/alert-rules", json=rule, headers=org.headers)
    assert made.status_code == 201, made.text


@pytest.mark.parametrize(
    ("path", "heading"),
    [
        ("/console/agents", "Agents"),
        ("/console/audit", "Audit log"),
        ("/console/alerts", "Alerts"),
        ("/console/secrets", "Secrets"),
        ("/console/webhooks", "Webhooks"),
    ],
)
def test_page_renders_accessibly_and_cleanly(
    watched: Watched, console_factory: Factory, axe: str, path: str, heading: str
) -> None:
    org = console_factory.org()
    _seed(console_factory, org)
    sign_in(watched, org.admin.email, start=path)
    wait_for_path(watched.page, path)
    page = watched.page
    assert page.get_by_role("heading", name=heading, exact=True).is_visible()
    if path == "/console/agents":
        page.get_by_role("link", name="Refund bot").click()
        assert page.get_by_role("heading", name="Refund bot").is_visible()
        assert page.get_by_role("cell", name="refund", exact=True).is_visible()
        assert page.get_by_text("stripe_key").is_visible()
    if path == "/console/secrets":
        assert "sk_live_console_test" not in page.content()
    assert watched.axe(axe) == []
    watched.clean()


def test_audit_log_search_detail_and_verification(
    watched: Watched, console_factory: Factory, axe: str, tmp_path: Path
) -> None:
    org = console_factory.org()
    _seed(console_factory, org)
    sign_in(watched, org.admin.email, start="/console/audit")
    wait_for_path(watched.page, "/console/audit")
    page = watched.page
    page.get_by_label("Text").fill("Refund bot")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**/console/audit?*q=Refund+bot*")
    page.get_by_role("button", name="Verify chain").click()  # keeps the search
    page.get_by_text("Chain verified").wait_for()
    assert page.get_by_label("Text").input_value() == "Refund bot"
    rows = page.locator("table.events tbody tr")
    assert rows.count() >= 1
    assert "agent.created" in rows.first.inner_text()
    screenshot(page, "audit-log", tmp_path)
    assert page.get_by_role("link", name="CSV").get_attribute("href") == (
        "/console/audit/export?q=Refund+bot&format=csv"
    )
    rows.first.get_by_role("link").click()
    assert page.get_by_role("heading", name="Audit event").is_visible()
    assert watched.axe(axe) == []
    watched.clean()


def test_alert_rule_added_and_webhook_events_shown(
    watched: Watched, console_factory: Factory, axe: str
) -> None:
    import json

    from tests.webhooks.test_gateway import create_endpoint, new_secret, post_hook, sign

    org = console_factory.org()
    secret = new_secret("generic")
    endpoint = create_endpoint(console_factory.client, org, "generic", secret)
    body = json.dumps({"action": "<b>opened</b>"}).encode()
    accepted = post_hook(
        console_factory.client, endpoint["url"], body, sign("generic", secret, body)
    )
    assert accepted.status_code == 202, accepted.text
    sign_in(watched, org.admin.email, start="/console/alerts")
    wait_for_path(watched.page, "/console/alerts")
    page = watched.page
    page.get_by_label("Rule name").fill("Exports by anyone")
    page.get_by_label("Kind").select_option("data_export")
    page.get_by_label("Channel type").select_option("email")
    page.get_by_label("Email addresses (for email)").fill("security@example.com")
    page.get_by_role("button", name="Add rule").click()
    page.get_by_role("status").filter(has_text="Alert rule added").wait_for()
    assert page.get_by_role("button", name="Delete rule Exports by anyone").is_visible()
    assert watched.axe(axe) == []
    page.goto("/console/webhooks")
    page.get_by_role("link", name="Events received by generic hook").click()
    assert page.get_by_role("heading", name="Webhook events").is_visible()
    assert page.get_by_text('{"action": "<b>opened</b>"}').is_visible()
    assert watched.axe(axe) == []
    watched.clean()
