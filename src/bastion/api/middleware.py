"""One pure-ASGI middleware for every cross-cutting HTTP concern, in order:

request id → body limit (413) and JSON content type (415) → per-address quota (429) →
idempotent replay → the app → unit of work (commit on success, rollback on error, then
the failure's audit events in their own transaction) → security and rate-limit headers.

The transaction commits *before* the response starts, so a client never sees a 2xx for
a change that was not durably written.

Ending a transaction (commit, rollback, close) runs on worker threads of its own
(`FINISH_THREADS`), never on the shared ones: those may all be taken by requests waiting
to *begin* a write, and a writer that cannot get a thread to commit holds the database
until every one of them gives up (issue 12). The session is closed on every path,
cancellation included.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any

import anyio.to_thread
import structlog
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from bastion.api import fast, problems, residency
from bastion.api.context import SCOPE_KEY, STARTED_KEY, RequestContext
from bastion.api.failures import note
from bastion.api.metrics import observe
from bastion.api.reqlog import LEAN_ROUTE_KEY, RequestLog, route_template
from bastion.api.responder import Responder
from bastion.api.state import AppState
from bastion.audit import service as audit
from bastion.console.security import CSP
from bastion.core import groupcommit, idempotency, tracing
from bastion.core.crypto import label_base32
from bastion.core.db import client_gone, database_busy
from bastion.core.errors import BastionError, FieldError
from bastion.core.events import EventType

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = structlog.get_logger("bastion.http")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_RAW_BODY_PREFIXES = ("/v1/hooks/",)  # provider webhooks: any content type, raw bytes
# OAuth 2.0 endpoints take form-encoded bodies (RFC 6749 §4.4.2, RFC 7662, RFC 7009): they
# check the content type themselves and answer in OAuth's terms; their answers (tokens)
# are never stored for idempotent replay.
OAUTH_FORM_PATHS = frozenset({"/v1/oauth/token", "/v1/oauth/introspect", "/v1/oauth/revoke"})
# Form posts by protocol: a SAML IdP posts the browser to the ACS (HTTP-POST binding);
# its answer (a redirect with a one-time code) is never stored for idempotent replay.
_SAML_FORM_PATHS = re.compile(r"/v1/auth/sso/[^/]+/saml/acs")
# A sandbox workspace's base: a gzip tar (`application/gzip`), up to its own size limit.
WORKSPACE_FILES_PATH = re.compile(r"/v1/orgs/[^/]+/workspaces/[^/]+/files")
# Slack posts its interactions form-encoded (the signature covers the raw body).
SLACK_INTERACTIONS_PATH = "/v1/integrations/slack/interactions"
_DOCS_PREFIXES = ("/docs", "/redoc")
_CSP = b"default-src 'none'; frame-ancestors 'none'"
# The API docs' pages (`bastion.api.docs`): this origin only, and the pages' own inline
# start-up script and styles; ReDoc runs a worker from a blob.
_DOCS_CSP = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline';"
    b" img-src 'self' data:; worker-src 'self' blob:; frame-ancestors 'none'"
)
# The web console posts HTML forms (form-encoded, with a CSRF token) and has its own CSP.
_CONSOLE_PREFIX = "/console/"
# Threads that only end transactions: they never wait for a lock, so a few suffice.
FINISH_THREADS = 8
CONSOLE_CSP = CSP.encode()


class BodyTooLarge(Exception):
    pass


# The request headers this middleware and the lean routes read: found in one pass.
_READ_HEADERS = frozenset(
    {
        b"x-request-id",
        b"user-agent",
        b"authorization",
        b"idempotency-key",
        b"content-type",
        b"content-length",
        b"x-forwarded-for",
    }
)


_FORWARDED_FOR = b"x-forwarded-for"


def _read_headers(scope: Scope) -> dict[bytes, str]:
    """The first value of each header in `_READ_HEADERS` (as Starlette's `Headers.get`),
    but every `X-Forwarded-For` line joined in order: a proxy may add its own line after
    the client's, and the rightmost hop is the one to believe."""
    found: dict[bytes, str] = {}
    for key, value in scope.get("headers", ()):
        if key not in _READ_HEADERS:
            continue
        if key not in found:
            found[key] = value.decode("latin-1")
        elif key == _FORWARDED_FOR:
            found[key] += "," + value.decode("latin-1")
    return found


class BastionMiddleware:
    def __init__(self, app: ASGIApp, state: AppState, gateway: ASGIApp | None = None) -> None:
        self.app = app
        self.gateway = gateway  # the MCP gateway (`fast.MCP_GATEWAY`), served past the app
        self.state = state
        self._static = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cache-control", b"no-store"),
        ]
        if state.settings.served_over_https:  # TLS here or at a declared proxy in front
            self._static.append(
                (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
            )
        self.finishing = anyio.CapacityLimiter(FINISH_THREADS)
        self.fast = state.settings.fast_path
        self.requests = RequestLog(json=state.settings.log_as_json)
        self.metrics = state.settings.metrics_token is not None
        self.traces = state.settings.otel_traces
        if self.traces:
            tracing.configure()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        started_ns = time.time_ns()
        scope[STARTED_KEY] = started
        try:
            await self._serve(scope, receive, send)
        finally:
            ctx: RequestContext | None = scope.get(SCOPE_KEY)
            if ctx is not None:
                # No answer started: the client left (499, as nginx logs it).
                status = ctx.status or 499
                if self.requests.enabled:
                    self.requests.emit(ctx, route_template(scope), status, started)
                if self.metrics:
                    observe(ctx, route_template(scope), status, started)
                if self.traces:
                    self._trace(ctx, scope, status, started_ns)

    @staticmethod
    def _trace(ctx: RequestContext, scope: Scope, status: int, started_ns: int) -> None:
        principal = ctx.principal
        incoming = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope.get("headers", [])
            if k in (b"traceparent", b"tracestate")
        }
        tracing.record_request(
            method=ctx.method,
            route=route_template(scope),
            status=status,
            started_ns=started_ns,
            request_id=ctx.request_id,
            principal_id=principal.id if principal is not None else None,
            org_id=principal.org_id if principal is not None else None,
            headers=incoming,
        )

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _read_headers(scope)
        incoming_id = headers.get(b"x-request-id")
        request_id = (
            incoming_id
            if incoming_id and _REQUEST_ID.match(incoming_id)
            else f"req_{label_base32(20)}"
        )
        client = scope.get("client")
        path: str = scope["path"]
        ctx = RequestContext(
            request_id=request_id,
            ip=self.state.proxies.client(
                client[0] if client else None, headers.get(b"x-forwarded-for")
            ),
            user_agent=headers.get(b"user-agent"),
            headers=headers,
            method=scope["method"],
            path=path,
            sessions=self.state.sessions,
            write_sessions=self.state.write_sessions,
            direct=self.state.direct,
        )
        scope[SCOPE_KEY] = ctx
        is_api = path.startswith(("/v1/", "/scim/v2/"))
        respond = Responder(self, ctx, send, is_api)

        original = receive
        prepared = await self._prepare(scope, receive, ctx, respond, is_api)
        if prepared is None:
            return
        receive = prepared

        # A write's client may leave while the write waits for the database: then it
        # stops waiting (`client_gone`) instead of queueing work no one will read.
        watcher = None
        has_left = _never
        if ctx.method in _BODY_METHODS and is_api:  # the body is read: `receive` is free
            left = _Left()
            watcher = asyncio.get_running_loop().create_task(_watch_disconnect(original, left))
            has_left = left
        gone = client_gone.set(has_left)
        # The hot routes skip the framework, not this middleware (see `bastion.api.fast`).
        serve = self._handler(scope, ctx.method, path)
        try:
            await serve(scope, receive, respond.send)
        except Exception:
            log.exception("unhandled error", request_id=request_id, path=path)
            await anyio.to_thread.run_sync(self._discard, ctx, limiter=self.finishing)
            if not respond.started:
                await respond.problem(*problems.generic(500, "internal error", request_id))
            return
        finally:
            client_gone.reset(gone)
            if watcher is not None:
                watcher.cancel()
            if ctx.db_opened is not None:
                if self.state.direct.local:
                    ctx.db_opened.close()  # a local file: at once (closed already, often)
                else:
                    with anyio.CancelScope(shield=True):  # a cancelled request closes it too
                        await anyio.to_thread.run_sync(ctx.db_opened.close, limiter=self.finishing)

    def _handler(self, scope: Scope, method: str, path: str) -> ASGIApp:
        """What serves the request: a lean route, the MCP gateway (their templates noted
        in the scope), or the app."""
        if not self.fast or scope.get("root_path"):
            return self.app
        lean = fast.match(method, path)
        if lean is not None:
            scope[LEAN_ROUTE_KEY] = lean[0].template
            return partial(fast.serve, self.state, lean[0], lean[1])
        run = fast.match_gateway(method, path) if self.gateway is not None else None
        if run is not None and self.gateway is not None:
            scope[LEAN_ROUTE_KEY] = fast.MCP_GATEWAY
            return partial(fast.serve_gateway, self.state, self.gateway, run)
        return self.app

    async def _prepare(
        self, scope: Scope, receive: Receive, ctx: RequestContext, respond: Responder, is_api: bool
    ) -> Receive | None:
        """Checks before the app runs; None when a response was already sent."""
        path = ctx.path
        if "\x00" in path or b"%00" in scope.get("query_string", b""):
            # NUL is never part of an id or a filter, and PostgreSQL cannot store it.
            await respond.problem(
                *problems.generic(400, "the URL must not contain NUL bytes", ctx.request_id)
            )
            return None
        body = b""
        if ctx.method in _BODY_METHODS:
            try:
                body = await self._read_body(ctx, receive)
            except BodyTooLarge:
                await respond.problem(
                    *problems.generic(
                        413,
                        f"request body exceeds {self._body_limit(path)} bytes",
                        ctx.request_id,
                    )
                )
                return None
            if (
                body
                and not path.startswith(_RAW_BODY_PREFIXES)
                and path not in OAUTH_FORM_PATHS
                and not _is_json(ctx)
                and not (_SAML_FORM_PATHS.fullmatch(path) and _is_form(ctx))
                and not WORKSPACE_FILES_PATH.fullmatch(path)
                and not (
                    (path == SLACK_INTERACTIONS_PATH or path.startswith(_CONSOLE_PREFIX))
                    and _is_form(ctx)
                )
            ):
                await respond.problem(
                    *problems.generic(
                        415, "send JSON with Content-Type: application/json", ctx.request_id
                    )
                )
                return None
            receive = _replay(body)
        if not await self._route(ctx, body):  # residency: 503 when the region is unknowable
            await respond.problem(*residency.unavailable(ctx.request_id))
            return None

        # Requests without a credential count against their address here; requests with
        # one count against the credential once it is verified, or against the address
        # when it is not (see `bastion.api.deps.get_principal`).
        if is_api and ctx.headers.get(b"authorization") is None:
            allowed, quota = self.state.limiter.take(self.state.ip_quota, f"ip:{ctx.ip}")
            ctx.quota = quota
            if not allowed:
                await note(ctx, self.state.limiter, EventType.REQUEST_RATE_LIMITED, status=429)
                if ctx.failure_events or ctx.failure_writes:
                    await self._write_failure_events(ctx)
                status, headers, payload = problems.generic(
                    429, "too many requests from this address", ctx.request_id
                )
                headers["retry-after"] = str(quota.reset_after)
                await respond.problem(status, headers, payload)
                return None

        scope_idem = None
        if (
            is_api
            and ctx.method == "POST"
            and path not in OAUTH_FORM_PATHS
            and not _SAML_FORM_PATHS.fullmatch(path)  # its answer carries a one-time code
        ):
            key = ctx.headers.get(b"idempotency-key")
            credential = ctx.headers.get(b"authorization")
            if key is not None and credential:
                if not 1 <= len(key) <= idempotency.MAX_KEY_LENGTH:
                    await respond.problem(
                        *problems.generic(
                            422,
                            "Idempotency-Key must be 1 to 255 characters",
                            ctx.request_id,
                            [FieldError("Idempotency-Key", "must be 1 to 255 characters")],
                        )
                    )
                    return None
                scope_idem = idempotency.scope_for(credential, key, ctx.method, path, body)
                if await respond.replay(scope_idem, credential):
                    return None
        respond.idempotency = scope_idem
        return receive

    async def _route(self, ctx: RequestContext, body: bytes) -> bool:
        """Residency (`BASTION_REGIONS`): name the request's region before any database
        work (`bastion.api.residency`); False when it cannot be known now."""
        regions = self.state.regions
        if regions is None:
            return True
        if not await residency.route(regions, ctx.path, ctx.headers):
            return False
        if body and ctx.path.startswith("/v1/auth/"):
            return await residency.route_sign_in(regions, body)
        return True

    def _body_limit(self, path: str) -> int:
        settings = self.state.settings
        if WORKSPACE_FILES_PATH.fullmatch(path):
            return max(settings.body_limit_bytes, settings.sandbox_upload_limit_bytes)
        return settings.body_limit_bytes

    async def _read_body(self, ctx: RequestContext, receive: Receive) -> bytes:
        limit = self._body_limit(ctx.path)
        declared = ctx.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    # --- transaction outcome ---------------------------------------------------------

    async def finish(
        self,
        ctx: RequestContext,
        status: int,
        record: tuple[idempotency.IdempotencyScope, idempotency.StoredResponse] | None,
    ) -> int:
        """Commit on success, else roll back and write the failure's audit events.
        Returns the status to send (a failed commit turns success into an error)."""
        if ctx.deferring:
            return await self._commit_unit(ctx, status, record)
        db = ctx.db_opened
        if db is not None and (db.in_transaction() or record is not None):
            # A transaction in progress ends on the finishing threads; one not begun yet
            # (only an idempotency record to store) begins like any other, on the shared.
            limiter = self.finishing if db.in_transaction() else None
            final = await anyio.to_thread.run_sync(self._end, ctx, status, record, limiter=limiter)
        else:
            final = status
        if status >= 400 and (ctx.failure_events or ctx.failure_writes):
            await self._write_failure_events(ctx)
        elif final < 400 and ctx.after_commit:
            await self._after_commit(ctx)
        return final

    async def _commit_unit(
        self,
        ctx: RequestContext,
        status: int,
        record: tuple[idempotency.IdempotencyScope, idempotency.StoredResponse] | None,
    ) -> int:
        """A reader's request (it never held the writer): on success what it wrote, with
        its idempotency record, goes to the app's writer as one unit of a group commit;
        the answer waits for that batch's commit. A unit that fails fails this request
        alone, with its own problem."""
        reader = ctx.db_opened
        writes = groupcommit.deferred(reader) if reader is not None else []
        if reader is not None:
            # What the route read stays readable in the unit, as it was read; the reader
            # gives its pooled connection back before waiting for the writer, which needs
            # one (held by every waiting request, the pool ran dry and the writer with it).
            reader.expunge_all()
            if self.state.direct.local:
                reader.close()  # a local file's read transaction ends at once
            else:
                await anyio.to_thread.run_sync(reader.close, limiter=self.finishing)
        if status >= 400:
            if ctx.failure_events or ctx.failure_writes:
                await self._write_failure_events(ctx)
            return status
        if writes or record is not None:
            ttl = self.state.settings.idempotency_ttl

            def unit(db: Session) -> None:
                for work in writes:
                    work(db)
                if record is not None:
                    idempotency.store(db, record[0], record[1], ttl)

            principal = ctx.principal
            org = principal.org_id if principal is not None else None
            order = ctx.unit_order or org or ""
            try:
                await self.state.writer.run(unit, order=order)
            except (IntegrityError, idempotency.KeyTaken):
                return 409
            except BastionError as exc:
                if exc.audit is not None:
                    ctx.failure_events.append(exc.audit)
                    await self._write_failure_events(ctx)
                ctx.replacement = problems.from_error(exc, ctx.request_id)
                return exc.status
            except SQLAlchemyError as exc:
                if database_busy(exc):
                    log.warning("commit refused: database busy", request_id=ctx.request_id)
                    return 503
                log.exception("commit failed", request_id=ctx.request_id)
                return 500
        if ctx.after_commit:
            await self._after_commit(ctx)
        return status

    def _end(
        self,
        ctx: RequestContext,
        status: int,
        record: tuple[idempotency.IdempotencyScope, idempotency.StoredResponse] | None,
    ) -> int:
        db = ctx.db_opened
        if db is None:
            return status
        if status >= 400:
            db.rollback()
            return status
        try:
            if record is not None:
                idempotency.store(db, record[0], record[1], self.state.settings.idempotency_ttl)
            db.commit()
        except (IntegrityError, idempotency.KeyTaken):
            db.rollback()
            return 409
        except SQLAlchemyError as exc:
            db.rollback()
            if database_busy(exc):
                log.warning("commit refused: database busy", request_id=ctx.request_id)
                return 503
            log.exception("commit failed", request_id=ctx.request_id)
            return 500
        return status

    def _discard(self, ctx: RequestContext) -> None:
        if ctx.db_opened is not None:
            ctx.db_opened.rollback()

    async def _write_failure_events(self, ctx: RequestContext) -> None:
        """A failed request's audit events (and the writes its failure asked for, such
        as a counted wrong code), which its rollback must not take with it."""
        events = [partial(_record, event=event) for event in ctx.failure_events]
        await self._aside(ctx, [*ctx.failure_writes, *events], "failure events not written")

    async def _after_commit(self, ctx: RequestContext) -> None:
        await self._aside(ctx, list(ctx.after_commit), "bookkeeping write skipped")

    async def _aside(
        self, ctx: RequestContext, works: list[Callable[[Session], object]], skipped: str
    ) -> None:
        """Writes beside a request's own, as one unit of the app's group commit (many
        requests' share a transaction). A database failure is logged, not answered: the
        request's own outcome stands."""

        def unit(db: Session) -> None:
            for work in works:
                work(db)

        principal = ctx.principal
        try:
            await self.state.writer.run(unit, order=principal.org_id if principal else "")
        except SQLAlchemyError as exc:
            log.warning(skipped, request_id=ctx.request_id, error=type(exc).__name__)

    def headers_for(
        self, ctx: RequestContext, is_api: bool, path: str
    ) -> list[tuple[bytes, bytes]]:
        headers = [(b"x-request-id", ctx.request_id.encode()), *self._static]
        if path.startswith(_CONSOLE_PREFIX):
            headers.append((b"content-security-policy", CONSOLE_CSP))
        else:
            csp = _DOCS_CSP if path.startswith(_DOCS_PREFIXES) else _CSP
            headers.append((b"content-security-policy", csp))
        if is_api and ctx.quota is not None:
            q = ctx.quota
            headers += [
                (b"ratelimit-limit", str(q.limit).encode()),
                (b"ratelimit-remaining", str(q.remaining).encode()),
                (b"ratelimit-reset", str(q.reset_after).encode()),
            ]
        return headers


def _is_form(ctx: RequestContext) -> bool:
    content_type = (ctx.headers.get(b"content-type") or "").split(";")[0].strip().lower()
    return content_type == "application/x-www-form-urlencoded"


def _is_json(ctx: RequestContext) -> bool:
    content_type = (ctx.headers.get(b"content-type") or "").split(";")[0].strip().lower()
    return content_type == "application/json" or content_type.endswith("+json")


def _record(db: Session, event: dict[str, Any]) -> None:
    audit.record(db, **event)


def _never() -> bool:
    return False


class _Left:
    """Whether a request's client has gone: set on the event loop, read by the threads
    that wait for the database (a plain attribute is enough under the interpreter lock;
    a `threading.Event` cost a lock and a condition per request)."""

    __slots__ = ("gone",)

    def __init__(self) -> None:
        self.gone = False

    def __call__(self) -> bool:
        return self.gone


async def _watch_disconnect(receive: Receive, left: _Left) -> None:
    with contextlib.suppress(Exception):
        while (await receive())["type"] != "http.disconnect":
            pass
        left.gone = True


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive
