"""The peer every HTTP benchmark is measured against: a bare Starlette endpoint that
returns a response of the same shape as `GET /v1/me`, with no auth, database or
middleware. Served by uvicorn with the same worker count as Bastion."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

BODY = {
    "principal_type": "api_key",
    "id": "key_01M8TG4DJMMMAJTBBEAMKAJW02",
    "org_id": "org_01M8TG4DJMMMAJTBBEAMKAJW02",
    "role": "admin",
    "permissions": ["apikeys:manage", "audit:read", "users:manage"],
}


async def me(request: Request) -> JSONResponse:
    return JSONResponse(BODY)


async def tool_call(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"decision": "allow", "id": "tc_01M8TG4DJMMMAJTBBEAMKAJW02"})


app = Starlette(routes=[Route("/v1/me", me), Route("/tool-calls", tool_call, methods=["POST"])])
