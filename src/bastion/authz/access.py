"""Sources, documents, their ACLs and metadata rules, and the questions asked of the
engine (check, check-batch, filter, list, search-filter, acl-tokens)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.authz import conditions, engine, facts
from bastion.authz.engine import Decision, Engine, OrgIndex, Subject
from bastion.authz.models import AclEntry, AuthzRule, Document, Source
from bastion.core.clock import utcnow
from bastion.core.errors import Conflict, InvalidInput, NotFound
from bastion.core.events import EventType
from bastion.core.ids import has_prefix, new_id
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.tenancy import service as tenancy

Sessions = Callable[[], Session]
PRINCIPAL_PREFIXES = ("usr", "team", "sa")


# --- sources ------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceRights:
    """Which sources a principal may hand to an agent, and which an agent may read now,
    answered by the engine against the organisation's current index."""

    eng: Engine = field(repr=False)
    sessions: Sessions = field(repr=False)

    def connectable(self, principal: Principal, source_ids: Iterable[str]) -> set[str]:
        """The sources the principal may connect: it edits them (editor or owner) or
        holds `sources:manage`. An API key counts its owner's entries, never more than
        its own role: a key without `sources:manage` does not borrow its owner's."""
        wanted = set(source_ids)
        if not wanted or principal.can(Permission.SOURCES_MANAGE):
            return wanted
        index = self.eng.index(self.sessions, principal.org_id)
        now = utcnow()
        who = engine.subject_of(index, principal.user_id or principal.id, now)
        found = set()
        for source_id in wanted:
            verdict = engine.decide(index, who, "edit", "source", source_id, now)
            if verdict.allowed and verdict != engine.MANAGES:
                found.add(source_id)
        return found

    def of_agent(self, org_id: str, agent_id: str) -> frozenset[str]:
        """The sources the agent may read now: those connected to it that whoever
        configured it may still connect."""
        index = self.eng.index(self.sessions, org_id)
        subject = engine.subject_of(index, agent_id, utcnow())
        return subject.sources if subject is not None else frozenset()


def create_source(db: Session, principal: Principal, org_id: str, name: str) -> Source:
    principal.require_org(org_id)
    principal.require(Permission.SOURCES_MANAGE)
    source = Source(id=new_id("src"), org_id=org_id, name=name, created_by=principal.id)
    db.add(source)
    audit.record(
        db,
        type=EventType.SOURCE_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("source", source.id),
        metadata={"name": name},
    )
    return source


def list_sources(db: Session, principal: Principal, org_id: str) -> list[Source]:
    principal.require_org(org_id)
    principal.require(Permission.SOURCES_READ)
    stmt = select(Source).where(Source.org_id == org_id).order_by(Source.id)
    return list(db.execute(stmt).scalars())


def existing_source_ids(db: Session, org_id: str, source_ids: list[str]) -> set[str]:
    if not source_ids:
        return set()
    stmt = select(Source.id).where(Source.org_id == org_id, Source.id.in_(source_ids))
    return set(db.execute(stmt).scalars())


def _source(db: Session, org_id: str, source_id: str) -> Source:
    source = db.get(Source, source_id) if has_prefix(source_id, "src") else None
    if source is None or source.org_id != org_id:
        raise NotFound("source not found")
    return source


def _check_principal(db: Session, org_id: str, principal_id: str, field: str) -> None:
    """A team of the organisation (asked of tenancy), or a user or service account of it
    (asked of identity's provider: without one, refused)."""
    if has_prefix(principal_id, "team"):
        with db.no_autoflush:  # a check: pending rows are written when they were before
            known = bool(tenancy.existing_team_ids(db, org_id, [principal_id]))
    else:
        principals = facts.principal_facts()
        known = principals is not None and principals.exists(db, org_id, principal_id)
    if not known:
        raise InvalidInput.field(field, "not a user, team or service account of this organisation")


