"""The per-process cache of organisation indexes, keyed by revisions.

Every write to a table an index reads advances the organisation's auth or authz
revision in its own transaction (see `bastion.identity.authcache`); the revisions are
read before each decision (one row, `Engine.revisions`), and an index is used only
while they are the ones it was built at, so a change is seen by the very next check on
every worker and replica. One build per organisation at a time; the least recently
used organisations are evicted past `max_orgs`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy.orm import Session

from bastion.authz.engine.index import OrgIndex, build_index
from bastion.authz.engine.model import Stats
from bastion.core.db import DirectReader

# One row, four primary-key lookups (NULL, read as 0, for a counter never bumped): about
# half the cost of a UNION of two scans on SQLite, on the path of every decision.
_REVISIONS_SQL = (
    "SELECT (SELECT revision FROM auth_revisions WHERE org_id = ?),"
    " (SELECT revision FROM auth_revisions WHERE org_id = ?),"
    " (SELECT revision FROM authz_revisions WHERE org_id = ?),"
    " (SELECT revision FROM authz_revisions WHERE org_id = ?)"
)


class Engine:
    """Per-process LRU of organisation indexes, each valid for one revision tuple."""

    def __init__(self, reader: DirectReader, max_orgs: int = 256) -> None:
        self._reader = reader
        self._indexes: OrderedDict[str, OrgIndex] = OrderedDict()
        self._max = max_orgs
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}
        self.stats = Stats()

    def __repr__(self) -> str:
        return f"Engine(orgs={len(self._indexes)}, max={self._max})"

    @property
    def local(self) -> bool:
        """Whether the revision read is a local file read (SQLite): cheap enough for the
        event loop."""
        return bool(getattr(self._reader, "local", False))

    def revisions(self, org_id: str) -> tuple[int, ...] | None:
        """The organisation's (auth, instance auth, authz, instance authz) revisions, or
        None when they cannot be read: anything cached per organisation and keyed by
        them is current exactly when they are equal."""
        try:
            (row,) = self._reader.fetchall(_REVISIONS_SQL, (org_id, "*", org_id, "*"))
        except Exception:  # unreadable: rebuild from the database
            return None
        return tuple(int(rev or 0) for rev in row)

    def cached(self, org_id: str) -> OrgIndex | None:
        """The index when it is current (one revision read), else None."""
        revisions = self.revisions(org_id)
        if revisions is None:
            return None
        with self._lock:
            cached = self._indexes.get(org_id)
            if cached is not None and cached.revisions == revisions:
                self._indexes.move_to_end(org_id)
                return cached
        return None

    def index(self, sessions: Callable[[], Session], org_id: str) -> OrgIndex:
        revisions = self.revisions(org_id)
        with self._lock:
            cached = self._indexes.get(org_id)
            if cached is not None and revisions is not None and cached.revisions == revisions:
                self._indexes.move_to_end(org_id)
                return cached
            building = self._building.setdefault(org_id, threading.Lock())
        with building:  # one build per organisation at a time; the others wait for it
            with self._lock:
                cached = self._indexes.get(org_id)
                if cached is not None and revisions is not None and cached.revisions == revisions:
                    return cached
            with sessions() as db:
                built = build_index(db, org_id, revisions or (-1,))
            self.stats.index_builds += 1
            with self._lock:
                if revisions is not None:
                    self._indexes[org_id] = built
                    self._indexes.move_to_end(org_id)
                    while len(self._indexes) > self._max:
                        evicted, _ = self._indexes.popitem(last=False)
                        self._building.pop(evicted, None)
        return built

    def memory(self) -> dict[str, int]:
        with self._lock:
            indexes = list(self._indexes.values())
        return {
            "orgs": len(indexes),
            "max_orgs": self._max,
            "entries": sum(i.size() for i in indexes),
            "memoized": sum(i.memo_size() for i in indexes),
            "listed_ids": sum(i.listed_ids() for i in indexes),
        }
