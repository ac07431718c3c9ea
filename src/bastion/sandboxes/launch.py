"""Starting bubblewrap for one exec with a single program on the exec path.

The calling thread — only it — enters a new network namespace (owned by the host's
user namespace, its loopback down: no `unshare` program), becomes the sandbox's host
user with no supplementary groups (root kept as its saved user only; no `setpriv`),
starts bubblewrap (Python uses vfork: nothing of Bastion is copied), and comes back to
root and to the host's namespace at once. bubblewrap thus runs as that user alone,
without any capability (`execve` with no root id). The calls are made directly on the
thread — `unshare(2)`, `setns(2)`, and the raw `setgroups`/`setresgid`/`setresuid`
system calls: libc's would change every thread of Bastion.

bubblewrap gets `--info-fd` and `--block-fd`: it reports the sandbox's first process,
which then waits, its namespaces and mounts set up, before it loads the seccomp filter
and runs anything of the command. Meanwhile its rlimits are set with `prlimit(2)` (no
`prlimit` program; without CAP_SYS_RESOURCE that needs the caller's *real* user and
group to be the sandbox's: the thread takes them for those calls only) and its cgroup
is checked (`bastion.sandboxes.cgroups`: on v1 it was born there); then it is let go:
every process of the command is created inside the cgroup, under the rlimits. Anything
failing on the way kills bubblewrap (fail closed).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import platform
import resource
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from bastion.sandboxes.cgroups import ExecCgroup

CLONE_NEWNET = 0x40000000
INFO_LIMIT = 4096
# setgroups, setresgid, setresuid: the system calls' numbers, by architecture.
SETID_CALLS = {"x86_64": (116, 119, 117), "aarch64": (159, 149, 147)}
UNCHANGED = -1


class LaunchFailed(OSError):
    """bubblewrap exited or misbehaved before the command was let go."""


@dataclass(frozen=True)
class Rlimits:
    cpu_seconds: int
    file_bytes: int
    nofile: int = 1024
    memlock_bytes: int = 65536

    def pairs(self) -> list[tuple[int, tuple[int, int]]]:
        return [
            (resource.RLIMIT_CORE, (0, 0)),
            (resource.RLIMIT_NOFILE, (self.nofile, self.nofile)),
            # Soft at the limit (SIGXCPU), hard one second later (SIGKILL).
            (resource.RLIMIT_CPU, (self.cpu_seconds, self.cpu_seconds + 1)),
            (resource.RLIMIT_FSIZE, (self.file_bytes, self.file_bytes)),
            (resource.RLIMIT_MEMLOCK, (self.memlock_bytes, self.memlock_bytes)),
        ]


class _Libc:
    """The raw system calls the spawning thread makes on itself."""

    _lib: ctypes.CDLL | None = None

    @classmethod
    def call(cls, what: str, fn: str, *args: int) -> None:
        if cls._lib is None:
            cls._lib = ctypes.CDLL(None, use_errno=True)
        if getattr(cls._lib, fn)(*args) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")


def unsupported() -> str | None:
    """Why this host's architecture cannot start sandboxes, or None."""
    if platform.machine() not in SETID_CALLS:
        return f"sandboxes need x86_64 or aarch64 (this host is {platform.machine()})"
    return None


@contextlib.contextmanager
def _new_netns() -> Iterator[None]:
    """The calling thread in a new network namespace (a loopback only, down), back in
    its own after; a child started meanwhile stays in the new one."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _Libc.call("unshare(CLONE_NEWNET)", "unshare", CLONE_NEWNET)
        try:
            yield
        finally:
            _Libc.call("setns(own network namespace)", "setns", own, CLONE_NEWNET)
    finally:
        os.close(own)


@contextlib.contextmanager
def _real_ids(uid: int) -> Iterator[None]:
    """The calling thread's real user and group are `uid` (effective stay root)."""
    _, setresgid, setresuid = SETID_CALLS[platform.machine()]
    ruid, rgid = os.getuid(), os.getgid()
    _Libc.call("setresgid", "syscall", setresgid, uid, UNCHANGED, UNCHANGED)
    try:
        _Libc.call("setresuid", "syscall", setresuid, uid, UNCHANGED, UNCHANGED)
        try:
            yield
        finally:
            _Libc.call("setresuid", "syscall", setresuid, ruid, UNCHANGED, UNCHANGED)
    finally:
        _Libc.call("setresgid", "syscall", setresgid, rgid, UNCHANGED, UNCHANGED)


