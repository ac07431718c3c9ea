"""Slack's requests to Bastion: Approve / Deny clicked on an approval's message."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask

from bastion.api.deps import DB, Ctx, State
from bastion.approvals.slack import interactions
from bastion.core.errors import Unauthenticated

router = APIRouter(prefix="/v1/integrations/slack", tags=["integrations"])


async def _raw_body(request: Request) -> bytes:
    return await request.body()


_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["payload"],
                    "properties": {
                        "payload": {
                            "type": "string",
                            "description": "Slack's interaction payload (JSON): a "
                            "`block_actions` with `team.id`, `user.id` and `actions`.",
                        }
                    },
                }
            }
        },
    },
    "security": [],
}


@router.post(
    "/interactions",
    summary="Approve or Deny clicked in Slack (Slack's signature is the credential)",
    response_model=None,
    openapi_extra=_FORM,
    responses={
        200: {
            "description": "Slack's ephemeral message for the clicker: what happened, "
            "or why nothing did."
        },
        401: {
            "description": "Unknown Slack workspace, stale or mis-signed request: nothing changed."
        },
    },
)
def slack_interactions(
    request: Request,
    body: Annotated[bytes, Depends(_raw_body)],
    db: DB,
    ctx: Ctx,
    state: State,
) -> JSONResponse:
    """Verified with the organisation's Slack signing secret (`X-Slack-Signature`, v0
    HMAC-SHA256 over `v0:{X-Slack-Request-Timestamp}:{body}`, within 5 minutes), the
    organisation found by the payload's `team.id`; decided as the Bastion user linked to
    the clicking Slack user, by the same rules as `POST …/approvals/{apr}/decisions`.
    The clicker's message is the answer and, once answered, goes to the payload's
    `response_url` (Slack shows it only to them)."""
    reply = interactions.handle(
        db,
        state.vault,
        request.headers,
        body,
        ctx.actor,
        state.settings.public_url,
    )
    if reply.status != 200:
        raise Unauthenticated("the Slack request could not be verified")
    s = state.settings
    later = BackgroundTask(
        interactions.answer,
        reply,
        s.slack_response_url_prefix,
        s.outbound_allow,
        s.proxy_url,
        s.outbound_plaintext_allow,
    )
    return JSONResponse(reply.body(), background=later)
