"""The one background-worker loop every periodic job of the app runs in: a failing
round is logged and the loop goes on, the occasional step (hourly purges) runs on its
own cadence, and shutdown ends the loop at once, starting nothing after the round
already in its thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from bastion.api.background import Occasional, run_periodically

TICK = 0.001


async def _until(done: Callable[[], bool], task: asyncio.Task[None]) -> None:
    """Wait (at most a few seconds) for `done`, then cancel `task` and await its end."""
    for _ in range(5000):
        if done():
            break
        await asyncio.sleep(TICK)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_failing_round_is_logged_and_the_next_round_runs() -> None:
    calls: list[int] = []

    def round_() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("boom")

    async def main() -> None:
        task = asyncio.create_task(
            run_periodically("test round", lambda: TICK, round_, logger="bastion.test")
        )
        await _until(lambda: len(calls) >= 3, task)

    with capture_logs() as logs:
        asyncio.run(main())
    assert len(calls) >= 3
    [failed] = [e for e in logs if e["event"] == "test round failed"]
    assert failed["log_level"] == "error"
    assert failed["exc_info"] is True


@pytest.mark.parametrize(("at_start", "due"), [(False, [4, 8]), (True, [1, 5, 9])])
def test_the_occasional_step_runs_once_its_intervals_add_up(at_start: bool, due: list[int]) -> None:
    rounds: list[int] = []
    purged_after: list[int] = []

    async def main() -> None:
        step = Occasional(lambda: purged_after.append(len(rounds)), TICK * 3.5, at_start)
        task = asyncio.create_task(
            run_periodically(
                "test round",
                lambda: TICK,
                lambda: rounds.append(1),
                logger="bastion.test",
                occasionally=step,
            )
        )
        await _until(lambda: len(rounds) >= 10, task)

    asyncio.run(main())
    assert purged_after[: len(due)] == due


def test_shutdown_ends_the_loop_at_once_and_starts_nothing_after() -> None:
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()
    purged: list[bool] = []

    def round_() -> None:
        entered.set()
        release.wait(5)
        finished.set()

    async def main() -> None:
        task = asyncio.create_task(
            run_periodically(
                "test round",
                lambda: TICK,
                round_,
                logger="bastion.test",
                occasionally=Occasional(lambda: purged.append(True), 3600, at_start=True),
            )
        )
        await asyncio.to_thread(entered.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task  # at once: shutdown does not wait for the round
        assert not finished.is_set()
        release.set()
        await asyncio.to_thread(finished.wait, 5)

    asyncio.run(main())
    assert finished.is_set()  # the round ran to its end in its thread
    assert purged == []  # the step was due, but nothing starts after a cancellation
