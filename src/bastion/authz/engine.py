"""The data-access decision engine: may this subject do this to this source or
document?

Per organisation, an in-memory index (team memberships, users' and service accounts'
roles, active grants, custom roles, source and document ACLs, document metadata and
compiled rules) is built from the database on first use and kept while the
organisation's (auth, authz) revision pair is unchanged. Every write to any of those
tables advances a revision in its own transaction (see `bastion.identity.authcache`),
and the pair is read before each decision, so a change is seen by the very next check
on every worker and replica.

The model:
- relations `reader` < `editor` < `owner` on sources and documents, held by users,
  teams (through membership) and service accounts, each entry optionally expiring
  (checked at decision time);
- a document with `inherit` takes its source's entries plus its own; without, its own;
- actions: `read` needs reader, `edit` editor, `share` and `delete` owner, `manage`
  is only for holders of the `sources:manage` permission, who hold every relation on
  every source and document of their organisation;
- metadata rules `{effect, action, resource_type, condition}` (CEL over
  `resource.metadata`, `subject.attributes`, `subject.teams`): an allow rule grants,
  a deny rule refuses; deny beats allow, for everyone; a rule that fails to evaluate
  refuses (fail closed) and is counted.
Anything unknown (subject, action, resource type, resource, another organisation's
id) is refused.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import cel
from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.agents.models import Agent
from bastion.authz.models import AclEntry, AuthzRule, Document, Role, RoleGrant, Source
from bastion.authz.permissions import Permission
from bastion.authz.roles import BUILTIN_PERMISSIONS, BuiltinRole
from bastion.authz.service import custom_role_permissions
from bastion.core.clock import as_utc, utcnow
from bastion.core.db import DirectReader
from bastion.identity.models import ServiceAccount, User
from bastion.tenancy.models import Team, TeamMember

LEVELS = {"reader": 1, "editor": 2, "owner": 3}
MANAGE_LEVEL = 4
NEEDS = {"read": 1, "edit": 2, "share": 3, "delete": 3, "manage": MANAGE_LEVEL}
RESOURCE_TYPES = ("source", "document")


class RuleError(ValueError):
    """A condition that does not compile; `str()` says why."""


def compile_condition(condition: str) -> Any:
    try:
        return cel.compile(condition)
    except (ValueError, RuntimeError) as exc:
        raise RuleError(str(exc).splitlines()[0][:300]) from None


@dataclass(frozen=True)
class Entry:
    principal: str
    level: int
    expires_at: datetime | None

    def live(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


@dataclass(frozen=True)
class Doc:
    source_id: str
    inherit: bool
    metadata: Mapping[str, Any]
    acl: tuple[Entry, ...]


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

    @property
    def principals(self) -> frozenset[str]:
        return frozenset({self.id}) | self.teams


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    trace: tuple[str, ...] = ()


# --- agents ---------------------------------------------------------------------------

AGENT_ACTIONS = frozenset({"read", "use", "edit", "share", "delete"})
VISIBILITIES = ("private", "team", "org", "public")


@dataclass(frozen=True)
class AgentFacts:
    """What decides access to an agent: its owner, visibility and teams."""

    owner: str
    visibility: str
    teams: frozenset[str]


def agent_decision(
    agent: AgentFacts,
    subject_id: str,
    subject_teams: frozenset[str],
    perms: frozenset[Permission],
    action: str,
) -> Decision:
    """`agents:manage` holders do everything to every agent of their organisation; the
    owner does everything to their own; others may `read` (with `agents:read`) and `use`
    (with `agents:use`) an agent visible to them: `org` and `public` to every member,
    `team` to members of its teams, `private` to nobody else. Editing, sharing and
    deleting are for the owner and managers only."""
    if action not in AGENT_ACTIONS:
        return Decision(False, "unknown_action")
    if Permission.AGENTS_MANAGE in perms:
        return Decision(True, "permission:agents:manage")
    if subject_id == agent.owner:
        return Decision(True, "owner")
    if agent.visibility in ("org", "public"):
        via = f"visibility:{agent.visibility}"
    elif agent.visibility == "team" and subject_teams & agent.teams:
        via = f"team:{min(subject_teams & agent.teams)}"
    else:
        return Decision(False, "not_visible")
    needed = {"read": Permission.AGENTS_READ, "use": Permission.AGENTS_USE}.get(action)
    if needed is None:
        return Decision(False, "owner_or_manager_only")
    if needed not in perms:
        return Decision(False, f"missing_permission:{needed}")
    return Decision(True, via)


@dataclass
class OrgIndex:
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
    agents: dict[str, AgentFacts] = field(default_factory=dict)
    agent_sources: dict[str, frozenset[str]] = field(default_factory=dict)

    def size(self) -> int:
        return (
            len(self.users)
            + len(self.sources)
            + len(self.documents)
            + sum(len(d.acl) for d in self.documents.values())
            + sum(len(a) for a in self.sources.values())
        )


def _entries(rows: Iterable[AclEntry]) -> dict[str, tuple[Entry, ...]]:
    out: dict[str, list[Entry]] = {}
    for row in rows:
        expires = as_utc(row.expires_at) if row.expires_at else None
        out.setdefault(row.resource_id, []).append(
            Entry(row.principal, LEVELS[row.relation], expires)
        )
    return {k: tuple(v) for k, v in out.items()}


def build_index(db: Session, org_id: str, revisions: tuple[int, ...]) -> OrgIndex:
    now = utcnow()
    teams: dict[str, set[str]] = {}
    team_ids: set[str] = set()
    for team_id, user_id in db.execute(
        select(TeamMember.team_id, TeamMember.user_id).where(TeamMember.org_id == org_id)
    ):
        teams.setdefault(user_id, set()).add(team_id)
        team_ids.add(team_id)
    team_ids |= set(db.execute(select(Team.id).where(Team.org_id == org_id)).scalars())
    users = {
        u: (role, status)
        for u, role, status in db.execute(
            select(User.id, User.role, User.status).where(User.org_id == org_id)
        )
    }
    accounts = {
        a: (role, status)
        for a, role, status in db.execute(
            select(ServiceAccount.id, ServiceAccount.role, ServiceAccount.status).where(
                ServiceAccount.org_id == org_id
            )
        )
    }
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
    acl = list(db.execute(select(AclEntry).where(AclEntry.org_id == org_id)).scalars())
    source_acl = _entries(a for a in acl if a.resource_type == "source")
    doc_acl = _entries(a for a in acl if a.resource_type == "document")
    sources = {
        s: source_acl.get(s, ())
        for s in db.execute(select(Source.id).where(Source.org_id == org_id)).scalars()
    }
    documents = {
        d.id: Doc(d.source_id, d.inherit, dict(d.doc_metadata or {}), doc_acl.get(d.id, ()))
        for d in db.execute(select(Document).where(Document.org_id == org_id)).scalars()
    }
    rules = tuple(
        Rule(r.id, r.effect, r.action, r.resource_type, r.condition, compile_condition(r.condition))
        for r in db.execute(
            select(AuthzRule).where(AuthzRule.org_id == org_id).order_by(AuthzRule.id)
        ).scalars()
    )
    agents: dict[str, AgentFacts] = {}
    agent_sources: dict[str, frozenset[str]] = {}
    for agent_id, owner, visibility, agent_teams, connections in db.execute(
        select(Agent.id, Agent.owner_id, Agent.visibility, Agent.team_ids, Agent.connections).where(
            Agent.org_id == org_id
        )
    ):
        agents[agent_id] = AgentFacts(owner, visibility, frozenset(agent_teams or ()))
        agent_sources[agent_id] = frozenset(c for c in connections or () if c in sources)
    return OrgIndex(
        org_id=org_id,
        revisions=revisions,
        user_teams={u: frozenset(t) for u, t in teams.items()},
        users=users,
        accounts=accounts,
        grants=grants,
        custom_roles=custom,
        teams=frozenset(team_ids),
        sources=sources,
        documents=documents,
        rules=rules,
        agents=agents,
        agent_sources=agent_sources,
    )


# --- decisions ----------------------------------------------------------------------


def _role_permissions(index: OrgIndex, role: str) -> frozenset[Permission]:
    try:
        return BUILTIN_PERMISSIONS[BuiltinRole(role)]
    except ValueError:
        return index.custom_roles.get(role, frozenset())


def subject_of(index: OrgIndex, subject_id: str, now: datetime) -> Subject | None:
    """The subject as the engine sees it; None when unknown, inactive or foreign."""
    if subject_id in index.users:
        role, status = index.users[subject_id]
        if status != "active":
            return None
        perms = _role_permissions(index, role)
        for granted, expires in index.grants.get(subject_id, ()):
            if expires > now:
                perms = perms | _role_permissions(index, granted)
        teams = index.user_teams.get(subject_id, frozenset())
        return Subject(
            subject_id,
            "user",
            teams,
            {"role": role, "type": "user"},
            Permission.SOURCES_MANAGE in perms,
            perms,
        )
    if subject_id in index.accounts:
        role, status = index.accounts[subject_id]
        if status != "active":
            return None
        perms = _role_permissions(index, role)
        attributes = {"role": role, "type": "service_account"}
        return Subject(
            subject_id,
            "service_account",
            frozenset(),
            attributes,
            Permission.SOURCES_MANAGE in perms,
            perms,
        )
    if subject_id in index.teams:
        return Subject(subject_id, "team", frozenset(), {"type": "team"}, False)
    if subject_id in index.agents:
        sources = index.agent_sources.get(subject_id, frozenset())
        return Subject(subject_id, "agent", frozenset(), {"type": "agent"}, False, sources=sources)
    return None


def _acl_for(index: OrgIndex, resource_type: str, resource_id: str) -> tuple[Entry, ...] | None:
    if resource_type == "source":
        return index.sources.get(resource_id)
    doc = index.documents.get(resource_id)
    if doc is None:
        return None
    inherited = index.sources.get(doc.source_id, ()) if doc.inherit else ()
    return doc.acl + inherited


def _metadata(index: OrgIndex, resource_type: str, resource_id: str) -> Mapping[str, Any]:
    if resource_type == "document":
        return index.documents[resource_id].metadata
    return {}


class Stats:
    """Counters an operator can read (GET /v1/orgs/{org}/authz/stats)."""

    def __init__(self) -> None:
        self.rule_errors = 0
        self.decisions = 0
        self.index_builds = 0


def _level(
    index: OrgIndex,
    subject: Subject,
    resource_type: str,
    resource_id: str,
    acl: tuple[Entry, ...],
    now: datetime,
) -> tuple[int, str]:
    """The highest live relation the subject holds, and where it comes from. An
    agent's own grants are the sources connected to it: reader on them and their
    documents (metadata rules may still deny it, never grant it more)."""
    if subject.kind == "agent":
        source = (
            resource_id if resource_type == "source" else index.documents[resource_id].source_id
        )
        if source in subject.sources:
            return LEVELS["reader"], f"connection:{source}"
        return 0, "no_grant"
    level, reason = 0, "no_grant"
    principals = subject.principals
    for entry in acl:
        if entry.principal in principals and entry.live(now) and entry.level > level:
            level, reason = entry.level, f"acl:{entry.principal}"
    return level, reason


def decide(
    index: OrgIndex,
    subject: Subject | None,
    action: str,
    resource_type: str,
    resource_id: str,
    now: datetime,
    stats: Stats | None = None,
    explain: bool = False,
) -> Decision:
    if stats is not None:
        stats.decisions += 1
    if subject is None:
        return Decision(False, "unknown_subject")
    if resource_type == "agent":
        return _decide_agent(index, subject, action, resource_id)
    if action not in NEEDS:
        return Decision(False, "unknown_action")
    if resource_type not in RESOURCE_TYPES:
        return Decision(False, "unknown_resource_type")
    acl = _acl_for(index, resource_type, resource_id)
    if acl is None:
        return Decision(False, "unknown_resource")
    trace: list[str] = []
    level, reason = _level(index, subject, resource_type, resource_id, acl, now)
    if subject.manage_all:
        level, reason = MANAGE_LEVEL, "permission:sources:manage"
    allowed = level >= NEEDS[action]
    if explain:
        trace.append(f"relation level {level} via {reason}; {action} needs {NEEDS[action]}")
    rules = [r for r in index.rules if r.action == action and r.resource_type == resource_type]
    if subject.kind == "agent":
        rules = [r for r in rules if r.effect == "deny"]
    if not rules:  # no context to build (what _apply_rules answers without rules)
        return Decision(allowed, reason if allowed else "no_grant", tuple(trace))
    context = {
        "resource": {
            "id": resource_id,
            "type": resource_type,
            "metadata": dict(_metadata(index, resource_type, resource_id)),
        },
        "subject": {
            "id": subject.id,
            "attributes": dict(subject.attributes),
            "teams": sorted(subject.teams),
        },
    }
    return _apply_rules(rules, context, allowed, reason, trace, stats, explain)


def _decide_agent(index: OrgIndex, subject: Subject, action: str, agent_id: str) -> Decision:
    agent = index.agents.get(agent_id)
    if agent is None:
        return Decision(False, "unknown_resource")
    if subject.kind not in ("user", "service_account"):
        return Decision(False, "not_a_person_or_account")
    return agent_decision(agent, subject.id, subject.teams, subject.perms, action)


def on_behalf(agent: Decision, user: Decision) -> Decision:
    """An agent acting for a user: allowed only when both are."""
    trace = (*(f"agent: {t}" for t in agent.trace), *(f"user: {t}" for t in user.trace))
    if not agent.allowed:
        return Decision(False, f"agent:{agent.reason}", trace)
    if not user.allowed:
        return Decision(False, f"on_behalf_of:{user.reason}", trace)
    return Decision(True, f"agent:{agent.reason}+on_behalf_of:{user.reason}", trace)


def _apply_rules(
    rules: Sequence[Rule],
    context: Mapping[str, Any],
    allowed: bool,
    reason: str,
    trace: list[str],
    stats: Stats | None,
    explain: bool,
) -> Decision:
    """Deny beats allow; a rule that fails to evaluate refuses."""
    # The context is converted to CEL values once per decision, not once per rule: the
    # conversion, not the evaluation, is most of a rule's cost.
    env: cel.Context | None = None
    for rule in rules:
        try:
            if env is None:
                env = cel.Context(dict(context))
            matched = rule.program.execute(env) is True
        except Exception:  # a failing rule refuses, whatever the error
            if stats is not None:
                stats.rule_errors += 1
            return Decision(False, f"rule_error:{rule.id}", (*trace, f"rule {rule.id} failed"))
        if explain:
            trace.append(f"rule {rule.id} ({rule.effect}) {'matched' if matched else 'no match'}")
        if matched and rule.effect == "deny":
            return Decision(False, f"rule:{rule.id}", tuple(trace))
        if matched and rule.effect == "allow" and not allowed:
            allowed, reason = True, f"rule:{rule.id}"
    return Decision(allowed, reason if allowed else "no_grant", tuple(trace))


def acl_tokens(
    index: OrgIndex, document_id: str, now: datetime
) -> tuple[list[str], datetime | None]:
    """Tokens to index with a document (principals that may read it now, plus the
    org's managers) and when they next change (the earliest expiry), or None."""
    acl = _acl_for(index, "document", document_id) or ()
    live = [e for e in acl if e.live(now) and e.level >= NEEDS["read"]]
    doc = index.documents.get(document_id)
    extra = {f"manage:{index.org_id}"} | ({f"s:{doc.source_id}"} if doc else set())
    tokens = sorted({_token(e.principal) for e in live} | extra)
    expiries = [e.expires_at for e in live if e.expires_at is not None]
    return tokens, min(expiries) if expiries else None


def subject_tokens(index: OrgIndex, subject: Subject) -> list[str]:
    if subject.kind == "agent":  # an agent reads the documents of its connected sources
        return sorted(f"s:{source}" for source in subject.sources)
    tokens = {_token(p) for p in subject.principals}
    if subject.manage_all:
        tokens.add(f"manage:{index.org_id}")
    return sorted(tokens)


def _token(principal: str) -> str:
    return f"p:{principal}"


# --- the cache of indexes ------------------------------------------------------------

_REVISIONS_SQL = (
    "SELECT 'a', org_id, revision FROM auth_revisions WHERE org_id = ? OR org_id = ? "
    "UNION ALL "
    "SELECT 'z', org_id, revision FROM authz_revisions WHERE org_id = ? OR org_id = ?"
)


class Engine:
    """Per-process LRU of organisation indexes, each valid for one revision tuple."""

    def __init__(self, reader: DirectReader, max_orgs: int = 256) -> None:
        self._reader = reader
        self._indexes: OrderedDict[str, OrgIndex] = OrderedDict()
        self._max = max_orgs
        self._lock = threading.Lock()
        self.stats = Stats()

    def __repr__(self) -> str:
        return f"Engine(orgs={len(self._indexes)}, max={self._max})"

    def _revisions(self, org_id: str) -> tuple[int, ...] | None:
        try:
            rows = self._reader.fetchall(_REVISIONS_SQL, (org_id, "*", org_id, "*"))
        except Exception:  # unreadable: rebuild from the database
            return None
        found = {(kind, org): int(rev) for kind, org, rev in rows}
        return tuple(
            found.get(k, 0) for k in (("a", org_id), ("a", "*"), ("z", org_id), ("z", "*"))
        )

    def index(self, sessions: Callable[[], Session], org_id: str) -> OrgIndex:
        revisions = self._revisions(org_id)
        with self._lock:
            cached = self._indexes.get(org_id)
            if cached is not None and revisions is not None and cached.revisions == revisions:
                self._indexes.move_to_end(org_id)
                return cached
        with sessions() as db:
            built = build_index(db, org_id, revisions or (-1,))
        self.stats.index_builds += 1
        if revisions is not None:
            with self._lock:
                self._indexes[org_id] = built
                self._indexes.move_to_end(org_id)
                while len(self._indexes) > self._max:
                    self._indexes.popitem(last=False)
        return built

    def memory(self) -> dict[str, int]:
        with self._lock:
            return {
                "orgs": len(self._indexes),
                "max_orgs": self._max,
                "entries": sum(i.size() for i in self._indexes.values()),
            }


def filter_ids(
    index: OrgIndex,
    subject: Subject | None,
    action: str,
    resource_type: str,
    ids: Sequence[str],
    now: datetime,
    stats: Stats | None = None,
) -> list[str]:
    return [i for i in ids if decide(index, subject, action, resource_type, i, now, stats).allowed]
