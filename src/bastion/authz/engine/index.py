"""An organisation's index: everything a decision reads, built from one snapshot of the
database and kept while the organisation's revisions are unchanged (see `cache`).

The index holds team memberships (from tenancy), users' and service accounts' roles and
API keys that configured agents (from identity, through `bastion.authz.facts`), active
grants, custom roles, source and document ACLs, document metadata, compiled rules and
agents (from the agents domain, through the same registry). Each resource's effective
ACL is precomputed once; every memo of a decision (rule outcomes, resolved subjects,
listed ids) lives in the index, so it is dropped with it when a revision changes.
"""

from __future__ import annotations

import json
import threading
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import String, cast, select
from sqlalchemy.orm import Session

from bastion.authz import facts
from bastion.authz.conditions import compile_condition
from bastion.authz.engine.listing import Listing
from bastion.authz.engine.model import (
    LEVELS,
    NO_ACL,
    NO_METADATA,
    Acl,
    Decision,
    Doc,
    Entry,
    Rule,
    Subject,
    make_acl,
)
from bastion.authz.engine.ruleset import RuleSet, rule_sets
from bastion.authz.models import AclEntry, AuthzRule, Document, Role, RoleGrant, Source
from bastion.authz.service import custom_role_permissions
from bastion.core import metrics
from bastion.core.clock import as_utc, utcnow
from bastion.core.permissions import Permission
from bastion.tenancy import service as tenancy

LIST_CACHE_MAX_IDS = 2_000_000  # ids held by an index's cache of listed ids
# Who may do what to an agent: the agents domain's rule (`facts.AgentFacts.decide`).
AgentRule = Callable[[Any, str, frozenset[str], frozenset[Permission], str], Decision]


@dataclass
class OrgIndex:
    """One organisation's facts as of `revisions`, and the memos of decisions on them."""

    org_id: str
    revisions: tuple[int, ...]
    user_teams: dict[str, frozenset[str]]
    users: dict[str, tuple[str, str]]  # id -> (role, status)
    accounts: dict[str, tuple[str, str]]
    grants: dict[str, list[tuple[str, datetime]]]  # user -> [(role, expires_at)]
    custom_roles: dict[str, frozenset[Permission]]
    teams: frozenset[str]
    sources: dict[str, tuple[Entry, ...]]
    documents: dict[str, Doc]
    rules: tuple[Rule, ...]
    agents: dict[str, Any] = field(default_factory=dict)  # id -> the agents domain's facts
    agent_rule: AgentRule | None = None  # None: no agent provider, every agent unknown
    agent_sources: dict[str, frozenset[str]] = field(default_factory=dict)
    agent_configurers: dict[str, str] = field(default_factory=dict)  # who set connections
    # Keys without an owner that configured agents: (role, ends) where ends is when
    # the key stops (revoked or expired), if ever.
    configurer_keys: dict[str, tuple[str, datetime | None]] = field(default_factory=dict)
    source_acls: dict[str, Acl] = field(default_factory=dict)
    rule_sets: dict[tuple[str, str, bool], RuleSet] = field(default_factory=dict)
    # Every instant an ACL entry or a grant expires, sorted: how many have passed is
    # all a decision's dependence on the clock (`epoch`).
    expiries: tuple[datetime, ...] = ()
    grant_expiries: tuple[datetime, ...] = ()
    _subjects: dict[str, tuple[int, Subject]] = field(default_factory=dict, repr=False)
    _listing: Listing | None = field(default=None, repr=False)
    _lists: OrderedDict[tuple[str, str, str, int], list[str]] = field(
        default_factory=OrderedDict, repr=False
    )
    _listed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def size(self) -> int:
        return (
            len(self.users)
            + len(self.sources)
            + len(self.documents)
            + sum(len(d.acl) for d in self.documents.values())
            + sum(len(a) for a in self.sources.values())
        )

    def memo_size(self) -> int:
        return sum(r.memo_size() for r in self.rule_sets.values())

    def epoch(self, now: datetime) -> int:
        return bisect_right(self.expiries, now) if self.expiries else 0

    def listing(self) -> Listing:
        if self._listing is None:
            with self._lock:
                if self._listing is None:
                    self._listing = Listing(self)
        return self._listing

    def cached_list(self, key: tuple[str, str, str, int]) -> list[str] | None:
        with self._lock:
            found = self._lists.get(key)
            if found is not None:
                self._lists.move_to_end(key)
            return found

    def keep_list(self, key: tuple[str, str, str, int], ids: list[str]) -> None:
        with self._lock:
            if key not in self._lists:
                self._lists[key] = ids
                self._listed += len(ids)
            while self._listed > LIST_CACHE_MAX_IDS and len(self._lists) > 1:
                _, dropped = self._lists.popitem(last=False)
                self._listed -= len(dropped)

    def listed_ids(self) -> int:
        return self._listed


def _entries(rows: Iterable[tuple[str, str, str, datetime | None]]) -> dict[str, tuple[Entry, ...]]:
    out: dict[str, list[Entry]] = {}
    for resource_id, principal, relation, expires_at in rows:
        expires = as_utc(expires_at) if expires_at else None
        out.setdefault(resource_id, []).append(Entry(principal, LEVELS[relation], expires))
    return {k: tuple(v) for k, v in out.items()}


def _configurer_keys(
    db: Session,
    org_id: str,
    principals: facts.PrincipalFacts | None,
    configurers: Iterable[str],
) -> dict[str, tuple[str, datetime | None]]:
    """The keys of nobody's (an operator's) that configured agents: their role, and
    when they stop (revoked or expired), if ever. Without identity's provider none is
    known, and an agent such a key configured reads no source."""
    wanted = sorted({c for c in configurers if c.startswith("key_")})
    if not wanted or principals is None:
        return {}
    return principals.key_roles(db, org_id, wanted)


