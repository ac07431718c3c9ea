"""The questions asked of the engine: check, check-batch, filter, list, search-filter
and a document's ACL tokens, each answered against one read of the organisation's index.

Nothing here writes: the answers come from the in-memory index (`bastion.authz.engine`),
not from the rows `manage` changes, so this is the path a hot request takes.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from bastion.authz import engine
from bastion.authz.engine import Decision, Engine, OrgIndex, Subject
from bastion.core.clock import utcnow
from bastion.core.errors import InvalidInput, NotFound
from bastion.core.ids import has_prefix
from bastion.core.permissions import Permission
from bastion.core.principal import Principal

Sessions = Callable[[], Session]


def reads(
    eng: Engine, sessions: Sessions, principal: Principal, org_id: str, document_id: str
) -> bool:
    """The engine's `read` for the caller as a subject (a person's API key asks as its
    owner), managing no source: the caller's credential does not (see above)."""
    index = eng.index(sessions, org_id)
    now = utcnow()
    subject = engine.subject_of(index, principal.user_id or principal.id, now)
    if subject is not None and subject.manage_all:
        subject = replace(subject, manage_all=False)
    return engine.decide(index, subject, "read", "document", document_id, now, eng.stats).allowed


# --- questions ----------------------------------------------------------------------


def parse_resource(value: str) -> tuple[str, str]:
    """`document:doc_…`, `source:src_…`, `agent:agt_…`, or a bare id of those types."""
    kind, _, rest = value.partition(":")
    if rest:
        return kind, rest
    for prefix, kind in (("doc", "document"), ("src", "source"), ("agt", "agent")):
        if has_prefix(value, prefix):
            return kind, value
    return "unknown", value


def _asker(principal: Principal, org_id: str, subject: str) -> None:
    """A caller may always ask about itself; about anyone else it needs authz:check."""
    principal.require_org(org_id)
    if subject not in (principal.id, principal.user_id):
        principal.require(Permission.AUTHZ_CHECK)


@dataclass(frozen=True)
class Asked:
    """One question's subject (and the user it acts for) against one index read."""

    index: OrgIndex
    subject: Subject | None
    user: Subject | None
    acting: bool  # an agent acting for a user: both must allow
    now: datetime
    stats: engine.Stats

    def decide(
        self, action: str, resource_type: str, resource_id: str, explain: bool = False
    ) -> Decision:
        args = (action, resource_type, resource_id, self.now, self.stats, explain)
        own = engine.decide(self.index, self.subject, *args)
        if not self.acting:
            return own
        return engine.on_behalf(own, engine.decide(self.index, self.user, *args))


def _ask(
    eng: Engine,
    sessions: Sessions,
    principal: Principal,
    org_id: str,
    subject_id: str,
    on_behalf_of: str | None = None,
    index: OrgIndex | None = None,
) -> Asked:
    _asker(principal, org_id, subject_id)
    if on_behalf_of is not None:
        _asker(principal, org_id, on_behalf_of)
    if index is None:
        index = eng.index(sessions, org_id)
    now = utcnow()
    subject = engine.subject_of(index, subject_id, now)
    user = engine.subject_of(index, on_behalf_of, now) if on_behalf_of else None
    return Asked(index, subject, user, on_behalf_of is not None, now, eng.stats)


@dataclass(frozen=True)
class Question:
    subject: str
    action: str
    resource: str
    explain: bool = False
    on_behalf_of: str | None = None


def check(
    eng: Engine,
    sessions: Sessions,
    principal: Principal,
    org_id: str,
    questions: Sequence[Question],
    index: OrgIndex | None = None,
) -> list[Decision]:
    """Answer each question in order, against one index read (one revision read for
    the whole batch, none when the caller passes the current `index`) and each distinct
    subject resolved once."""
    for q in questions:
        _asker(principal, org_id, q.subject)
        if q.on_behalf_of is not None:
            _asker(principal, org_id, q.on_behalf_of)
    if index is None:
        index = eng.index(sessions, org_id)
    now = utcnow()
    subjects: dict[str, Subject | None] = {}

    def resolve(subject_id: str) -> Subject | None:
        if subject_id not in subjects:
            subjects[subject_id] = engine.subject_of(index, subject_id, now)
        return subjects[subject_id]

    answers = []
    for q in questions:
        kind, resource_id = parse_resource(q.resource)
        subject = resolve(q.subject)
        own = engine.decide(index, subject, q.action, kind, resource_id, now, eng.stats, q.explain)
        if q.on_behalf_of is None:
            answers.append(own)
            continue
        user = resolve(q.on_behalf_of)
        theirs = engine.decide(index, user, q.action, kind, resource_id, now, eng.stats, q.explain)
        answers.append(engine.on_behalf(own, theirs))
    return answers


