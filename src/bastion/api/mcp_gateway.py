"""The MCP gateway: `/v1/runs/{run}/mcp`, where an agent run speaks MCP (Streamable HTTP,
the `mcp` SDK's server) with its run token, and every tool call passes the gate.

- `tools/list`: the tools the agent declares on its MCP connections (`server.tool`,
  connection `mcs_…`) whose upstream definition, asked of the server now, still has the
  declared digest. A changed definition is left out (and its calls refused) until the
  agent's tool is saved again with it — the tool-pinning rule: a re-saved tool has a new
  digest, and an `allow` policy stops applying to it until re-approved.
- `tools/call`: the gate decides (`Gate.request`: budget, declared tool, connection
  given, JSON Schema, approval policies) and audits; the gateway first refuses, through
  the same gate (recorded and audited like any denial), a call to a server that is gone
  or withheld (its configurer lost `mcp_servers:use`), to a tool whose upstream
  definition changed, to an upstream that cannot be asked, or to a server whose OAuth
  integration has no token to give (`credentials_unavailable`). A pending call waits for
  its approval within the run's time and the approval's expiry. Only an allowed call
  reaches the upstream, with the server's sealed static headers (or its integration's
  access token) added by the gateway;
  an upstream failure is an MCP error result, audited (`mcp.call_failed`), never a 500.
- Data policies (`bastion.privacy`): on arguments, the gate applies them (deny, hold
  for approval, store redacted) like on any call; on results, `inspect_results` runs
  the `tool_results` policies: `deny` withholds the result, `redact` replaces what they
  find in its text and structured content before the agent sees it.

A composition at the edge: the agents' gate and run view (`bastion.agents`), the MCP
server registry and client (`bastion.mcp`).
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import mcp_types as types
import structlog
from fastapi import FastAPI
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from bastion.agents import gate, mcp_runs
from bastion.agents.gate.runs import own_run
from bastion.agents.service import tool_digest
from bastion.api.context import SCOPE_KEY, RequestContext
from bastion.api.deps import authenticate_request, bearer_token
from bastion.api.fast import MCP_GATEWAY
from bastion.api.problems import ERROR_RESPONSES
from bastion.api.routers import mcp as registry
from bastion.api.state import AppState
from bastion.approvals.models import Approval
from bastion.audit import service as audit
from bastion.core.clock import as_utc, utcnow
from bastion.core.events import EventType, Outcome
from bastion.core.principal import Principal
from bastion.core.schemas import unstorable
from bastion.mcp.service import Upstream, is_server_id
from bastion.mcp.upstream import UpstreamError, Upstreams
from bastion.privacy import service as privacy

log = structlog.get_logger("bastion.mcp")

ROUTE = MCP_GATEWAY  # served from `BastionMiddleware` on the fast path (`bastion.api.fast`)
_CALLER = "bastion.mcp.caller"  # the authenticated run, in the ASGI scope
# The same, for what the SDK asks outside a handler's context (`_input_schema`).
_CALLING: contextvars.ContextVar[tuple[Principal, str] | None] = contextvars.ContextVar(
    "bastion_mcp_calling", default=None
)
MAX_VIEWS = 4096  # runs whose MCP view a worker keeps
MAX_WAIT_SECONDS = 3600.0  # a pending call waits at most this long (and the run's time)

# Checks of arguments and results: each hook sees the run, the tool and the value, and
# returns a denial reason or None (a result hook may redact the result in place). Data
# policies on arguments are the gate's; on results, `_privacy_results` (registered below).
Inspect = Callable[[mcp_runs.McpRun, str, Any], str | None]
inspect_arguments: list[Inspect] = []
inspect_results: list[Inspect] = []


def _privacy_results(view: mcp_runs.McpRun, tool: str, result: Any) -> str | None:
    """The organisation's `tool_results` data policies on an upstream's result: a denial
    reason naming the policy, or None with what they found replaced in the result."""
    if not view.privacy.of("tool_results") or not isinstance(result, types.CallToolResult):
        return None
    texts = [c.text for c in result.content if isinstance(c, types.TextContent)]
    applied = privacy.apply_policies(
        view.privacy, "tool_results", {"texts": texts, "structured": result.structured_content}
    )
    if applied.action is None:
        return None
    if applied.action == "deny":
        return applied.reason
    redacted = iter(applied.value["texts"])
    for item in result.content:
        if isinstance(item, types.TextContent):
            item.text = next(redacted)
    result.structured_content = applied.value["structured"]
    return None


inspect_results.append(_privacy_results)


def _error(text: str, **bastion: Any) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        is_error=True,
        structured_content={"bastion": bastion},
    )


class McpGateway:
    def __init__(self, state: AppState) -> None:
        self.state = state
        s = state.settings
        self.upstreams = Upstreams(
            s.outbound_allow, s.outbound_plaintext_allow, tokens=state.integration_tokens
        )
        self.server: Server[Any] = Server(
            "bastion",
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            get_tool_input_schema=self._input_schema,
        )
        self._managers: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop,
            tuple[StreamableHTTPSessionManager, asyncio.Task[None], asyncio.Event],
        ] = weakref.WeakKeyDictionary()
        self._views: OrderedDict[str, tuple[tuple[int, ...], mcp_runs.McpRun]] = OrderedDict()

    def __repr__(self) -> str:
        return f"McpGateway(upstreams={self.upstreams!r})"

    # --- HTTP -------------------------------------------------------------------------

    async def _manager(self) -> StreamableHTTPSessionManager:
        """The SDK's session manager of this event loop (stateless, JSON responses: any
        worker answers any request), started on first use."""
        loop = asyncio.get_running_loop()
        found = self._managers.get(loop)
        if found is not None and not found[1].done():
            await found[2].wait()  # a request that came first may still be starting it
            return found[0]
        manager = StreamableHTTPSessionManager(self.server, json_response=True, stateless=True)
        started = asyncio.Event()

        async def hold() -> None:
            async with manager.run():
                started.set()
                await asyncio.Event().wait()

        task = loop.create_task(hold())
        self._managers[loop] = (manager, task, started)
        await started.wait()
        return manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI endpoint of `/v1/runs/{run}/mcp`: the run's own token or nothing (401
        for a missing, wrong, expired or revoked token; 404 for another run's)."""
        ctx: RequestContext = scope[SCOPE_KEY]
        run_id = scope["path_params"]["run"]
        token = bearer_token(Request(scope).headers.get("authorization"))
        principal = await authenticate_request(ctx, self.state, token, ROUTE)
        own_run(principal, run_id)
        scope[_CALLER] = (principal, run_id)
        calling = _CALLING.set((principal, run_id))
        try:
            manager = await self._manager()
            await manager.handle_request(scope, receive, send)
        finally:
            _CALLING.reset(calling)

    async def aclose(self) -> None:
        await self.upstreams.aclose()
        for _, task, _ in list(self._managers.values()):
            task.cancel()

    # --- MCP --------------------------------------------------------------------------

    def _caller(self, ctx: ServerRequestContext[Any]) -> tuple[Principal, str]:
        request = ctx.request
        caller = request.scope.get(_CALLER) if isinstance(request, Request) else None
        if caller is None:  # cannot happen: the endpoint authenticated it
            raise PermissionError("no run")
        principal, run_id = caller
        return principal, run_id

    def _input_schema(self, name: str) -> dict[str, Any] | None:
        """The declared input schema of the calling run's tool `name`, for the SDK's check
        of `Mcp-Param-*` headers before each `tools/call`. Without it the SDK runs this
        server's whole `tools/list` (the run's view and every upstream asked again) on
        every call. From the run's kept view: the same schema `tools/list` advertises;
        none kept yet (the run's first call), no header check — the call itself is
        decided, as always, by the gate on the arguments."""
        caller = _CALLING.get()
        cached = self._views.get(caller[1]) if caller is not None else None
        if caller is None or cached is None or cached[1].org_id != caller[0].org_id:
            return None
        tool = cached[1].tools.get(name)
        schema = tool.get("input_schema") if tool is not None else None
        return schema if isinstance(schema, dict) else None

    async def _view(self, principal: Principal, run_id: str) -> mcp_runs.McpRun:
        """The run's MCP view, read once per revision tuple of its organisation (an
        agent, server, role, grant or run change bumps them) while the run lasts."""
        org_id = principal.org_id or ""
        authz = self.state.authz
        revisions = (
            authz.revisions(org_id)
            if authz.local
            else await run_in_threadpool(authz.revisions, org_id)
        )
        cached = self._views.get(run_id)
        if (
            cached is not None
            and revisions is not None
            and cached[0] == revisions
            and cached[1].org_id == org_id
            and cached[1].expires_at > utcnow()
        ):
            own_run(principal, run_id)
            return cached[1]

        def read() -> mcp_runs.McpRun:
            with self.state.sessions() as db:
                return mcp_runs.load(db, self.state.vault, principal, run_id)

        view = await run_in_threadpool(read)
        if revisions is not None:
            self._views[run_id] = (revisions, view)
            self._views.move_to_end(run_id)
            while len(self._views) > MAX_VIEWS:
                self._views.popitem(last=False)
        return view

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        principal, run_id = self._caller(ctx)
        view = await self._view(principal, run_id)
        servers = [u for sid, u in sorted(view.upstreams.items()) if sid not in view.withheld]
        answers = await asyncio.gather(
            *(self.upstreams.tools(u, fresh=True) for u in servers), return_exceptions=True
        )
        listed = []
        for server, defs in zip(servers, answers, strict=True):
            if isinstance(defs, BaseException):
                log.info("mcp upstream unavailable for tools/list", server=server.id)
                continue
            for tool in view.tools.values():
                if tool.get("connection") != server.id:
                    continue
                name = mcp_runs.upstream_name(tool, server)
                current = defs.get(name) if name else None
                if current is None or _digest(server, current, tool) != tool["digest"]:
                    continue  # changed upstream: refused until the agent's tool is saved again
                listed.append(
                    types.Tool(
                        name=tool["name"],
                        description=tool.get("description") or None,
                        input_schema=tool.get("input_schema") or {"type": "object"},
                    )
                )
        return types.ListToolsResult(tools=listed)

    async def _refusal(
        self, view: mcp_runs.McpRun, tool: dict[str, Any] | None
    ) -> tuple[str | None, Upstream | None, str | None]:
        """(a reason to deny before the gate decides, the upstream, its tool's name)."""
        if tool is None:
            return None, None, None  # the gate denies an undeclared tool
        connection = tool.get("connection")
        if connection is None or not is_server_id(connection):
            return f"not_an_mcp_tool:{tool['name']}", None, None  # other tools: the REST gate
        if connection not in view.connections:
            return None, None, None  # the gate denies a connection not given
        server = view.upstreams.get(connection)
        if server is None:
            return f"mcp_server_unavailable:{connection}", None, None
        if connection in view.withheld:
            return f"connection_withheld:{connection}", None, None
        name = mcp_runs.upstream_name(tool, server)
        if name is None:
            return f"tool_changed_upstream:{tool['name']}", None, None
        if await self.upstreams.credentials_unavailable(server) is not None:
            return f"credentials_unavailable:{connection}", None, None
        try:
            defs = await self.upstreams.tools(server)
        except UpstreamError:
            return f"upstream_unavailable:{connection}", None, None
        current = defs.get(name)
        if current is None or _digest(server, current, tool) != tool["digest"]:
            return f"tool_changed_upstream:{tool['name']}", None, None
        return None, server, name

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        principal, run_id = self._caller(ctx)
        view = await self._view(principal, run_id)
        arguments = dict(params.arguments or {})
        problem = unstorable(arguments)
        if problem is not None:  # as the REST gate's 422: refused before any decision
            raise MCPError(INVALID_PARAMS, f"arguments {problem}")
        tool = view.tools.get(params.name)
        refuse, server, upstream_name = await self._refusal(view, tool)
        if refuse is None and tool is not None:
            refuse = _inspected(inspect_arguments, view, params.name, arguments)
        call = await self.state.gate.request(
            principal,
            run_id,
            tool_name=params.name,
            arguments=arguments,
            connection=None,
            refuse=refuse,
        )
        decision, reason = call.decision, call.reason
        if decision == "pending":
            left = (view.expires_at - utcnow()).total_seconds()
            decision, reason = await self._wait(principal, run_id, call, left)
        info = {"call_id": call.id, "decision": decision, "reason": reason}
        if call.approval_id:
            info["approval_id"] = call.approval_id
        if decision != "allow" or server is None or upstream_name is None:
            return _error(f"Bastion: this call was not allowed ({decision}: {reason})", **info)
        try:
            result = await self.upstreams.call(server, upstream_name, arguments)
        except UpstreamError as exc:
            await self._failed(principal, view, call.id, params.name, exc.reason)
            return _error(f"Bastion: the MCP server failed ({exc.reason})", **info, failed=True)
        refused = _inspected(inspect_results, view, params.name, result)
        if refused is not None:
            return _error(f"Bastion: the result was withheld ({refused})", **info)
        return result

    async def _wait(
        self, principal: Principal, run_id: str, call: Any, run_left: float
    ) -> tuple[str, str]:
        """Wait for the pending call's decision, within the run's time and its approval's
        expiry; then read it again with the credential (a revoked run is denied)."""
        state = self.state

        def until_expiry() -> float:
            with state.sessions() as db:
                approval = db.get(Approval, call.approval_id) if call.approval_id else None
                if approval is None:
                    return 0.0
                return max(0.0, (as_utc(approval.expires_at) - utcnow()).total_seconds())

        seconds = min(run_left, MAX_WAIT_SECONDS, await run_in_threadpool(until_expiry) + 0.05)
        await state.waiters.wait(call.id, seconds)

        def reread() -> gate.CallState:
            with state.sessions() as db:
                return gate.get_tool_call(db, principal, run_id, call.id)

        found = await run_in_threadpool(reread)
        if found.decision == "pending":
            return "pending", "approval_still_pending"
        return found.decision, found.reason

    async def _failed(
        self, principal: Principal, view: mcp_runs.McpRun, call_id: str, tool: str, reason: str
    ) -> None:
        def write(db: Any) -> None:
            audit.record(
                db,
                type=EventType.MCP_CALL_FAILED,
                actor=principal.actor,
                org_id=view.org_id,
                resource=("tool_call", call_id),
                outcome=Outcome.FAILURE,
                reason=reason[:200],
                metadata={"run_id": view.run_id, "agent_id": view.agent_id, "tool": tool},
            )

        try:
            await self.state.writer.run(write, order=f"{view.org_id}:{view.run_id}")
        except Exception:  # the audit write failed: logged, the agent still hears of it
            log.exception("could not audit a failed MCP call", call_id=call_id)


