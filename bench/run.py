"""`make bench`: run every benchmark and rewrite its section of docs/benchmarks.md.

Options: `--only NAME` (repeatable), `--seconds N` per load run (default 5; the soak's
own default is 10 minutes), `--runs N` per peer, and `--smoke`: every suite once on tiny
data, nothing written (see `bench.scale`)."""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

from bench.scale import SCALE

# Each suite's module has `main(seconds, runs) -> figures`. They are imported only once
# the run's scale is settled: they size their workloads at import.
SUITES = [
    "foundation",
    "audit",
    "authz",
    "conditions",
    "secrets",
    "cmk",
    "privacy",
    "webhooks",
    "agents",
    "mcp",
    "sandboxes",
    "mfa",
    "console",
    "writes",
    "soak",
]
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--only", action="append", choices=sorted(SUITES))
    parser.add_argument(
        "--seconds", type=int, default=None, help="per load run (default 5; soak: 600)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny data, 1 s runs, no figures written"
    )
    args = parser.parse_args()
    if args.smoke:
        SCALE.set_smoke()
    runs = SCALE.pick(args.runs, 1)
    for name in args.only or SUITES:
        print(f"== {name}", flush=True)
        began = time.perf_counter()
        suite = importlib.import_module(f"bench.{name}")
        # A suite may name its own default length (soak: minutes) and smoke length.
        default = getattr(suite, "DEFAULT_SECONDS", 5)
        seconds = SCALE.pick(args.seconds or default, getattr(suite, "SMOKE_SECONDS", 1))
        figures = suite.main(seconds=seconds, runs=runs)
        print(f"== {name}: {time.perf_counter() - began:.1f} s", flush=True)
        if not SCALE.smoke:
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2))
    if SCALE.smoke:
        print("== smoke run passed (nothing written)", flush=True)


if __name__ == "__main__":
    main()
