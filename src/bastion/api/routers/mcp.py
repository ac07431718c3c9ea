"""The MCP server registry (`/v1/orgs/{org}/mcp-servers`). The gateway itself is
`bastion.api.mcp_gateway` (`/v1/runs/{run}/mcp`)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from bastion.agents import mcp_runs
from bastion.agents.service import tool_digest
from bastion.api.deps import DB, DEFAULT_PAGE, Caller, Cursor, Limit, State
from bastion.core.errors import BastionError
from bastion.core.schemas import ListOf
from bastion.mcp import service as mcp
from bastion.mcp.models import McpServer
from bastion.mcp.schemas import McpServerIn, McpServerOut, McpServerPatch, McpToolOut
from bastion.mcp.upstream import UpstreamError, Upstreams

router = APIRouter(prefix="/v1/orgs/{org}/mcp-servers", tags=["mcp"])


class UpstreamUnavailable(BastionError):
    status = 502
    code = "upstream_unavailable"
    title = "Bad Gateway"


def _out(server: McpServer) -> McpServerOut:
    return McpServerOut.model_validate(server)


@router.post(
    "",
    status_code=201,
    summary="Register an upstream MCP server (Streamable HTTP); headers are sealed",
)
def create_server(
    org: str, body: McpServerIn, principal: Caller, db: DB, state: State
) -> McpServerOut:
    s = state.settings
    server = mcp.create_server(
        db, state.vault, principal, org, body,
        allow=s.outbound_allow, plaintext=s.outbound_plaintext_allow,
    )  # fmt: skip
    db.flush()
    return _out(server)


@router.get("", summary="The organisation's MCP servers, newest first")
def list_servers(
    org: str, principal: Caller, db: DB, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> ListOf[McpServerOut]:
    page = mcp.list_servers(db, principal, org, limit=limit, cursor=cursor)
    return ListOf[McpServerOut](data=[_out(s) for s in page.data], next_cursor=page.next_cursor)


@router.get("/{mcs}", summary="One MCP server (header names, never values)")
def get_server(org: str, mcs: str, principal: Caller, db: DB) -> McpServerOut:
    return _out(mcp.get_server(db, principal, org, mcs))


@router.patch(
    "/{mcs}", summary="Change an MCP server's name, URL or headers (headers are replaced)"
)
def update_server(
    org: str, mcs: str, body: McpServerPatch, principal: Caller, db: DB, state: State
) -> McpServerOut:
    s = state.settings
    server = mcp.update_server(
        db, state.vault, principal, org, mcs, body,
        allow=s.outbound_allow, plaintext=s.outbound_plaintext_allow,
    )  # fmt: skip
    db.flush()
    return _out(server)


@router.delete("/{mcs}", status_code=204, summary="Remove an MCP server and its sealed headers")
def delete_server(org: str, mcs: str, principal: Caller, db: DB) -> Response:
    mcp.delete_server(db, principal, org, mcs)
    return Response(status_code=204)


@router.get(
    "/{mcs}/tools",
    summary="The server's tools now, as agents declare them (name, schema, digest)",
    description="Asks the upstream for its tools and answers each as an agent's tool "
    "definition (`server.tool`, connection `mcs_…`) with the digest that pins it: copy "
    "the ones an agent may use into its `tools` (a changed upstream definition is refused "
    "by the gateway until the agent's tool is saved again with the new one).",
)
async def list_tools(
    org: str,
    mcs: str,
    principal: Caller,
    request: Request,
    state: State,
    risk: Annotated[
        Literal["low", "medium", "high", "critical"],
        Query(description="The risk to give each tool."),
    ] = "low",
) -> ListOf[McpToolOut]:
    def read() -> mcp.Upstream:
        with state.sessions() as db:
            mcp.get_server(db, principal, org, mcs)
            found = mcp.upstreams(db, state.vault, org, [mcs])
        if not found:
            raise UpstreamUnavailable("the MCP server's sealed headers cannot be read")
        return found[0]

    upstream = await run_in_threadpool(read)
    upstreams: Upstreams = request.app.state.mcp_gateway.upstreams
    try:
        tools = await upstreams.tools(upstream, fresh=True)
    except UpstreamError as exc:
        raise UpstreamUnavailable(f"the MCP server did not answer: {exc.reason}") from None
    data = []
    for tool in sorted(tools.values(), key=lambda t: t.name):
        item = mcp_runs.mcp_tool(upstream, tool.name, tool.description, tool.input_schema, risk)
        data.append(McpToolOut(**item, digest=tool_digest(item)))
    return ListOf[McpToolOut](data=data, next_cursor=None)
