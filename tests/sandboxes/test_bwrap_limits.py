"""Limits of the bwrap backend, each proven by running the workload it stops."""

from __future__ import annotations

import subprocess
import time

from bastion.sandboxes.bwrap import BwrapProvider
from bastion.sandboxes.provider import Limits, RunSpec
from tests.sandboxes.conftest import fork_of, tree_digest

PY = "/usr/bin/python3"


def test_memory_four_times_the_limit_is_killed_within_a_second(
    provider: BwrapProvider, workspace: str
) -> None:
    limits = Limits(memory_mb=64, wall_seconds=30, cpu_seconds=30)
    fork = fork_of(provider, workspace, limits)
    # The sandbox prints the monotonic clock (shared with the host) just before it starts
    # allocating 256 MB, touching every page.
    code = (
        "import time,sys; print(time.monotonic(), flush=True); "
        "b = bytearray(256 << 20); time.sleep(20)"
    )
    result = provider.run(fork, RunSpec((PY, "-c", code), limits))
    ended = time.monotonic()
    assert result.killed_by == "memory"
    assert result.exit_code == 137
    started = float(result.stdout.split()[0])
    assert ended - started < 1.0
    assert result.usage.memory_peak_bytes <= 64 << 20


def test_a_fork_bomb_is_contained_and_the_host_stays_responsive(
    provider: BwrapProvider, workspace: str
) -> None:
    limits = Limits(pids=32, wall_seconds=20)
    fork = fork_of(provider, workspace, limits)
    result = provider.run(fork, RunSpec(("/bin/sh", "-c", "b() { b | b & }; b; wait"), limits))
    assert result.killed_by == "pids"
    assert result.usage.pids_peak <= 32
    # Nothing of it is left, and the host starts processes as before.
    assert subprocess.run(["/bin/true"], check=False).returncode == 0
    after = provider.run(fork, RunSpec(("/bin/echo", "alive"), limits))
    assert after.stdout == b"alive\n"
    assert after.killed_by is None


def test_cpu_quota_holds_two_busy_processes_to_half_a_cpu(
    provider: BwrapProvider, workspace: str
) -> None:
    limits = Limits(cpu=0.5, wall_seconds=3, cpu_seconds=60)
    fork = fork_of(provider, workspace, limits)
    busy = "while :; do :; done & while :; do :; done"
    result = provider.run(fork, RunSpec(("/bin/sh", "-c", busy), limits))
    assert result.killed_by == "wall"
    assert result.usage.cpu_ms / result.duration_ms <= 0.6


def test_wall_clock_limit_kills_the_whole_exec(provider: BwrapProvider, workspace: str) -> None:
    limits = Limits(wall_seconds=1)
    fork = fork_of(provider, workspace, limits)
    started = time.monotonic()
    result = provider.run(fork, RunSpec(("/bin/sh", "-c", "sleep 60 & sleep 60"), limits))
    assert result.killed_by == "wall"
    assert time.monotonic() - started < 30  # far below the sleeps: killed, not waited for


def test_timeout_seconds_shortens_the_wall_clock(provider: BwrapProvider, workspace: str) -> None:
    limits = Limits(wall_seconds=60)
    fork = fork_of(provider, workspace, limits)
    result = provider.run(fork, RunSpec(("/bin/sleep", "60"), limits, timeout_seconds=1))
    assert result.killed_by == "wall"
    assert result.duration_ms < 30_000


def test_cpu_time_limit_kills_a_busy_exec(provider: BwrapProvider, workspace: str) -> None:
    limits = Limits(cpu=1, cpu_seconds=1, wall_seconds=60)
    fork = fork_of(provider, workspace, limits)
    result = provider.run(fork, RunSpec(("/bin/sh", "-c", "while :; do :; done"), limits))
    assert result.killed_by == "cpu", result
    # RLIMIT_CPU counts the process, the cgroup its threads' accounted time: alike, not equal.
    assert result.usage.cpu_ms >= 700


def test_disk_limit_is_enospc_and_the_base_is_byte_identical(
    provider: BwrapProvider, workspace: str
) -> None:
    base = provider.store.base(workspace, "base1")
    before = tree_digest(base)
    limits = Limits(disk_mb=8, memory_mb=256)
    fork = fork_of(provider, workspace, limits)
    script = (
        "echo changed >> README; rm src/main.py; chmod 777 src; "
        "dd if=/dev/zero of=big bs=1M count=32 2>&1; echo rc=$?"
    )
    result = provider.run(fork, RunSpec(("/bin/sh", "-c", script), limits))
    assert b"No space left on device" in result.stdout
    assert b"rc=1" in result.stdout
    assert result.usage.disk_bytes <= 8 << 20
    assert tree_digest(base) == before
    changes = {c.path: c.kind for c in provider.diff(fork)}
    assert changes["README"] == "modified"
    assert changes["src/main.py"] == "deleted"
    assert changes["big"] == "added"


def test_output_is_capped_and_marked_truncated(provider: BwrapProvider, workspace: str) -> None:
    limits = Limits()
    fork = fork_of(provider, workspace, limits)
    spec = RunSpec(("/bin/sh", "-c", "head -c 100000 /dev/zero"), limits, output_limit=1000)
    result = provider.run(fork, spec)
    assert len(result.stdout) == 1000
    assert result.stdout_truncated
    assert not result.stderr_truncated
    assert result.exit_code == 0
