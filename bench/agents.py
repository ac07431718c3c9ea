"""Agents benchmark: the tool-call gate's allow path over HTTP under
`bastion serve --workers 2` (SQLite, and PostgreSQL + Redis when reachable) against a
bare Starlette endpoint in the same run (goal: at least 0.4x its requests/s), and the
time from an approver's decision to the waiting agent's wake-up (goal: p99 at most
100 ms).

Each allowed call is the real work: the run token is checked, the run's budget is
spent, the tool and its JSON Schema are checked, the organisation's policies are
evaluated, and the call and its audit event (chained) are written in one transaction.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench import load, report
from bench import pg as pg_db
from bench.foundation import PASSWORD, WORKERS, bare_server, bastion_server
from bench.scale import SCALE

ROOT = Path(__file__).resolve().parent
SCRIPT = ROOT / "post_bodies.lua"  # POSTs the bodies of BENCH_BODIES, cycling
GOAL_RATIO = 0.4
GOAL_WAKE_P99_MS = 100.0
WAKE_SAMPLES = SCALE.pick(150, 3)
WAKE_WARMUP = SCALE.pick(6, 1)  # rounds first, not counted: each worker's first decisions load code
BODY = {"tool": "lookup_order", "arguments": {"order": "A-1001", "fields": ["status"]}}
TOOLS = [
    {
        "name": "lookup_order",
        "description": "Look an order up",
        "input_schema": {
            "type": "object",
            "properties": {
                "order": {"type": "string"},
                "fields": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["order"],
        },
        "risk": "low",
    },
    {"name": "refund_payment", "input_schema": {"type": "object"}, "risk": "high"},
]


class Setup:
    """An org's agent with a run (for the allow path) and a manager to approve."""

    def __init__(self, url: str, tokens: dict[str, str]) -> None:
        self.url = url
        admin = {"Authorization": f"Bearer {tokens['session']}"}
        me = httpx.get(f"{url}/v1/me", headers=admin).json()
        self.org = me["org_id"]
        base = f"{url}/v1/orgs/{self.org}"
        agent = self._ok(
            httpx.post(
                f"{base}/agents",
                json={"name": "bench", "visibility": "org", "tools": TOOLS},
                headers=admin,
            )
        )["id"]
        # A few policies the gate evaluates on every call, none of which matches.
        for i in range(3):
            self._ok(
                httpx.post(
                    f"{base}/approval-policies",
                    json={
                        "name": f"p{i}",
                        "match": {"tools": ["refund_payment"], "condition": f"'n{i}' in arguments"},
                        "decision": "require_approval",
                    },
                    headers=admin,
                )
            )
        email = f"manager-{uuid.uuid4().hex[:8]}@example.com"
        self._ok(
            httpx.post(
                f"{base}/users",
                json={"email": email, "name": "M", "role": "manager", "password": PASSWORD},
                headers=admin,
            )
        )
        login = httpx.post(f"{url}/v1/auth/login", json={"email": email, "password": PASSWORD})
        self.manager = {"Authorization": f"Bearer {login.json()['token']}"}
        run = self._ok(
            httpx.post(
                f"{base}/agents/{agent}/runs",
                json={
                    "ttl_seconds": 86_400,
                    "max_tool_calls": 100_000,
                    "max_pending_approvals": 1000,
                },
                headers=admin,
            )
        )
        self.run = run["run_id"]
        self.run_headers = {
            "Authorization": f"Bearer {run['token']}",
            "Content-Type": "application/json",
        }

    @staticmethod
    def _ok(response: httpx.Response) -> Any:
        if response.status_code not in (200, 201):
            raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
        return response.json()


