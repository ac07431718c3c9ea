"""Coalesced round trips: shared reads never serve a caller with a read that started
before it arrived; summed increments give every caller its own count."""

from __future__ import annotations

import asyncio

import pytest

from bastion.core.coalesce import SharedReads, SummedIncrements


def test_concurrent_callers_share_reads_and_none_gets_a_read_older_than_itself() -> None:
    """The value read is the number of writes so far. Each caller records how many writes
    had happened when it asked; its answer must be at least that (a revocation made
    before a request is seen by it), while 200 callers cost only a few reads."""
    state = {"writes": 0}

    async def fetch(key: str) -> int:
        seen = state["writes"]  # the read's snapshot is taken when it starts
        await asyncio.sleep(0.002)
        return seen

    reads: SharedReads[str, int] = SharedReads(fetch)

    async def caller(i: int) -> tuple[int, int]:
        await asyncio.sleep((i % 20) * 0.0005)
        state["writes"] += 1  # a change just before this caller asks
        asked_after = state["writes"]
        return asked_after, await reads.get("org")

    async def main() -> list[tuple[int, int]]:
        return await asyncio.gather(*(caller(i) for i in range(200)))

    answers = asyncio.run(main())
    assert all(got >= asked for asked, got in answers)
    assert reads.round_trips < 50


def test_a_failed_read_fails_its_batch_and_the_next_caller_reads_again() -> None:
    calls = {"n": 0}

    async def fetch(key: str) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("lost")
        return 7

    reads: SharedReads[str, int] = SharedReads(fetch)

    async def main() -> None:
        with pytest.raises(ConnectionError):
            await reads.get("org")
        assert await reads.get("org") == 7

    asyncio.run(main())


def test_summed_increments_give_each_caller_a_distinct_count() -> None:
    counter = {"value": 0}

    async def increment(key: str, amount: int) -> int:
        await asyncio.sleep(0.001)
        counter["value"] += amount
        return counter["value"]

    counts: SummedIncrements[str] = SummedIncrements(increment)

    async def main() -> list[int]:
        return await asyncio.gather(*(counts.add("key") for _ in range(300)))

    got = asyncio.run(main())
    assert sorted(got) == list(range(1, 301))  # as if one by one
    assert counter["value"] == 300
    assert counts.round_trips < 10
