from __future__ import annotations

from fastapi import APIRouter, Response

from bastion.api.deps import Caller, Ctx, State
from bastion.identity import service as users
from bastion.identity import sessions
from bastion.identity.schemas import LoginIn, LoginOut, SetupIn, SetupOut

router = APIRouter(prefix="/v1/auth", tags=["auth"])


@router.post("/login", summary="Sign in with email and password")
def login(body: LoginIn, ctx: Ctx, state: State) -> LoginOut:
    result = sessions.login(
        ctx.db,
        ctx.actor,
        email=body.email,
        password=body.password.get_secret_value(),
        hasher=state.hasher,
        limiter=state.limiter,
        settings=state.settings,
    )
    return LoginOut(token=result.token, expires_at=result.expires_at, user_id=result.user_id)


@router.post("/logout", status_code=204, summary="End the current session now")
def logout(principal: Caller, ctx: Ctx) -> Response:
    sessions.logout(ctx.db, principal)
    return Response(status_code=204)


@router.post("/setup", summary="Set a password with a one-time setup token")
def setup(body: SetupIn, ctx: Ctx, state: State) -> SetupOut:
    user = users.complete_setup(
        ctx.db,
        ctx.actor,
        token=body.token.get_secret_value(),
        password=body.password.get_secret_value(),
        hasher=state.hasher,
    )
    return SetupOut(user_id=user.id)
