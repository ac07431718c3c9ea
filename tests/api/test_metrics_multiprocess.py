"""Several workers' samples add up in `/metrics` (prometheus-client's multiprocess mode,
as `bastion serve --workers N` sets it up): two real processes count, one scrape sums."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bastion.api import metrics as api_metrics

WORKER = """
import time
from bastion.core import metrics
for _ in range({n}):
    metrics.GATE_DECISION["allow"].inc()
    metrics.AUTHZ_INDEX_BUILDS.observe(0.002)
"""


def test_two_workers_counts_are_summed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    where = tmp_path / "metrics"
    where.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(where), "PATH": "/usr/bin:/bin"}
    for n in (3, 4):  # two processes, as two workers
        subprocess.run([sys.executable, "-c", WORKER.format(n=n)], env=env, check=True, timeout=300)
    assert len(list(where.glob("counter_*.db"))) == 2
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(where))
    text = generate_latest(api_metrics._registry()).decode()
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert values[("bastion_gate_decisions_total", (("decision", "allow"),))] == 7
    assert values[("bastion_authz_index_build_seconds_count", ())] == 7


def test_serve_with_workers_sets_up_an_empty_metrics_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bastion.cli.main import _metrics_dir
    from tests.conftest import make_settings

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")  # restored (to unset) afterwards
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    cfg = make_settings(tmp_path, "sqlite://")
    _metrics_dir(cfg, 1)
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ  # one worker: plain
    stale = tmp_path / "metrics" / "counter_1.db"
    stale.parent.mkdir()
    stale.write_bytes(b"old run")
    _metrics_dir(cfg, 2)
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(stale.parent.resolve())
    assert list(stale.parent.iterdir()) == []  # the previous run's samples are gone
