from __future__ import annotations

from fastapi import APIRouter, Response

from bastion.api.deps import DB, Caller, State
from bastion.identity import sessions
from bastion.tenancy import service as tenancy
from bastion.tenancy.schemas import OrgOut, OrgUpdate

router = APIRouter(prefix="/v1/orgs/{org}", tags=["organizations"])


@router.get("", summary="The organisation and its settings")
def get_org(org: str, principal: Caller, db: DB) -> OrgOut:
    return OrgOut.model_validate(tenancy.get_org(db, principal, org))


@router.patch("", summary="Change the organisation's settings and policies")
def update_org(org: str, body: OrgUpdate, principal: Caller, db: DB) -> OrgOut:
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
    )
    return OrgOut.model_validate(updated)


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
