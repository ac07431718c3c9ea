"""Coalescing of the per-request round trips on the hot path (PostgreSQL and Redis).

Every authenticated request reads its organisation's auth revisions (so a revocation
applies on the very next request) and increments its credential's request counter. With
a network database, each is a round trip; under load, many requests of one organisation
or one credential ask at once. Here they share:

- `SharedReads`: concurrent callers for one key share one read, and a caller is served
  only by a read that *started after it arrived*, never by one already in flight, so
  what it sees is at least as new as the moment it asked (revocation still applies on
  the very next request).
- `SummedIncrements`: concurrent increments of one counter become one increment by their
  number; each caller gets its own distinct count, as if they had gone one by one.

Both belong to one event loop at a time (per-loop state, as asyncio objects are).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


@dataclass
class _Waiting(Generic[V]):
    futures: list[asyncio.Future[V]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None  # the drain serving them, while it runs


class _Batches(Generic[K, V]):
    """Callers of one key queue; one drain per key serves them in batches, each batch
    made only of callers that arrived before its round trip starts."""

    def __init__(self) -> None:
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[K, _Waiting[V]]] = (
            weakref.WeakKeyDictionary()
        )
        self.round_trips = 0

    async def _join(self, key: K) -> V:
        loop = asyncio.get_running_loop()
        keys = self._loops.setdefault(loop, {})
        waiting = keys.setdefault(key, _Waiting())
        future: asyncio.Future[V] = loop.create_future()
        waiting.futures.append(future)
        if waiting.task is None:
            waiting.task = loop.create_task(self._drain(keys, key, waiting))
        return await future

    async def _serve(self, key: K, callers: int) -> list[V]:
        raise NotImplementedError

    async def _drain(self, keys: dict[K, _Waiting[V]], key: K, waiting: _Waiting[V]) -> None:
        try:
            while waiting.futures:
                batch, waiting.futures = waiting.futures, []
                self.round_trips += 1
                try:
                    answers = await self._serve(key, len(batch))
                except Exception as error:
                    for future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for future, answer in zip(batch, answers, strict=True):
                    if not future.done():  # a caller that left (cancelled) is skipped
                        future.set_result(answer)
        finally:
            waiting.task = None
            if keys.get(key) is waiting and not waiting.futures:
                del keys[key]


class SharedReads(_Batches[K, V]):
    """`await reads.get(key)`: `fetch(key)` shared by concurrent callers of one key."""

    def __init__(self, fetch: Callable[[K], Awaitable[V]]) -> None:
        super().__init__()
        self._fetch = fetch

    async def get(self, key: K) -> V:
        return await self._join(key)

    async def _serve(self, key: K, callers: int) -> list[V]:
        value = await self._fetch(key)
        return [value] * callers


class SummedIncrements(_Batches[K, int]):
    """`await counts.add(key)`: the counter's value after this caller's increment, with
    concurrent increments of one key sent as one `increment(key, n)` that returns the
    value after all n."""

    def __init__(self, increment: Callable[[K, int], Awaitable[int]]) -> None:
        super().__init__()
        self._increment = increment

    async def add(self, key: K) -> int:
        return await self._join(key)

    async def _serve(self, key: K, callers: int) -> list[int]:
        total = await self._increment(key, callers)
        return list(range(total - callers + 1, total + 1))