def mount(app: FastAPI, state: AppState) -> McpGateway:
    """Serve the gateway at `ROUTE` (outside `/openapi.json`: it speaks MCP, not this
    API's JSON; docs/mcp.md describes it), keep it as `app.state.mcp_gateway`, and the
    MCP server registry's routes (`/v1/orgs/{org}/mcp-servers`). The route stays
    registered for an app without the fast path; with it, `BastionMiddleware` hands the
    gateway its requests itself (`fast.serve_gateway`), past the framework's routing and
    middleware stack (about a tenth of the gateway's CPU time per `tools/call`)."""
    gateway = McpGateway(state)
    app.include_router(registry.router, responses=ERROR_RESPONSES)
    app.state.mcp_gateway = gateway
    app.router.routes.append(Route(ROUTE, endpoint=gateway, methods=["GET", "POST", "DELETE"]))
    return gateway


def _inspected(hooks: list[Inspect], view: mcp_runs.McpRun, tool: str, value: Any) -> str | None:
    for hook in hooks:
        reason = hook(view, tool, value)
        if reason:
            return reason
    return None


def _digest(server: Any, current: Any, declared: dict[str, Any]) -> str:
    """The digest the upstream's current definition would have, declared as this tool."""
    return tool_digest(
        mcp_runs.mcp_tool(
            server,
            current.name,
            current.description,
            current.input_schema,
            declared.get("risk", "low"),
        )
    )
