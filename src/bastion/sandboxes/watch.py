"""Watching one bwrap exec from the thread that waits for it: a single poll loop feeds
its stdin and reads its output (`bastion.sandboxes.output.Pipes`), wakes the moment
bubblewrap exits (a pidfd, not a sleeping poll), and every `POLL` seconds checks the
wall clock and the cgroup (pids limit hit, CPU time), killing the whole cgroup when a
limit is passed. No thread is started per exec.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time

from bastion.sandboxes.cgroups import ExecCgroup
from bastion.sandboxes.forks import Store
from bastion.sandboxes.output import Capped, Pipes
from bastion.sandboxes.provider import ExecResult, Execution, KilledBy, RunSpec, Usage

DRAIN_SECONDS = 5.0  # how long output is still read once bubblewrap has exited


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # before Linux 5.3: poll the process instead
        return None


class BwrapExecution(Execution):
    POLL = 0.02

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        cgroup: ExecCgroup | None,
        spec: RunSpec,
        store: Store,
        fork_id: str,
        timings: dict[str, float] | None = None,
    ) -> None:
        self.proc = proc
        self.timings = timings if timings is not None else {}
        self.cgroup = cgroup
        self.spec = spec
        self.store = store
        self.fork_id = fork_id
        self.started = time.monotonic()
        self._reason: KilledBy | None = None
        self._lock = threading.Lock()
        self.stdout = Capped(spec.output_limit)
        self.stderr = Capped(spec.output_limit)

    def kill(self, reason: KilledBy = "wall") -> None:
        with self._lock:
            if self._reason is None:
                self._reason = reason
        if self.cgroup is not None:
            self.cgroup.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def _check_limits(self, now: float, deadline: float) -> None:
        if now >= deadline:
            self.kill("wall")
        elif self.cgroup is not None:
            if self.cgroup.pids_hit():
                self.kill("pids")
            elif self.cgroup.cpu_ms() >= self.spec.limits.cpu_seconds * 1000:
                self.kill("cpu")

    def _loop(self, pipes: Pipes) -> None:
        """Until bubblewrap has exited and its output is read (or `DRAIN_SECONDS` more
        have passed): feed and read the pipes, check the limits every `POLL` seconds."""
        proc = self.proc
        pidfd = _pidfd(proc.pid)
        pipes.wake_on(pidfd)
        deadline = self.started + self.spec.deadline_seconds
        next_check = time.monotonic() + self.POLL
        try:
            while proc.poll() is None:
                now = time.monotonic()
                if now >= next_check or now >= deadline:
                    self._check_limits(now, deadline)
                    next_check = now + self.POLL
                wait = max(0.0, min(next_check, deadline) - now)
                pipes.pump(wait if pidfd is not None else min(wait, 0.002))
        finally:
            pipes.wake_on(None)
            if pidfd is not None:
                os.close(pidfd)
        if self.cgroup is not None:
            self.cgroup.kill()  # anything left behind goes with the exec
        drain_until = time.monotonic() + DRAIN_SECONDS
        while pipes.reading and (left := drain_until - time.monotonic()) > 0:
            pipes.pump(left)

    def wait(self) -> ExecResult:
        proc = self.proc
        if proc.stdin is None or proc.stdout is None or proc.stderr is None:
            raise ValueError("the exec's standard streams must be piped")
        pipes = Pipes(
            proc.stdin, proc.stdout, proc.stderr, self.spec.stdin, self.stdout, self.stderr
        )
        try:
            self._loop(pipes)
            code = proc.wait()
            ended = time.monotonic()
            duration_ms = int((ended - self.started) * 1000)
            self.timings["run"] = (ended - self.started) * 1000
            usage = self.cgroup.usage() if self.cgroup is not None else Usage()
            usage = Usage(
                cpu_ms=usage.cpu_ms,
                memory_peak_bytes=usage.memory_peak_bytes,
                pids_peak=usage.pids_peak,
                disk_bytes=self.store.disk_bytes(self.fork_id),
            )
            exit_code = code if code >= 0 else 128 - code
            killed_by = self._killed_by(exit_code, usage)
            if self.cgroup is not None:
                self.cgroup.remove()
                self.cgroup = None
            self.timings["teardown"] = (time.monotonic() - ended) * 1000
            return ExecResult(
                exit_code=exit_code,
                stdout=self.stdout.value(),
                stderr=self.stderr.value(),
                stdout_truncated=self.stdout.truncated,
                stderr_truncated=self.stderr.truncated,
                duration_ms=duration_ms,
                killed_by=killed_by,
                usage=usage,
                timings=dict(self.timings),
            )
        finally:
            pipes.close()
            if self.cgroup is not None:
                self.cgroup.remove()

    def _killed_by(self, exit_code: int, usage: Usage) -> KilledBy | None:
        if self._reason is not None:
            return self._reason
        if self.cgroup is not None and self.cgroup.oom_killed():
            return "memory"
        if self.cgroup is not None and self.cgroup.pids_hit():
            # The pids limit refused a fork, and the programs gave up before the watch saw
            # it (a fork bomb whose shell exits when fork fails): the limit stopped it.
            return "pids"
        if exit_code == 128 + signal.SIGXFSZ:
            return "disk"
        if exit_code == 128 + signal.SIGXCPU:  # only RLIMIT_CPU sends it
            return "cpu"
        if exit_code == 128 + signal.SIGKILL and (
            usage.cpu_ms >= self.spec.limits.cpu_seconds * 900  # the rlimit's hard kill
        ):
            return "cpu"
        return None
