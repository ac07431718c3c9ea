"""The interface of a sandbox backend, and the run spec every backend executes.

A backend keeps, per workspace, a read-only base (`prepare_workspace`); per run, a fork
of it where writes land (`fork`, copy-on-write, the base never changes); per exec, an
isolated process tree under limits (`start`, `wait`, `kill`). `diff` lists what a fork
changed against its base; `destroy` removes a fork.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

KilledBy = Literal["memory", "pids", "cpu", "wall", "disk"]
OUTPUT_LIMIT = 1 << 20  # bytes of stdout (and of stderr) kept per exec


@dataclass(frozen=True)
class Limits:
    """What one exec may use. `cpu`: CPUs of quota; `wall_seconds`: real time;
    `cpu_seconds`: CPU time over every process of the exec."""

    cpu: float = 1.0
    memory_mb: int = 512
    disk_mb: int = 1024
    pids: int = 256
    wall_seconds: int = 60
    cpu_seconds: int = 60


@dataclass(frozen=True)
class RunSpec:
    argv: tuple[str, ...]
    limits: Limits = Limits()
    stdin: bytes = field(default=b"", repr=False)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    # `file` secrets: NAME → value, readable under /run/secrets/NAME for this exec only.
    files: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    timeout_seconds: float | None = None
    # The host path of the egress proxy's socket (network `allowlist`); None: no network.
    proxy_socket: Path | None = None
    output_limit: int = OUTPUT_LIMIT

    @property
    def deadline_seconds(self) -> float:
        wall = float(self.limits.wall_seconds)
        return min(wall, self.timeout_seconds) if self.timeout_seconds else wall


@dataclass(frozen=True)
class Usage:
    cpu_ms: int = 0
    memory_peak_bytes: int = 0
    pids_peak: int = 0
    disk_bytes: int = 0


@dataclass(frozen=True)
class ExecResult:
    exit_code: int  # the process's exit status; 128 + N for a signal N
    stdout: bytes = field(repr=False)
    stderr: bytes = field(repr=False)
    stdout_truncated: bool
    stderr_truncated: bool
    duration_ms: int
    killed_by: KilledBy | None
    usage: Usage
    # Where the time went, in milliseconds, by step (`Server-Timing` of the exec).
    timings: Mapping[str, float] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Change:
    path: str  # relative to the workspace root
    kind: Literal["added", "modified", "deleted"]
    size: int  # bytes now (0 when deleted)


@dataclass(frozen=True)
class Fork:
    id: str
    workspace_id: str
    limits: Limits


class Execution(abc.ABC):
    """A started exec: wait for it or kill it."""

    @abc.abstractmethod
    def wait(self) -> ExecResult: ...

    @abc.abstractmethod
    def kill(self, reason: KilledBy = "wall") -> None: ...


class Unavailable(RuntimeError):
    """The backend cannot run here (a kernel feature or a tool is missing): the message
    says which."""


class SandboxProvider(abc.ABC):
    name: str

    @abc.abstractmethod
    def unavailable(self) -> str | None:
        """Why this backend cannot execute here, or None when it can."""

    @abc.abstractmethod
    def staging(self) -> Path:
        """A new empty directory to build a base in, for `prepare_workspace`."""

    @abc.abstractmethod
    def prepare_workspace(self, workspace_id: str, digest: str, tree: Path) -> None:
        """Make `tree` (a directory this call takes over) the workspace's read-only base."""

    @abc.abstractmethod
    def remove_workspace(self, workspace_id: str) -> None: ...

    @abc.abstractmethod
    def fork(self, fork_id: str, workspace_id: str, digest: str, limits: Limits) -> Fork:
        """The run's fork of the base `digest`: created on first use, then the same one
        (its files persist from exec to exec) until `destroy`."""

    @abc.abstractmethod
    def start(self, fork: Fork, spec: RunSpec) -> Execution: ...

    def run(self, fork: Fork, spec: RunSpec) -> ExecResult:
        return self.start(fork, spec).wait()

    @abc.abstractmethod
    def diff(self, fork: Fork) -> list[Change]: ...

    @abc.abstractmethod
    def proxy_dir(self) -> Path:
        """Where egress proxies' sockets are made: searchable by the sandbox's user."""

    @abc.abstractmethod
    def workspace_ids(self) -> list[str]:
        """The workspaces this backend holds a base of."""

    @abc.abstractmethod
    def destroy(self, fork_id: str) -> None:
        """Remove the fork and everything written in it (nothing if it does not exist)."""