def put_acl(
    db: Session,
    principal: Principal,
    org_id: str,
    resource: tuple[str, str],
    member: str,
    relation: str,
    expires_at: datetime | None,
) -> AclEntry:
    principal.require_org(org_id)
    principal.require(Permission.SOURCES_MANAGE)
    kind, resource_id = resource
    if kind == "source":
        _source(db, org_id, resource_id)
    else:
        _document(db, org_id, resource_id)
    _check_principal(db, org_id, member, "principal")
    if relation not in engine.LEVELS:
        raise InvalidInput.field("relation", "one of reader, editor, owner")
    entry = db.execute(
        select(AclEntry).where(AclEntry.resource_id == resource_id, AclEntry.principal == member)
    ).scalar_one_or_none()
    if entry is None:
        entry = AclEntry(
            id=new_id("acl"),
            org_id=org_id,
            resource_type=kind,
            resource_id=resource_id,
            principal=member,
        )
        db.add(entry)
    entry.relation, entry.expires_at = relation, expires_at
    audit.record(
        db,
        type=EventType.ACL_GRANTED,
        actor=principal.actor,
        org_id=org_id,
        resource=(kind, resource_id),
        metadata={"principal": member, "relation": relation, "expires_at": str(expires_at)},
    )
    return entry


def delete_acl(
    db: Session, principal: Principal, org_id: str, resource: tuple[str, str], member: str
) -> None:
    principal.require_org(org_id)
    principal.require(Permission.SOURCES_MANAGE)
    kind, resource_id = resource
    if kind == "source":  # the path names the kind: a document's entry is not a source's
        _source(db, org_id, resource_id)
    else:
        _document(db, org_id, resource_id)
    entry = db.execute(
        select(AclEntry).where(
            AclEntry.org_id == org_id,
            AclEntry.resource_type == kind,
            AclEntry.resource_id == resource_id,
            AclEntry.principal == member,
        )
    ).scalar_one_or_none()
    if entry is None:
        raise NotFound("no such ACL entry")
    db.delete(entry)
    audit.record(
        db,
        type=EventType.ACL_REVOKED,
        actor=principal.actor,
        org_id=org_id,
        resource=(kind, resource_id),
        metadata={"principal": member},
    )


def acl_of(db: Session, org_id: str, resource_id: str) -> list[AclEntry]:
    stmt = select(AclEntry).where(AclEntry.org_id == org_id, AclEntry.resource_id == resource_id)
    return list(db.execute(stmt.order_by(AclEntry.principal)).scalars())


# --- documents ----------------------------------------------------------------------


@dataclass(frozen=True)
class AclSpec:
    principal: str
    relation: str
    expires_at: datetime | None = None


def _document(db: Session, org_id: str, document_id: str) -> Document:
    doc = db.get(Document, document_id) if has_prefix(document_id, "doc") else None
    if doc is None or doc.org_id != org_id:
        raise NotFound("document not found")
    return doc


def create_document(
    db: Session,
    principal: Principal,
    org_id: str,
    source_id: str,
    *,
    external_id: str,
    metadata: Mapping[str, Any],
    inherit: bool,
    entries: Sequence[AclSpec],
) -> Document:
    principal.require_org(org_id)
    principal.require(Permission.SOURCES_MANAGE)
    _source(db, org_id, source_id)
    taken = db.execute(
        select(Document.id).where(
            Document.source_id == source_id, Document.external_id == external_id
        )
    ).first()
    if taken is not None:
        raise Conflict("a document with this external_id already exists in the source")
    doc = Document(
        id=new_id("doc"),
        org_id=org_id,
        source_id=source_id,
        external_id=external_id,
        doc_metadata=dict(metadata),
        inherit=inherit,
    )
    db.add(doc)
    for i, spec in enumerate(entries):
        _check_principal(db, org_id, spec.principal, f"acl.entries[{i}].principal")
        db.add(
            AclEntry(
                id=new_id("acl"),
                org_id=org_id,
                resource_type="document",
                resource_id=doc.id,
                principal=spec.principal,
                relation=spec.relation,
                expires_at=spec.expires_at,
            )
        )
    audit.record(
        db,
        type=EventType.DOCUMENT_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("document", doc.id),
        metadata={"source_id": source_id, "inherit": inherit, "acl_entries": len(entries)},
    )
    return doc


