"""Soak under writes (issue 13): a fixed-rate open-loop load of 200 requests per second
for ten minutes through `bastion serve --workers 2` on SQLite, 80 % reads (`GET /v1/me`,
`POST /v1/orgs/{org}/authz/check`) and 20 % writes: team writes that change what
authorization depends on (a create, or a delete of the oldest once `LIVE_TEAMS` exist;
each bumps the organisation's authz revision and so invalidates every worker's index)
and a secret reveal.

Sends are scheduled at fixed intervals and never wait for an answer, so a slow server
meets the same rate; each latency runs from the request's scheduled time to its answer.
Every 10 s the run samples each worker process's RssAnon (/proc/<pid>/status; the
workers are the children of the server process, or the server itself when it runs one).
Goal: memory flat, < 10 % growth from the end of the warm-up (the first minute) to the
end, and p99 steady (the last minute's within 2x the first's).

`python -m bench.run --only soak --seconds N` shortens the run; a smoke run takes 10 s."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import foundation, report
from bench.scale import SCALE

DEFAULT_SECONDS = 600  # bench.run's --seconds overrides it
SMOKE_SECONDS = 10
RATE = SCALE.pick(200, 50)  # requests per second (a smoke run's one worker: fewer)
WARM_UP = 60.0  # seconds; a shorter run warms up for a quarter of itself
SAMPLE_EVERY = 10.0  # seconds between RSS samples
BUCKET = 60.0  # seconds per latency bucket
GOAL_GROWTH = 10.0  # % of RssAnon from the end of the warm-up to the end
GOAL_P99_RATIO = 2.0  # last minute's p99 over the first's
WORKERS = SCALE.pick(2, 1)
# One cycle of ten sends: 4 x /v1/me, 4 x authz check, 1 team create, 1 secret reveal.
MIX = ["me"] * 4 + ["check"] * 4 + ["team", "reveal"]
# Teams kept at once: past it, each "team" send deletes the oldest instead of creating
# one. Every team write still changes what authorization depends on (each worker's
# caches and index are rebuilt), while the data stays the same size: growth then is
# what the server keeps, not what it was given (20 creates a second would add 12,000
# teams in ten minutes, and a bigger organisation is rightly a bigger index).
LIVE_TEAMS = 100
WRITES = {"team", "reveal"}
SECRET = "soak-token"  # noqa: S105 - a secret's name


@dataclass
class Sample:
    at: float  # seconds since the start of the load
    rss_kib: dict[int, int]  # pid -> RssAnon


@dataclass
class Run:
    seconds: float
    latencies: list[tuple[float, float, str]] = field(default_factory=list)  # at, ms, kind
    errors: dict[str, int] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    late_ms: float = 0.0  # how far behind schedule the sender fell, at most


# --- the server's processes ----------------------------------------------------------


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _ppid(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def server_pid(url: str) -> int:
    """The `bastion serve` process listening on `url`'s port."""
    port = str(httpx.URL(url).port)
    for pid in _pids():
        args = _cmdline(pid)
        if "serve" in args and "--port" in args and port in args:
            return pid
    raise RuntimeError(f"no `bastion serve --port {port}` process found")


def worker_pids(server: int) -> list[int]:
    """The server's workers: its children other than multiprocessing helpers, or the
    server itself when it serves alone."""
    children = [
        pid
        for pid in _pids()
        if _ppid(pid) == server
        and not any("resource_tracker" in a or "semaphore_tracker" in a for a in _cmdline(pid))
    ]
    return sorted(children) or [server]


def rss_anon_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:  # gone (uvicorn restarts a worker that stops answering its pings)
        return None
    return None


def rss_of(server: int) -> dict[int, int]:
    """RssAnon of each of the server's workers now (found anew: a restarted worker is a
    new process)."""
    found = {pid: rss_anon_kib(pid) for pid in worker_pids(server)}
    return {pid: kib for pid, kib in found.items() if kib is not None}


# --- the load ------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    url: str
    org: str
    headers: dict[str, str]
    check: dict[str, object]


