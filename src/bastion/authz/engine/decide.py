"""One decision: may this subject do this action to this resource?

`subject_of` resolves a subject id against the index (role and grants, teams,
`sources:manage`, an agent's connected sources); `decide` answers from the precomputed
ACLs and the memoized rule outcomes, or, with `explain`, walks every entry and rule and
returns the trace. Access to an agent is the agents domain's rule, registered through
`bastion.authz.facts` and held by the index. `on_behalf` combines an agent's decision
with the user's it acts for.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bastion.authz.engine.model import (
    LEVELS,
    MANAGE_LEVEL,
    MANAGES,
    NEEDS,
    NO_GRANT,
    NO_METADATA,
    RESOURCE_TYPES,
    UNKNOWN_ACTION,
    UNKNOWN_RESOURCE,
    UNKNOWN_RESOURCE_TYPE,
    UNKNOWN_SUBJECT,
    Acl,
    Decision,
    Entry,
    Stats,
    Subject,
)
from bastion.authz.engine.reads import resource_context, subject_context
from bastion.authz.engine.ruleset import apply_rules
from bastion.authz.roles import BUILTIN_PERMISSIONS, BuiltinRole
from bastion.core.permissions import Permission

if TYPE_CHECKING:
    from bastion.authz.engine.index import OrgIndex


def _role_permissions(index: OrgIndex, role: str) -> frozenset[Permission]:
    try:
        return BUILTIN_PERMISSIONS[BuiltinRole(role)]
    except ValueError:
        return index.custom_roles.get(role, frozenset())


def subject_of(index: OrgIndex, subject_id: str, now: datetime) -> Subject | None:
    """The subject as the engine sees it; None when unknown, inactive or foreign. Kept
    in the index while no grant of it has expired since."""
    # An agent's sources depend on its configurer's ACL entries too: every expiry counts.
    expiries = index.expiries if subject_id in index.agents else index.grant_expiries
    epoch = bisect_right(expiries, now) if expiries else 0
    cached = index._subjects.get(subject_id)
    if cached is not None and cached[0] == epoch:
        return cached[1]
    subject = _subject_of(index, subject_id, now)
    if subject is not None:
        index._subjects[subject_id] = (epoch, subject)
    return subject


def _subject_of(index: OrgIndex, subject_id: str, now: datetime) -> Subject | None:
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
        return Subject(
            subject_id,
            "agent",
            frozenset(),
            {"type": "agent"},
            False,
            sources=_connected(index, subject_id, now),
        )
    return None


def _connected(index: OrgIndex, agent_id: str, now: datetime) -> frozenset[str]:
    """The sources connected to the agent that whoever configured it may still connect
    (edit the source, or hold `sources:manage`): an agent never reads more than its
    configurer could hand it, now."""
    sources = index.agent_sources.get(agent_id, frozenset())
    if not sources:
        return sources
    configurer = index.agent_configurers.get(agent_id)
    if configurer in index.configurer_keys:  # a key of nobody's: its role alone counts
        role, ends = index.configurer_keys[configurer]
        live = ends is None or ends > now
        manages = Permission.SOURCES_MANAGE in _role_permissions(index, role)
        return sources if live and manages else frozenset()
    who = _subject_of(index, configurer, now) if configurer else None
    if who is None or who.kind not in ("user", "service_account"):
        return frozenset()
    return frozenset(s for s in sources if decide(index, who, "edit", "source", s, now).allowed)


def acl_for(index: OrgIndex, resource_type: str, resource_id: str) -> tuple[Entry, ...] | None:
    if resource_type == "source":
        return index.sources.get(resource_id)
    doc = index.documents.get(resource_id)
    if doc is None:
        return None
    return doc.effective.entries  # its own entries, then its source's if it inherits


def _metadata(index: OrgIndex, resource_type: str, resource_id: str) -> Mapping[str, Any]:
    if resource_type == "document":
        return index.documents[resource_id].metadata
    return {}


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


def decide(  # noqa: PLR0912 - the hot path, kept in one frame on purpose
    index: OrgIndex,
    subject: Subject | None,
    action: str,
    resource_type: str,
    resource_id: str,
    now: datetime,
    stats: Stats | None = None,
    explain: bool = False,
) -> Decision:
    """The decision, with its trace when `explain`. Without, the same answer and reason
    from the precomputed ACLs and memoized rule outcomes (see the module doc)."""
    if stats is not None:
        stats.decisions += 1
    if subject is None:
        return UNKNOWN_SUBJECT
    if explain:
        return _explained(index, subject, action, resource_type, resource_id, now, stats)
    need = NEEDS.get(action)
    if resource_type == "document":
        if need is None:
            return UNKNOWN_ACTION
        doc = index.documents.get(resource_id)
        if doc is None:
            return UNKNOWN_RESOURCE
        acl, metadata = doc.effective, doc.metadata
    elif resource_type == "source":
        if need is None:
            return UNKNOWN_ACTION
        found = index.source_acls.get(resource_id)
        if found is None:
            return UNKNOWN_RESOURCE
        acl, metadata = found, NO_METADATA
    elif resource_type == "agent":
        return _decide_agent(index, subject, action, resource_id)
    else:
        return UNKNOWN_ACTION if need is None else UNKNOWN_RESOURCE_TYPE
    granted: Decision | None
    if subject.manage_all:
        granted = MANAGES  # every relation: enough for every action
    elif acl.timed or subject.kind == "agent":
        granted = acl_grant(index, acl, subject, need, resource_type, resource_id, now)
    else:
        best = None
        held_by = acl.best.get
        for key in subject.keys:
            held = held_by(key)
            if held is not None and (best is None or held < best):
                best = held
        granted = best[2] if best is not None and -best[0] >= need else None
    rules = index.rule_sets.get((action, resource_type, subject.kind == "agent"))
    if rules is None:
        return NO_GRANT if granted is None else granted
    memo = subject.outcomes.get(rules)
    outcome = (
        memo.get(resource_id if rules.per_resource else id(metadata)) if memo is not None else None
    )
    if outcome is None:
        outcome = rules.outcome(subject, resource_id, metadata)
    if outcome.refuse is not None:
        if outcome.failed and stats is not None:
            stats.rule_errors += 1
        return outcome.refuse
    if granted is not None:
        return granted
    return NO_GRANT if outcome.grant is None else outcome.grant


def acl_grant(
    index: OrgIndex,
    acl: Acl,
    subject: Subject,
    need: int,
    resource_type: str,
    resource_id: str,
    now: datetime,
) -> Decision | None:
    """What `_level` grants, when it reaches `need`: the agent's connection, or the first
    live highest entry of a subject's principals."""
    if subject.manage_all:
        return MANAGES
    if subject.kind == "agent":
        source = (
            resource_id if resource_type == "source" else index.documents[resource_id].source_id
        )
        if need <= LEVELS["reader"] and source in subject.sources:
            return Decision(True, f"connection:{source}")
        return None
    if not acl.timed:
        best = None
        for key in subject.keys:
            held = acl.best.get(key)
            if held is not None and (best is None or held < best):
                best = held
        return best[2] if best is not None and -best[0] >= need else None
    level, principal = 0, ""
    keys = subject.keys
    for entry in acl.entries:
        if entry.principal in keys and entry.live(now) and entry.level > level:
            level, principal = entry.level, entry.principal
    return Decision(True, f"acl:{principal}") if level >= need else None


