"""The gateway's client to upstream MCP servers: the `mcp` SDK's `Client` over Streamable
HTTP, through the outbound guard (`bastion.mcp.transport`), with the server's sealed
static headers added to every request.

One live client per server (and version: a changed URL or header replaces it) per event
loop, kept open by a task of its own and shared by concurrent calls, so a call costs
one upstream round trip and no handshake. A client that fails is dropped and the next
call opens a new one. Each server's tool list is kept for `list_ttl` seconds; an agent's
`tools/list` always asks the server again.

A server that names an OAuth integration (`Upstream.credential_source`) gets that
integration's current access token as its bearer, on every request: asked of the
integrations service (which refreshes it ahead of expiry, one worker at a time) and kept
here at most `TOKEN_SECONDS` (and never closer than a minute to its expiry), so a
refreshed, disconnected or deleted integration is seen within seconds. An upstream that
answers 401 makes the gateway ask once more, past that cache.

Failures are `UpstreamError`s whose message names the server and the kind of failure,
never a header or an argument.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio.to_thread
import httpx2
import structlog
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

from bastion.core.clock import as_utc, utcnow
from bastion.core.errors import BastionError
from bastion.integrations import service as integrations
from bastion.mcp.service import Upstream
from bastion.mcp.transport import guarded_client
from mcp import Client

log = structlog.get_logger("bastion.mcp")

TOKEN_SECONDS = 5.0  # an integration's access token kept this long at most
TOKEN_MIN_VALID = 60.0  # and never when it expires sooner than this


class CredentialsUnavailable(Exception):
    """The server's integration has no token to give (not connected, deleted, its
    provider unreachable while the token expired). Never carries the token."""


class _Credentials:
    """An integration's access token for the gateway, kept briefly per process."""

    def __init__(self, tokens: integrations.TokenBroker | None) -> None:
        self._tokens = tokens
        self._lock = threading.Lock()
        self._kept: dict[tuple[str, str], tuple[str, float]] = {}

    def __repr__(self) -> str:
        return "_Credentials()"

    async def bearer(self, up: Upstream, *, fresh: bool = False) -> str:
        name = up.credential_source
        if name is None or self._tokens is None:
            raise CredentialsUnavailable("no integration")
        key = (up.org_id, name)
        now = time.monotonic()
        with self._lock:
            kept = self._kept.get(key)
        if kept is not None and kept[1] > now and not fresh:
            return kept[0]
        tokens = self._tokens
        try:
            token = await anyio.to_thread.run_sync(
                integrations.access_token, tokens, up.org_id, name
            )
        except BastionError as exc:  # not found, not connected, provider unavailable
            raise CredentialsUnavailable(exc.code) from None
        until = now + TOKEN_SECONDS
        if token.expires_at is not None:
            until = min(until, now + _seconds_left(token.expires_at) - TOKEN_MIN_VALID)
        with self._lock:
            if len(self._kept) > 10_000:
                self._kept.clear()
            self._kept[key] = (token.access_token, until)
        return token.access_token


def _seconds_left(expires_at: datetime) -> float:
    return (as_utc(expires_at) - utcnow()).total_seconds()


class _IntegrationBearer(httpx2.Auth):
    """`Authorization: Bearer <the integration's access token>` on every request; on a
    401, once more with a token asked for past the cache."""

    def __init__(self, credentials: _Credentials, up: Upstream) -> None:
        self._credentials, self._up = credentials, up

    def __repr__(self) -> str:
        return f"_IntegrationBearer(server={self._up.id!r})"

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        request.headers["Authorization"] = "Bearer " + await self._credentials.bearer(self._up)
        response = yield request
        if response.status_code == 401:
            fresh = await self._credentials.bearer(self._up, fresh=True)
            request.headers["Authorization"] = "Bearer " + fresh
            yield request