def _wake_latencies(s: Setup, samples: int) -> tuple[list[float], list[float]]:
    """(decision sent → waiter woken, decision request's own latency), ms each. Fresh
    connections each time, so decisions and waits land on either worker."""
    woke, decide = [], []
    for i in range(WAKE_WARMUP + samples):
        with httpx.Client(timeout=30) as agent:
            call = agent.post(
                f"{s.url}/v1/runs/{s.run}/tool-calls",
                json={"tool": "refund_payment", "arguments": {}},
                headers=s.run_headers,
            ).json()
        if call.get("decision") != "pending":
            raise RuntimeError(f"expected a pending call, got {call}")
        done: dict[str, float] = {}

        def wait(call_id: str = call["id"], out: dict[str, float] = done) -> None:
            with httpx.Client(timeout=40) as waiter:
                answer = waiter.get(
                    f"{s.url}/v1/runs/{s.run}/tool-calls/{call_id}",
                    params={"wait": 30},
                    headers=s.run_headers,
                ).json()
            out["at"] = time.perf_counter()
            out["decision"] = 1.0 if answer["decision"] == "allow" else 0.0

        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.3)  # the waiter is parked
        with httpx.Client(timeout=30) as approver:
            sent = time.perf_counter()
            response = approver.post(
                f"{s.url}/v1/orgs/{s.org}/approvals/{call['approval_id']}/decisions",
                json={"decision": "approve"},
                headers=s.manager,
            )
            answered = time.perf_counter()
        if response.status_code != 200:
            raise RuntimeError(f"decision failed: {response.status_code} {response.text}")
        thread.join(timeout=40)
        if done.get("decision") != 1.0:
            raise RuntimeError("the waiter did not see the approval")
        if i >= WAKE_WARMUP:
            woke.append((done["at"] - sent) * 1e3)
            decide.append((answered - sent) * 1e3)
    return woke, decide


def _pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main(seconds: int, runs: int, workers: int = WORKERS) -> dict[str, object]:
    if load.tool() != "wrk":
        print("  skipped: wrk is not installed (apt-get install wrk)")
        return {}
    backends: list[tuple[str, str | None, str | None]] = [("SQLite", None, None)]
    pg = pg_db.create_database()
    if pg:
        redis = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
        backends.append(("PostgreSQL + Redis", pg, redis))
    figures: dict[str, Any] = {}
    rows: list[list[str]] = []
    wake_rows: list[list[str]] = []
    try:
        with bare_server(workers) as bare_url:
            for label, database_url, redis_url in backends:
                with bastion_server(database_url, redis_url, workers) as (url, tokens):
                    s = Setup(url, tokens)
                    # Wake-up first: after the gate's load the workers are still busy
                    # with its aftermath (alert rules over thousands of new events).
                    woke, decide = _wake_latencies(s, WAKE_SAMPLES)
                    p50, p99 = _pct(woke, 50), _pct(woke, 99)
                    figures[f"{label}, wake-up"] = {"p50_ms": p50, "p99_ms": p99}
                    wake_rows.append(
                        [
                            label,
                            str(len(woke)),
                            f"{p50:.1f}",
                            f"{p99:.1f}",
                            f"{max(woke):.1f}",
                            f"{_pct(decide, 50):.1f}",
                            "yes" if p99 <= GOAL_WAKE_P99_MS else "**no**",
                        ]
                    )
                    print(f"  {label}: wake-up p50 {p50:.1f} ms, p99 {p99:.1f} ms")
                    _gate(label, s, bare_url, seconds, runs, figures, rows)
    finally:
        if pg:
            pg_db.drop_database(pg)
    _report(seconds, runs, workers, rows, wake_rows)
    return figures


def _gate(
    label: str,
    s: Setup,
    bare_url: str,
    seconds: int,
    runs: int,
    figures: dict[str, Any],
    rows: list[list[str]],
) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
        handle.write(json.dumps(BODY) + "\n")
    bodies = Path(handle.name)
    env = {"BENCH_BODIES": str(bodies)}
    try:
        ours, bare, floor = [], [], []
        for _ in range(runs):  # interleaved, so drift hits the peers alike
            # The API's own floor: the same token's `GET /v1/me` (authenticate, rate
            # limit, answer), what any route costs before its work.
            floor.append(load.wrk(f"{s.url}/v1/me", s.run_headers, seconds, 32))
            ours.append(
                load.wrk(
                    f"{s.url}/v1/runs/{s.run}/tool-calls",
                    s.run_headers,
                    seconds,
                    32,
                    script=SCRIPT,
                    env=env,
                )
            )
            bare.append(
                load.wrk(
                    f"{bare_url}/tool-calls",
                    {"Content-Type": "application/json"},
                    seconds,
                    32,
                    script=SCRIPT,
                    env=env,
                )
            )
    finally:
        bodies.unlink(missing_ok=True)
    b, p, f = load.median(ours), load.median(bare), load.median(floor)
    ratio = b.rps / p.rps
    figures[f"{label}, allow path"] = {
        "bastion": b.__dict__,
        "bare": p.__dict__,
        "me": f.__dict__,
        "ratio": ratio,
    }
    rows.append(
        [
            label,
            f"{b.rps:,.0f}",
            f"{b.p50_ms:.2f}",
            f"{b.p99_ms:.2f}",
            f"{p.rps:,.0f}",
            f"{ratio:.2f}",
            "yes" if ratio >= GOAL_RATIO else "**no**",
            f"{f.rps:,.0f}",
            f"{b.rps / f.rps:.2f}",
            str(b.errors + f.errors),
        ]
    )
    print(
        f"  {label}: {b.rps:,.0f} decisions/s vs bare {p.rps:,.0f} → {ratio:.2f}x"
        f" (GET /v1/me {f.rps:,.0f}/s)"
    )


