"""Waiting for a tool call's decision without holding a database transaction.

Each event loop (one per worker) runs one poller while anyone waits: every
`interval` seconds it asks which waited-for calls were decided — by this worker or any
other — and wakes their waiters. One query per interval however many agents wait.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable

import anyio.to_thread
from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.agents.models import ToolCall


class _LoopState:
    def __init__(self) -> None:
        self.waiting: dict[str, set[asyncio.Event]] = {}
        self.task: asyncio.Task[None] | None = None


class Waiters:
    def __init__(self, sessions: Callable[[], Session], interval: float = 0.025) -> None:
        self._sessions = sessions
        self._interval = interval
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"Waiters(interval={self._interval})"

    async def wait(self, call_id: str, seconds: float) -> None:
        """Return when the call is decided or after `seconds`."""
        if seconds <= 0:
            return
        loop = asyncio.get_running_loop()
        state = self._loops.setdefault(loop, _LoopState())
        event = asyncio.Event()
        state.waiting.setdefault(call_id, set()).add(event)
        if state.task is None or state.task.done():
            state.task = loop.create_task(self._poll(state))
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            pass
        finally:
            events = state.waiting.get(call_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del state.waiting[call_id]

    def _decided(self, ids: list[str]) -> list[str]:
        with self._sessions() as db:
            stmt = select(ToolCall.id).where(ToolCall.id.in_(ids), ToolCall.decision != "pending")
            return list(db.execute(stmt).scalars())

    async def _poll(self, state: _LoopState) -> None:
        while state.waiting:
            try:
                decided = await anyio.to_thread.run_sync(self._decided, list(state.waiting))
            except Exception:  # the database blinked: waiters time out and re-read
                decided = []
            for call_id in decided:
                for event in state.waiting.get(call_id, ()):
                    event.set()
            await asyncio.sleep(self._interval)
