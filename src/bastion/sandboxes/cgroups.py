"""A control group per exec, on cgroup v2 or v1: memory, pids and CPU quota, usage
figures, and killing every process in it at once.

The group is created under the cgroup Bastion itself runs in (so the host's limits on
Bastion also bound its sandboxes). `Cgroups.detect()` says which version is usable, or
why none is; the backend then refuses to run (default deny) unless told to run without.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bastion.sandboxes.provider import Limits, Usage

CONTROLLERS_V1 = ("memory", "pids", "cpu", "cpuacct")
CFS_PERIOD_US = 100_000
# Written to a v1 `tasks` file, "0" moves the writing thread itself: the kernel then
# skips the global lock (and its RCU grace period) that moving any other process takes.
SELF = "0"


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, options) of every cgroup mount."""
    found = []
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
                mount = parts[1].replace("\\040", " ")
                found.append((mount, parts[2], set(parts[3].split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """This process's cgroup per controller ("" is the v2 hierarchy)."""
    paths: dict[str, str] = {}
    with open("/proc/self/cgroup", encoding="utf-8") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                paths[controller] = path
    return paths


def _write(path: Path, value: str) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(value)


def _read_int(path: Path, default: int = 0) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def _keyed(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                out[key] = int(value)
    return out


@dataclass(frozen=True)
class Layout:
    version: int  # 1 or 2
    # v2: the parent directory; v1: the parent directory of each controller.
    parents: dict[str, Path]


class Cgroups:
    """Where exec cgroups are made. `detect()` returns the usable layout or a reason."""

    @staticmethod
    def detect() -> Layout | str:
        mounts = _mounts()
        own = _own_paths()
        v2 = [m for m in mounts if m[1] == "cgroup2"]
        for mount, _, _ in v2:
            parent = Path(mount) / own.get("", "/").lstrip("/")
            try:
                available = set((parent / "cgroup.controllers").read_text().split())
            except OSError:
                continue
            if {"memory", "pids", "cpu"} <= available:
                try:
                    _write(parent / "cgroup.subtree_control", "+memory +pids +cpu")
                except OSError as exc:
                    return f"cgroup v2 at {parent}: cannot delegate controllers ({exc.strerror})"
                return Layout(2, {"": parent})
        parents: dict[str, Path] = {}
        for mount, kind, options in mounts:
            if kind != "cgroup":
                continue
            for controller in CONTROLLERS_V1:
                if controller in options and controller in own:
                    parents[controller] = Path(mount) / own[controller].lstrip("/")
        missing = [c for c in CONTROLLERS_V1 if c not in parents]
        if missing:
            return "no cgroup v2 with memory, pids and cpu, nor cgroup v1 " + ", ".join(missing)
        for controller, parent in parents.items():
            if not os.access(parent, os.W_OK):
                return f"cgroup v1 {controller} at {parent} is not writable (run as root)"
        return Layout(1, parents)


class ExecCgroup:
    """One exec's cgroup: the exec's first process is created in it (`born_inside`)
    or moved to it (`adopt`) before it executes anything of the sandbox, `usage()` and
    the limit events,
    `kill()` kills every process in it, `remove()` deletes it."""

    def __init__(self, layout: Layout, name: str, limits: Limits) -> None:
        self.layout = layout
        self.dirs: dict[str, Path] = {}
        if layout.version == 2:
            self.dirs[""] = layout.parents[""] / name
        else:
            for controller, parent in layout.parents.items():
                self.dirs[controller] = parent / name
        created: list[Path] = []
        try:
            for path in dict.fromkeys(self.dirs.values()):
                path.mkdir()
                created.append(path)
            self._limit(limits)
        except BaseException:
            for path in created:
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise

    def _dir(self, controller: str) -> Path:
        return self.dirs[""] if self.layout.version == 2 else self.dirs[controller]

    def _limit(self, limits: Limits) -> None:
        memory = limits.memory_mb << 20
        quota = max(1000, int(limits.cpu * CFS_PERIOD_US))
        if self.layout.version == 2:
            d = self.dirs[""]
            _write(d / "memory.max", str(memory))
            with contextlib.suppress(OSError):
                _write(d / "memory.swap.max", "0")
            _write(d / "pids.max", str(limits.pids))
            _write(d / "cpu.max", f"{quota} {CFS_PERIOD_US}")
            return
        mem = self.dirs["memory"]
        _write(mem / "memory.limit_in_bytes", str(memory))
        with contextlib.suppress(OSError):  # present only with swap accounting
            _write(mem / "memory.memsw.limit_in_bytes", str(memory))
        _write(self.dirs["pids"] / "pids.max", str(limits.pids))
        cpu = self.dirs["cpu"]
        _write(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US))
        _write(cpu / "cpu.cfs_quota_us", str(quota))

    @contextlib.contextmanager
    def born_inside(self) -> Iterator[None]:
        """On cgroup v1, the calling thread — only it — in the group meanwhile, so that a
        process it starts is created in the group. Moving the calling thread itself
        takes no global lock; moving another process waits for an RCU grace period
        (about 10 ms on a loaded host). On v2, where a thread cannot move alone,
        nothing (`adopt` moves the process)."""
        if self.layout.version == 2:
            yield
            return
        moved: list[str] = []
        try:
            for controller, path in self.dirs.items():
                _write(path / "tasks", SELF)
                moved.append(controller)
            yield
        finally:
            for controller in moved:  # back where Bastion runs
                _write(self.layout.parents[controller] / "tasks", SELF)

    def adopt(self, pid: int) -> None:
        """Make sure process `pid` (not yet running anything of the sandbox) is in the
        group: on v2 it is moved now; on v1 it was born inside (checked)."""
        if self.layout.version == 2:
            _write(self.dirs[""] / "cgroup.procs", str(pid))
            return
        for path in self.dirs.values():
            if str(pid) not in (path / "cgroup.procs").read_text().split():
                raise OSError(f"process {pid} is not in its exec's cgroup")

    @property
    def procs(self) -> list[Path]:
        return [path / "cgroup.procs" for path in dict.fromkeys(self.dirs.values())]

    def pids(self) -> list[int]:
        found: set[int] = set()
        for procs in self.procs:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in procs.read_text().split())
        return sorted(found)

    def cpu_ms(self) -> int:
        if self.layout.version == 2:
            return _keyed(self.dirs[""] / "cpu.stat").get("usage_usec", 0) // 1000
        return _read_int(self.dirs["cpuacct"] / "cpuacct.usage") // 1_000_000

    def oom_killed(self) -> bool:
        if self.layout.version == 2:
            return _keyed(self.dirs[""] / "memory.events").get("oom_kill", 0) > 0
        return _keyed(self.dirs["memory"] / "memory.oom_control").get("oom_kill", 0) > 0

    def pids_hit(self) -> bool:
        return _keyed(self._dir("pids") / "pids.events").get("max", 0) > 0

    def usage(self) -> Usage:
        if self.layout.version == 2:
            d = self.dirs[""]
            peak = _read_int(d / "memory.peak")
            pids_peak = _read_int(d / "pids.peak")
        else:
            peak = _read_int(self.dirs["memory"] / "memory.max_usage_in_bytes")
            pids_peak = _read_int(self.dirs["pids"] / "pids.peak")
        return Usage(cpu_ms=self.cpu_ms(), memory_peak_bytes=peak, pids_peak=pids_peak)

    def kill(self) -> None:
        """SIGKILL every process, again until none is left (a process forking while it
        is killed is caught by the next round; the pids limit bounds the rounds)."""
        if self.layout.version == 2:
            with contextlib.suppress(OSError):
                _write(self.dirs[""] / "cgroup.kill", "1")
        for _ in range(1000):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.001)

    def remove(self) -> None:
        self.kill()
        for path in dict.fromkeys(self.dirs.values()):
            for _ in range(200):  # a killed process leaves the group when it is reaped
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.005)