class UpstreamError(Exception):
    """The upstream could not be reached or did not answer in time. `reason` is safe to
    show the agent and to audit."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ToolDef:
    name: str
    description: str
    input_schema: dict[str, Any]


class _Live:
    def __init__(self, client: Client, stop: asyncio.Event, task: asyncio.Task[None]) -> None:
        self.client = client
        self.stop = stop
        self.task = task


class _LoopState:
    def __init__(self) -> None:
        self.live: dict[tuple[str, int], _Live] = {}
        self.locks: dict[tuple[str, int], asyncio.Lock] = {}
        self.tools: dict[tuple[str, int], tuple[float, dict[str, ToolDef]]] = {}


def _failure(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return _failure(exc.exceptions[0]) if exc.exceptions else "failed"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, CredentialsUnavailable):
        return f"credentials unavailable (integration: {exc})"
    from bastion.core.netguard import OutboundRefused

    if isinstance(exc, OutboundRefused):
        return "destination refused by the outbound guard"
    return f"unavailable ({type(exc).__name__})"


class Upstreams:
    def __init__(
        self,
        allow: Sequence[str],
        plaintext: Sequence[str],
        *,
        timeout: float = 30.0,
        list_ttl: float = 30.0,
        tokens: integrations.TokenBroker | None = None,
    ) -> None:
        self._allow = tuple(allow)
        self._plaintext = tuple(plaintext)
        self.timeout = timeout
        self._list_ttl = list_ttl
        self._credentials = _Credentials(tokens)
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"Upstreams(allow={self._allow!r}, plaintext={self._plaintext!r})"

    def _state(self) -> _LoopState:
        return self._loops.setdefault(asyncio.get_running_loop(), _LoopState())

    async def _open(self, up: Upstream) -> _Live:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[Client] = loop.create_future()
        stop = asyncio.Event()

        async def hold() -> None:
            try:
                async with (
                    guarded_client(
                        up.url,
                        self._allow,
                        self._plaintext,
                        up.headers,
                        auth=_IntegrationBearer(self._credentials, up)
                        if up.credential_source
                        else None,
                    ) as http,
                    Client(
                        streamable_http_client(up.url, http_client=http),
                        cache=None,
                        read_timeout_seconds=self.timeout,
                    ) as client,
                ):
                    ready.set_result(client)
                    await stop.wait()
            except BaseException as exc:
                if not ready.done():
                    ready.set_exception(UpstreamError(f"{up.name}: {_failure(exc)}"))
                elif not isinstance(exc, asyncio.CancelledError):
                    log.info("mcp upstream closed", server=up.id, failure=_failure(exc))

        task = loop.create_task(hold())
        try:
            client = await asyncio.wait_for(asyncio.shield(ready), self.timeout)
        except TimeoutError:
            task.cancel()
            raise UpstreamError(f"{up.name}: timed out") from None
        return _Live(client, stop, task)

    async def _live(self, up: Upstream) -> _Live:
        state = self._state()
        live = state.live.get(up.key)
        if live is not None and not live.task.done():
            return live
        lock = state.locks.setdefault(up.key, asyncio.Lock())
        async with lock:
            live = state.live.get(up.key)
            if live is None or live.task.done():
                for key in [k for k in state.live if k[0] == up.id and k != up.key]:
                    state.live.pop(key).stop.set()  # an older version of this server
                live = await self._open(up)
                state.live[up.key] = live
            return live

    def _drop(self, up: Upstream) -> None:
        live = self._state().live.pop(up.key, None)
        if live is not None:
            live.stop.set()

    async def credentials_unavailable(self, up: Upstream) -> str | None:
        """Why the server's integration has no token to give (its error code), or None
        (it has one, or the server has no integration): asked before a call is decided,
        so a call without its credential is refused rather than tried."""
        if up.credential_source is None:
            return None
        try:
            await self._credentials.bearer(up)
        except CredentialsUnavailable as exc:
            return str(exc)
        return None

    async def tools(self, up: Upstream, *, fresh: bool = False) -> dict[str, ToolDef]:
        """The server's tools by name (every page)."""
        state = self._state()
        cached = state.tools.get(up.key)
        if cached is not None and not fresh and time.monotonic() - cached[0] < self._list_ttl:
            return cached[1]
        live = await self._live(up)
        found: dict[str, ToolDef] = {}
        cursor: str | None = None
        try:
            async with asyncio.timeout(self.timeout):
                for _ in range(100):  # pages
                    page = await live.client.list_tools(cursor=cursor, cache_mode="refresh")
                    for tool in page.tools:
                        found[tool.name] = ToolDef(
                            tool.name, tool.description or "", dict(tool.input_schema)
                        )
                    cursor = page.next_cursor
                    if not cursor:
                        break
        except Exception as exc:
            self._drop(up)
            state.tools.pop(up.key, None)
            raise UpstreamError(f"{up.name}: {_failure(exc)}") from None
        state.tools[up.key] = (time.monotonic(), found)
        return found

    async def call(self, up: Upstream, name: str, arguments: dict[str, Any]) -> CallToolResult:
        live = await self._live(up)
        try:
            async with asyncio.timeout(self.timeout):
                return await live.client.call_tool(name, arguments)
        except Exception as exc:
            self._drop(up)
            raise UpstreamError(f"{up.name}: {_failure(exc)}") from None

    async def aclose(self) -> None:
        state = self._loops.get(asyncio.get_running_loop())
        if state is None:
            return
        for live in state.live.values():
            live.stop.set()
        tasks = [live.task for live in state.live.values()]
        state.live.clear()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
