"""Step-up (RFC 9470) from the console: the prompt `bastion.console.errors` shows when
a service answers `step_up_required` posts here (as `POST /v1/auth/step-up`), then the
person goes back to the page and repeats the action."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from bastion.console.web import EnrollingPost, notice, see_other
from bastion.core.errors import InvalidInput
from bastion.identity.mfa import passkeys, signin
from bastion.identity.schemas import StepUpIn

router = APIRouter()

STEPPED_UP = notice("stepped-up", "Verified. Now repeat the action.")


@router.post("/step-up")
def step_up(posted: EnrollingPost) -> Response:
    values: dict[str, Any]
    if posted.get("method") == "webauthn":
        try:
            values = {"method": "webauthn", "credential": json.loads(posted.require("credential"))}
        except ValueError:
            raise InvalidInput.field("credential", "is not JSON") from None
    elif posted.get("code"):
        code = (posted.get("code") or "").strip()
        compact = code.replace(" ", "")
        method = "totp" if compact.isdigit() and len(compact) <= 8 else "recovery_code"
        values = {"method": method, "code": code}
    else:
        values = {"method": "password", "password": posted.form.get("password", "")}
    body = StepUpIn.model_validate(values)
    state = posted.viewer.edge.app
    signin.step_up(
        posted.db,
        state.vault,
        posted.principal,
        method=body.method,
        code=body.code,
        password=body.password.get_secret_value() if body.password else None,
        hasher=state.hasher,
        limiter=state.limiter,
        credential=body.credential.as_json() if body.credential else None,
        settings=state.settings,
    )
    return see_other(posted.back, STEPPED_UP)


@router.post("/step-up/passkey-options")
def step_up_options(posted: EnrollingPost) -> Response:
    state = posted.viewer.edge.app
    options = passkeys.step_up_options(
        posted.db, passkeys.RelyingParty.of(state.settings), posted.principal
    )
    return JSONResponse(options)
