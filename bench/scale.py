"""How big a benchmark run is: full size (`make bench`), or a smoke run
(`python -m bench.run --smoke`, or `BASTION_BENCH_SMOKE=1`) that `make test` makes through
tests/test_benchmarks.py so that a benchmark broken by a refactor fails the suite.

A smoke run takes every code path of every suite once, on tiny data (a few hundred audit
events, an authz world of a few hundred users), with one 1-second load run per peer, and
writes no figures: `report.write_section` leaves docs/benchmarks.md alone and `bench.run`
writes nothing to bench/results. The figures it prints mean nothing.

Suites size themselves once, at import, with `SCALE.pick(full, smoke)`; so `bench.run`
settles the mode before importing them, and `SCALE.set_smoke()` refuses to run after a
suite has already picked its full size."""

from __future__ import annotations

import os
from typing import TypeVar

ENV = "BASTION_BENCH_SMOKE"
T = TypeVar("T")


class Scale:
    def __init__(self, smoke: bool) -> None:
        self.smoke = smoke
        self._picked = False

    def pick(self, full: T, smoke: T) -> T:
        """`smoke` in a smoke run, else `full`."""
        self._picked = True
        return smoke if self.smoke else full

    def set_smoke(self) -> None:
        if self._picked and not self.smoke:
            raise RuntimeError("a suite was sized for a full run before smoke mode was set")
        self.smoke = True


SCALE = Scale(smoke=os.environ.get(ENV, "") not in ("", "0"))