@contextlib.contextmanager
def _as_user(uid: int) -> Iterator[None]:
    """The calling thread — only it — is `uid` (real and effective; group `uid`, no
    supplementary groups) meanwhile, keeping root as its saved user to come back to. A
    program it starts runs as `uid` alone: `execve` makes the saved ids the effective
    ones and, none being root, drops every capability. (Unlike `Popen(user=…)`, this
    lets Python start it with vfork: no copy of Bastion's page tables per exec.)"""
    setgroups, setresgid, setresuid = SETID_CALLS[platform.machine()]
    groups = os.getgroups()
    ruid, euid, suid = os.getresuid()
    rgid, egid, sgid = os.getresgid()
    _Libc.call("setgroups", "syscall", setgroups, 0, 0)
    try:
        _Libc.call("setresgid", "syscall", setresgid, uid, uid, UNCHANGED)
        try:
            _Libc.call("setresuid", "syscall", setresuid, uid, uid, UNCHANGED)
            try:
                yield
            finally:
                _Libc.call("setresuid", "syscall", setresuid, ruid, euid, suid)
        finally:
            _Libc.call("setresgid", "syscall", setresgid, rgid, egid, sgid)
    finally:
        array = (ctypes.c_uint * max(1, len(groups)))(*groups)
        _Libc.call("setgroups", "syscall", setgroups, len(groups), ctypes.addressof(array))


def _child_pid(fd: int, proc: subprocess.Popen[bytes]) -> int:
    """bubblewrap's `{"child-pid": N}` from its info pipe (EOF: it failed first)."""
    data = b""
    with os.fdopen(fd, "rb", buffering=0) as info:
        while len(data) < INFO_LIMIT:
            chunk = info.read(INFO_LIMIT)
            if not chunk:
                break
            data += chunk
    try:
        pid = json.loads(data)["child-pid"]
    except (ValueError, KeyError, TypeError):
        code = proc.poll()
        raise LaunchFailed(f"bubblewrap did not start the sandbox (exit status {code})") from None
    if not isinstance(pid, int) or pid <= 1:
        raise LaunchFailed("bubblewrap reported no usable process id")
    return pid


def _dead(exc: OSError) -> bool:
    """The sandbox's first process died while being set up (a mount failed): nothing of
    the command ran; bubblewrap's exit status and message say why."""
    return exc.errno in (errno.ESRCH, errno.EPIPE)


def launch(
    argv: Sequence[str],
    *,
    uid: int,
    env: Mapping[str, str],
    pass_fds: Sequence[int],
    cgroup: ExecCgroup,
    rlimits: Rlimits,
) -> subprocess.Popen[bytes]:
    """Start `argv` (a bubblewrap command line; `--info-fd`/`--block-fd` are added here)
    as `uid` in a new network namespace and in `cgroup`, before the sandbox may run the
    command. The caller closes `pass_fds`."""
    info_r, info_w = os.pipe2(os.O_CLOEXEC)
    block_r, block_w = os.pipe2(os.O_CLOEXEC)
    # Each descriptor is closed exactly once, by whoever takes it out of here.
    mine = {"info_r": info_r, "info_w": info_w, "block_r": block_r, "block_w": block_w}

    def close(name: str) -> None:
        fd = mine.pop(name, None)
        if fd is not None:
            os.close(fd)

    proc: subprocess.Popen[bytes] | None = None
    try:
        with _new_netns(), cgroup.born_inside(), _as_user(uid):
            proc = subprocess.Popen(
                [argv[0], "--info-fd", str(info_w), "--block-fd", str(block_r), *argv[1:]],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(env),
                pass_fds=(*pass_fds, info_w, block_r),
                start_new_session=True,
            )
        close("info_w")  # so that the read ends if bubblewrap exits first
        close("block_r")
        pid = _child_pid(mine.pop("info_r"), proc)
        try:
            with _real_ids(uid):
                for which, limits in rlimits.pairs():
                    resource.prlimit(pid, which, limits)
            cgroup.adopt(pid)
            os.write(block_w, b"1")
        except OSError as exc:
            if not _dead(exc):
                raise
        return proc
    except BaseException:
        if proc is not None:
            _kill(proc)
        raise
    finally:
        for name in list(mine):
            with contextlib.suppress(OSError):
                close(name)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