def get_document(
    db: Session,
    eng: Engine,
    sessions: Sessions,
    principal: Principal,
    org_id: str,
    document_id: str,
) -> Document:
    """A document's record (its metadata and ACL): for whoever manages sources, or may
    read the document as the engine decides; anyone else finds nothing (404, as for a
    document that does not exist)."""
    principal.require_org(org_id)
    principal.require(Permission.SOURCES_READ)
    doc = _document(db, org_id, document_id)
    if not principal.can(Permission.SOURCES_MANAGE) and not _reads(
        eng, sessions, principal, org_id, doc.id
    ):
        raise NotFound("document not found")
    return doc


def _reads(
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


def update_document(
    db: Session,
    principal: Principal,
    org_id: str,
    document_id: str,
    *,
    metadata: Mapping[str, Any] | None,
    inherit: bool | None,
) -> Document:
    principal.require_org(org_id)
    principal.require(Permission.SOURCES_MANAGE)
    doc = _document(db, org_id, document_id)
    if metadata is not None:
        doc.doc_metadata = dict(metadata)
    if inherit is not None:
        doc.inherit = inherit
    audit.record(
        db,
        type=EventType.DOCUMENT_UPDATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("document", doc.id),
        metadata={"metadata": metadata is not None, "inherit": inherit},
    )
    return doc


def delete_document(db: Session, principal: Principal, org_id: str, document_id: str) -> None:
    principal.require_org(org_id)
    principal.require(Permission.SOURCES_MANAGE)
    doc = _document(db, org_id, document_id)
    for entry in acl_of(db, org_id, doc.id):
        db.delete(entry)
    db.delete(doc)
    audit.record(
        db,
        type=EventType.DOCUMENT_DELETED,
        actor=principal.actor,
        org_id=org_id,
        resource=("document", document_id),
    )


# --- rules --------------------------------------------------------------------------


def create_rule(
    db: Session,
    principal: Principal,
    org_id: str,
    *,
    effect: str,
    action: str,
    resource_type: str,
    condition: str,
) -> AuthzRule:
    principal.require_org(org_id)
    principal.require(Permission.SOURCES_MANAGE)
    try:
        conditions.validate(condition)
    except conditions.TooCostly as exc:
        raise InvalidInput.field("condition", str(exc)) from None
    except conditions.RuleError as exc:
        raise InvalidInput.field("condition", conditions.problem(exc)) from None
    rule = AuthzRule(
        id=new_id("arl"),
        org_id=org_id,
        effect=effect,
        action=action,
        resource_type=resource_type,
        condition=condition,
    )
    db.add(rule)
    audit.record(
        db,
        type=EventType.AUTHZ_RULE_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("authz_rule", rule.id),
        metadata={"effect": effect, "action": action, "resource_type": resource_type},
    )
    return rule


def list_rules(db: Session, principal: Principal, org_id: str) -> list[AuthzRule]:
    principal.require_org(org_id)
    principal.require(Permission.SOURCES_READ)
    stmt = select(AuthzRule).where(AuthzRule.org_id == org_id).order_by(AuthzRule.id)
    return list(db.execute(stmt).scalars())


def delete_rule(db: Session, principal: Principal, org_id: str, rule_id: str) -> None:
    principal.require_org(org_id)
    principal.require(Permission.SOURCES_MANAGE)
    rule = db.get(AuthzRule, rule_id) if has_prefix(rule_id, "arl") else None
    if rule is None or rule.org_id != org_id:
        raise NotFound("rule not found")
    db.delete(rule)
    audit.record(
        db,
        type=EventType.AUTHZ_RULE_DELETED,
        actor=principal.actor,
        org_id=org_id,
        resource=("authz_rule", rule_id),
    )


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
        or _reads(eng, sessions, principal, org_id, document_id)
    ):
        raise NotFound("document not found")
    return engine.acl_tokens(index, document_id, utcnow())


def require_stats(principal: Principal, org_id: str) -> None:
    principal.require_org(org_id)
    principal.require(Permission.AUTHZ_CHECK)
