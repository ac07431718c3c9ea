"""Roles: the built-in and custom roles with their permissions, custom roles built from
the permission catalogue (create, delete), and temporary grants (grant a role until a
time, revoke), through the services of `/v1/orgs/{org}/roles` and
`/v1/orgs/{org}/users/{user}/role-grants`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from bastion.authz import service as authz
from bastion.authz.schemas import RoleCreate
from bastion.console.pages.common import form_time, role_choices, user_emails
from bastion.console.web import SignedIn, SignedInPost, notice, render, see_other
from bastion.core.clock import as_utc, utcnow
from bastion.core.errors import Forbidden
from bastion.core.permissions import DESCRIPTIONS, Permission
from bastion.identity import service as users
from bastion.identity.schemas import GrantCreate

router = APIRouter()
PAGE = "/console/roles"

CREATED = notice("role-created", "Role created.")
DELETED = notice("role-deleted", "Role deleted.")
GRANTED = notice("grant-created", "Role granted until the time given.")
REVOKED = notice("grant-revoked", "Grant revoked.")


def _grants(viewer: SignedIn, emails: dict[str, str]) -> list[dict[str, Any]]:
    """The active grants of the users the viewer may list (newest first per user)."""
    now = utcnow()
    found: list[dict[str, Any]] = []
    for user_id, email in emails.items():
        try:
            page = users.list_role_grants(
                viewer.db, viewer.signed_in, viewer.org_id, user_id, limit=50, cursor=None
            )
        except Forbidden:
            return []
        for grant in page.data:
            if grant.revoked_at is None and as_utc(grant.expires_at) > now:
                found.append({"grant": grant, "email": email})
    return found


@router.get("/roles")
def roles_page(viewer: SignedIn) -> Response:
    rows = authz.list_roles(viewer.db, viewer.signed_in, viewer.org_id)
    emails = user_emails(viewer)
    return render(
        viewer,
        "roles.html",
        title="Roles",
        roles=rows,
        catalogue=[(p.value, DESCRIPTIONS[p]) for p in sorted(Permission)],
        choices=role_choices(viewer),
        emails=emails,
        grants=_grants(viewer, emails),
    )


@router.post("/roles")
def create_role(posted: SignedInPost) -> Response:
    body = RoleCreate.model_validate(
        {
            "name": posted.form.get("name", ""),
            "description": posted.form.get("description", ""),
            "permissions": posted.all("permissions"),
        }
    )
    authz.create_role(
        posted.db,
        posted.principal,
        posted.org_id,
        name=body.name,
        permissions=body.permissions,
        description=body.description,
    )
    return see_other(PAGE, CREATED)


@router.post("/roles/{role}/delete")
def delete_role(role: str, posted: SignedInPost) -> Response:
    users.delete_custom_role(posted.db, posted.principal, posted.org_id, role)
    return see_other(PAGE, DELETED)


@router.post("/roles/grants")
def grant(posted: SignedInPost) -> Response:
    user = posted.require("user")
    body = GrantCreate.model_validate(
        {
            "role": posted.form.get("role", ""),
            "expires_at": form_time(posted.get("expires_at")) or "",
            "reason": posted.form.get("reason", ""),
        }
    )
    users.grant_role(
        posted.db, posted.principal, posted.org_id, user, role=body.role,
        expires_at=body.expires_at, reason=body.reason,
    )  # fmt: skip
    return see_other(PAGE, GRANTED)


@router.post("/roles/grants/{user}/{grant_id}/revoke")
def revoke(user: str, grant_id: str, posted: SignedInPost) -> Response:
    users.revoke_role_grant(posted.db, posted.principal, posted.org_id, user, grant_id)
    return see_other(PAGE, REVOKED)
