"""The default backend: bubblewrap on this host.

Each exec runs as an unprivileged host user (`nobody` by default) in new user, mount,
PID, IPC, UTS, cgroup and network namespaces — the network namespace has no interface
up, so nothing is reachable — with every capability dropped, a cleared environment,
rlimits, the seccomp deny-list (`bastion.sandboxes.seccomp`) and its own cgroup
(`bastion.sandboxes.cgroups`). It sees the OS's `/usr` read-only, a generated `/etc`,
its fork of the workspace at `/workspace` and the fork's `/tmp`; nothing else of the
host. A monitor kills the whole cgroup at the wall-clock or CPU-time limit, or when
the pids limit is hit (a fork bomb ends at once).

bubblewrap is the only program started per exec (`bastion.sandboxes.launch`: the
network namespace, the cgroup and the rlimits are set up from here, before the command
may run); the seccomp filter and `/etc` are made once per process, the fork once per
run (`bastion.sandboxes.forks`), and the exec is watched without a thread of its own
(`bastion.sandboxes.watch`).

Bastion must run as root to mount forks and create cgroups; `unavailable()` says what
is missing otherwise.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import time
from pathlib import Path

from bastion.sandboxes import seccomp
from bastion.sandboxes.cgroups import Cgroups, ExecCgroup, Layout
from bastion.sandboxes.forks import Store
from bastion.sandboxes.launch import Rlimits, launch, unsupported
from bastion.sandboxes.memfile import MemFile
from bastion.sandboxes.provider import (
    Change,
    Execution,
    Fork,
    Limits,
    RunSpec,
    SandboxProvider,
    Unavailable,
)
from bastion.sandboxes.watch import BwrapExecution

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
TOOLS = ("bwrap", "mount", "umount")
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
    """A `file` secret's bytes for one exec (never on disk; gone with the exec)."""
    fd = os.memfd_create("bastion-secret", os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


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
        self._bwrap: str | None = None  # its path, once every check passed
        self._static: list[str] | None = None
        self._etc: dict[str, MemFile] | None = None

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
        """Why execs cannot run here. Checked until it first passes, then known (a tool
        removed later fails the exec that needs it: 503)."""
        if self._bwrap is not None:
            return None
        missing = [t for t in TOOLS if not shutil.which(t, path=HOST_PATH)]
        if missing:
            return "missing " + ", ".join(missing) + " (apt-get install bubblewrap mount)"
        arch = unsupported()
        if arch is not None:
            return arch
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
        self._bwrap = shutil.which("bwrap", path=HOST_PATH)
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
        limits = spec.limits
        began = time.perf_counter()
        cgroup = ExecCgroup(layout, "bastion-sbx-" + secrets.token_hex(8), limits)
        made = time.perf_counter()
        fds: list[int] = []
        try:
            argv = self._argv(fork_dir, spec, fds)
            proc = launch(
                argv,
                uid=self.uid,
                env={"PATH": HOST_PATH},
                pass_fds=fds,
                cgroup=cgroup,
                rlimits=Rlimits(cpu_seconds=limits.cpu_seconds, file_bytes=limits.disk_mb << 20),
            )
        except FileNotFoundError as exc:  # bubblewrap went away since the check
            cgroup.remove()
            raise Unavailable(f"cannot start bubblewrap: {exc.strerror}") from None
        except BaseException:
            cgroup.remove()
            raise
        finally:
            for fd in fds:  # the child holds its own copies
                os.close(fd)
        timings = {"cgroup": (made - began) * 1000, "spawn": (time.perf_counter() - made) * 1000}
        return BwrapExecution(proc, cgroup, spec, self.store, fork.id, timings)

    def _static_argv(self) -> list[str]:
        """What every exec's command line starts with: the namespaces, `/usr` and the
        system directories (looked at once)."""
        if self._static is None:
            cmd = [
                self._bwrap or "bwrap",
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
                "--ro-bind",
                "/usr",
                "/usr",
            ]
            for path in SYSTEM_DIRS:
                if os.path.islink(path):
                    cmd += ["--symlink", os.readlink(path), path]
                elif os.path.isdir(path):
                    cmd += ["--ro-bind", path, path]
            for path in ETC_FROM_HOST:
                if os.path.exists(path):
                    cmd += ["--ro-bind", path, path]
            cmd += ["--proc", "/proc", "--dev", "/dev"]
            self._static = cmd
        return list(self._static)

    def _etc_files(self) -> dict[str, MemFile]:
        if self._etc is None:
            self._etc = {target: MemFile(data) for target, data in _etc(self.uid).items()}
        return self._etc

    def _argv(self, fork_dir: Path, spec: RunSpec, fds: list[int]) -> list[str]:
        """bubblewrap's command line for one exec; the descriptors it reads are appended
        to `fds` (the caller closes them)."""

        def keep(fd: int) -> str:
            fds.append(fd)
            return str(fd)

        cmd = self._static_argv()
        env = {**BASE_ENV, **spec.env}
        if spec.proxy_socket is not None:
            env["BASTION_PROXY_SOCKET"] = f"{PROXY_DIR}/proxy.sock"
        for key, value in env.items():
            cmd += ["--setenv", key, value]
        for target, blob in self._etc_files().items():
            cmd += ["--ro-bind-data", keep(blob.open()), target]
        cmd += ["--bind-fd", keep(os.open(fork_dir / "merged", os.O_PATH)), WORKDIR]
        cmd += ["--bind-fd", keep(os.open(fork_dir / "tmp", os.O_PATH)), "/tmp"]
        if spec.files:
            cmd += ["--perms", "0755", "--dir", "/run/secrets"]
            for name, secret in spec.files.items():
                fd = keep(_memfd(secret))
                cmd += ["--perms", "0400", "--ro-bind-data", fd, f"/run/secrets/{name}"]
        if spec.proxy_socket is not None:
            proxy_dir = os.open(spec.proxy_socket.parent, os.O_PATH)
            cmd += ["--bind-fd", keep(proxy_dir), PROXY_DIR]
        cmd += ["--seccomp", keep(seccomp.program_file().open())]
        cmd += ["--chdir", WORKDIR, "--", *spec.argv]
        return cmd
