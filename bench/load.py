"""HTTP load generation: wrk (Debian package `wrk`) when present, else an asyncio httpx
loop (slower; the report names the tool, so figures are compared within one tool only)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.scale import SCALE

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass(frozen=True)
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0  # answered or failed, over the whole run
    # answers per status, when the wrk script counts them (bench/count_statuses.lua)
    statuses: tuple[tuple[int, int], ...] = ()


def median(results: list[LoadResult]) -> LoadResult:
    """The medians of several runs (errors and requests are summed)."""
    return LoadResult(
        statistics.median(r.rps for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
        sum(r.requests for r in results),
        _add_statuses(results),
    )


def _add_statuses(results: list[LoadResult]) -> tuple[tuple[int, int], ...]:
    total: dict[int, int] = {}
    for result in results:
        for status, count in result.statuses:
            total[status] = total.get(status, 0) + count
    return tuple(sorted(total.items()))


def tool() -> str:
    if shutil.which("wrk"):
        return "wrk"
    # A full run installs wrk when it can; a smoke run (inside `make test`) installs
    # nothing: scripts/services.sh installs wrk under CI.
    if shutil.which("apt-get") and _is_root() and not SCALE.smoke:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "wrk"],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if shutil.which("wrk"):
            return "wrk"
    return "httpx"


def _is_root() -> bool:
    return os.geteuid() == 0


def _ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", value.strip())
    if not match:
        raise ValueError(f"cannot read wrk latency {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(
    url: str,
    headers: dict[str, str],
    seconds: int,
    connections: int,
    *,
    script: Path | None = None,
    env: dict[str, str] | None = None,
    threads: int = 2,
    timeout_seconds: int | None = None,
) -> LoadResult:
    """wrk against `url`; `script` (a Lua file, e.g. one that POSTs bodies), `env`
    (variables the script reads) and a request timeout (wrk's default is 2 s, after
    which a slow answer counts as an error) are optional."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if timeout_seconds is not None:
        command += ["--timeout", f"{timeout_seconds}s"]
    if script is not None:
        command += ["-s", str(script)]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    environment = {**os.environ, **(env or {})}
    out = subprocess.run(
        [*command, url], check=True, capture_output=True, text=True, env=environment
    ).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> LoadResult:
    """Requests/s, p50 and p99 (ms), errors (non-2xx plus socket errors) and requests
    from wrk's `--latency` summary, and the answers per status if the script printed
    them (bench/count_statuses.lua)."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    statuses = re.findall(r"^status (\d+): (\d+)$", out, re.MULTILINE)
    counted = tuple(sorted((int(status), int(count)) for status, count in statuses))
    return LoadResult(rps, p50, p99, errors, requests, counted)


def httpx_load(url: str, headers: dict[str, str], seconds: int, connections: int) -> LoadResult:
    async def main() -> LoadResult:
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + seconds
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:

            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < deadline:
                    start = time.perf_counter()
                    response = await client.get(url)
                    latencies.append((time.perf_counter() - start) * 1e3)
                    if response.status_code >= 400:
                        errors += 1

            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(connections)))
            elapsed = time.perf_counter() - began
        cuts = statistics.quantiles(latencies, n=100)
        return LoadResult(len(latencies) / elapsed, cuts[49], cuts[98], errors, len(latencies))

    return asyncio.run(main())


def run(url: str, headers: dict[str, str], seconds: int, connections: int = 32) -> LoadResult:
    if tool() == "wrk":
        return wrk(url, headers, seconds, connections)
    return httpx_load(url, headers, seconds, connections)