def filter_ids(
    eng: Engine,
    sessions: Sessions,
    principal: Principal,
    org_id: str,
    *,
    subject: str,
    action: str,
    resource_type: str,
    ids: Sequence[str],
    on_behalf_of: str | None = None,
    index: OrgIndex | None = None,
) -> list[str]:
    asked = _ask(eng, sessions, principal, org_id, subject, on_behalf_of, index)
    if not asked.acting:
        return engine.filter_ids(
            asked.index, asked.subject, action, resource_type, ids, asked.now, eng.stats
        )
    return [i for i in ids if asked.decide(action, resource_type, i).allowed]


def list_ids(
    eng: Engine,
    sessions: Sessions,
    principal: Principal,
    org_id: str,
    *,
    subject: str,
    action: str,
    resource_type: str,
    limit: int,
    after: str | None,
    on_behalf_of: str | None = None,
) -> tuple[list[str], str | None]:
    asked = _ask(eng, sessions, principal, org_id, subject, on_behalf_of)
    ids: list[str]
    if resource_type == "document":
        ids = _listed(asked, action)
    else:
        pools: dict[str, Iterable[str]] = {
            "source": asked.index.sources,
            "agent": asked.index.agents,
        }
        ids = [
            i
            for i in sorted(pools.get(resource_type, ()))
            if asked.decide(action, resource_type, i).allowed
        ]
    start = bisect_right(ids, after) if after is not None else 0
    page = ids[start : start + limit]
    more = len(ids) - start > limit
    return page, (page[-1] if more and page else None)


def _listed(asked: Asked, action: str) -> list[str]:
    """Every document the subject (and, acting for a user, the user too) may act on, in
    id order: the engine's list, kept in the index, so later pages are a bisect."""
    if asked.subject is None or (asked.acting and asked.user is None):
        return []
    own = engine.list_documents(asked.index, asked.subject, action, asked.now, asked.stats)
    if not asked.acting or asked.user is None:
        return own
    theirs = set(engine.list_documents(asked.index, asked.user, action, asked.now, asked.stats))
    return [i for i in own if i in theirs]


def _context(subject: Subject) -> dict[str, Any]:
    return {
        "id": subject.id,
        "attributes": dict(subject.attributes),
        "teams": sorted(subject.teams),
    }


def search_filter(
    eng: Engine,
    sessions: Sessions,
    principal: Principal,
    org_id: str,
    *,
    subject: str,
    action: str,
    on_behalf_of: str | None = None,
) -> dict[str, Any]:
    """What a vector store or SQL query needs to pre-filter documents: a document may be
    returned iff (its tokens intersect `acl_tokens` or an `allow_rules` condition holds)
    and no `deny_rules` condition holds. With `on_behalf_of` the filter is the user's,
    and the document's tokens must also intersect `required_tokens` (the agent's
    connected sources) with no `deny_rules` condition holding for the `agent` context."""
    if action != "read":
        raise InvalidInput.field("action", "search filters are for read")
    asked = _ask(eng, sessions, principal, org_id, subject, on_behalf_of)
    person = asked.user if asked.acting else asked.subject
    if person is None or asked.subject is None:
        return {"acl_tokens": [], "allow_rules": [], "deny_rules": [], "subject": None}
    rules = [r for r in asked.index.rules if r.action == action and r.resource_type == "document"]
    found: dict[str, Any] = {
        "acl_tokens": engine.subject_tokens(asked.index, person),
        "allow_rules": [
            {"id": r.id, "condition": r.condition}
            for r in rules
            if r.effect == "allow" and person.kind != "agent"  # rules never grant agents
        ],
        "deny_rules": [{"id": r.id, "condition": r.condition} for r in rules if r.effect == "deny"],
        "subject": _context(person),
    }
    if asked.acting:
        found["required_tokens"] = sorted(f"s:{s}" for s in asked.subject.sources)
        found["agent"] = _context(asked.subject)
    return found


def document_tokens(
    eng: Engine, sessions: Sessions, principal: Principal, org_id: str, document_id: str
) -> tuple[list[str], datetime | None]:
    """The tokens to index with a document: for an indexing pipeline (`sources:manage`
    or `authz:check`), or whoever may read the document; anyone else finds nothing
    (404), as for the document's record: its tokens name who may read it."""
    principal.require_org(org_id)
    principal.require(Permission.SOURCES_READ)
    index = eng.index(sessions, org_id)
    if document_id not in index.documents or not (
        principal.can(Permission.SOURCES_MANAGE)
        or principal.can(Permission.AUTHZ_CHECK)
        or reads(eng, sessions, principal, org_id, document_id)
    ):
        raise NotFound("document not found")
    return engine.acl_tokens(index, document_id, utcnow())


def require_stats(principal: Principal, org_id: str) -> None:
    principal.require_org(org_id)
    principal.require(Permission.AUTHZ_CHECK)
