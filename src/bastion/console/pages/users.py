"""Users: list (filter by status or email), invite, change role, suspend or reactivate,
reset a user's second factors (needs step-up, as `DELETE /v1/orgs/{org}/users/{user}/mfa`).
Each action calls the service the API's route calls, validated by the API's schema."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from bastion.console.pages.common import role_choices
from bastion.console.web import Posted, SignedIn, SignedInPost, notice, render, see_other
from bastion.core.errors import InvalidInput
from bastion.core.pagination import DEFAULT_LIMIT
from bastion.identity import service as users
from bastion.identity.schemas import UserCreate, UserUpdate

router = APIRouter()
PAGE = "/console/users"
STATUSES = ("active", "invited", "suspended")

ROLE_CHANGED = notice("user-role", "Role changed.")
SUSPENDED = notice("user-suspended", "User suspended: their sessions and API keys have ended.")
REACTIVATED = notice("user-reactivated", "User reactivated.")
FACTORS_RESET = notice("user-factors", "Second factors and recovery codes removed.")


def _page(
    viewer: SignedIn,
    *,
    cursor: str | None = None,
    status: str | None = None,
    email: str | None = None,
    created: object = None,
) -> Response:
    found = users.list_users(
        viewer.db, viewer.signed_in, viewer.org_id, limit=DEFAULT_LIMIT, cursor=cursor,
        status=status, email=email,
    )  # fmt: skip
    return render(
        viewer,
        "users.html",
        title="Users",
        users=found.data,
        next_cursor=found.next_cursor,
        roles=role_choices(viewer),
        status_filter=status,
        email=email or "",
        created=created,
    )


@router.get("/users")
def users_page(
    viewer: SignedIn,
    cursor: str | None = None,
    status: str | None = None,
    email: str | None = None,
) -> Response:
    if status and status not in STATUSES:
        raise InvalidInput.field("status", "must be active, invited or suspended")
    return _page(viewer, cursor=cursor, status=status or None, email=(email or "")[:320] or None)


@router.post("/users")
def invite(posted: SignedInPost) -> Response:
    body = UserCreate.model_validate(
        {
            "email": posted.form.get("email", ""),
            "name": posted.form.get("name", ""),
            "role": posted.form.get("role", ""),
        }
    )
    viewer = posted.viewer
    state = viewer.edge.app
    created = users.create_user(
        posted.db,
        viewer.unit.actor,
        posted.org_id,
        email=body.email,
        name=body.name,
        role=body.role,
        password=None,
        hasher=state.hasher,
        setup_ttl=state.settings.setup_token_ttl,
        principal=posted.principal,
    )
    # The setup token is shown once, on this answer (not after a redirect).
    return _page(viewer, created=created)


def _update(posted: Posted, user: str, **values: str) -> None:
    body = UserUpdate.model_validate(values)
    users.update_user(
        posted.db, posted.principal, posted.org_id, user, name=None, role=body.role,
        status=body.status, attributes=None,
    )  # fmt: skip


@router.post("/users/{user}/role")
def change_role(user: str, posted: SignedInPost) -> Response:
    _update(posted, user, role=posted.form.get("role", ""))
    return see_other(PAGE, ROLE_CHANGED)


@router.post("/users/{user}/suspend")
def suspend(user: str, posted: SignedInPost) -> Response:
    _update(posted, user, status="suspended")
    return see_other(PAGE, SUSPENDED)


@router.post("/users/{user}/reactivate")
def reactivate(user: str, posted: SignedInPost) -> Response:
    _update(posted, user, status="active")
    return see_other(PAGE, REACTIVATED)


@router.post("/users/{user}/reset-factors")
def reset_factors(user: str, posted: SignedInPost) -> Response:
    users.reset_mfa(posted.db, posted.principal, posted.org_id, user)
    return see_other(PAGE, FACTORS_RESET)
