"""How long `/healthz` waits at worst while other work runs: a server whose event loop
is blocked (a costly condition evaluated on it) answers late."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable

from fastapi.testclient import TestClient


def slowest_healthz_while(client: TestClient, work: Callable[[], None], limit: float) -> float:
    """Run `work` in a thread and ask `/healthz` until it finishes (at most `limit`
    seconds); the slowest answer, in seconds."""
    done = threading.Event()

    def run() -> None:
        try:
            work()
        finally:
            done.set()

    gc.collect()  # a full collection of the test session's garbage is not what is measured
    worker = threading.Thread(target=run)
    worker.start()
    slowest = 0.0
    try:
        while not done.is_set():
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
    finally:
        worker.join(timeout=limit)
    return slowest