def _explained(
    index: OrgIndex,
    subject: Subject,
    action: str,
    resource_type: str,
    resource_id: str,
    now: datetime,
    stats: Stats | None,
) -> Decision:
    """The decision with its trace: every rule evaluated in order, nothing memoized."""
    if resource_type == "agent":
        return _decide_agent(index, subject, action, resource_id)
    if action not in NEEDS:
        return UNKNOWN_ACTION
    if resource_type not in RESOURCE_TYPES:
        return UNKNOWN_RESOURCE_TYPE
    acl = acl_for(index, resource_type, resource_id)
    if acl is None:
        return UNKNOWN_RESOURCE
    trace: list[str] = []
    level, reason = _level(index, subject, resource_type, resource_id, acl, now)
    if subject.manage_all:
        level, reason = MANAGE_LEVEL, "permission:sources:manage"
    allowed = level >= NEEDS[action]
    trace.append(f"relation level {level} via {reason}; {action} needs {NEEDS[action]}")
    rules = [r for r in index.rules if r.action == action and r.resource_type == resource_type]
    if subject.kind == "agent":
        rules = [r for r in rules if r.effect == "deny"]
    if not rules:  # no context to build (what apply_rules answers without rules)
        return Decision(allowed, reason if allowed else "no_grant", tuple(trace))
    context = {
        "resource": resource_context(
            resource_id, resource_type, _metadata(index, resource_type, resource_id)
        ),
        "subject": subject_context(subject),
    }
    return apply_rules(rules, context, allowed, reason, trace, stats, True)


def _decide_agent(index: OrgIndex, subject: Subject, action: str, agent_id: str) -> Decision:
    """The agents domain's rule, for a person or account; an agent the index does not
    hold (or any, without the agents domain's provider) is unknown."""
    agent = index.agents.get(agent_id)
    if agent is None or index.agent_rule is None:
        return Decision(False, "unknown_resource")
    if subject.kind not in ("user", "service_account"):
        return Decision(False, "not_a_person_or_account")
    return index.agent_rule(agent, subject.id, subject.teams, subject.perms, action)


def on_behalf(agent: Decision, user: Decision) -> Decision:
    """An agent acting for a user: allowed only when both are."""
    trace = (*(f"agent: {t}" for t in agent.trace), *(f"user: {t}" for t in user.trace))
    if not agent.allowed:
        return Decision(False, f"agent:{agent.reason}", trace)
    if not user.allowed:
        return Decision(False, f"on_behalf_of:{user.reason}", trace)
    return Decision(True, f"agent:{agent.reason}+on_behalf_of:{user.reason}", trace)
