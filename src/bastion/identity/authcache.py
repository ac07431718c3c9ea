"""A per-process cache of authenticated credentials that never outlives a change.

Every write that can change what a credential may do (a key, session, user, service
account, custom role, grant or organisation row; an agent run's revocation; any change
to an agent) bumps its organisation's *auth revision* in the same transaction (see
`bastion.core.revisions`, where each domain declares the tables that count). A cached
answer is used only while

- the bearer's secret still matches (checked on every request, constant time),
- the organisation's revision and the instance-wide revision are unchanged (one
  primary-key read per request, so a change on any worker or replica is seen by the
  very next request everywhere), and
- no time-based limit has passed: expiry, idle and absolute timeouts, a grant's end, a
  rotated key's overlap. These are evaluated at decision time from the cached values;
  anything that would refuse the credential goes back to the database.

Rejections are never cached. Bookkeeping writes (`last_seen_at`, `last_used_at`) and a
digest's move to the current pepper version (rehash on use) do not bump the revision.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bastion.core.clientip import Network
from bastion.core.coalesce import SharedReads
from bastion.core.db import AsyncDirectReader, DirectReader
from bastion.core.principal import Principal
from bastion.core.revisions import INSTANCE

# --- the cache ------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A credential that authenticated, as of revisions (`org_rev`, `instance_rev`)."""

    kind: str
    stored_hash: str
    pepper_version: int
    principal: Principal
    org_rev: int
    instance_rev: int
    valid_until: datetime | None  # the earliest instant a time-based limit applies
    last_touched: datetime
    touch_every: float  # seconds between bookkeeping writes (`last_seen_at`/`last_used_at`)
    networks: frozenset[str] = frozenset()  # an API key's networks seen so far
    # The organisation's IP allowlist, parsed once; None: any address.
    allowlist: tuple[Network, ...] | None = None


Revisions = tuple[int, int]
_REVISIONS_SQL = "SELECT org_id, revision FROM auth_revisions WHERE org_id = ? OR org_id = ?"


def _revisions(rows: list[tuple[Any, ...]], org_id: str) -> Revisions:
    found = {row[0]: int(row[1]) for row in rows}
    return found.get(org_id, 0), found.get(INSTANCE, 0)


class AuthCache:
    """Bounded LRU of `Entry` by credential row id; thread-safe."""

    def __init__(
        self,
        reader: DirectReader,
        async_reader: AsyncDirectReader | None = None,
        max_entries: int = 10_000,
    ) -> None:
        self._reader = reader
        self._async_reader = async_reader
        # Concurrent requests of one organisation share a revision read that started
        # after each of them arrived (see `bastion.core.coalesce`).
        self._revision_reads: SharedReads[str, list[tuple[Any, ...]]] = SharedReads(
            self._read_revisions
        )
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __repr__(self) -> str:
        return f"AuthCache(entries={len(self._entries)}, max={self._max})"

    @property
    def local(self) -> bool:
        """Whether a revision read is a local file read (SQLite), cheap enough to run on
        the event loop."""
        return self._reader.local

    def revisions(self, org_id: str) -> Revisions | None:
        """The org's and the instance's current revisions; None when they cannot be
        read (the caller then takes the database path)."""
        try:
            rows = self._reader.fetchall(_REVISIONS_SQL, (org_id, INSTANCE))
        except Exception:  # any driver error: not a cache hit, never an allow
            return None
        return _revisions(rows, org_id)

    async def aclose(self) -> None:
        if self._async_reader is not None:
            await self._async_reader.aclose()

    async def revisions_async(self, org_id: str) -> Revisions | None:
        """`revisions`, awaited on the event loop when an async reader is configured."""
        if self._async_reader is None:
            return self.revisions(org_id)
        try:
            rows = await self._revision_reads.get(org_id)
        except Exception:  # any driver error: not a cache hit, never an allow
            return None
        return _revisions(rows, org_id)

    async def _read_revisions(self, org_id: str) -> list[tuple[Any, ...]]:
        assert self._async_reader is not None  # noqa: S101 - only called with one
        return await self._async_reader.fetchall(_REVISIONS_SQL, (org_id, INSTANCE))

    def get(self, row_id: str) -> Entry | None:
        with self._lock:
            entry = self._entries.get(row_id)
            if entry is not None:
                self._entries.move_to_end(row_id)
            return entry

    def put(self, row_id: str, entry: Entry) -> None:
        with self._lock:
            self._entries[row_id] = entry
            self._entries.move_to_end(row_id)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def drop(self, row_id: str) -> None:
        with self._lock:
            self._entries.pop(row_id, None)

    def update(self, row_id: str, change: Callable[[Entry], Entry]) -> None:
        with self._lock:
            entry = self._entries.get(row_id)
            if entry is not None:
                self._entries[row_id] = change(entry)

    def __len__(self) -> int:
        return len(self._entries)
