"""Background workers: a round of work run in a worker thread every few seconds for the
life of the app (deliveries, sinks, alerts, audit checkpoints and retention, approval
sweeps, secret re-encryption). One loop for all of them, so every worker keeps the same
contract:

- the first round comes one interval after start (the app serves before its chores);
- the interval is read again before every round, so it follows the settings object;
- a failing round is logged with its traceback and the loop goes on: the next round
  retries (rounds are idempotent, and leases keep workers and replicas apart);
- on shutdown the task is cancelled and ends at once: a round already in its thread
  runs to its end there (a thread cannot be stopped), and nothing after it starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import anyio.to_thread
import structlog


@dataclass(frozen=True)
class Occasional:
    """A second step that follows a successful round only once `every` seconds of
    intervals have added up since it last started (an hourly purge after frequent
    delivery rounds). Due at the first round when `at_start`; a failed step waits a
    whole `every` again, so a failing purge does not run every round."""

    fn: Callable[[], object]
    every: float
    at_start: bool = False


async def run_periodically(
    name: str,
    interval: Callable[[], float],
    fn: Callable[[], object],
    *,
    logger: str,
    occasionally: Occasional | None = None,
) -> None:
    """Run `fn` (and `occasionally`) in a worker thread every `interval()` seconds until
    cancelled; a failure is logged on `logger` as "<name> failed"."""
    log = structlog.get_logger(logger)
    since = occasionally.every if occasionally is not None and occasionally.at_start else 0.0
    while True:
        seconds = interval()
        await asyncio.sleep(seconds)
        since += seconds
        try:
            await anyio.to_thread.run_sync(fn)
            if occasionally is not None and since >= occasionally.every:
                since = 0.0
                await anyio.to_thread.run_sync(occasionally.fn)
        except Exception:  # keep the loop alive; the next round retries
            log.exception(f"{name} failed")
