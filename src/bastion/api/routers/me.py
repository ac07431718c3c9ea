from __future__ import annotations

from fastapi import APIRouter, Response

from bastion.api.deps import DB, DEFAULT_PAGE, Caller, Cursor, Limit, State
from bastion.core.errors import Forbidden
from bastion.core.principal import Principal
from bastion.core.schemas import ListOf
from bastion.identity import account, sessions
from bastion.identity import service as users
from bastion.identity.schemas import MeOut, MeUpdate, PasswordChangeIn, SessionOut, UserOut

router = APIRouter(prefix="/v1/me", tags=["me"])


@router.get("", summary="Who the caller is and what it may do")
async def me(principal: Caller) -> MeOut:
    return me_out(principal)


def me_out(principal: Principal) -> MeOut:
    """The answer of `GET /v1/me`, also served by `bastion.api.fast`."""
    return MeOut(
        principal_type=principal.principal_type,
        id=principal.id,
        org_id=principal.org_id,
        role=principal.role,
        permissions=sorted(principal.permissions),
        user_id=principal.user_id,
        session_id=principal.session_id,
        amr=list(principal.amr) if principal.session_id else None,
        auth_time=principal.auth_time if principal.session_id else None,
    )


@router.patch("", summary="Change what a person sets of themselves: their linked Slack user")
def update_me(body: MeUpdate, principal: Caller, db: DB) -> UserOut:
    """A person links their Slack user (`slack_user_id`; null unlinks): their clicks on
    Approve / Deny in Slack then decide as them. Unique in the organisation (409)."""
    if principal.user_id is None:
        raise Forbidden("only a person changes their own profile")
    updated = users.update_user(
        db,
        principal,
        principal.org_id,
        principal.user_id,
        slack_user_id=(
            body.slack_user_id if "slack_user_id" in body.model_fields_set else users.KEEP
        ),
    )
    return UserOut.model_validate(updated)


@router.get("/sessions", summary="The caller's active sessions")
def list_sessions(
    principal: Caller, db: DB, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> ListOf[SessionOut]:
    page = sessions.list_sessions(db, principal, limit=limit, cursor=cursor)
    data = [
        SessionOut(
            id=s.id,
            created_at=s.created_at,
            last_seen_at=s.last_seen_at,
            expires_at=s.expires_at,
            ip=s.ip,
            user_agent=s.user_agent,
            amr=s.amr or ["pwd"],  # sessions older than MFA
            auth_time=s.auth_time or s.created_at,
            current=s.id == principal.session_id,
        )
        for s in page.data
    ]
    return ListOf[SessionOut](data=data, next_cursor=page.next_cursor)


@router.delete("/sessions/{session_id}", status_code=204, summary="Revoke one session")
def revoke_session(session_id: str, principal: Caller, db: DB) -> Response:
    sessions.revoke_session(db, principal, session_id)
    return Response(status_code=204)


@router.delete("/sessions", status_code=204, summary="Revoke every session but the current one")
def revoke_other_sessions(principal: Caller, db: DB) -> Response:
    sessions.revoke_other_sessions(db, principal)
    return Response(status_code=204)


@router.post("/password", status_code=204, summary="Change your password; your other sessions end")
def change_password(body: PasswordChangeIn, principal: Caller, db: DB, state: State) -> Response:
    account.change_password(
        db,
        principal,
        current_password=body.current_password.get_secret_value(),
        new_password=body.new_password.get_secret_value(),
        limiter=state.limiter,
    )
    return Response(status_code=204)
