"""Benchmarks cannot rot (issue 13): `make test` runs every suite of `bench.run` once in
smoke mode (`python -m bench.run --smoke`: tiny data, one 1-second load run per peer,
nothing written; see `bench.scale`), so a refactor that breaks a benchmark fails the
suite instead of the next `make bench`."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench.run import SUITES

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "bench" / "results"

pytestmark = [
    pytest.mark.e2e,
    # A smoke run measures SQLite only (bench.pg makes no PostgreSQL database in one),
    # so it needs nothing the second pass of scripts/test.sh brings: run it once.
    pytest.mark.skipif(
        bool(os.environ.get("BASTION_TEST_DATABASE_URL")),
        reason="the benchmark smoke run uses SQLite only; it runs in the SQLite pass",
    ),
]


def _written() -> tuple[str, dict[str, int]]:
    """docs/benchmarks.md's digest, and each results file's modification time."""
    digest = hashlib.sha256(DOC.read_bytes()).hexdigest() if DOC.exists() else ""
    results = {p.name: p.stat().st_mtime_ns for p in RESULTS.glob("*.json")}
    return digest, results


def test_every_benchmark_runs_in_smoke_mode() -> None:
    before = _written()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    out = run.stdout
    if run.returncode != 0:
        pytest.fail(
            f"python -m bench.run --smoke exited {run.returncode}:\n{out[-4000:]}\n"
            f"{run.stderr[-6000:]}",
            pytrace=False,
        )
    for name in SUITES:
        assert f"== {name}\n" in out, f"suite {name} did not run:\n{out[-3000:]}"
        assert f"== {name}: " in out, f"suite {name} did not finish:\n{out[-3000:]}"
    assert "== smoke run passed" in out
    if os.environ.get("CI") == "true":  # scripts/services.sh installs wrk under CI
        assert "wrk is not installed" not in out, out
    assert _written() == before, "a smoke run wrote figures"
