"""Console benchmark (issue 16): the Approvals inbox with 1,000 pending requests.

In process (the app's own ASGI stack through Starlette's test client, SQLite in a
temporary directory, the test suite's cheap password hashing): an admin signed in
through the console's form; 1,000 pending requests made as the console's tests make
them (one through the tool-call gate, 999 through the approvals service); then `GET
/console/approvals` timed, warm, `REQUESTS` times per run. The budget (issue 16) is
300 ms of server time. Beside it, in the same run, the cards' pretty-printing of the
1,000 calls' arguments against the standard library's `json.dumps(indent=2)`, which it
replaced (the pure-Python encoder: `indent` turns the C one off).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event
from tests.conftest import make_settings
from tests.console.approvals_setup import many_pending, pending
from tests.console.helpers import sign_in
from tests.factories import Factory

from bench import report
from bench.scale import SCALE

PENDING = SCALE.pick(1000, 20)
REQUESTS = SCALE.pick(20, 2)
BUDGET_MS = 300.0
NOTES = """
What the inbox costs per request: the session authenticated, the pending requests read
through the approvals service (the API's own reading, with its visibility rule), who may
decide each now (one query per kind: the approver, their decisions, the runs), the
cards' details in one query per kind (arguments, agents and their tools' risks,
policies, decisions, people), each call's arguments pretty-printed (scalars through the
C JSON encoder, cut at 2,000 characters), and the page rendered by Jinja2, every value
escaped — over 1 MB of HTML. CPU is the process's CPU time per request (all its
threads), what the page costs whatever the machine's load; the wall-clock figures also
count waiting for a CPU on a shared machine — the load average below says how shared.
"""


def _server_ms(client: TestClient, runs: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU milliseconds of each request (CPU: the process's, every
    thread's — on a shared machine the wall clock also counts waiting for a CPU)."""
    wall, cpu = [], []
    for _ in range(runs):
        began, began_cpu = time.perf_counter(), time.process_time()
        answer = client.get("/console/approvals")
        wall.append((time.perf_counter() - began) * 1000)
        cpu.append((time.process_time() - began_cpu) * 1000)
        assert answer.status_code == 200
    return wall, cpu


def _pretty_pair(arguments: list[Any], runs: int) -> tuple[float, float]:
    from bastion.console.pages.approvals_data import pretty

    def ours() -> float:
        began = time.perf_counter()
        for value in arguments:
            pretty(value)
        return (time.perf_counter() - began) * 1000

    def stdlib() -> float:
        began = time.perf_counter()
        for value in arguments:
            json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
        return (time.perf_counter() - began) * 1000

    a, b = [], []
    for _ in range(runs * 5):  # interleaved, so drift hits both alike
        a.append(ours())
        b.append(stdlib())
    return statistics.median(a), statistics.median(b)


def main(seconds: int, runs: int) -> dict[str, object]:
    from bastion.api.app import create_app
    from bastion.core.keyring import (
        AUDIT_SIGNING_KEY_FILE,
        PEPPER_FILE,
        ROOT_KEY_FILE,
        create_keyring,
    )
    from bastion.migrations.runner import upgrade

    del seconds  # a fixed number of requests, not a timed load
    with tempfile.TemporaryDirectory(prefix="bastion-bench-console-") as tmp:
        data = Path(tmp)
        for name in (PEPPER_FILE, ROOT_KEY_FILE, AUDIT_SIGNING_KEY_FILE):
            create_keyring(data / name)
        url = f"sqlite:///{data / 'bastion.db'}"
        upgrade(url)
        app = create_app(make_settings(data, url, redis_url=None))
        with TestClient(app) as api:
            factory = Factory(app.state.bastion, api)
            org = factory.org("Bench")
            first = pending(factory, org)
            many_pending(factory, first, PENDING - 1)
            client = TestClient(app)
            sign_in(client, org.admin.email)
            queries: list[int] = []
            event.listen(
                factory.state.engine, "before_cursor_execute", lambda *_: queries.append(1)
            )
            page = client.get("/console/approvals")
            assert page.text.count('class="approval"') == PENDING
            statements, size = len(queries), len(page.content)
            medians, bests, p95s, cpus = [], [], [], []
            for _ in range(runs):
                wall, cpu = _server_ms(client, REQUESTS)
                times = sorted(wall)
                medians.append(statistics.median(times))
                bests.append(times[0])
                p95s.append(times[min(len(times) - 1, int(len(times) * 0.95))])
                cpus.append(statistics.median(cpu))
            arguments = [
                {"amount": i, "order": f"A-{i}", "note": "<b>not bold</b>"} for i in range(PENDING)
            ]
            ours, stdlib = _pretty_pair(arguments, runs)
    figures = {
        "pending": PENDING,
        "median_ms": statistics.median(medians),
        "best_ms": min(bests),
        "p95_ms": statistics.median(p95s),
        "cpu_ms": statistics.median(cpus),
        "queries": 0,
        "html_bytes": size,
        "pretty_ms": ours,
        "json_dumps_indent_ms": stdlib,
    }
    figures["queries"] = statements
    _report(figures, runs)
    return figures


def _report(f: dict[str, Any], runs: int) -> None:
    rows = [
        [
            f"`GET /console/approvals`, {f['pending']:,} pending",
            f"{f['cpu_ms']:.0f} ms",
            f"{f['median_ms']:.0f} ms",
            f"{f['best_ms']:.0f} ms",
            f"{f['p95_ms']:.0f} ms",
            f"{BUDGET_MS:.0f} ms",
        ],
    ]
    pretty_rows = [
        ["cards' `pretty` (C encoder for scalars)", f"{f['pretty_ms']:.1f} ms"],
        ["`json.dumps(indent=2, sort_keys=True)`", f"{f['json_dumps_indent_ms']:.1f} ms"],
    ]
    body = (
        "## Console: the Approvals inbox with 1,000 pending requests\n\n"
        f"In process (Starlette's test client, SQLite), warm, {REQUESTS} requests per run,"
        f" {runs} runs; medians of the runs. {f['queries']} SQL statements per page (none"
        f" per request), {f['html_bytes'] / 1e6:.1f} MB of HTML.\n\n"
        + report.table(
            ["Page", "CPU (median)", "Wall (median)", "Wall (best)", "Wall (p95)", "Budget"], rows
        )
        + f"\n\nPretty-printing the {f['pending']:,} calls' arguments (same text):\n\n"
        + report.table(["Printer", "Median"], pretty_rows)
        + "\n"
        + NOTES
    )
    report.write_section("console", body)
    print(body)
