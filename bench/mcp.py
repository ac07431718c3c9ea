"""MCP gateway benchmark: what `/v1/runs/{run}/mcp` adds to a `tools/call` (allowed, no
approval) over calling the upstream MCP server directly, both measured in the same run
with the `mcp` SDK's client (goal: at most 2 ms added at p50 on SQLite).

One upstream (the SDK's `MCPServer`, Streamable HTTP, stateless JSON, uvicorn in a
process of its own) and `bastion serve --workers 1` on SQLite. One client session
to each, kept open; calls alternate between them (one each, in turn), so drift and the
machine's load hit both alike. Each gateway call is the whole path: the run token, the
run's view, the upstream definition's digest (cached), the gate's decision written and
audited, then the upstream call with the sealed header added.

Wall time on a shared machine is mostly waiting for a CPU, so the run also reports what
does not depend on the load as much: the CPU time each process spent per call (the
gateway's process, all threads, per gateway call; the upstream's per call it answered),
and the floor of the gate's durable write on this disk (a SQLite commit, WAL,
`synchronous=FULL`, as `bastion serve` writes).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
from mcp.client.streamable_http import streamable_http_client
from tests.e2e.server import free_port

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


UPSTREAM = """
import sys, uvicorn
from mcp.server.mcpserver import MCPServer
server = MCPServer("bench-upstream")
def lookup(order: str) -> str:
    return f"order {order}: shipped"
server.add_tool(lookup, name="lookup", description="Look an order up.")
app = server.streamable_http_app(json_response=True, stateless_http=True)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


