"""A sandbox's standard streams, served from the thread that waits for it: one poll
feeds stdin and reads stdout and stderr, keeping the first `limit` bytes of each and
reading and dropping the rest (so the writer never blocks, and Bastion's memory is
bounded). No thread is started per exec."""

from __future__ import annotations

import contextlib
import os
import selectors
from typing import IO

CHUNK = 65536


class Capped:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        if len(chunk) > max(room, 0):
            self.truncated = True

    def value(self) -> bytes:
        return bytes(self.data)


class Pipes:
    """stdin fed with `data`, then closed; stdout and stderr read into `out` and `err`.
    `wake_fd` (a pidfd), when given, also ends a `pump` when it becomes readable."""

    def __init__(
        self,
        stdin: IO[bytes],
        stdout: IO[bytes],
        stderr: IO[bytes],
        data: bytes,
        out: Capped,
        err: Capped,
    ) -> None:
        self._sel = selectors.DefaultSelector()
        self._readers: dict[int, tuple[IO[bytes], Capped]] = {}
        for stream, capped in ((stdout, out), (stderr, err)):
            os.set_blocking(stream.fileno(), False)
            self._readers[stream.fileno()] = (stream, capped)
            self._sel.register(stream.fileno(), selectors.EVENT_READ)
        self._stdin = stdin
        self._stdin_fd = stdin.fileno()
        self._pending = memoryview(data)
        if self._pending:
            os.set_blocking(stdin.fileno(), False)
            self._sel.register(stdin.fileno(), selectors.EVENT_WRITE)
        else:
            stdin.close()
        self._wake: int | None = None

    @property
    def reading(self) -> bool:
        """stdout or stderr may still bring something."""
        return bool(self._readers)

    def wake_on(self, fd: int | None) -> None:
        if self._wake is not None:
            self._sel.unregister(self._wake)
        self._wake = fd
        if fd is not None:
            self._sel.register(fd, selectors.EVENT_READ)

    def pump(self, timeout: float) -> None:
        """Move what is ready, waiting at most `timeout` seconds for something."""
        for key, _ in self._sel.select(timeout):
            if key.fd == self._wake:
                continue
            if key.fd == self._stdin_fd:
                self._feed()
            else:
                self._read(key.fd)

    def _feed(self) -> None:
        try:
            self._pending = self._pending[os.write(self._stdin_fd, self._pending[:CHUNK]) :]
        except BlockingIOError:
            return
        except OSError:  # the sandbox closed its stdin
            self._pending = self._pending[:0]
        if not self._pending:
            self._sel.unregister(self._stdin_fd)
            with contextlib.suppress(OSError):
                self._stdin.close()

    def _read(self, fd: int) -> None:
        stream, capped = self._readers[fd]
        try:
            chunk = os.read(fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            capped.add(chunk)
            return
        self._sel.unregister(fd)
        del self._readers[fd]
        stream.close()

    def close(self) -> None:
        for stream, _ in self._readers.values():
            stream.close()
        self._readers.clear()
        if not self._stdin.closed:
            with contextlib.suppress(OSError):
                self._stdin.close()
        self._sel.close()
