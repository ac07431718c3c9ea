from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from bastion.api.deps import DB, DEFAULT_PAGE, Caller, Cursor, Limit, State
from bastion.authz.models import RoleGrant
from bastion.core.clock import utcnow
from bastion.core.schemas import ListOf
from bastion.identity import service as users
from bastion.identity import sessions
from bastion.identity.schemas import (
    GrantCreate,
    GrantOut,
    SessionOut,
    UserCreate,
    UserCreated,
    UserOut,
    UserUpdate,
)

router = APIRouter(prefix="/v1/orgs/{org}/users", tags=["users"])


@router.post("", status_code=201, summary="Create or invite a user")
def create_user(org: str, body: UserCreate, principal: Caller, db: DB, state: State) -> UserCreated:
    created = users.create_user(
        db,
        principal.actor,
        org,
        email=body.email,
        name=body.name,
        role=body.role,
        password=body.password.get_secret_value() if body.password else None,
        hasher=state.hasher,
        setup_ttl=state.settings.setup_token_ttl,
        principal=principal,
    )
    out = UserOut.model_validate(created.user).model_dump()
    return UserCreated(**out, setup_token=created.setup_token)


@router.get("", summary="List users, newest first")
def list_users(
    org: str,
    principal: Caller,
    db: DB,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
    status: Annotated[Literal["active", "invited", "suspended"] | None, Query()] = None,
    email: Annotated[str | None, Query(max_length=320)] = None,
) -> ListOf[UserOut]:
    page = users.list_users(
        db, principal, org, limit=limit, cursor=cursor, status=status, email=email
    )
    return ListOf[UserOut](
        data=[UserOut.model_validate(u) for u in page.data], next_cursor=page.next_cursor
    )


@router.get("/{user}", summary="One user")
def get_user(org: str, user: str, principal: Caller, db: DB) -> UserOut:
    return UserOut.model_validate(users.get_user(db, principal, org, user))


@router.patch(
    "/{user}", summary="Change a user's name, role, status, attributes or linked Slack user"
)
def update_user(org: str, user: str, body: UserUpdate, principal: Caller, db: DB) -> UserOut:
    updated = users.update_user(
        db,
        principal,
        org,
        user,
        name=body.name,
        role=body.role,
        status=body.status,
        attributes=body.attributes,
        slack_user_id=(
            body.slack_user_id if "slack_user_id" in body.model_fields_set else users.KEEP
        ),
    )
    return UserOut.model_validate(updated)


@router.delete("/{user}", status_code=204, summary="Delete a user; their sessions and keys end now")
def delete_user(org: str, user: str, principal: Caller, db: DB) -> Response:
    users.delete_user(db, principal, org, user)
    return Response(status_code=204)


@router.delete(
    "/{user}/mfa",
    status_code=204,
    summary="Remove every second factor and recovery code of another user (needs step-up)",
)
def reset_mfa(org: str, user: str, principal: Caller, db: DB) -> Response:
    users.reset_mfa(db, principal, org, user)
    return Response(status_code=204)


def _grant_out(grant: RoleGrant) -> GrantOut:
    active = grant.revoked_at is None and grant.expires_at > utcnow()
    return GrantOut(
        id=grant.id,
        user_id=grant.user_id,
        role=grant.role,
        reason=grant.reason,
        expires_at=grant.expires_at,
        granted_by=grant.granted_by,
        revoked_at=grant.revoked_at,
        created_at=grant.created_at,
        active=active,
    )


@router.post("/{user}/role-grants", status_code=201, summary="Temporary elevation until expires_at")
def create_grant(org: str, user: str, body: GrantCreate, principal: Caller, db: DB) -> GrantOut:
    grant = users.grant_role(
        db, principal, org, user, role=body.role, expires_at=body.expires_at, reason=body.reason
    )
    return _grant_out(grant)


@router.get("/{user}/role-grants", summary="A user's role grants, newest first")
def list_grants(
    org: str,
    user: str,
    principal: Caller,
    db: DB,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> ListOf[GrantOut]:
    page = users.list_role_grants(db, principal, org, user, limit=limit, cursor=cursor)
    return ListOf[GrantOut](data=[_grant_out(g) for g in page.data], next_cursor=page.next_cursor)


@router.delete("/{user}/role-grants/{grant}", status_code=204, summary="Revoke a grant now")
def revoke_grant(org: str, user: str, grant: str, principal: Caller, db: DB) -> Response:
    users.revoke_role_grant(db, principal, org, user, grant)
    return Response(status_code=204)


@router.get("/{user}/sessions", summary="A user's active sessions, newest first")
def list_user_sessions(
    org: str,
    user: str,
    principal: Caller,
    db: DB,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> ListOf[SessionOut]:
    page = sessions.list_user_sessions(db, principal, org, user, limit=limit, cursor=cursor)
    data = [
        SessionOut.model_validate(s).model_copy(update={"current": s.id == principal.session_id})
        for s in page.data
    ]
    return ListOf[SessionOut](data=data, next_cursor=page.next_cursor)


@router.delete("/{user}/sessions", status_code=204, summary="End every session of a user now")
def end_user_sessions(org: str, user: str, principal: Caller, db: DB) -> Response:
    sessions.end_user_sessions(db, principal, org, user)
    return Response(status_code=204)


@router.delete(
    "/{user}/sessions/{session}", status_code=204, summary="End one session of a user now"
)
def end_user_session(org: str, user: str, session: str, principal: Caller, db: DB) -> Response:
    sessions.end_user_sessions(db, principal, org, user, session)
    return Response(status_code=204)
