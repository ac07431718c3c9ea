"""Sandbox benchmark (issue 21): an exec of `/bin/true` through the API
(`POST /v1/runs/{run}/sandbox/exec`, gate + fork + bwrap + audit) against the same
command as a plain subprocess and through the bwrap backend directly; and the time to
fork a workspace of 100 MB against one of 1 GB (goal: within 2x: a fork is an overlay
mount on a fresh tmpfs, whatever the base's size). Goals: API p50 <= 15 ms, p99 <= 50
ms of server time: the exec's `Server-Timing` `total` (from the request's arrival in
the middleware to the answer), with its parts (the gate, the transactions, and the
exec's cgroup, spawn, run and teardown); the time at the client on loopback is shown
beside it.

Needs what the bwrap backend needs (root, bubblewrap, cgroups): elsewhere it says why
and measures nothing.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bastion.sandboxes.bwrap import BwrapProvider
from bastion.sandboxes.provider import Limits, RunSpec
from bench import report
from bench.foundation import bastion_server
from bench.scale import SCALE

SAMPLES = SCALE.pick(300, 5)
WARMUP = SCALE.pick(20, 1)
FORKS = SCALE.pick(50, 3)
SIZES_MB = SCALE.pick((100, 1024), (1, 4))
GOAL_P50_MS, GOAL_P99_MS, GOAL_FORK_RATIO = 15.0, 50.0, 2.0
LIMITS = Limits(wall_seconds=30)
SETUP_TIMEOUT = 120.0  # seconds for each setup request (a loaded machine is slow)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _stats(values: list[float]) -> dict[str, float]:
    return {"p50": _pct(values, 50), "p99": _pct(values, 99), "mean": statistics.fmean(values)}


def _timed(fn: Any, samples: int = SAMPLES, warmup: int = WARMUP) -> list[float]:
    out = []
    for i in range(warmup + samples):
        began = time.perf_counter()
        fn()
        if i >= warmup:
            out.append((time.perf_counter() - began) * 1000)
    return out


def _ok(response: httpx.Response) -> Any:
    if response.status_code not in (200, 201):
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    return response.json()


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("README")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    return buf.getvalue()


def _server_timing(header: str) -> dict[str, float]:
    parts = {}
    for item in header.split(","):
        name, _, dur = item.strip().partition(";dur=")
        if name and dur:
            parts[name] = float(dur)
    return parts


def _api(url: str, admin: dict[str, str]) -> tuple[list[float], dict[str, list[float]]]:
    org = _ok(httpx.get(f"{url}/v1/me", headers=admin, timeout=SETUP_TIMEOUT))["org_id"]
    base = f"{url}/v1/orgs/{org}"
    wks = _ok(
        httpx.post(
            f"{base}/workspaces",
            json={"name": f"b{time.time_ns()}"},
            headers=admin,
            timeout=SETUP_TIMEOUT,
        )
    )
    _ok(
        httpx.put(
            f"{base}/workspaces/{wks['id']}/files",
            content=_tar(),
            headers={**admin, "Content-Type": "application/gzip"},
            timeout=SETUP_TIMEOUT,
        )
    )
    agent = _ok(
        httpx.post(
            f"{base}/agents",
            json={
                "name": f"sandbox-bench-{time.monotonic_ns()}",
                "visibility": "org",
                "tools": [{"name": "sandbox.exec", "connection": wks["id"]}],
                "connections": [wks["id"]],
            },
            headers=admin,
            timeout=SETUP_TIMEOUT,
        )
    )
    run = _ok(
        httpx.post(
            f"{base}/agents/{agent['id']}/runs",
            json={"ttl_seconds": 86_400, "max_tool_calls": 100_000},
            headers=admin,
            timeout=SETUP_TIMEOUT,
        )
    )
    body = {"workspace": wks["id"], "argv": ["/bin/true"]}
    parts: dict[str, list[float]] = {}
    with httpx.Client(headers={"Authorization": f"Bearer {run['token']}"}, timeout=60) as http:
        exec_url = f"{url}/v1/runs/{run['run_id']}/sandbox/exec"
        count = 0

        def one() -> None:
            nonlocal count
            response = http.post(exec_url, json=body)
            answer = _ok(response)
            if answer["exit_code"] != 0:
                raise RuntimeError(f"/bin/true failed: {answer}")
            count += 1
            if count > WARMUP:
                for name, ms in _server_timing(response.headers["server-timing"]).items():
                    parts.setdefault(name, []).append(ms)

        return _timed(one), parts


def _fork_times(provider: BwrapProvider, tmp: Path) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for size in SIZES_MB:
        tree = provider.staging()
        for i in range(8):  # the base: 8 files of size/8 each, really written
            with open(tree / f"blob{i}", "wb") as fh:
                chunk = os.urandom(1 << 20)
                for _ in range(max(1, size // 8)):
                    fh.write(chunk)
        provider.prepare_workspace(f"wks_bench{size}", "base", tree)
        times = []
        for n in range(FORKS):
            fork_id = f"bench_{size}_{n}"
            began = time.perf_counter()
            provider.fork(fork_id, f"wks_bench{size}", "base", LIMITS)
            times.append((time.perf_counter() - began) * 1000)
            provider.destroy(fork_id)
        out[size] = times
        provider.remove_workspace(f"wks_bench{size}")
    return out


def main(seconds: int, runs: int) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="bastion-bench-sbx-"))
    provider = BwrapProvider(tmp / "sandboxes")
    reason = provider.unavailable()
    if reason is not None:
        print(f"  skipped: the bwrap backend cannot run here ({reason})")
        return {"skipped": reason}
    try:
        plain = _timed(lambda: subprocess.run(["/bin/true"], check=True))
        provider.prepare_workspace("wks_direct", "base", provider.staging())
        fork = provider.fork("bench_direct", "wks_direct", "base", LIMITS)
        direct = _timed(lambda: provider.run(fork, RunSpec(("/bin/true",), LIMITS)))
        provider.destroy("bench_direct")
        forks = _fork_times(provider, tmp)
        with bastion_server(None, None, 1) as (url, tokens):
            api, parts = _api(url, {"Authorization": f"Bearer {tokens['session']}"})
    finally:
        for fork_id in provider.store.fork_ids():
            provider.destroy(fork_id)
        shutil.rmtree(provider.run_dir, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    small, large = SIZES_MB
    figures: dict[str, object] = {
        "samples": SAMPLES,
        "plain_subprocess_ms": _stats(plain),
        "bwrap_direct_ms": _stats(direct),
        "api_exec_ms": _stats(api),
        "api_server_ms": _stats(parts["total"]),
        "api_parts_ms": {name: _stats(v) for name, v in parts.items() if name != "total"},
        "fork_ms": {f"{size}MB": _stats(forks[size]) for size in SIZES_MB},
        "fork_ratio_p50": _pct(forks[large], 50) / max(_pct(forks[small], 50), 1e-6),
        "load_average": os.getloadavg(),
    }
    print("  " + json.dumps({k: figures[k] for k in ("api_server_ms", "api_exec_ms")}))
    print("  " + json.dumps(figures["api_parts_ms"]))
    print("  " + json.dumps({"fork_ratio_p50": figures["fork_ratio_p50"]}))
    if not SCALE.smoke:
        _report(figures)
    return figures


def _row(label: str, s: dict[str, float]) -> list[str]:
    return [label, f"{s['p50']:.2f}", f"{s['p99']:.2f}", f"{s['mean']:.2f}"]


def _report(f: dict[str, Any]) -> None:
    api = f["api_server_ms"]
    met_api = api["p50"] <= GOAL_P50_MS and api["p99"] <= GOAL_P99_MS
    met_fork = f["fork_ratio_p50"] <= GOAL_FORK_RATIO
    intro = (
        f"`/bin/true`, {f['samples']} times each after {WARMUP} not counted: as a plain"
        " subprocess; through the bwrap backend directly (cgroup made and removed, rlimits,"
        " namespaces, seccomp, bubblewrap, in the run's existing fork); and through the API"
        " (`POST /v1/runs/{run}/sandbox/exec` on `bastion serve --workers 1`, SQLite: the"
        " gate's decision and its audit event, the fork's row, the exec, the exec's audit"
        " event): the server's time (the answer's `Server-Timing` `total`, from the"
        " request's arrival in the middleware to the answer) with its parts, and the time"
        " at the client on loopback. Then the time to fork (mount a tmpfs"
        " and an overlay) a workspace whose base is 100 MB and one of 1 GB."
        f" Goals: API server time p50 <= {GOAL_P50_MS:.0f} ms and p99 <= {GOAL_P99_MS:.0f} ms; fork"
        f" time of 1 GB within {GOAL_FORK_RATIO:.0f}x that of 100 MB."
    )
    table = report.table(
        ["path", "p50 ms", "p99 ms", "mean ms"],
        [
            _row("plain subprocess", f["plain_subprocess_ms"]),
            _row("bwrap backend directly", f["bwrap_direct_ms"]),
            _row("through the API: server time", api),
            _row("through the API: at the client", f["api_exec_ms"]),
            *[_row(f"  part: {k}", v) for k, v in f["api_parts_ms"].items()],
            *[_row(f"fork of a {k} base", v) for k, v in f["fork_ms"].items()],
        ],
    )
    verdict = (
        f"API goal {'met' if met_api else '**not met**'}; fork goal"
        f" {'met' if met_fork else '**not met**'} (1 GB / 100 MB at p50:"
        f" {f['fork_ratio_p50']:.2f}). The machine's two CPUs are shared with other work"
        f" (load average {f['load_average'][0]:.1f} at the end): the figures compare the"
        " paths of this run, not what each costs on an idle machine."
    )
    report.write_section(
        "sandboxes", "\n\n".join(["## Sandboxes: exec and fork", intro, table, verdict])
    )
