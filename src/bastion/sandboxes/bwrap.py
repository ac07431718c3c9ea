"""The default backend: bubblewrap on this host.

Each exec runs as an unprivileged host user (`nobody` by default) in new user, mount,
PID, IPC, UTS, cgroup and network namespaces — the network namespace has no interface
up, so nothing is reachable — with every capability dropped, a cleared environment,
rlimits, the seccomp deny-list (`bastion.sandboxes.seccomp`) and its own cgroup
(`bastion.sandboxes.cgroups`). It sees the OS's `/usr` read-only, a generated `/etc`,
its fork of the workspace at `/workspace` and the fork's `/tmp`; nothing else of the
host. A monitor kills the whole cgroup at the wall-clock or CPU-time limit, or when
the pids limit is hit (a fork bomb ends at once).

Bastion must run as root to mount forks and create cgroups; `unavailable()` says what
is missing otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from bastion.sandboxes import seccomp
from bastion.sandboxes.cgroups import Cgroups, ExecCgroup, Layout
from bastion.sandboxes.forks import Store
from bastion.sandboxes.output import Capped, feed
from bastion.sandboxes.provider import (
    Change,
    ExecResult,
    Execution,
    Fork,
    KilledBy,
    Limits,
    RunSpec,
    SandboxProvider,
    Unavailable,
    Usage,
)

SANDBOX_UID = 65534
WORKDIR = "/workspace"
BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": WORKDIR,
    "LANG": "C.UTF-8",
    "TMPDIR": "/tmp",
}
PROXY_DIR = "/run/bastion"
HOST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# The first process joins the exec's cgroup before running anything of the sandbox.
JOIN = 'for f in $BASTION_CGROUP_PROCS; do echo $$ > "$f" || exit 125; done; exec "$@"'
SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
ETC_FROM_HOST = ("/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime")


def _etc(uid: int) -> dict[str, bytes]:
    return {
        "/etc/passwd": (
            f"root:x:0:0::/:/bin/false\nsandbox:x:{uid}:{uid}::{WORKDIR}:/bin/sh\n"
        ).encode(),
        "/etc/group": f"root:x:0:\nsandbox:x:{uid}:\n".encode(),
        "/etc/hosts": b"127.0.0.1 localhost\n",
        "/etc/resolv.conf": b"",
        "/etc/nsswitch.conf": b"passwd: files\ngroup: files\nhosts: files\n",
        "/etc/hostname": b"sandbox\n",
    }


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("bastion-sandbox", 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class BwrapExecution(Execution):
    POLL = 0.02

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        cgroup: ExecCgroup | None,
        spec: RunSpec,
        store: Store,
        fork_id: str,
    ) -> None:
        self.proc = proc
        self.cgroup = cgroup
        self.spec = spec
        self.store = store
        self.fork_id = fork_id
        self.started = time.monotonic()
        self._reason: KilledBy | None = None
        self._lock = threading.Lock()
        if proc.stdout is None or proc.stderr is None:
            raise ValueError("the exec's output must be piped")
        self.stdout = Capped(proc.stdout, spec.output_limit)
        self.stderr = Capped(proc.stderr, spec.output_limit)
        feed(proc.stdin, spec.stdin)

    def kill(self, reason: KilledBy = "wall") -> None:
        with self._lock:
            if self._reason is None:
                self._reason = reason
        if self.cgroup is not None:
            self.cgroup.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def _watch(self) -> None:
        deadline = self.started + self.spec.deadline_seconds
        cpu_ms = self.spec.limits.cpu_seconds * 1000
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill("wall")
                return
            try:
                self.proc.wait(timeout=min(self.POLL, left))
                return
            except subprocess.TimeoutExpired:
                pass
            if self.cgroup is not None:
                if self.cgroup.pids_hit():
                    self.kill("pids")
                    return
                if self.cgroup.cpu_ms() >= cpu_ms:
                    self.kill("cpu")
                    return

    def wait(self) -> ExecResult:
        try:
            self._watch()
            code = self.proc.wait()
            if self.cgroup is not None:
                self.cgroup.kill()  # anything left behind goes with the exec
            duration_ms = int((time.monotonic() - self.started) * 1000)
            stdout = self.stdout.join(5)
            stderr = self.stderr.join(5)
            usage = self.cgroup.usage() if self.cgroup is not None else Usage()
            usage = Usage(
                cpu_ms=usage.cpu_ms,
                memory_peak_bytes=usage.memory_peak_bytes,
                pids_peak=usage.pids_peak,
                disk_bytes=self.store.disk_bytes(self.fork_id),
            )
            exit_code = code if code >= 0 else 128 - code
            return ExecResult(
                exit_code=exit_code,
                stdout=stdout,
                stderr=stderr,
                stdout_truncated=self.stdout.truncated,
                stderr_truncated=self.stderr.truncated,
                duration_ms=duration_ms,
                killed_by=self._killed_by(exit_code, usage),
                usage=usage,
            )
        finally:
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


class BwrapProvider(SandboxProvider):
    name = "bwrap"

    def __init__(self, root: Path, *, run_dir: Path | None = None, uid: int = SANDBOX_UID) -> None:
        self.root = root
        # Forks are mounted under /run (tmpfs, searchable by the sandbox user), one
        # directory per data directory so two instances never share forks.
        digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
        self.run_dir = run_dir or Path("/run/bastion-sandboxes") / digest
        self.uid = uid
        self._store: Store | None = None
        self._layout: Layout | str | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.root, self.run_dir, self.uid)
        return self._store

    def layout(self) -> Layout | str:
        if self._layout is None:
            self._layout = Cgroups.detect()
        return self._layout

    def unavailable(self) -> str | None:
        missing = [
            t for t in ("bwrap", "unshare", "setpriv", "prlimit", "mount") if not shutil.which(t)
        ]
        if missing:
            return "missing " + ", ".join(missing) + " (apt-get install bubblewrap util-linux)"
        if os.geteuid() != 0:
            return "the bwrap backend mounts forks and creates cgroups: run Bastion as root"
        if "overlay" not in Path("/proc/filesystems").read_text():
            return "the kernel has no overlayfs"
        try:
            if int(Path("/proc/sys/user/max_user_namespaces").read_text()) <= 0:
                return "user namespaces are disabled (user.max_user_namespaces = 0)"
        except (OSError, ValueError):
            pass
        layout = self.layout()
        if isinstance(layout, str):
            return layout
        return None

    def _require(self) -> Layout:
        reason = self.unavailable()
        if reason is not None:
            raise Unavailable(reason)
        layout = self.layout()
        if isinstance(layout, str):
            raise Unavailable(layout)
        return layout

    # --- workspaces and forks --------------------------------------------------------

    def staging(self) -> Path:
        path = self.store.root / "staging" / secrets.token_hex(12)
        path.mkdir(parents=True, mode=0o700)
        return path

    def proxy_dir(self) -> Path:
        path = self.run_dir / "proxies"
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o711)  # noqa: S103 (searchable, not listable)
        return path

    def workspace_ids(self) -> list[str]:
        return sorted(p.name for p in self.store.bases.iterdir())

    def prepare_workspace(self, workspace_id: str, digest: str, tree: Path) -> None:
        self.store.install(workspace_id, digest, tree)

    def remove_workspace(self, workspace_id: str) -> None:
        for fork_id in self.store.fork_ids():
            meta = self.store.meta(fork_id)
            if meta is not None and meta.get("workspace") == workspace_id:
                self.store.destroy(fork_id)
        self.store.remove_workspace(workspace_id)

    def fork(self, fork_id: str, workspace_id: str, digest: str, limits: Limits) -> Fork:
        self._require()
        self.store.create(fork_id, workspace_id, digest, limits)
        return Fork(fork_id, workspace_id, limits)

    def diff(self, fork: Fork) -> list[Change]:
        return self.store.diff(fork.id)

    def destroy(self, fork_id: str) -> None:
        self.store.destroy(fork_id)

    # --- executing ---------------------------------------------------------------------

    def start(self, fork: Fork, spec: RunSpec) -> Execution:
        layout = self._require()
        fork_dir = self.store.fork_dir(fork.id)
        if self.store.meta(fork.id) is None:
            raise FileNotFoundError("the fork does not exist")
        cgroup = ExecCgroup(layout, "bastion-sbx-" + secrets.token_hex(8), spec.limits)
        fds: list[int] = []
        try:
            argv = self._argv(fork_dir, spec, fds)
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={
                    "BASTION_CGROUP_PROCS": " ".join(str(p) for p in cgroup.procs),
                    "PATH": HOST_PATH,
                },
                pass_fds=fds,
                start_new_session=True,
            )
        except BaseException:
            cgroup.remove()
            raise
        finally:
            for fd in fds:  # the child holds its own copies
                os.close(fd)
        return BwrapExecution(proc, cgroup, spec, self.store, fork.id)

    def _argv(self, fork_dir: Path, spec: RunSpec, fds: list[int]) -> list[str]:
        def keep(fd: int) -> int:
            fds.append(fd)
            return fd

        limits = spec.limits
        disk = limits.disk_mb << 20
        cmd = ["/bin/sh", "-c", JOIN, "sh", "unshare", "--net", "--"]
        cmd += [
            "prlimit",
            "--core=0",
            "--nofile=1024",
            f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}",
            f"--fsize={disk}",
            "--memlock=65536",
            "--",
        ]
        cmd += ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups", "--"]
        cmd += [
            "bwrap",
            "--unshare-user",
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--disable-userns",
            "--hostname",
            "sandbox",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--clearenv",
        ]
        env = {**BASE_ENV, **spec.env}
        if spec.proxy_socket is not None:
            env["BASTION_PROXY_SOCKET"] = f"{PROXY_DIR}/proxy.sock"
        for key, value in env.items():
            cmd += ["--setenv", key, value]
        cmd += ["--ro-bind", "/usr", "/usr"]
        for path in SYSTEM_DIRS:
            if os.path.islink(path):
                cmd += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                cmd += ["--ro-bind", path, path]
        for path in ETC_FROM_HOST:
            if os.path.exists(path):
                cmd += ["--ro-bind", path, path]
        for target, data in _etc(self.uid).items():
            cmd += ["--ro-bind-data", str(keep(_memfd(data))), target]
        cmd += ["--proc", "/proc", "--dev", "/dev"]
        cmd += ["--bind-fd", str(keep(os.open(fork_dir / "merged", os.O_PATH))), WORKDIR]
        cmd += ["--bind-fd", str(keep(os.open(fork_dir / "tmp", os.O_PATH))), "/tmp"]
        if spec.files:
            cmd += ["--perms", "0755", "--dir", "/run/secrets"]
            for name, secret in spec.files.items():
                cmd += [
                    "--perms",
                    "0400",
                    "--ro-bind-data",
                    str(keep(_memfd(secret))),
                    f"/run/secrets/{name}",
                ]
        if spec.proxy_socket is not None:
            proxy_dir = os.open(spec.proxy_socket.parent, os.O_PATH)
            cmd += ["--bind-fd", str(keep(proxy_dir)), PROXY_DIR]
        cmd += ["--seccomp", str(keep(_memfd(seccomp.program())))]
        cmd += ["--chdir", WORKDIR, "--", *spec.argv]
        return cmd
