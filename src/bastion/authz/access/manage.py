"""The rows administrators write: sources, documents, their ACL entries, and metadata
rules. A change needs `sources:manage` and is audited in the same transaction; a read
needs `sources:read`.

Kept apart from the questions answered from the engine (`questions`): these functions
read and write rows through the session; the engine only sees them once a new index is
built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.authz import conditions, engine, facts
from bastion.authz.access.questions import Sessions, reads
from bastion.authz.engine import Engine
from bastion.authz.models import AclEntry, AuthzRule, Document, Source
from bastion.core.errors import Conflict, InvalidInput, NotFound
from bastion.core.events import EventType
from bastion.core.ids import has_prefix, new_id
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.tenancy import service as tenancy

# --- sources ------------------------------------------------------------------------


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
    if not principal.can(Permission.SOURCES_MANAGE) and not reads(
        eng, sessions, principal, org_id, doc.id
    ):
        raise NotFound("document not found")
    return doc


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
