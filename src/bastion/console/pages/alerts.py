"""Alerts: the rules over the event stream with their channels (secrets never shown:
the API's own `AlertRuleOut` view), a new rule with its channel, "Edit" (a rule's own
page, saved as `PATCH …/alert-rules/{id}`) and "Delete", open alerts with "Resolve",
and recent resolved ones — through `bastion.alerts.service`, as
`/v1/orgs/{org}/alert-rules` and `/v1/orgs/{org}/alerts` do."""

from __future__ import annotations

import json
import re
from typing import Any, Protocol, cast, get_args

from fastapi import APIRouter
from starlette.responses import Response

from bastion.alerts import service as alerts
from bastion.alerts.schemas import AlertOut, AlertRuleIn, AlertRuleOut, AlertRulePatch
from bastion.console.web import SignedIn, SignedInPost, notice, render, see_other
from bastion.core.errors import InvalidInput
from bastion.core.keyring import Keyring
from bastion.core.pagination import DEFAULT_LIMIT, MAX_LIMIT
from bastion.core.permissions import Permission

router = APIRouter()
PAGE = "/console/alerts"

RESOLVED = notice("alert-resolved", "Alert resolved.")
RULE_CREATED = notice("rule-created", "Alert rule added: it watches events from now on.")
RULE_DELETED = notice("rule-deleted", "Alert rule deleted.")
RULE_SAVED = notice("rule-saved", "Alert rule saved.")
KEEP = "keep"  # the edit form's channel choice that leaves the rule's channels as they are
KINDS: tuple[str, ...] = get_args(AlertRuleIn.model_fields["kind"].annotation)
CHANNEL_TYPES = ("email", "slack", "webhook")


class _State(Protocol):
    @property
    def root_keys(self) -> Keyring: ...


@router.get("/alerts")
def alerts_page(viewer: SignedIn) -> Response:
    db, principal, org = viewer.db, viewer.signed_in, viewer.org_id
    rules = [AlertRuleOut.model_validate(r) for r in alerts.list_rules(db, principal, org)]
    open_ = alerts.list_alerts(
        db, principal, org, status="open", rule_id=None, limit=MAX_LIMIT, cursor=None
    )
    resolved = alerts.list_alerts(
        db, principal, org, status="resolved", rule_id=None, limit=DEFAULT_LIMIT, cursor=None
    )
    return render(
        viewer, "alerts.html", title="Alerts", rules=rules,
        open_alerts=[AlertOut.model_validate(a) for a in open_.data],
        resolved=[AlertOut.model_validate(a) for a in resolved.data],
        rule_names={r.id: r.name for r in rules},
        may_resolve=viewer.can(Permission.ORG_MANAGE),
        may_manage=viewer.can(Permission.ORG_MANAGE), kinds=KINDS, channel_types=CHANNEL_TYPES,
    )  # fmt: skip


def _params(text: str | None) -> dict[str, Any]:
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise InvalidInput.field("params", "is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidInput.field("params", "must be a JSON object")
    return value


def _channel(posted: SignedInPost) -> list[dict[str, Any]]:
    """The form's one channel, as the API takes it (checked again by the service)."""
    kind = posted.get("channel_type")
    if kind is None:
        return []
    if kind == "email":
        to = [a for a in re.split(r"[\s,;]+", posted.form.get("channel_to", "")) if a]
        return [{"type": "email", "to": to}]
    channel: dict[str, Any] = {"type": kind, "url": posted.form.get("channel_url", "")}
    if kind == "webhook":
        channel["secret"] = posted.form.get("channel_secret", "")
    return [channel]


def _outbound(posted: SignedInPost) -> dict[str, Any]:
    settings = posted.viewer.settings
    return {
        "keys": cast(_State, posted.viewer.edge.app).root_keys,
        "allow": settings.outbound_allow,
        "plaintext": settings.outbound_plaintext_allow,
    }


@router.post("/alerts/rules")
def create_rule(posted: SignedInPost) -> Response:
    body = AlertRuleIn.model_validate(
        {
            "name": posted.form.get("name", ""),
            "kind": posted.form.get("kind", ""),
            "params": _params(posted.get("params")),
            "channels": _channel(posted),
            "enabled": posted.get("enabled") is not None,
        }
    )
    alerts.create_rule(
        posted.db, posted.principal, posted.org_id, name=body.name, kind=body.kind,
        params=body.params, channels=body.channels, enabled=body.enabled, **_outbound(posted),
    )  # fmt: skip
    return see_other(PAGE, RULE_CREATED)


@router.get("/alerts/rules/{rule}")
def edit_rule_page(rule: str, viewer: SignedIn) -> Response:
    """One rule's edit form (org:manage, as saving it needs)."""
    viewer.signed_in.require(Permission.ORG_MANAGE)
    found = AlertRuleOut.model_validate(
        alerts.get_rule(viewer.db, viewer.signed_in, viewer.org_id, rule)
    )
    first = found.channels[0] if found.channels else None
    return render(
        viewer, "alert_rule.html", title=f"Edit alert rule {found.name}", rule=found,
        params=json.dumps(found.params, sort_keys=True), first=first,
        channel_types=CHANNEL_TYPES, keep=KEEP,
    )  # fmt: skip


@router.post("/alerts/rules/{rule}/edit")
def edit_rule(rule: str, posted: SignedInPost) -> Response:
    values: dict[str, Any] = {
        "name": posted.form.get("name", ""),
        "params": _params(posted.get("params")),
        "enabled": posted.get("enabled") is not None,
    }
    if posted.form.get("channel_type", KEEP) != KEEP:
        channels = _channel(posted)
        if channels and channels[0]["type"] == "webhook" and not channels[0]["secret"]:
            del channels[0]["secret"]  # empty: keep the saved secret if the URL stays
        values["channels"] = channels
    body = AlertRulePatch.model_validate(values)
    alerts.update_rule(posted.db, posted.principal, posted.org_id, rule, body, **_outbound(posted))
    return see_other(PAGE, RULE_SAVED)


@router.post("/alerts/rules/{rule}/delete")
def delete_rule(rule: str, posted: SignedInPost) -> Response:
    alerts.delete_rule(posted.db, posted.principal, posted.org_id, rule)
    return see_other(PAGE, RULE_DELETED)


@router.post("/alerts/{alert}/resolve")
def resolve(alert: str, posted: SignedInPost) -> Response:
    alerts.resolve_alert(posted.db, posted.principal, posted.org_id, alert)
    return see_other(PAGE, RESOLVED)
