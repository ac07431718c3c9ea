"""The Slack app of approvals on the Settings page over HTTP (in process), checked
through the API: saved (secrets never shown again), refused by field, removed (its
secrets destroyed), and a step-up asked when the sign-in is not recent."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi.testclient import TestClient

from bastion.core.clock import clock
from tests.console.helpers import csrf_of, sign_in
from tests.factories import PASSWORD, Factory, Org

PAGE = "/console/settings"
SECRET = "slack-signing-secret-0123456789"
TOKEN = "xoxb-console-test-token"


def _signed_in(factory: Factory, email: str) -> TestClient:
    client = TestClient(factory.client.app, raise_server_exceptions=False)
    sign_in(client, email)
    return client


def _post(client: TestClient, action: str, **data: Any) -> httpx.Response:
    token = csrf_of(client.get(PAGE).text)
    return client.post(action, data={"csrf": token, **data}, follow_redirects=False)


def _slack(factory: Factory, org: Org) -> Any:
    answer = factory.client.get(f"/v1/orgs/{org.id}", headers=org.headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["slack"]


def test_slack_app_saved_and_removed_from_settings(factory: Factory) -> None:
    org = factory.org()
    client = _signed_in(factory, org.admin.email)
    assert "Not connected" in client.get(PAGE).text
    saved = _post(client, f"{PAGE}/slack", team_id="T0CONSOLE1", signing_secret=SECRET,
                  bot_token=TOKEN)  # fmt: skip
    assert saved.status_code == 303, saved.text
    assert _slack(factory, org) == {"configured": True, "team_id": "T0CONSOLE1", "bot_token": True}
    page = client.get(PAGE).text
    assert "T0CONSOLE1" in page
    assert SECRET not in page
    assert TOKEN not in page
    assert "Remove Slack app" in page

    bad = _post(client, f"{PAGE}/slack", team_id="not-a-team", signing_secret=SECRET)
    assert bad.status_code == 422
    assert "team_id" in bad.text
    short = _post(client, f"{PAGE}/slack", team_id="T0CONSOLE1", signing_secret="short")
    assert short.status_code == 422
    assert "signing_secret" in short.text
    assert _slack(factory, org)["bot_token"] is True  # nothing changed

    removed = _post(client, f"{PAGE}/slack/remove")
    assert removed.status_code == 303, removed.text
    assert _slack(factory, org) == {"configured": False, "team_id": None, "bot_token": False}
    events = factory.client.get(
        f"/v1/orgs/{org.id}/audit-events?type=org.slack_removed", headers=org.headers
    ).json()["data"]
    assert len(events) == 1
    assert "Remove Slack app" not in client.get(PAGE).text


def test_removing_the_slack_app_asks_for_a_step_up(factory: Factory) -> None:
    org = factory.org()
    client = _signed_in(factory, org.admin.email)
    saved = _post(client, f"{PAGE}/slack", team_id="T0CONSOLE2", signing_secret=SECRET)
    assert saved.status_code == 303, saved.text
    clock.advance(601)  # the sign-in is older than step_up_max_age
    prompt = _post(client, f"{PAGE}/slack/remove")
    assert prompt.status_code == 401
    assert "Confirm it" in prompt.text
    assert _slack(factory, org)["configured"] is True
    verified = client.post(
        "/console/step-up",
        data={"csrf": csrf_of(prompt.text), "password": PASSWORD, "back": PAGE},
        follow_redirects=False,
    )
    assert verified.status_code == 303, verified.text
    assert _post(client, f"{PAGE}/slack/remove").status_code == 303
    assert _slack(factory, org)["configured"] is False
    # Without the CSRF token nothing runs.
    refused = client.post(f"{PAGE}/slack", data={"team_id": "T0X", "signing_secret": SECRET})
    assert refused.status_code == 403
