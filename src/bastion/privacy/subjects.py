"""Data subject requests: access (a ZIP of JSON files with every record that names the
person) and erasure (the person deleted everywhere; the audit chain still verifies).

Privacy sits below the domains that hold some of a person's records (approvals, agents'
runs and tool calls): each of them registers a `Source` here on import, as approvals
does with agents (`bastion.approvals.hooks`); identity, tenancy and audit are below and
are asked directly. See docs/privacy.md ("Subject requests") for what erasure keeps.
"""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core.clock import utcnow
from bastion.core.errors import NotFound
from bastion.core.events import EventType
from bastion.core.ids import has_prefix, new_id
from bastion.core.pagination import Page, newest_first
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.identity import service as identity
from bastion.privacy.models import SubjectRequest
from bastion.tenancy import service as tenancy

# (db, org_id, user_id) -> the records naming the person, as JSON objects.
Collect = Callable[[Session, str, str], list[dict[str, Any]]]
# (db, org_id, user_id) -> how many records were erased or pseudonymised.
Erase = Callable[[Session, str, str], int]


@dataclass(frozen=True)
class Source:
    """A file of the access package (`name`.json) and what erasure does there."""

    name: str
    collect: Collect
    erase: Erase | None = None


_SOURCES: dict[str, Source] = {}
_registering = threading.Lock()


def register(source: Source) -> None:
    """Called by a domain above privacy, at import (idempotent per name)."""
    with _registering:
        _SOURCES[source.name] = source


def sources() -> list[Source]:
    with _registering:
        return [_SOURCES[k] for k in sorted(_SOURCES)]


def _subject(db: Session, org_id: str, user_id: str | None, email: str | None) -> str:
    if user_id is not None:
        identity.subject_records(db, org_id, user_id)  # NotFound unless theirs
        return user_id
    found = sorted(identity.user_ids_by_email(db, org_id, email or ""))
    if not found:
        raise NotFound("user not found")
    return found[0]


def _memberships(db: Session, org_id: str, user_id: str) -> list[dict[str, Any]]:
    mine = tenancy.teams_of(db, org_id, user_id)
    teams = tenancy.org_teams(db, org_id)
    return [{"team_id": t.id, "name": t.name} for t in teams if t.id in mine]


def package_files(db: Session, org_id: str, user_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every record naming the person, by file (without the `.json`)."""
    files = identity.subject_records(db, org_id, user_id)
    files["memberships"] = _memberships(db, org_id, user_id)
    for source in sources():
        files[source.name] = source.collect(db, org_id, user_id)
    files["audit_events"] = audit.events_naming(db, org_id, user_id)
    return dict(sorted(files.items()))


def create_request(
    db: Session,
    principal: Principal,
    org_id: str,
    *,
    kind: str,
    user_id: str | None,
    email: str | None,
) -> SubjectRequest:
    """Answer the request at once (in the caller's transaction), audited. Erasure needs
    a recent verification (step-up) and cannot be undone."""
    principal.require_org(org_id)
    principal.require(Permission.PRIVACY_SUBJECT_REQUESTS)
    if kind == "erasure":
        principal.require_recent_auth("privacy.erasure")
    subject = _subject(db, org_id, user_id, email)
    now = utcnow()
    request = SubjectRequest(
        id=new_id("dsr"),
        org_id=org_id,
        kind=kind,
        subject_id=subject,
        status="completed",
        requested_by=principal.actor.id or "",
        created_at=now,
        completed_at=now,
    )
    if kind == "access":
        files = package_files(db, org_id, subject)
        request.result = {"records": {name: len(rows) for name, rows in files.items()}}
        event = EventType.PRIVACY_SUBJECT_ACCESS
    else:
        request.result = {"erased": _erase(db, principal, org_id, subject)}
        event = EventType.PRIVACY_SUBJECT_ERASED
    db.add(request)
    db.flush()
    audit.record(
        db,
        type=event,
        actor=principal.actor,
        org_id=org_id,
        resource=("subject_request", request.id),
        metadata={"subject_id": subject, **request.result},
    )
    return request


def _erase(db: Session, principal: Principal, org_id: str, user_id: str) -> dict[str, int]:
    """Domains above first (their records may point at the user), then identity."""
    counts: dict[str, int] = {}
    for source in sources():
        if source.erase is not None:
            counts[source.name] = source.erase(db, org_id, user_id)
    counts.update(identity.erase_subject(db, principal, org_id, user_id))
    # Their email in the audit events about them (`user.created`, `user.deleted` …):
    # pseudonymised, the hashed commitment kept (bastion.audit.pii).
    counts["audit_events"] = audit.pseudonymise_subject(db, org_id, user_id)
    return dict(sorted(counts.items()))


def _find(db: Session, org_id: str, request_id: str) -> SubjectRequest:
    found = db.get(SubjectRequest, request_id) if has_prefix(request_id, "dsr") else None
    if found is None or found.org_id != org_id:
        raise NotFound("subject request not found")
    return found


def get_request(db: Session, principal: Principal, org_id: str, request_id: str) -> SubjectRequest:
    principal.require_org(org_id)
    principal.require(Permission.PRIVACY_SUBJECT_REQUESTS)
    return _find(db, org_id, request_id)


def list_requests(
    db: Session, principal: Principal, org_id: str, *, limit: int, cursor: str | None
) -> Page[SubjectRequest]:
    principal.require_org(org_id)
    principal.require(Permission.PRIVACY_SUBJECT_REQUESTS)
    stmt = select(SubjectRequest).where(SubjectRequest.org_id == org_id)
    return newest_first(db, stmt, SubjectRequest.id, limit=limit, cursor=cursor)


def package(db: Session, principal: Principal, org_id: str, request_id: str) -> bytes:
    """The access package (built now, from live records: nothing of it is kept), a ZIP
    of one JSON file per kind of record; audited. An erasure request has none (404)."""
    request = get_request(db, principal, org_id, request_id)
    if request.kind != "access":
        raise NotFound("an erasure request has no package")
    files = package_files(db, org_id, request.subject_id)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        manifest = {
            "request_id": request.id,
            "org_id": org_id,
            "subject_id": request.subject_id,
            "generated_at": utcnow().isoformat(),
            "files": {f"{name}.json": len(rows) for name, rows in files.items()},
        }
        archive.writestr("manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
        for name, rows in files.items():
            archive.writestr(f"{name}.json", json.dumps(rows, indent=2, default=str))
    audit.record(
        db,
        type=EventType.PRIVACY_SUBJECT_PACKAGE_READ,
        actor=principal.actor,
        org_id=org_id,
        resource=("subject_request", request.id),
        metadata={"subject_id": request.subject_id},
    )
    return buffer.getvalue()