def _setup(url: str, tokens: dict[str, str]) -> Target:
    headers = {"Authorization": f"Bearer {tokens['api key']}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        org = client.get("/v1/me").raise_for_status().json()["org_id"]
        session = {"Authorization": f"Bearer {tokens['session']}"}
        user = client.get("/v1/me", headers=session).raise_for_status().json()["user_id"]
        client.put(f"/v1/orgs/{org}/secrets/{SECRET}", json={"value": "x" * 64}).raise_for_status()
        source = client.post(
            f"/v1/orgs/{org}/sources", json={"name": f"soak-{uuid.uuid4().hex[:8]}"}
        ).raise_for_status()
        doc = client.post(
            f"/v1/orgs/{org}/sources/{source.json()['id']}/documents",
            json={"external_id": "soak-doc", "metadata": {"kind": "soak"}},
        ).raise_for_status()
    check = {"subject": user, "action": "read", "resource": f"document:{doc.json()['id']}"}
    return Target(url, org, headers, check)


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Client:
    """A minimal HTTP/1.1 keep-alive client over asyncio streams: httpx's per-request
    cost would make the load generator, not the server, the bottleneck at this rate on a
    loaded machine. Each request takes an idle connection or opens one."""

    def __init__(self, target: Target) -> None:
        self.target = target
        url = httpx.URL(target.url)
        self.host, self.port = url.host, url.port or 80
        self.idle: list[Connection] = []

    def encode(self, method: str, path: str, body: object | None) -> bytes:
        content = json.dumps(body).encode() if body is not None else b""
        headers = "".join(f"{k}: {v}\r\n" for k, v in self.target.headers.items())
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{headers}"
            f"Content-Type: application/json\r\nContent-Length: {len(content)}\r\n\r\n"
        )
        return head.encode() + content

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """The answer's status and body. An idle connection the server has closed
        meanwhile (its keep-alive timeout) fails before any answer: the request is sent
        again once, on a new connection."""
        if self.idle:
            try:
                return await self._send(self.idle.pop(), request)
            except (ConnectionError, IndexError, asyncio.IncompleteReadError):
                pass
        return await self._send(await asyncio.open_connection(self.host, self.port), request)

    async def _send(self, connection: Connection, request: bytes) -> tuple[int, bytes]:
        reader, writer = connection
        try:
            writer.write(request)
            status = int((await reader.readline()).split()[1])
            length, keep = 0, True
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    keep = False
                elif name == b"transfer-encoding":
                    raise ValueError("chunked answers are not read by this client")
            body = await reader.readexactly(length) if length else b""
        except BaseException:
            writer.close()
            raise
        if keep:
            self.idle.append((reader, writer))
        else:
            writer.close()
        return status, body

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


def _requests(client: Client, kind: str, n: int, live: deque[str] | None = None) -> bytes:
    org = client.target.org
    if kind == "me":
        return client.encode("GET", "/v1/me", None)
    if kind == "check":
        return client.encode("POST", f"/v1/orgs/{org}/authz/check", client.target.check)
    if kind == "team":
        if live is not None and len(live) >= LIVE_TEAMS:  # the oldest goes: data bounded
            return client.encode("DELETE", f"/v1/orgs/{org}/teams/{live.popleft()}", None)
        name = f"soak-{uuid.uuid4().hex[:10]}-{n}"
        return client.encode("POST", f"/v1/orgs/{org}/teams", {"name": name})
    return client.encode("POST", f"/v1/orgs/{org}/secrets/{SECRET}/reveal", {})