def build_index(db: Session, org_id: str, revisions: tuple[int, ...]) -> OrgIndex:
    with metrics.AUTHZ_INDEX_BUILDS.time():
        return _build_index(db, org_id, revisions)


def _build_index(db: Session, org_id: str, revisions: tuple[int, ...]) -> OrgIndex:
    """The organisation's index, read from one snapshot of the database. `db` should be
    a session whose transaction has not begun: on PostgreSQL the build then runs in one
    REPEATABLE READ transaction, since under READ COMMITTED each of its dozen queries
    could see a different state (a member removed from a team, then the team granted:
    an index holding both the old membership and the new grant allowed what no state
    allowed). SQLite's read transactions are one snapshot already."""
    if db.get_bind().dialect.name == "postgresql" and not db.in_transaction():
        db.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    now = utcnow()
    user_teams, team_ids = tenancy.team_facts(db, org_id)
    principals = facts.principal_facts()
    users, accounts = principals.roles(db, org_id) if principals is not None else ({}, {})
    grants: dict[str, list[tuple[str, datetime]]] = {}
    for user_id, role, expires in db.execute(
        select(RoleGrant.user_id, RoleGrant.role, RoleGrant.expires_at).where(
            RoleGrant.org_id == org_id,
            RoleGrant.revoked_at.is_(None),
            RoleGrant.expires_at > now,
        )
    ):
        grants.setdefault(user_id, []).append((role, as_utc(expires)))
    custom = {
        r.id: custom_role_permissions(r)
        for r in db.execute(select(Role).where(Role.org_id == org_id)).scalars()
    }
    # Columns, not ORM objects: a hundred thousand documents build in a fraction of the
    # time. The same row order as before (ACL positions decide which entry names a grant).
    source_rows: list[Any] = []
    doc_rows: list[Any] = []
    for row in db.execute(
        select(
            AclEntry.resource_type,
            AclEntry.resource_id,
            AclEntry.principal,
            AclEntry.relation,
            AclEntry.expires_at,
        ).where(AclEntry.org_id == org_id)
    ):
        (source_rows if row[0] == "source" else doc_rows).append(row[1:])
    source_acl = _entries(source_rows)
    doc_acl = _entries(doc_rows)
    sources = {
        s: source_acl.get(s, ())
        for s in db.execute(select(Source.id).where(Source.org_id == org_id)).scalars()
    }
    source_acls = {s: make_acl(entries) for s, entries in sources.items()}
    # Metadata as stored text, parsed once per distinct text: documents with equal
    # metadata share one dict (less memory, and one rule signature).
    parsed: dict[str | None, Mapping[str, Any]] = {None: NO_METADATA}
    documents: dict[str, Doc] = {}
    for doc_id, source_id, inherit, text in db.execute(
        select(
            Document.id, Document.source_id, Document.inherit, cast(Document.doc_metadata, String)
        ).where(Document.org_id == org_id)
    ):
        metadata = parsed.get(text)
        if metadata is None:
            metadata = parsed[text] = dict(json.loads(text) or {})
        own = doc_acl.get(doc_id, ())
        inherited = sources.get(source_id, ()) if inherit else ()
        if not own:
            effective = source_acls.get(source_id, NO_ACL) if inherit else NO_ACL
        else:
            effective = make_acl(own + inherited)
        plain = None if own else (source_id if inherit else "")
        documents[doc_id] = Doc(source_id, inherit, metadata, own, effective, plain)
    del parsed
    rules = tuple(
        Rule(r.id, r.effect, r.action, r.resource_type, r.condition, compile_condition(r.condition))
        for r in db.execute(
            select(AuthzRule).where(AuthzRule.org_id == org_id).order_by(AuthzRule.id)
        ).scalars()
    )
    agents: dict[str, Any] = {}
    agent_sources: dict[str, frozenset[str]] = {}
    agent_configurers: dict[str, str] = {}
    agent_provider = facts.agent_facts()
    for agent in agent_provider.agents(db, org_id) if agent_provider is not None else ():
        agents[agent.id] = agent.facts
        agent_sources[agent.id] = frozenset(c for c in agent.connections if c in sources)
        agent_configurers[agent.id] = agent.configured_by
    configurer_keys = _configurer_keys(db, org_id, principals, agent_configurers.values())
    grant_expiries = tuple(sorted(e for held in grants.values() for _, e in held))
    acl_expiries = [
        e.expires_at
        for entries in (*source_acl.values(), *doc_acl.values())
        for e in entries
        if e.expires_at is not None
    ]
    index = OrgIndex(
        org_id=org_id,
        revisions=revisions,
        user_teams=user_teams,
        users=users,
        accounts=accounts,
        grants=grants,
        custom_roles=custom,
        teams=team_ids,
        sources=sources,
        documents=documents,
        rules=rules,
        agents=agents,
        agent_rule=agent_provider.decide if agent_provider is not None else None,
        agent_sources=agent_sources,
        agent_configurers=agent_configurers,
        configurer_keys=configurer_keys,
        source_acls=source_acls,
        rule_sets=rule_sets(rules),
        expiries=tuple(
            sorted(
                (
                    *grant_expiries,
                    *acl_expiries,
                    *(e for _, e in configurer_keys.values() if e is not None),
                )
            )
        ),
        grant_expiries=grant_expiries,
    )
    index._listing = Listing(index)
    return index
