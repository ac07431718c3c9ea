"""Bytes bubblewrap reads from a descriptor (the seccomp filter, the generated `/etc`
files), kept once per process in a sealed memfd: each exec opens its own read-only
descriptor of it at offset 0 instead of making and filling a new memfd."""

from __future__ import annotations

import fcntl
import os

SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


class MemFile:
    def __init__(self, data: bytes, name: str = "bastion-sandbox") -> None:
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, SEALS)

    def open(self) -> int:
        """A new descriptor of the bytes (its own offset, read-only, close-on-exec)."""
        return os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_CLOEXEC)