COST = """What a decision costs. The run's token is checked from the credential cache (an
HMAC and one revision read); what deciding needs to read (the run, its agent's tools,
the organisation's policies, the user's role and teams) comes from a per-worker view
checked by one more revision read; the decision (JSON Schema by jsonschema-rs, the
policies) is made on the event loop; and the worker's group-commit writer
(`bastion.core.groupcommit`) commits many calls per transaction with no statement per
call: each run's budget is read once per batch and spent with one UPDATE per run, and
the batch's calls and their chained audit events are inserted with one statement per
table (`bastion.agents.gate.record`). History on this benchmark: one transaction per
call through the ORM, 123 (SQLite) and 101 (PostgreSQL) decisions/s; group commit,
822 and 359; batch inserts and the compiled validator, ~1,700 on SQLite; a budget
UPDATE per batch instead of per call and no ORM object per decided call (2026-12-07,
writer CPU per decision ~450 -> ~320 us in process), the table above.

Why the goal is far: the bare endpoint answers 25,000+ requests/s on this machine, and
the API's own floor, the same run token's `GET /v1/me` on the same server (route,
dependencies, authentication, rate limit, middleware, no work), answers about a fifth
of that on SQLite and a tenth on PostgreSQL + Redis (column "GET /v1/me req/s"). A
decision cannot be cheaper than that floor; 0.4x the bare endpoint would be above it.
Sampled with py-spy under this load (SQLite), about three quarters of a worker's CPU
is its event loop, mostly FastAPI's and Starlette's request handling (dependency
resolution, routing, body and response), and a quarter the writer. Two experiments
(2026-12-03, SQLite, not in the code): with the gate's writes skipped the same server
answered about 3,700 decisions/s (0.13x of this run's bare endpoint), and with the
route's dependencies and body model replaced by hand parsing about 12 % more than
with them. So even a gate that wrote nothing would be at a third of the goal inside
FastAPI; reaching it would take serving this route outside the framework as well as
cheaper writes, with each decision still recorded and audited.
"""


def _report(
    seconds: int, runs: int, workers: int, rows: list[list[str]], wake_rows: list[list[str]]
) -> None:
    intro = (
        f"`POST /v1/runs/{{run}}/tool-calls` with a run's `bat_` token for a declared"
        f" low-risk tool whose arguments pass its JSON Schema, three approval policies"
        f" evaluated (none matching), under `bastion serve --workers {workers}`, against a"
        f" bare Starlette endpoint (bench/bare_app.py `/tool-calls`) under uvicorn with"
        f" {workers} workers. wrk, 2 threads, 32 connections, {seconds} s per run, {runs}"
        f" runs per peer, interleaved; medians. Goal: at least {GOAL_RATIO}x the bare"
        " endpoint. Every allowed call writes its tool-call row and its chained audit"
        " event in one transaction."
    )
    gate = report.table(
        [
            "backend", "decisions/s", "p50 ms", "p99 ms", "bare req/s", "ratio",
            "goal met", "GET /v1/me req/s", "gate / me", "errors",
        ],
        rows,
    )  # fmt: skip
    wake_intro = (
        f"Wake-up: {WAKE_SAMPLES} times, the agent asks for a high-risk tool (pending), a"
        " waiter long-polls `GET …/tool-calls/{call}?wait=30` on a fresh connection, and"
        " 0.3 s later a manager approves on another fresh connection (either worker). The"
        " figure is from sending the decision to the waiter's answer, so it includes the"
        " decision's own request. Waiters are woken by a per-worker poller every 25 ms."
        f" Measured on a fresh server, before the gate's load, after {WAKE_WARMUP} rounds"
        " not counted (a worker's first decision loads code: up to ~0.2 s here)."
        f" Goal: p99 at most {GOAL_WAKE_P99_MS:.0f} ms."
    )
    wake = report.table(
        ["backend", "samples", "p50 ms", "p99 ms", "max ms", "decision request p50 ms", "goal met"],
        wake_rows,
    )
    body = "\n\n".join(
        [
            "## Agents: the tool-call gate and approval wake-up",
            intro,
            gate,
            COST,
            wake_intro,
            wake,
        ]
    )
    report.write_section("agents", body)
