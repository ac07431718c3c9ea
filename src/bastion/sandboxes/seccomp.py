"""The seccomp deny-list every sandboxed process runs under (bubblewrap loads it last,
just before the command): system calls that reach past the sandbox fail with EPERM,
`clone3` with ENOSYS (so threads fall back to `clone`, whose namespace flags are
checked here), sockets other than Unix sockets with EAFNOSUPPORT, and any other
architecture's calls kill the process.

Compiled by libseccomp (`pyseccomp`) to the classic-BPF program bubblewrap takes, once
per process (`program_file()`, a sealed memfd each exec opens anew: compiling costs
about a millisecond, reopening microseconds).
"""

from __future__ import annotations

import errno
import functools
import io
import socket

import pyseccomp as sc

from bastion.sandboxes.memfile import MemFile

# Namespaces, mounts, tracing, kernel keys, BPF, modules, and other calls no sandboxed
# workload needs and every escape uses.
DENIED = (
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "syslog",
    "acct",
    "quotactl",
    "open_by_handle_at",
    "name_to_handle_at",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "iopl",
    "ioperm",
    "lookup_dcookie",
    "personality",
    "fanotify_init",
)
# clone(2) flags that make a namespace.
CLONE_NEW = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000
CLONE_NEW |= 0x40000000 | 0x00000080  # CLONE_NEWNET, CLONE_NEWCGROUP


@functools.cache
def program() -> bytes:
    """The compiled filter (x86-64 / the host's native architecture)."""
    f = sc.SyscallFilter(sc.ALLOW)
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for name in DENIED:
        try:
            f.add_rule(sc.ERRNO(errno.EPERM), name)
        except (RuntimeError, ValueError, OSError):  # unknown on this architecture
            continue
    for flag in _bits(CLONE_NEW):
        f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.NE, socket.AF_UNIX))
    f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socketpair", sc.Arg(0, sc.NE, socket.AF_UNIX))
    buf = io.BytesIO()
    with _tempfile() as fh:
        f.export_bpf(fh)
        fh.seek(0)
        buf.write(fh.read())
    return buf.getvalue()


@functools.cache
def program_file() -> MemFile:
    """The compiled filter, kept for every exec of this process."""
    return MemFile(program(), "bastion-seccomp")


def _bits(mask: int) -> list[int]:
    return [1 << i for i in range(32) if mask & (1 << i)]


def _tempfile() -> io.BufferedRandom:
    import tempfile

    return tempfile.TemporaryFile()  # export_bpf writes to a real file descriptor