async def _load(target: Target, seconds: float, server: int) -> Run:
    run = Run(seconds)
    pending: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    client = Client(target)
    fixed = {kind: _requests(client, kind, 0) for kind in ("me", "check", "reveal")}
    start = loop.time()

    live: deque[str] = deque()  # teams created and not yet deleted, oldest first

    async def send(kind: str, request: bytes, due: float) -> None:
        try:
            status, body = await client.send(request)
            label, ok = f"{kind} {status}", status < 400
            if kind == "team" and status == 201:
                live.append(json.loads(body)["id"])
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as error:
            label, ok = f"{kind} {type(error).__name__}", False
        if ok:
            run.latencies.append((due - start, (loop.time() - due) * 1000, kind))
        else:
            run.errors[label] = run.errors.get(label, 0) + 1

    async def sample() -> None:
        while True:
            at = loop.time() - start
            run.samples.append(Sample(at, rss_of(server)))
            if at >= seconds:
                return
            every = min(SAMPLE_EVERY, seconds / 5)
            await asyncio.sleep(min(every, max(seconds - at, 0.0)))

    sampler = asyncio.create_task(sample())
    total = int(seconds * RATE)
    for n, kind in zip(range(total), itertools.cycle(MIX), strict=False):
        request = fixed.get(kind) or _requests(client, kind, n, live)
        due = start + n / RATE
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            run.late_ms = max(run.late_ms, -delay * 1000)
        task = asyncio.create_task(send(kind, request, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await sampler
    if pending:
        await asyncio.wait(pending, timeout=60)
    client.close()
    return run


# --- figures -------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _warm_up(seconds: float) -> float:
    return min(WARM_UP, seconds / 4)


def _bucket(seconds: float) -> float:
    return min(BUCKET, seconds / 2)


def figures(run: Run) -> dict[str, object]:
    warm = _warm_up(run.seconds)
    width = _bucket(run.seconds)
    after = next(s for s in run.samples if s.at >= warm - 0.5)
    end = run.samples[-1]
    # Workers that lived from the end of the warm-up to the end (a restarted worker starts
    # afresh: its growth would mean nothing), or, if none did, all of them summed.
    workers = sorted(set(after.rss_kib) & set(end.rss_kib))

    def mib(sample: Sample) -> list[float]:
        if workers:
            return [sample.rss_kib[p] / 1024 for p in workers]
        return [sum(sample.rss_kib.values()) / 1024]

    warm_mib, end_mib = mib(after), mib(end)
    growth = [100.0 * (b - a) / a for a, b in zip(warm_mib, end_mib, strict=True)]
    seen = {pid for sample in run.samples for pid in sample.rss_kib}
    restarts = len(seen) - len(run.samples[0].rss_kib)
    buckets: dict[int, list[float]] = {}
    for at, ms, _ in run.latencies:
        buckets.setdefault(int(at // width), []).append(ms)
    minutes = [
        {
            "from_s": i * width,
            "requests": len(values),
            "p50_ms": _pct(values, 0.5),
            "p99_ms": _pct(values, 0.99),
        }
        for i, values in sorted(buckets.items())
    ]
    first, last = minutes[0], minutes[-1]
    return {
        "seconds": run.seconds,
        "rate": RATE,
        "workers": len(run.samples[0].rss_kib),
        "worker_restarts": restarts,
        "warm_up_s": warm,
        "rss_warm_mib": warm_mib,
        "rss_end_mib": end_mib,
        "growth_pct": growth,
        "samples": [
            {"at_s": s.at, "rss_mib": {p: k / 1024 for p, k in sorted(s.rss_kib.items())}}
            for s in run.samples
        ],
        "minutes": minutes,
        "p99_first_ms": first["p99_ms"],
        "p99_last_ms": last["p99_ms"],
        "p50_ms": _pct([ms for _, ms, _ in run.latencies], 0.5),
        "requests": len(run.latencies) + sum(run.errors.values()),
        "writes": sum(1 for _, _, kind in run.latencies if kind in WRITES),
        "errors": sum(run.errors.values()),
        "error_kinds": run.errors,
        "sender_late_ms": run.late_ms,
        "memory_met": max(growth) < GOAL_GROWTH and not restarts,
        "p99_met": last["p99_ms"] <= GOAL_P99_RATIO * max(first["p99_ms"], 1.0),
    }


def _print(f: dict[str, object]) -> None:
    for m in f["minutes"]:  # type: ignore[attr-defined]
        print(
            f"  from {m['from_s']:>5.0f} s: {m['requests']:>6,} answered,"
            f" p50 {m['p50_ms']:.1f} ms, p99 {m['p99_ms']:.1f} ms",
            flush=True,
        )
    for s in f["samples"]:  # type: ignore[attr-defined]
        rss = ", ".join(f"{p}: {v:.1f}" for p, v in s["rss_mib"].items())
        print(f"  at {s['at_s']:>5.0f} s: RssAnon {rss} MiB", flush=True)
    growth = ", ".join(f"{g:+.1f} %" for g in f["growth_pct"])  # type: ignore[attr-defined]
    print(
        f"  growth after warm-up: {growth}; p99 first {f['p99_first_ms']:.1f} ms, last"
        f" {f['p99_last_ms']:.1f} ms; errors {f['errors']} {f['error_kinds']};"
        f" worker restarts {f['worker_restarts']}; sender at most {f['sender_late_ms']:.0f} ms"
        " late",
        flush=True,
    )


def _report(f: dict[str, object]) -> None:
    def mib(key: str) -> str:
        return ", ".join(f"{v:.1f}" for v in f[key])  # type: ignore[attr-defined]

    rows = [
        [
            f"{f['seconds']:.0f} s",
            f"{f['requests']:,} ({f['writes']:,} writes answered)",
            mib("rss_warm_mib"),
            mib("rss_end_mib"),
            ", ".join(f"{g:+.1f} %" for g in f["growth_pct"]),  # type: ignore[attr-defined]
            f"{f['p99_first_ms']:.1f}",
            f"{f['p99_last_ms']:.1f}",
            f"{f['errors']:,}",
            f"{f['worker_restarts']}",
            "met" if f["memory_met"] and f["p99_met"] else "**not met**",
        ]
    ]
    per_minute = [
        [f"{m['from_s']:.0f} s", f"{m['requests']:,}", f"{m['p50_ms']:.1f}", f"{m['p99_ms']:.1f}"]
        for m in f["minutes"]  # type: ignore[attr-defined]
    ]
    body = "\n\n".join(
        [
            "## Soak under writes",
            f"`bastion serve --workers {f['workers']}` on SQLite, {RATE} requests per second"
            " open-loop (sent at fixed intervals, not waiting for answers; latency from the"
            " scheduled send): 40 % `GET /v1/me`, 40 % `POST /authz/check`, 10 % team"
            f" writes (a create, or once {LIVE_TEAMS} of them exist a delete of the oldest:"
            " each bumps the organisation's authz revision, so every worker rebuilds its"
            " index, while the data stays the same size), 10 % secret reveal."
            " RssAnon of each worker sampled every 10 s (bench/soak.py). Goal: < 10 %"
            f" growth after the {f['warm_up_s']:.0f} s warm-up, and p99 steady (last"
            " minute within 2x the first).",
            report.table(
                [
                    "Run",
                    "Requests",
                    "RssAnon after warm-up (MiB)",
                    "At the end (MiB)",
                    "Growth",
                    "p99 first (ms)",
                    "p99 last (ms)",
                    "Errors",
                    "Worker restarts",
                    "Goal",
                ],
                rows,
            ),
            report.table(["Minute from", "Answered", "p50 (ms)", "p99 (ms)"], per_minute),
        ]
    )
    report.write_section("soak", body)


def main(seconds: int, runs: int) -> dict[str, object]:
    del runs  # one long run
    with foundation.bastion_server(None, None, WORKERS) as (url, tokens):
        target = _setup(url, tokens)
        server = server_pid(url)
        workers = worker_pids(server)
        print(
            f"  {RATE} req/s for {seconds} s; workers {workers} (load average"
            f" {os.getloadavg()[0]:.1f})",
            flush=True,
        )
        began = time.perf_counter()
        run = asyncio.run(_load(target, float(seconds), server))
        print(f"  load took {time.perf_counter() - began:.0f} s", flush=True)
    f = figures(run)
    _print(f)
    if SCALE.smoke and f["errors"]:
        raise RuntimeError(f"soak: {f['errors']} errors: {f['error_kinds']}")
    _report(f)
    return f