@contextmanager
def _upstream() -> Iterator[tuple[str, int]]:
    """The upstream MCP server in a process of its own (so its CPU time is its own):
    its URL and process id."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", UPSTREAM, str(port)], stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the upstream MCP server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp", process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def _listening(port: int) -> int:
    """The process id of `bastion serve --port PORT` (one worker: the process itself)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and b"--port" in argv and str(port).encode() in argv:
            return int(entry.name)
    raise RuntimeError(f"no bastion serve on port {port}")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def _commit_floor(commits: int = 100) -> float:
    """p50 ms of one small SQLite commit (WAL, synchronous=FULL: an fsync) on this disk."""
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        db = sqlite3.connect(Path(tmp) / "floor.db")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (x INTEGER)")
        took = []
        for i in range(commits):
            began = time.perf_counter()
            db.execute("INSERT INTO t VALUES (?)", (i,))
            db.commit()
            took.append((time.perf_counter() - began) * 1000)
        db.close()
    return statistics.median(took)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main(seconds: int, runs: int) -> dict[str, object]:
    with (
        _upstream() as (upstream_url, upstream_pid),
        bastion_server(None, None, 1, ENV) as (url, tokens),
    ):
        admin = {"Authorization": f"Bearer {tokens['session']}"}
        gateway_url, token = _setup(url, admin, upstream_url)
        gateway_pid = _listening(httpx.URL(url).port or 80)
        cpu = {"gateway": _cpu_seconds(gateway_pid), "upstream": _cpu_seconds(upstream_pid)}
        times = asyncio.run(_measure(upstream_url, gateway_url, token))
        # Over the whole measurement, warm-up included: calls of each path are
        # WARMUP + SAMPLES; the upstream answered both paths' calls.
        calls = WARMUP + SAMPLES
        gateway_cpu = (_cpu_seconds(gateway_pid) - cpu["gateway"]) * 1000 / calls
        upstream_cpu = (_cpu_seconds(upstream_pid) - cpu["upstream"]) * 1000 / (2 * calls)
    floor = _commit_floor()
    d50, d99 = _pct(times["direct"], 50), _pct(times["direct"], 99)
    g50, g99 = _pct(times["gateway"], 50), _pct(times["gateway"], 99)
    added = g50 - d50
    figures: dict[str, object] = {
        "samples": SAMPLES,
        "direct_ms": {"p50": d50, "p99": d99, "mean": statistics.fmean(times["direct"])},
        "gateway_ms": {"p50": g50, "p99": g99, "mean": statistics.fmean(times["gateway"])},
        "added_p50_ms": added,
        "added_p99_ms": g99 - d99,
        "gateway_cpu_ms_per_call": gateway_cpu,
        "upstream_cpu_ms_per_call": upstream_cpu,
        "commit_p50_ms": floor,
        "load": os.getloadavg(),
    }
    print(
        f"  SQLite: direct p50 {d50:.2f} ms p99 {d99:.2f} ms; gateway p50 {g50:.2f} ms"
        f" p99 {g99:.2f} ms; added at p50 {added:.2f} ms; CPU per call: gateway"
        f" {gateway_cpu:.2f} ms, upstream {upstream_cpu:.2f} ms; a durable commit {floor:.2f} ms"
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
    load = ", ".join(f"{x:.1f}" for x in f["load"])
    cpu = (
        f"CPU time per call (less sensitive to the load than wall time): the gateway's"
        f" process {f['gateway_cpu_ms_per_call']:.2f} ms per gateway call (all its"
        f" threads), the upstream's {f['upstream_cpu_ms_per_call']:.2f} ms per call it"
        f" answered. A durable SQLite commit (WAL, `synchronous=FULL`) on this disk, at"
        f" the end of the run: {f['commit_p50_ms']:.2f} ms at p50."
    )
    cost = (
        f"Goal {met}. The machine was loaded while this ran (2 CPUs shared with other"
        f" work; load average at the end {load}): wall times are mostly waiting for a"
        " CPU, and compare the two paths of this run, not what the gateway costs on an"
        " idle machine. What the gateway adds per call: its own HTTP hop and the SDK's"
        " Streamable HTTP server (stateless, JSON response), the run token from the"
        " credential cache, the run's MCP view (kept per worker while the organisation's"
        " revisions are unchanged), the upstream definition's digest checked against the"
        " declared one (the tool list cached for 30 s), the gate's decision written with"
        " its chained audit event before the upstream is called (group commit; one client"
        " calling in turn makes every batch one call, so one fsync per call), and the"
        " upstream call on a kept-open SDK client session (one upstream request per call:"
        " no handshake, no tool list; `tests/mcp/test_gateway.py` counts them). Where the"
        " gateway's CPU goes (2026-12-07, 400 calls through the gateway alone, load"
        " average near 18, not in the code): per call, its event-loop thread 5.2 ms and"
        " the group-commit writer 2.9 ms (`/proc` per thread), the upstream's process"
        " 1.7 ms. Profiled with the thread's own CPU clock (cProfile, `time.thread_time`),"
        " the event loop's time is about 45% the SDK's client to the upstream (its"
        " tasks and streams, httpx2 and httpcore2), 15% the SDK's Streamable HTTP server"
        " around the handler, 9% FastAPI's routing and Starlette's stack (since skipped:"
        " `BastionMiddleware` hands the gateway its requests, `fast.serve_gateway`), the"
        " rest uvicorn and the middleware; Bastion's own work is small: the run token"
        " 4%, the gate's decision 3%, the run's view 1%, the pin's digest under 1%. The"
        " writer's time is one batch per call (one client calling in turn): the chain"
        " head locked and moved, the run's budget spent, the call and its event"
        " inserted, one commit with its fsync. On a loaded machine the wall time is"
        " mostly the hops (client, event loop, writer thread and back, upstream), each"
        " waiting for a CPU."
    )
    history = (
        "History: before 2026-12-07 every `tools/call` also made the SDK run the"
        " gateway's whole `tools/list` (to check `Mcp-Param-*` headers), which asked the"
        " upstream for its tools again: one more upstream round trip per call (+86 ms at"
        " p50 measured then, under a load average of 24). The gateway now answers that"
        " check from the run's kept view (`get_tool_input_schema`). On 2026-12-07 (issue"
        " 18) the gateway was taken past FastAPI's routing and Starlette's stack: in one"
        " run alternating 320 calls to a server with it and one without"
        " (`BASTION_FAST_PATH=false`), load average 22 to 32, CPU per call 13.00 ms"
        " against 13.59 and p50 145.8 ms against 154.3. This suite's runs that day, not"
        " comparable with each other (the load differed): before the change +26.3 ms at"
        " p50, 8.35 ms CPU per gateway call (load average 12 to 16); after it, the run"
        " above (load average near 36)."
    )
    report.write_section(
        "mcp", "\n\n".join(["## MCP gateway overhead", intro, table, cpu, cost, history])
    )
