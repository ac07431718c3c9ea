from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Response
from pydantic import Field
from sqlalchemy.orm import Session

from bastion.api.deps import DB, Caller, State
from bastion.approvals.schemas import SlackIn
from bastion.approvals.slack import settings as slack
from bastion.core.schemas import Out
from bastion.identity import sessions
from bastion.sandboxes import limits as sandbox_limits
from bastion.sandboxes.schemas import LimitsOut, SandboxLimitsIn
from bastion.tenancy import service as tenancy
from bastion.tenancy.models import Organization
from bastion.tenancy.schemas import OrgOut, OrgUpdate

router = APIRouter(prefix="/v1/orgs/{org}", tags=["organizations"])


class SlackOut(Out):
    configured: bool
    team_id: str | None
    bot_token: bool = Field(description="Whether a bot token is saved (never shown).")


class OrgUpdateIn(OrgUpdate):
    slack: SlackIn | None = Field(
        default=None,
        description="Set the Slack app of approvals; `null` removes it (its secrets are "
        "destroyed). Both need a recent sign-in (step-up).",
    )
    sandbox_limits: SandboxLimitsIn | None = Field(
        default=None,
        description="The maxima of sandbox workspaces' limits (fields given change; "
        "needs org:manage). A workspace asking more is refused (422).",
    )


class OrgWithSlack(OrgOut):
    slack: SlackOut = Field(description="The Slack app of approvals; its secrets never shown.")
    sandbox_limits: LimitsOut = Field(
        description="The maxima of sandbox workspaces' limits, and new workspaces' defaults."
    )


def _out(db: Session, org: Organization) -> OrgWithSlack:
    view = slack.view(db, org.id)
    out = OrgOut.model_validate(org)
    maxima = sandbox_limits.org_maxima(db, org.id)
    return OrgWithSlack(
        **out.model_dump(),
        slack=SlackOut(configured=view.configured, team_id=view.team_id, bot_token=view.bot_token),
        sandbox_limits=LimitsOut(**asdict(maxima)),
    )


@router.get("", summary="The organisation and its settings")
def get_org(org: str, principal: Caller, db: DB) -> OrgWithSlack:
    return _out(db, tenancy.get_org(db, principal, org))


@router.patch("", summary="Change the organisation's settings and policies")
def update_org(
    org: str, body: OrgUpdateIn, principal: Caller, db: DB, state: State
) -> OrgWithSlack:
    if body.slack is not None:
        change = slack.SlackChange(
            team_id=body.slack.team_id,
            signing_secret=body.slack.signing_secret.get_secret_value(),
            bot_token=body.slack.bot_token.get_secret_value() if body.slack.bot_token else None,
        )
        slack.configure(db, state.vault, principal, org, change)
    elif "slack" in body.model_fields_set:  # `"slack": null`: remove the Slack app
        slack.remove(db, principal, org)
    if body.sandbox_limits is not None:
        sandbox_limits.set_org_maxima(db, principal, org, body.sandbox_limits)
    only_these = not body.model_fields_set - {"slack", "sandbox_limits", "confirm_lockout"}
    if body.model_fields_set & {"slack", "sandbox_limits"} and only_these:
        return _out(db, tenancy.get_org(db, principal, org))
    policy = body.password_policy
    updated = tenancy.update_org(
        db,
        principal,
        org,
        name=body.name,
        session_idle_timeout=body.session_idle_timeout,
        session_absolute_timeout=body.session_absolute_timeout,
        fields_set=body.model_fields_set,
        audit_retention_days=body.audit_retention_days,
        mfa_policy=body.mfa_policy,
        mfa_methods=list(body.mfa_methods) if body.mfa_methods is not None else None,
        step_up_max_age=body.step_up_max_age,
        step_up_refuses_admin_keys=body.step_up_refuses_admin_keys,
        password_min_length=policy.min_length if policy else None,
        password_breached_check=policy.breached_check if policy else None,
        max_sessions_per_user=body.max_sessions_per_user,
        ip_allowlist=body.ip_allowlist,
        confirm_lockout=body.confirm_lockout,
        sso_enforced=body.sso_enforced,
        sso_break_glass=body.sso_break_glass,
        region=body.region,
    )
    return _out(db, updated)


@router.delete(
    "",
    status_code=204,
    summary="Delete the organisation: its credentials stop working, its secrets are shredded",
)
def delete_org(org: str, principal: Caller, db: DB, state: State) -> Response:
    tenancy.delete_org(db, state.vault, principal.actor, org, principal)
    return Response(status_code=204)


@router.delete(
    "/sessions",
    status_code=204,
    summary="End every user's sessions now but the caller's own (incident response)",
)
def end_org_sessions(org: str, principal: Caller, db: DB) -> Response:
    sessions.end_org_sessions(db, principal, org)
    return Response(status_code=204)
