"""`make bench`: run every benchmark and rewrite its section of docs/benchmarks.md.

Options: `--only NAME` (repeatable), `--seconds N` per load run, `--runs N` per peer."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench import agents, audit, authz, conditions, foundation, secrets, webhooks

SUITES = {
    "foundation": foundation.main,
    "audit": audit.main,
    "authz": authz.main,
    "conditions": conditions.main,
    "secrets": secrets.main,
    "webhooks": webhooks.main,
    "agents": agents.main,
}
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--only", action="append", choices=sorted(SUITES))
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    for name in args.only or list(SUITES):
        print(f"== {name}")
        figures = SUITES[name](seconds=args.seconds, runs=args.runs)
        (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
