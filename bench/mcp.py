"""MCP gateway benchmark: what `/v1/runs/{run}/mcp` adds to a `tools/call` (allowed, no
approval) over calling the upstream MCP server directly, both measured in the same run
with the `mcp` SDK's client (goal: at most 2 ms added at p50 on SQLite).

One upstream (the SDK's `MCPServer`, Streamable HTTP, stateless JSON, uvicorn in a
thread of this process) and `bastion serve --workers 1` on SQLite. One client session
to each, kept open; calls alternate between them (one each, in turn), so drift and the
machine's load hit both alike. Each gateway call is the whole path: the run token, the
run's view, the upstream definition's digest (cached), the gate's decision written and
audited, then the upstream call with the sealed header added.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from typing import Any

import httpx
import httpx2
import uvicorn
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer

from bench import report
from bench.foundation import bastion_server
from bench.scale import SCALE
from mcp import Client

GOAL_ADDED_P50_MS = 2.0
SAMPLES = SCALE.pick(1000, 20)
WARMUP = SCALE.pick(100, 3)
UPSTREAM_TOKEN = "bench-upstream-token"  # noqa: S105 - the benchmark upstream's own
ENV = (
    ("BASTION_OUTBOUND_ALLOW", json.dumps(["127.0.0.0/8"])),
    ("BASTION_OUTBOUND_PLAINTEXT_ALLOW", json.dumps(["127.0.0.0/8"])),
)


def _upstream() -> tuple[str, uvicorn.Server]:
    server = MCPServer("bench-upstream")

    def lookup(order: str) -> str:
        return f"order {order}: shipped"

    server.add_tool(lookup, name="lookup", description="Look an order up.")
    app = server.streamable_http_app(json_response=True, stateless_http=True)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    running = uvicorn.Server(config)
    threading.Thread(target=running.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not running.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the upstream MCP server did not start")
        time.sleep(0.02)
    port = running.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}/mcp", running


def _ok(response: httpx.Response) -> Any:
    if response.status_code not in (200, 201):
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    return response.json()


def _setup(url: str, admin: dict[str, str], upstream_url: str) -> tuple[str, str]:
    """An MCP server registered, an agent connected declaring its tool, a run: (gateway
    URL, run token)."""
    org = _ok(httpx.get(f"{url}/v1/me", headers=admin))["org_id"]
    base = f"{url}/v1/orgs/{org}"
    server = _ok(
        httpx.post(
            f"{base}/mcp-servers",
            json={
                "name": "shop",
                "url": upstream_url,
                "headers": {"Authorization": f"Bearer {UPSTREAM_TOKEN}"},
            },
            headers=admin,
        )
    )
    tools = _ok(httpx.get(f"{base}/mcp-servers/{server['id']}/tools", headers=admin, timeout=30))
    keys = ("name", "description", "input_schema", "risk", "connection")
    agent = _ok(
        httpx.post(
            f"{base}/agents",
            json={
                "name": f"mcp-bench-{time.monotonic_ns()}",
                "visibility": "org",
                "tools": [{k: t[k] for k in keys} for t in tools["data"]],
                "connections": [server["id"]],
            },
            headers=admin,
        )
    )
    run = _ok(
        httpx.post(
            f"{base}/agents/{agent['id']}/runs",
            json={"ttl_seconds": 86_400, "max_tool_calls": 100_000},
            headers=admin,
        )
    )
    return f"{url}/v1/runs/{run['run_id']}/mcp", run["token"]


def _client(url: str, headers: dict[str, str]) -> Client:
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60.0))
    return Client(streamable_http_client(url, http_client=http), cache=None)


async def _measure(upstream_url: str, gateway_url: str, token: str) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"direct": [], "gateway": []}
    direct_headers = {"Authorization": f"Bearer {UPSTREAM_TOKEN}"}
    async with (
        _client(upstream_url, direct_headers) as direct,
        _client(gateway_url, {"Authorization": f"Bearer {token}"}) as gateway,
    ):
        peers = (("direct", direct, "lookup"), ("gateway", gateway, "shop.lookup"))
        for i in range(WARMUP + SAMPLES):
            for label, client, tool in peers if i % 2 == 0 else peers[::-1]:
                began = time.perf_counter()
                result = await client.call_tool(tool, {"order": "A-1001"})
                took = (time.perf_counter() - began) * 1000
                if result.is_error:
                    raise RuntimeError(f"{label}: the call failed: {result.content}")
                if i >= WARMUP:
                    times[label].append(took)
    return times


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main(seconds: int, runs: int) -> dict[str, object]:
    upstream_url, upstream = _upstream()
    try:
        with bastion_server(None, None, 1, ENV) as (url, tokens):
            admin = {"Authorization": f"Bearer {tokens['session']}"}
            gateway_url, token = _setup(url, admin, upstream_url)
            times = asyncio.run(_measure(upstream_url, gateway_url, token))
    finally:
        upstream.should_exit = True
    d50, d99 = _pct(times["direct"], 50), _pct(times["direct"], 99)
    g50, g99 = _pct(times["gateway"], 50), _pct(times["gateway"], 99)
    added = g50 - d50
    figures: dict[str, object] = {
        "samples": SAMPLES,
        "direct_ms": {"p50": d50, "p99": d99, "mean": statistics.fmean(times["direct"])},
        "gateway_ms": {"p50": g50, "p99": g99, "mean": statistics.fmean(times["gateway"])},
        "added_p50_ms": added,
        "added_p99_ms": g99 - d99,
    }
    print(
        f"  SQLite: direct p50 {d50:.2f} ms p99 {d99:.2f} ms; gateway p50 {g50:.2f} ms"
        f" p99 {g99:.2f} ms; added at p50 {added:.2f} ms"
    )
    _report(figures)
    return figures


def _report(f: dict[str, Any]) -> None:
    intro = (
        f"`tools/call` of an allowed tool (declared, low risk, no approval policy) through"
        f" the gateway (`/v1/runs/{{run}}/mcp`, `bastion serve --workers 1`, SQLite) against"
        f" the same call made directly to the upstream MCP server, in the same run: one"
        f" kept-open `mcp` SDK client session to each, {f['samples']} calls each after"
        f" {WARMUP} not counted, alternating. Goal: at most {GOAL_ADDED_P50_MS:.0f} ms"
        " added at p50."
    )
    d, g = f["direct_ms"], f["gateway_ms"]
    table = report.table(
        ["path", "p50 ms", "p99 ms", "mean ms"],
        [
            ["upstream directly", f"{d['p50']:.2f}", f"{d['p99']:.2f}", f"{d['mean']:.2f}"],
            ["through the gateway", f"{g['p50']:.2f}", f"{g['p99']:.2f}", f"{g['mean']:.2f}"],
            [
                "added by the gateway",
                f"{f['added_p50_ms']:.2f}",
                f"{f['added_p99_ms']:.2f}",
                f"{g['mean'] - d['mean']:.2f}",
            ],
        ],
    )
    met = "met" if f["added_p50_ms"] <= GOAL_ADDED_P50_MS else "**not met**"
    cost = (
        f"Goal {met}. What the gateway adds per call: the SDK's Streamable HTTP server"
        " handling of the request (stateless, JSON response), the run token from the"
        " credential cache, the run's MCP view (kept per worker while the organisation's"
        " revisions are unchanged: one revision read), the upstream definition's digest"
        " checked against the declared one (the tool list cached for 30 s), the gate's"
        " decision written with its chained audit event (group commit, an fsync per batch;"
        " one client calling in turn makes every batch one call), and the upstream call on"
        " a kept-open client session. Each is a hop between processes or threads, so on a"
        " machine whose two CPUs are shared with other work (its load average is below)"
        " the figures are dominated by waiting for a CPU: they compare the two paths of"
        " this run, not what the gateway costs on an idle machine."
    )
    report.write_section("mcp", "\n\n".join(["## MCP gateway overhead", intro, table, cost]))
