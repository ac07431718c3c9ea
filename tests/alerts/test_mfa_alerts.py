"""Alert rules over MFA events: failure bursts, factor changes (recovery-code use
included) and step-up refusals."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from bastion.alerts import service as alerts
from bastion.api.app import notifier
from bastion.core.clock import clock
from tests.factories import Factory, Org
from tests.identity.mfa_support import enrol_totp, finish, login


def _rule(client: TestClient, org: Org, kind: str, **params: Any) -> None:
    body = {"name": kind, "kind": kind, "params": params}
    response = client.post(f"/v1/orgs/{org.id}/alert-rules", json=body, headers=org.headers)
    assert response.status_code == 201, response.text


def _round(factory: Factory, org: Org) -> list[dict[str, Any]]:
    state = factory.state
    alerts.run_round(state.sessions, state.write_sessions, notifier(state), org.id)
    response = factory.client.get(f"/v1/orgs/{org.id}/alerts", headers=org.headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def test_a_burst_of_wrong_codes_raises_one_alert(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    _rule(client, org, "mfa_failures", threshold=3, window_seconds=600)
    enrol_totp(client, org.admin.headers)
    token = login(client, org.admin.email)["mfa_token"]
    for _ in range(2):
        assert finish(client, token, "totp", "000000").status_code == 401
    assert _round(factory, org) == []  # below the threshold
    assert finish(client, token, "totp", "000000").status_code == 401
    [alert] = _round(factory, org)
    assert alert["kind"] == "mfa_failures"
    assert alert["key"] == f"user:{org.admin.user_id}"
    assert "000000" not in str(alert)


def test_factor_changes_and_recovery_code_use_raise_an_alert(
    client: TestClient, factory: Factory
) -> None:
    org = factory.org()
    _rule(client, org, "mfa_change", window_seconds=60)
    enrolled = enrol_totp(client, org.admin.headers)
    [alert] = _round(factory, org)
    assert alert["kind"] == "mfa_change"
    assert alert["details"]["type"] in {"mfa_factor.confirmed", "mfa_recovery_codes.generated"}
    clock.advance(120)  # a later change is a new burst
    token = login(client, org.admin.email)["mfa_token"]
    assert finish(client, token, "recovery_code", enrolled.recovery_codes[0]).status_code == 200
    found = _round(factory, org)
    assert [a["details"]["type"] for a in found][:1] == ["mfa_recovery_code.used"]
    assert enrolled.recovery_codes[0] not in str(found)


def test_repeated_step_up_refusals_raise_an_alert(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    _rule(client, org, "step_up_refused", threshold=2, window_seconds=300)
    export = f"/v1/orgs/{org.id}/audit-events/export"
    clock.advance(601)
    assert client.get(export, headers=org.admin.headers).status_code == 401
    assert _round(factory, org) == []
    assert client.get(export, headers=org.admin.headers).status_code == 401
    [alert] = _round(factory, org)
    assert alert["kind"] == "step_up_refused"
    assert alert["key"] == f"user:{org.admin.user_id}"
