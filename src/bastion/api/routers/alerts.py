"""Alert rules and alert history: thin routes over `bastion.alerts.service`."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from bastion.alerts import service as alerts
from bastion.alerts.schemas import AlertOut, AlertRuleIn, AlertRuleOut, AlertRulePatch
from bastion.api.deps import DB, DEFAULT_PAGE, Caller, Cursor, Limit, State
from bastion.core.schemas import ListOf

alert_rules_router = APIRouter(prefix="/v1/orgs/{org}/alert-rules", tags=["alerts"])
alerts_router = APIRouter(prefix="/v1/orgs/{org}/alerts", tags=["alerts"])


@alert_rules_router.post("", status_code=201, summary="Add an alert rule over the event stream")
def create_alert_rule(
    org: str, body: AlertRuleIn, principal: Caller, db: DB, state: State
) -> AlertRuleOut:
    rule = alerts.create_rule(
        db,
        principal,
        org,
        name=body.name,
        kind=body.kind,
        params=body.params,
        channels=body.channels,
        enabled=body.enabled,
        keys=state.root_keys,
        allow=state.settings.outbound_allow,
        plaintext=state.settings.outbound_plaintext_allow,
    )
    return AlertRuleOut.model_validate(rule)


@alert_rules_router.get("", summary="Alert rules (channel secrets are never shown)")
def list_alert_rules(org: str, principal: Caller, db: DB) -> dict[str, list[AlertRuleOut]]:
    rules = alerts.list_rules(db, principal, org)
    return {"data": [AlertRuleOut.model_validate(r) for r in rules]}


@alert_rules_router.get("/{rule}", summary="One alert rule")
def get_alert_rule(org: str, rule: str, principal: Caller, db: DB) -> AlertRuleOut:
    return AlertRuleOut.model_validate(alerts.get_rule(db, principal, org, rule))


@alert_rules_router.patch(
    "/{rule}",
    summary="Change an alert rule (validated as on create)",
    description="Needs `org:manage`, as adding a rule does. Only the fields given change; "
    "`params` replaces the rule's parameters (those left out take the kind's defaults) and "
    "`channels` its channels, where a webhook channel without `secret` keeps the secret of "
    "the rule's webhook channel with the same `url`. `kind` cannot change (422). Audited as "
    "`alert_rule.updated` with the names of the fields that changed.",
)
def update_alert_rule(
    org: str, rule: str, body: AlertRulePatch, principal: Caller, db: DB, state: State
) -> AlertRuleOut:
    updated = alerts.update_rule(
        db,
        principal,
        org,
        rule,
        body,
        keys=state.root_keys,
        allow=state.settings.outbound_allow,
        plaintext=state.settings.outbound_plaintext_allow,
    )
    return AlertRuleOut.model_validate(updated)


@alert_rules_router.delete("/{rule}", status_code=204, summary="Remove an alert rule")
def delete_alert_rule(org: str, rule: str, principal: Caller, db: DB) -> Response:
    alerts.delete_rule(db, principal, org, rule)
    return Response(status_code=204)


@alerts_router.get("", summary="Alert history, newest first")
def list_alerts(
    org: str,
    principal: Caller,
    db: DB,
    status: Annotated[Literal["open", "resolved"] | None, Query()] = None,
    rule: Annotated[str | None, Query(max_length=40)] = None,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> ListOf[AlertOut]:
    page = alerts.list_alerts(
        db, principal, org, status=status, rule_id=rule, limit=limit, cursor=cursor
    )
    return ListOf[AlertOut](
        data=[AlertOut.model_validate(a) for a in page.data], next_cursor=page.next_cursor
    )


@alerts_router.get("/{alert}", summary="One alert")
def get_alert(org: str, alert: str, principal: Caller, db: DB) -> AlertOut:
    return AlertOut.model_validate(alerts.get_alert(db, principal, org, alert))


@alerts_router.post("/{alert}/resolve", summary="Mark an alert resolved")
def resolve_alert(org: str, alert: str, principal: Caller, db: DB) -> AlertOut:
    return AlertOut.model_validate(alerts.resolve_alert(db, principal, org, alert))
