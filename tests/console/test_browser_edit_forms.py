"""Editing in Chromium, by keyboard: an alert rule's "Edit" form (its name, parameters,
enabled and channel, the webhook's secret kept), and the Settings page's Retention
section (a refused value shown next to its field; a change asks for a step-up first,
then saves through `PUT …/retention`). Both checked through the API, with axe-core."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from bastion.core.clock import clock
from tests.console.browser import Watched, sign_in, wait_for_path
from tests.factories import PASSWORD, Factory, Org

pytestmark = pytest.mark.e2e

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def _api(factory: Factory, org: Org, path: str) -> Any:
    answer = factory.client.get(f"/v1/orgs/{org.id}{path}", headers=org.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_edit_an_alert_rule_with_the_keyboard(
    watched: Watched, console_factory: Factory, axe: str
) -> None:
    org = console_factory.org()
    hook = {"type": "webhook", "url": "https://127.0.0.1/hooks", "secret": SECRET}
    made = console_factory.client.post(
        f"/v1/orgs/{org.id}/alert-rules",
        json={"name": "Failures", "kind": "failed_signins_account", "channels": [hook]},
        headers=org.headers,
    )
    assert made.status_code == 201, made.text
    rule = made.json()
    page = watched.page
    sign_in(watched, org.admin.email, start="/console/alerts")
    wait_for_path(page, "/console/alerts")

    edit = page.get_by_role("link", name="Edit rule Failures")
    edit.focus()
    page.keyboard.press("Enter")
    wait_for_path(page, f"/console/alerts/rules/{rule['id']}")
    assert page.get_by_role("heading", name="Edit alert rule").is_visible()
    assert watched.axe(axe) == []
    name = page.get_by_label("Rule name")
    assert name.input_value() == "Failures"
    assert page.get_by_label("Parameters (JSON; empty: the kind's defaults)").input_value() == (
        '{"threshold": 5, "window_seconds": 900}'
    )
    assert page.get_by_label("URL (for Slack or a webhook)").input_value() == hook["url"]
    assert SECRET not in page.content()

    # A bad parameter: refused naming the field, nothing changed.
    page.get_by_label("Parameters (JSON; empty: the kind's defaults)").fill('{"threshold": 0}')
    watched.allowed.append("422")
    page.get_by_label("Rule name").press("Enter")
    assert page.get_by_text("params.threshold", exact=True).is_visible()
    assert _api(console_factory, org, f"/alert-rules/{rule['id']}")["params"]["threshold"] == 5
    page.go_back()
    wait_for_path(page, f"/console/alerts/rules/{rule['id']}")
    page.reload()

    # Keyboard only: type into the fields, tab to the channel, submit with Enter.
    name.fill("Many failures")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "rule-params"
    page.keyboard.press("Control+A")
    page.keyboard.type('{"threshold": 8}')
    page.keyboard.press("Tab")
    page.keyboard.press("Space")  # Enabled: unticked
    page.get_by_label("Channel", exact=True).select_option("webhook")
    page.get_by_label("Rule name").press("Enter")
    wait_for_path(page, "/console/alerts")
    assert page.get_by_text("Alert rule saved.").is_visible()
    assert page.get_by_role("cell", name="Many failures", exact=True).is_visible()

    saved = _api(console_factory, org, f"/alert-rules/{rule['id']}")
    assert (saved["name"], saved["enabled"]) == ("Many failures", False)
    assert saved["params"] == {"threshold": 8, "window_seconds": 900}
    assert saved["channels"] == [{"type": "webhook", "url": hook["url"], "to": None}]
    events = _api(console_factory, org, "/audit-events?type=alert_rule.updated")["data"]
    assert [sorted(e["metadata"]["fields"]) for e in events] == [["enabled", "name", "params"]]
    watched.clean()


def test_retention_settings_validate_by_field_and_ask_for_step_up(
    watched: Watched, console_factory: Factory, axe: str
) -> None:
    org = console_factory.org()
    page = watched.page
    sign_in(watched, org.admin.email, start="/console/settings")
    wait_for_path(page, "/console/settings")
    section = page.locator("#retention-form")
    assert section.get_by_role("group", name="Retention").is_visible()
    runs = section.get_by_label("Run artifacts (hours, 1 to 8760)")
    calls = section.get_by_label("Agents' tool calls (days, 1 to 3650)")
    assert runs.input_value() == "24"
    assert calls.input_value() == "90"
    assert section.get_by_label("Audit events (days, 30 to 3650)").input_value() == "90"

    # A value the browser lets through (as one that does not check `min` would) is
    # refused by the server: the page again, the message next to the field.
    page.evaluate("document.getElementById('ret-run_artifacts_hours').removeAttribute('min')")
    runs.fill("0")
    calls.fill("45")
    watched.allowed.append("422")
    runs.press("Enter")
    error = page.locator("#ret-run_artifacts_hours-error")
    error.wait_for()
    assert error.inner_text() == "Run artifacts must be a whole number from 1 to 8760."
    assert runs.get_attribute("aria-invalid") == "true"
    assert runs.get_attribute("aria-describedby") == "ret-run_artifacts_hours-error"
    assert calls.input_value() == "45"  # what was typed stays
    assert calls.get_attribute("aria-invalid") is None
    assert page.get_by_role("alert").first.is_visible()
    assert watched.axe(axe) == []
    assert _api(console_factory, org, "/retention")["tool_calls_days"] == 90

    # A valid change once the sign-in is no longer recent: step-up first, then saved.
    clock.advance(601)
    watched.allowed.append("401")
    runs.fill("48")
    runs.press("Enter")
    page.get_by_role("heading", name="Confirm it's you").wait_for()
    assert _api(console_factory, org, "/retention")["run_artifacts_hours"] == 24
    page.get_by_label("Password (only without a second factor)").fill(PASSWORD)
    page.get_by_label("Password (only without a second factor)").press("Enter")
    page.get_by_text("Verified. Now repeat the action.").wait_for()
    wait_for_path(page, "/console/settings")
    section.get_by_label("Run artifacts (hours, 1 to 8760)").fill("48")
    section.get_by_label("Agents' tool calls (days, 1 to 3650)").fill("45")
    section.get_by_role("button", name="Save retention").press("Enter")
    page.get_by_text("Retention saved: the hourly purge applies it.").wait_for()
    assert _api(console_factory, org, "/retention") == {
        "audit_events_days": 90, "tool_calls_days": 45, "webhook_events_days": 30,
        "deleted_objects_days": 30, "run_artifacts_hours": 48,
    }  # fmt: skip
    assert section.get_by_label("Run artifacts (hours, 1 to 8760)").input_value() == "48"
    events = _api(console_factory, org, "/audit-events?type=privacy.retention_updated")["data"]
    assert len(events) == 1
    watched.clean()
