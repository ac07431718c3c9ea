"""The organisation's Slack app and people's Slack links: `PATCH /v1/orgs/{org}`
`{"slack": …}` (sealed in the vault, never returned, audited without values, step-up
for a person) and `slack_user_id` on users (`PATCH /v1/me`, `PATCH …/users/{user}`,
unique in the organisation, shown on user reads)."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

from bastion.core.clock import clock
from tests.factories import Factory, step_up

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TOKEN = "xoxb-1111-2222-not-a-real-token"


def _team() -> str:
    return "T" + uuid.uuid4().hex[:10].upper()


def _slack_user() -> str:
    return "U" + uuid.uuid4().hex[:10].upper()


def test_slack_secrets_are_sealed_never_shown_and_audited_without_values(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    url = f"/v1/orgs/{org.id}"
    assert client.get(url, headers=org.headers).json()["slack"] == {
        "configured": False,
        "team_id": None,
        "bot_token": False,
    }
    team = _team()
    body = {"slack": {"team_id": team, "signing_secret": SECRET, "bot_token": TOKEN}}
    saved = client.patch(url, json=body, headers=org.admin.headers)
    assert saved.status_code == 200, saved.text
    read = client.get(url, headers=org.headers)
    assert read.json()["slack"] == {"configured": True, "team_id": team, "bot_token": True}
    events = client.get(
        f"{url}/audit-events", params={"type": "org.slack_updated"}, headers=org.headers
    )
    assert events.json()["data"][0]["metadata"]["team_id"] == team
    secrets = client.get(f"{url}/secrets", headers=org.headers)
    for response in (saved, read, events, secrets):
        assert SECRET not in response.text
        assert TOKEN not in response.text
    # Rotating the signing secret alone keeps the bot token.
    rotated = {"slack": {"team_id": team, "signing_secret": SECRET[::-1]}}
    assert client.patch(url, json=rotated, headers=org.admin.headers).status_code == 200
    assert client.get(url, headers=org.headers).json()["slack"]["bot_token"] is True


def test_changing_the_slack_app_needs_step_up_and_manage_rights(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    url = f"/v1/orgs/{org.id}"
    body = {"slack": {"team_id": _team(), "signing_secret": SECRET}}
    clock.advance(601)  # the admin's sign-in is older than step_up_max_age
    refused = client.patch(url, json=body, headers=org.admin.headers)
    assert refused.status_code == 401
    assert refused.json()["code"] == "step_up_required"
    assert client.get(url, headers=org.headers).json()["slack"]["configured"] is False
    step_up(client, org.admin.headers)
    assert client.patch(url, json=body, headers=org.admin.headers).status_code == 200
    manager = factory.member(org, "manager")
    assert client.patch(url, json=body, headers=manager.headers).status_code == 403


def test_a_slack_workspace_belongs_to_one_organisation(
    client: TestClient, factory: Factory
) -> None:
    first, second = factory.org(), factory.org()
    team = _team()
    body = {"slack": {"team_id": team, "signing_secret": SECRET}}
    assert client.patch(f"/v1/orgs/{first.id}", json=body, headers=first.headers).status_code == 200
    taken = client.patch(f"/v1/orgs/{second.id}", json=body, headers=second.headers)
    assert taken.status_code == 409


def test_bad_slack_settings_are_422_naming_the_field(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    for slack, field in (
        ({"team_id": "not-a-team", "signing_secret": SECRET}, "team_id"),
        ({"team_id": _team(), "signing_secret": "short"}, "signing_secret"),
        ({"team_id": _team()}, "signing_secret"),
        ({"team_id": _team(), "signing_secret": SECRET, "extra": 1}, "slack"),
    ):
        response = client.patch(f"/v1/orgs/{org.id}", json={"slack": slack}, headers=org.headers)
        assert response.status_code == 422, response.text
        assert any(field in e["field"] for e in response.json()["errors"]), response.text
        assert SECRET not in response.text


def test_people_link_their_slack_user_uniquely(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    alice, bob = factory.member(org, "manager"), factory.member(org, "member")
    slack_id = _slack_user()
    mine = client.patch("/v1/me", json={"slack_user_id": slack_id}, headers=alice.headers)
    assert mine.status_code == 200, mine.text
    assert mine.json()["slack_user_id"] == slack_id
    shown = client.get(f"/v1/orgs/{org.id}/users/{alice.user_id}", headers=org.headers)
    assert shown.json()["slack_user_id"] == slack_id
    taken = client.patch("/v1/me", json={"slack_user_id": slack_id}, headers=bob.headers)
    assert taken.status_code == 409
    # An admin links someone else; another organisation may use the same Slack id.
    other = factory.org()
    admin_set = client.patch(
        f"/v1/orgs/{org.id}/users/{bob.user_id}",
        json={"slack_user_id": _slack_user()},
        headers=org.headers,
    )
    assert admin_set.status_code == 200, admin_set.text
    elsewhere = client.patch(
        f"/v1/orgs/{other.id}/users/{other.admin.user_id}",
        json={"slack_user_id": slack_id},
        headers=other.headers,
    )
    assert elsewhere.status_code == 200, elsewhere.text
    # A member cannot link someone else; bad ids are 422; null unlinks.
    assert (
        client.patch(
            f"/v1/orgs/{org.id}/users/{alice.user_id}",
            json={"slack_user_id": _slack_user()},
            headers=bob.headers,
        ).status_code
        == 403
    )
    bad = client.patch("/v1/me", json={"slack_user_id": "alice"}, headers=alice.headers)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"].endswith("slack_user_id")
    cleared = client.patch("/v1/me", json={"slack_user_id": None}, headers=alice.headers)
    assert cleared.json()["slack_user_id"] is None
    events = client.get(
        f"/v1/orgs/{org.id}/audit-events",
        params={"type": "user.updated", "resource": alice.user_id},
        headers=org.headers,
    ).json()["data"]
    assert [e["metadata"].get("slack_user_id", "-") for e in events][:2] == [None, slack_id]


def test_keys_and_agents_have_no_self_to_change(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    response = client.patch("/v1/me", json={"slack_user_id": _slack_user()}, headers=org.headers)
    assert response.status_code == 403
