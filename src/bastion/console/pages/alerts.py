"""Alerts: the rules over the event stream with their channels (secrets never shown:
the API's own `AlertRuleOut` view), open alerts with "Resolve", and recent resolved
ones — through `bastion.alerts.service`, as `/v1/orgs/{org}/alert-rules` and
`/v1/orgs/{org}/alerts` do."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from bastion.alerts import service as alerts
from bastion.alerts.schemas import AlertOut, AlertRuleOut
from bastion.console.web import SignedIn, SignedInPost, notice, render, see_other
from bastion.core.pagination import DEFAULT_LIMIT, MAX_LIMIT
from bastion.core.permissions import Permission

router = APIRouter()
PAGE = "/console/alerts"

RESOLVED = notice("alert-resolved", "Alert resolved.")


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
    )  # fmt: skip


@router.post("/alerts/{alert}/resolve")
def resolve(alert: str, posted: SignedInPost) -> Response:
    alerts.resolve_alert(posted.db, posted.principal, posted.org_id, alert)
    return see_other(PAGE, RESOLVED)
