"""Reading a sandbox's output without letting it fill Bastion's memory: the first
`limit` bytes are kept, the rest is read and dropped (so the writer never blocks)."""

from __future__ import annotations

import contextlib
import threading
from typing import IO


class Capped:
    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.truncated = False
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536):
                room = self.limit - len(self.data)
                if room > 0:
                    self.data += chunk[:room]
                if len(chunk) > max(room, 0):
                    self.truncated = True
        with contextlib.suppress(OSError):
            stream.close()

    def join(self, timeout: float | None = None) -> bytes:
        self._thread.join(timeout)
        return bytes(self.data)


def feed(stream: IO[bytes] | None, data: bytes) -> None:
    """Write `data` to the sandbox's stdin in the background, then close it."""
    if stream is None:
        return

    def write() -> None:
        with contextlib.suppress(OSError, ValueError):
            if data:
                stream.write(data)
        with contextlib.suppress(OSError, ValueError):
            stream.close()

    threading.Thread(target=write, daemon=True).start()
