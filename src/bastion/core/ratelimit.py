"""Rate limits and throttles on the `limits` library: in memory by default, Redis when
`BASTION_REDIS_URL` is set (then every worker and replica shares the counters)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter


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


class RateLimiter:
    def __init__(self, redis_url: str | None = None, namespace: str = "bastion") -> None:
        self._ns = namespace
        uri = redis_url if redis_url else "memory://"
        self._local = redis_url is None
        self._storage = storage_from_string(uri)
        self._moving = MovingWindowRateLimiter(self._storage)
        self._fixed = FixedWindowRateLimiter(self._storage)

    def __repr__(self) -> str:
        return "RateLimiter(<storage>)"

    @property
    def local(self) -> bool:
        """Counters in this process's memory: taking one never blocks on I/O."""
        return self._local

    def _quota(
        self,
        limiter: FixedWindowRateLimiter | MovingWindowRateLimiter,
        item: RateLimitItem,
        key: str,
    ) -> Quota:
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

    # Request quotas count every request (fixed window, cheap).
    def take(self, item: RateLimitItem, key: str) -> tuple[bool, Quota]:
        allowed = self._fixed.hit(item, self._ns, key)
        return allowed, self._quota(self._fixed, item, key)

    def reset(self) -> None:
        self._storage.reset()
