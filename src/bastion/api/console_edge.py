"""The console's `Edge`, built from this app's state and request context: the console
authenticates its session cookie with `authenticate_request` (the API's own: same
principal, quota, IP allowlist, enrolment rule) and queues a refusal's audit trace with
`domain_problem` (the API's problem handler), so both edges behave alike."""

from __future__ import annotations

from starlette.requests import Request

from bastion.api.context import SCOPE_KEY, RequestContext
from bastion.api.deps import authenticate_person, authenticate_request
from bastion.api.errors import domain_problem
from bastion.api.state import AppState
from bastion.console.edge import Edge
from bastion.core.errors import BastionError
from bastion.core.principal import Principal

# The route a console request is authenticated as: an enrolment page answers a person
# who still owes a second factor exactly as `/v1/me/mfa` does; every other page as an
# ordinary API route (refused `mfa_enrolment_required` for them).
ENROLMENT_ROUTE = "/v1/me/mfa"
CONSOLE_ROUTE = "/console"


def _ctx(request: Request) -> RequestContext:
    ctx: RequestContext = request.scope[SCOPE_KEY]
    return ctx


def build(state: AppState) -> Edge:
    async def authenticate(request: Request, token: str | None, enrolment: bool) -> Principal:
        ctx = _ctx(request)
        if enrolment:
            return await authenticate_person(ctx, state, token, ENROLMENT_ROUTE)
        return await authenticate_request(ctx, state, token, CONSOLE_ROUTE)

    async def refused(request: Request, exc: BastionError) -> None:
        await domain_problem(_ctx(request), state.limiter, exc)

    return Edge(app=state, authenticate=authenticate, refused=refused, unit=_ctx)
