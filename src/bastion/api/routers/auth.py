from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from bastion.api.deps import Caller, Ctx, State
from bastion.core.mail import Mailer
from bastion.identity import account, sessions
from bastion.identity import service as users
from bastion.identity.account import ResetRequested
from bastion.identity.mfa import signin
from bastion.identity.schemas import (
    LoginIn,
    LoginOut,
    MfaEnrolmentOut,
    MfaIn,
    MfaRequiredOut,
    PasswordResetConfirmIn,
    PasswordResetIn,
    SetupIn,
    SetupOut,
    StepUpIn,
    StepUpOut,
)

router = APIRouter(prefix="/v1/auth", tags=["auth"])


@router.post("/login", summary="Sign in with email and password")
def login(body: LoginIn, ctx: Ctx, state: State) -> LoginOut | MfaRequiredOut | MfaEnrolmentOut:
    """A session, or (when a second factor is owed) an `mfa_token` and no session."""
    result = sessions.login(
        ctx.db,
        ctx.actor,
        email=body.email,
        password=body.password.get_secret_value(),
        hasher=state.hasher,
        limiter=state.limiter,
        settings=state.settings,
    )
    if isinstance(result, sessions.MfaOwed):
        if result.purpose == "enrol":
            return MfaEnrolmentOut(mfa_token=result.mfa_token)
        return MfaRequiredOut(mfa_token=result.mfa_token, methods=list(result.methods))
    return LoginOut(token=result.token, expires_at=result.expires_at, user_id=result.user_id)


@router.post("/mfa", summary="Finish signing in with a second factor")
def mfa(body: MfaIn, ctx: Ctx, state: State) -> LoginOut:
    result = signin.complete(
        ctx.db,
        state.vault,
        ctx.actor,
        mfa_token=body.mfa_token.get_secret_value(),
        method=body.method,
        code=body.code,
        hasher=state.hasher,
        limiter=state.limiter,
        settings=state.settings,
        credential=body.credential.as_json() if body.credential else None,
    )
    return LoginOut(token=result.token, expires_at=result.expires_at, user_id=result.user_id)


@router.post("/step-up", summary="Verify again, for sensitive actions (RFC 9470)")
def step_up(body: StepUpIn, principal: Caller, ctx: Ctx, state: State) -> StepUpOut:
    done = signin.step_up(
        ctx.db,
        state.vault,
        principal,
        method=body.method,
        code=body.code,
        password=body.password.get_secret_value() if body.password else None,
        hasher=state.hasher,
        limiter=state.limiter,
        credential=body.credential.as_json() if body.credential else None,
        settings=state.settings,
    )
    return StepUpOut(auth_time=done.auth_time, amr=done.amr)


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


@router.post(
    "/password-reset",
    status_code=202,
    summary="Email a one-time password-reset link (the same answer for any email)",
)
def request_password_reset(body: PasswordResetIn, ctx: Ctx, state: State) -> Response:
    requested = account.request_reset(
        ctx.db,
        ctx.actor,
        email=body.email,
        hasher=state.hasher,
        limiter=state.limiter,
        public_url=state.settings.public_url,
    )
    # Queued for the mailer's thread once the token is committed; queued (or not) the
    # same way whether the email is known, so the answer takes the same time.
    ctx.after_commit.append(_queue_mail(state.mailer, requested))
    return Response(status_code=202)


def _queue_mail(mailer: Mailer, requested: ResetRequested) -> Callable[[Session], None]:
    def run(_db: Session) -> None:
        if requested.mail is not None:
            mailer.submit(requested.mail)

    return run


@router.post(
    "/password-reset/confirm",
    status_code=204,
    summary="Set a new password with a reset token; every session of the user ends",
)
def confirm_password_reset(body: PasswordResetConfirmIn, ctx: Ctx, state: State) -> Response:
    account.confirm_reset(
        ctx.db,
        ctx.actor,
        token=body.token.get_secret_value(),
        password=body.password.get_secret_value(),
        hasher=state.hasher,
    )
    return Response(status_code=204)
