"""The engine's vocabulary: relation levels, ACL entries and effective ACLs, documents,
rules, subjects, decisions and the counters an operator reads.

Plain immutable values (a `Subject` also carries the per-rule-set memo slots filled by
`ruleset.RuleSet`), shared by every other module of the engine and by its callers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from bastion.core.permissions import Permission

if TYPE_CHECKING:
    from bastion.authz.engine.ruleset import Outcome

LEVELS = {"reader": 1, "editor": 2, "owner": 3}
MANAGE_LEVEL = 4
NEEDS = {"read": 1, "edit": 2, "share": 3, "delete": 3, "manage": MANAGE_LEVEL}
RESOURCE_TYPES = ("source", "document")


@dataclass(frozen=True)
class Entry:
    principal: str
    level: int
    expires_at: datetime | None

    def live(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    trace: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Acl:
    """A resource's effective entries in decision order (a document's own, then its
    source's when it inherits). `best` folds the entries without expiry: principal ->
    (-level, position, the allowed decision naming it) of its first highest entry, so
    the smallest value over a subject's principals is what walking `entries` finds.
    With `timed` (some entry expires) decisions walk `entries` instead."""

    entries: tuple[Entry, ...]
    best: dict[str, tuple[int, int, Decision]]
    timed: bool


def make_acl(entries: tuple[Entry, ...]) -> Acl:
    best: dict[str, tuple[int, int, Decision]] = {}
    timed = False
    for position, entry in enumerate(entries):
        if entry.expires_at is not None:
            timed = True
            continue
        held = best.get(entry.principal)
        if held is None or (-entry.level, position) < held[:2]:
            reason = f"acl:{entry.principal}"
            best[entry.principal] = (-entry.level, position, Decision(True, reason))
    return Acl(entries, best, timed)


NO_ACL = make_acl(())
NO_METADATA: Mapping[str, Any] = {}


class Doc(NamedTuple):
    source_id: str
    inherit: bool
    metadata: Mapping[str, Any]
    acl: tuple[Entry, ...]  # its own entries
    effective: Acl  # what decides: its own entries, then its source's if it inherits
    # Without entries of its own: the source whose entries decide ("" when it does not
    # inherit: nothing does); None when it has entries of its own.
    plain: str | None = None


@dataclass(frozen=True)
class Rule:
    id: str
    effect: str
    action: str
    resource_type: str
    condition: str
    program: Any = field(repr=False, compare=False)


@dataclass(frozen=True)
class Subject:
    id: str
    kind: str  # user | service_account | team | agent
    teams: frozenset[str]
    attributes: Mapping[str, Any]
    manage_all: bool
    perms: frozenset[Permission] = frozenset()
    sources: frozenset[str] = frozenset()  # agents: the data sources connected to them
    # Its own id and its teams, for ACL lookups; and per rule set, what the rules read of
    # it (filled lazily, see `RuleSet.subject_sig`).
    keys: tuple[str, ...] = field(init=False, repr=False, compare=False)
    sigs: dict[Any, int | None] = field(init=False, repr=False, compare=False)
    outcomes: dict[Any, dict[Any, Outcome]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", (self.id, *sorted(self.teams)))
        object.__setattr__(self, "sigs", {})
        object.__setattr__(self, "outcomes", {})

    @property
    def principals(self) -> frozenset[str]:
        return frozenset({self.id}) | self.teams


UNKNOWN_SUBJECT = Decision(False, "unknown_subject")
UNKNOWN_ACTION = Decision(False, "unknown_action")
UNKNOWN_RESOURCE_TYPE = Decision(False, "unknown_resource_type")
UNKNOWN_RESOURCE = Decision(False, "unknown_resource")
NO_GRANT = Decision(False, "no_grant")
MANAGES = Decision(True, "permission:sources:manage")


class Stats:
    """Counters an operator can read (GET /v1/orgs/{org}/authz/stats)."""

    def __init__(self) -> None:
        self.rule_errors = 0
        self.decisions = 0
        self.index_builds = 0
