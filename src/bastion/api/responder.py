"""The response side of `BastionMiddleware`: the transaction ends before the response
starts, our headers are added, and a response to keep for idempotent replay is buffered
and stored; a stored one is replayed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from bastion.api import problems
from bastion.api.context import RequestContext
from bastion.core import idempotency
from bastion.core.errors import BastionError, FieldError
from bastion.identity.authenticate import authenticate

if TYPE_CHECKING:
    from bastion.api.middleware import BastionMiddleware

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

# Public documents whose own `Cache-Control` stands (everything else is `no-store`).
CACHEABLE_PATHS = frozenset(
    {
        "/.well-known/jwks.json",
        # The API docs' scripts and styles (`bastion.api.docs`): a day.
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/docs/assets/redoc.standalone.js",
        "/docs/assets/favicon.png",
    }
)


class Responder:
    """Wraps `send`: finishes the transaction before the response starts, adds headers,
    and buffers the response when it must be stored for idempotent replay."""

    def __init__(
        self, mw: BastionMiddleware, ctx: RequestContext, send: Send, is_api: bool
    ) -> None:
        self.mw = mw
        self.ctx = ctx
        self._send = send
        self.is_api = is_api
        self.started = False
        self.idempotency: idempotency.IdempotencyScope | None = None
        self._replaced = False
        self._buffer: list[Message] = []

    def _decorate(self, message: Message) -> Message:
        self.ctx.status = message["status"]
        own_cache = self.ctx.path in CACHEABLE_PATHS
        dropped = (b"x-request-id",) if own_cache else (b"x-request-id", b"cache-control")
        headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in dropped]
        ours = self.mw.headers_for(self.ctx, self.is_api, self.ctx.path)
        if own_cache and any(k.lower() == b"cache-control" for k, _ in headers):
            ours = [(k, v) for k, v in ours if k != b"cache-control"]
        return {**message, "headers": headers + ours}

    async def problem(self, status: int, headers: dict[str, str], body: bytes) -> None:
        if problems.is_scim(self.ctx.path) and not headers.get("content-type", "").startswith(
            problems.SCIM_CONTENT_TYPE
        ):  # /scim/v2 answers every error, the middleware's too, as a SCIM error document
            status, headers, body = problems.as_scim(status, headers, body)
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]
        raw.append((b"content-length", str(len(body)).encode()))
        self.started = True
        await self._send(
            self._decorate({"type": "http.response.start", "status": status, "headers": raw})
        )
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    async def replay(self, scope: idempotency.IdempotencyScope, credential: str) -> bool:
        """Answer from a stored first response; True when the request is fully handled.
        Only for a credential that still authenticates: a signed-out session or a revoked
        key is answered by the app (401), never with a stored answer (which may hold a
        one-time secret)."""
        state = self.mw.state

        def lookup() -> tuple[Any, Any] | None:
            with state.sessions() as db:
                found = idempotency.find(db, scope, state.settings.idempotency_ttl)
                if found is None:
                    return None
                scheme, _, token = credential.partition(" ")
                try:
                    authenticate(
                        db, token if scheme.lower() == "bearer" else None, self.ctx.actor,
                        state.hasher, state.auth_cache, jwt=state.access_tokens,
                    )  # fmt: skip
                except BastionError:
                    return None
                return found

        found = await anyio.to_thread.run_sync(lookup)
        if found is None:
            return False
        record, stored = found
        rid = self.ctx.request_id
        if record.request_digest != scope.request_digest or stored is None:
            await self.problem(
                *problems.generic(
                    422,
                    "this Idempotency-Key was used with a different request",
                    rid,
                    [FieldError("Idempotency-Key", "reused with a different request")],
                )
            )
            return True
        headers = [(k.encode(), v.encode()) for k, v in stored.headers]
        headers.append((b"idempotent-replayed", b"true"))
        self.started = True
        await self._send(
            self._decorate(
                {"type": "http.response.start", "status": stored.status, "headers": headers}
            )
        )
        await self._send({"type": "http.response.body", "body": stored.body, "more_body": False})
        return True

    async def send(self, message: Message) -> None:
        if self._replaced:
            return
        if message["type"] == "http.response.start":
            status = message["status"]
            if self.idempotency is not None and status < 300:
                self._buffer.append(message)
                return
            await self._start(message, status, None)
            return
        if self._buffer:
            self._buffer.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                await self._flush_buffered()
            return
        await self._send(message)

    async def _start(
        self,
        message: Message,
        status: int,
        record: tuple[idempotency.IdempotencyScope, idempotency.StoredResponse] | None,
    ) -> bool:
        ctx = self.ctx
        db = ctx.db_opened
        idle = (db is None or not db.in_transaction()) and record is None and not ctx.deferring
        if idle and not ctx.after_commit and not ctx.failure_events:
            final = status  # nothing to commit, roll back or record: no trip to a thread
        else:
            final = await self.mw.finish(ctx, status, record)
        self.started = True
        if final != status:
            self._replaced = True
            if ctx.replacement is not None:
                await self.problem(*ctx.replacement)
                return False
            if final == 409 and record is not None:
                # Stripe's code: the SDK retries it, and the retry replays the answer.
                await self.problem(*problems.idempotency_key_in_use(self.ctx.request_id))
                return False
            if final == 503:
                await self.problem(*problems.database_busy(self.ctx.request_id))
                return False
            detail = (
                "the change conflicts with another one; retry" if final == 409 else "internal error"
            )
            code, headers, body = problems.generic(final, detail, self.ctx.request_id)
            await self.problem(code, headers, body)
            return False
        await self._send(self._decorate(message))
        return True

    async def _flush_buffered(self) -> None:
        start, *rest = self._buffer
        self._buffer = []
        body = b"".join(m.get("body", b"") for m in rest if m["type"] == "http.response.body")
        keep = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.get("headers", [])]
        record = None
        if self.idempotency is not None:
            record = (self.idempotency, idempotency.StoredResponse(start["status"], keep, body))
        if await self._start(start, start["status"], record):
            for message in rest:
                await self._send(message)
