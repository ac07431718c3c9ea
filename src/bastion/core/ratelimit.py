"""Rate limits and throttles on the `limits` library: in memory by default, Redis when
`BASTION_REDIS_URL` is set (then every worker and replica shares the counters).

Request quotas kept in memory are plain per-key window counters (`_LocalWindows`):
`limits`' memory storage starts a timer thread to expire keys whenever its last one
has ended, which on the path of every request costs more than the count itself."""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from bastion.core.coalesce import SummedIncrements


@dataclass(frozen=True)
class Quota:
    limit: int
    remaining: int
    reset_after: int  # seconds until the window resets

    @property
    def exhausted(self) -> bool:
        return self.remaining <= 0


def per_window(amount: int, seconds: int) -> RateLimitItem:
    return RateLimitItemPerSecond(amount, seconds)


class _LocalWindows:
    """Fixed-window counters in this process: key -> (window, count). A key's count
    restarts when its window changes; stale keys are dropped when the table grows."""

    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def incr(self, key: str, window: int) -> int:
        with self._lock:
            seen, count = self._counts.get(key, (window, 0))
            count = count + 1 if seen == window else 1
            self._counts[key] = (window, count)
            if len(self._counts) > self.MAX_KEYS:
                self._counts = {k: v for k, v in self._counts.items() if v[0] == window}
            return count

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


class RateLimiter:
    def __init__(self, redis_url: str | None = None, namespace: str = "bastion") -> None:
        self._ns = namespace
        uri = redis_url if redis_url else "memory://"
        self._local = redis_url is None
        self._uri = uri
        self._async_storages: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        # Concurrent increments of one Redis counter: one INCRBY (see core.coalesce).
        self._increments: SummedIncrements[tuple[str, int]] = SummedIncrements(self._incr_by)
        self._storage: Storage = storage_from_string(uri)  # type: ignore[assignment]
        self._moving = MovingWindowRateLimiter(self._storage)
        self._windows = _LocalWindows()

    def __repr__(self) -> str:
        return "RateLimiter(<storage>)"

    @property
    def local(self) -> bool:
        """Counters in this process's memory: taking one never blocks on I/O."""
        return self._local

    def _quota(self, limiter: MovingWindowRateLimiter, item: RateLimitItem, key: str) -> Quota:
        stats = limiter.get_window_stats(item, self._ns, key)
        reset_after = max(1, int(stats.reset_time - time.time() + 0.999))
        return Quota(item.amount, max(0, stats.remaining), reset_after)

    # Throttles count failures only (moving window): check before, hit on failure.
    def throttle_state(self, item: RateLimitItem, key: str) -> Quota:
        return self._quota(self._moving, item, key)

    def record_failure(self, item: RateLimitItem, key: str) -> None:
        self._moving.hit(item, self._ns, key)

    def clear(self, item: RateLimitItem, key: str) -> None:
        self._moving.clear(item, self._ns, key)

    # Request quotas count every request: windows aligned to the clock, so one atomic
    # increment (one Redis round trip) both counts and tells what is left.
    def take(self, item: RateLimitItem, key: str) -> tuple[bool, Quota]:
        period = item.get_expiry()
        now = time.time()
        window = int(now // period)
        if self._local:
            count = self._windows.incr(f"{period}/{item.key_for(key)}", window)
        else:
            count = self._storage.incr(f"{self._ns}/quota/{item.key_for(key)}/{window}", period)
        return self._verdict(item, count, window, period, now)

    async def take_async(self, item: RateLimitItem, key: str) -> tuple[bool, Quota]:
        """`take` without blocking the event loop: in-process counters directly, Redis
        through its asyncio client (one round trip, opened lazily on the running loop)."""
        if self._local:
            return self.take(item, key)
        period = item.get_expiry()
        now = time.time()
        window = int(now // period)
        count = await self._incr_async(f"quota/{item.key_for(key)}", window, period)
        return self._verdict(item, count, window, period, now)

    async def tally(self, key: str, period: int, now: float) -> tuple[int, int]:
        """Count one occurrence of `key` in the `period`-second window (aligned to the
        clock) that holds `now`: (the window's number, its count so far)."""
        window = int(now // period)
        if self._local:
            return window, self._windows.incr(f"tally/{period}/{key}", window)
        return window, await self._incr_async(f"tally/{period}/{key}", window, period)

    async def _incr_async(self, key: str, window: int, period: int) -> int:
        return await self._increments.add((f"{self._ns}/{key}/{window}", period))

    async def _incr_by(self, counter: tuple[str, int], amount: int) -> int:
        # asyncio clients belong to the loop that made them: one per running loop.
        loop = asyncio.get_running_loop()
        storage: Any = self._async_storages.get(loop)
        if storage is None:
            storage = storage_from_string(f"async+{self._uri}", implementation="redispy")
            self._async_storages[loop] = storage
        key, period = counter
        return int(await storage.incr(key, period, amount=amount))

    @staticmethod
    def _verdict(
        item: RateLimitItem, count: int, window: int, period: int, now: float
    ) -> tuple[bool, Quota]:
        reset_after = max(1, int((window + 1) * period - now + 0.999))
        remaining = max(0, item.amount - count)
        return count <= item.amount, Quota(item.amount, remaining, reset_after)

    def reset(self) -> None:
        self._storage.reset()
        self._windows.reset()
