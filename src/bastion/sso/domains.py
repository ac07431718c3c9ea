"""Verified domains: an organisation claims a domain, publishes the TXT record
`bastion-verification=<token>` at it, and asks Bastion to look it up. Once found, the
domain is the organisation's: SSO sign-ins of its emails belong there and, with
`sso_enforced`, its users cannot sign in by password. A domain is verified by one
organisation at most (409 for another). The DNS resolver is the system's, or
`BASTION_DNS_RESOLVER=host:port`."""

from __future__ import annotations

import dns.exception
import dns.resolver
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core.clock import utcnow
from bastion.core.crypto import random_token
from bastion.core.errors import Conflict, NotFound
from bastion.core.events import EventType, Outcome
from bastion.core.ids import has_prefix, new_id
from bastion.core.pagination import Page, newest_first
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.sso.connections import STEP_UP_ACTION
from bastion.sso.errors import DomainNotVerified
from bastion.sso.models import SsoDomain

TXT_PREFIX = "bastion-verification="
DNS_TIMEOUT = 5.0


def txt_record(domain: SsoDomain) -> str:
    return TXT_PREFIX + domain.token


def _find(db: Session, org_id: str, domain_id: str) -> SsoDomain:
    if not has_prefix(domain_id, "dom"):
        raise NotFound("domain not found")
    found = db.execute(
        select(SsoDomain).where(SsoDomain.org_id == org_id, SsoDomain.id == domain_id)
    ).scalar_one_or_none()
    if found is None:
        raise NotFound("domain not found")
    return found


def _verified_elsewhere(db: Session, org_id: str, domain: str) -> bool:
    owner = verified_owner(db, domain)
    return owner is not None and owner != org_id


def verified_owner(db: Session, domain: str) -> str | None:
    """The organisation that verified `domain`, if any."""
    return db.execute(
        select(SsoDomain.org_id).where(SsoDomain.verified_domain == domain.lower())
    ).scalar_one_or_none()


def add(db: Session, principal: Principal, org_id: str, domain: str) -> SsoDomain:
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    principal.require_recent_auth(STEP_UP_ACTION)
    if _verified_elsewhere(db, org_id, domain):
        raise Conflict("this domain is verified by another organisation")
    taken = db.execute(
        select(SsoDomain.id).where(SsoDomain.org_id == org_id, SsoDomain.domain == domain)
    ).first()
    if taken:
        raise Conflict("this domain is already added")
    row = SsoDomain(id=new_id("dom"), org_id=org_id, domain=domain, token=random_token(24))
    db.add(row)
    db.flush()
    audit.record(
        db,
        type=EventType.SSO_DOMAIN_ADDED,
        actor=principal.actor,
        org_id=org_id,
        resource=("sso_domain", row.id),
        metadata={"domain": domain},
    )
    return row


def list_page(
    db: Session, principal: Principal, org_id: str, *, limit: int, cursor: str | None
) -> Page[SsoDomain]:
    principal.require_org(org_id)
    principal.require(Permission.ORG_READ)
    stmt = select(SsoDomain).where(SsoDomain.org_id == org_id)
    return newest_first(db, stmt, SsoDomain.id, limit=limit, cursor=cursor)


def get(db: Session, principal: Principal, org_id: str, domain_id: str) -> SsoDomain:
    principal.require_org(org_id)
    principal.require(Permission.ORG_READ)
    return _find(db, org_id, domain_id)


def _resolver(nameserver: str | None) -> dns.resolver.Resolver:
    if nameserver is None:
        resolver = dns.resolver.Resolver()
    else:
        host, _, port = nameserver.rpartition(":")
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host.strip("[]")]
        resolver.port = int(port)
    resolver.lifetime = DNS_TIMEOUT
    resolver.timeout = DNS_TIMEOUT
    return resolver


def lookup_txt(domain: str, nameserver: str | None) -> tuple[list[str], str | None]:
    """The TXT strings at `domain` and, when the lookup failed, why (for the audit)."""
    try:
        answer = _resolver(nameserver).resolve(domain, "TXT", search=False)
    except dns.resolver.NXDOMAIN:
        return [], "nxdomain"
    except dns.resolver.NoAnswer:
        return [], "no_txt_records"
    except (dns.resolver.NoNameservers, dns.exception.Timeout):
        return [], "resolver_unavailable"
    except dns.exception.DNSException:
        return [], "lookup_failed"
    texts = []
    for record in answer:
        texts.append(b"".join(record.strings).decode("utf-8", "replace"))
    return texts, None


def verify(
    db: Session, principal: Principal, org_id: str, domain_id: str, *, nameserver: str | None
) -> SsoDomain:
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    row = _find(db, org_id, domain_id)
    principal.require_recent_auth(STEP_UP_ACTION)
    if row.verified_domain is not None:
        return row
    if _verified_elsewhere(db, org_id, row.domain):
        raise Conflict("this domain is verified by another organisation")
    texts, failure = lookup_txt(row.domain, nameserver)
    expected = txt_record(row)
    if expected not in (t.strip() for t in texts):
        reason = failure or "record_absent"
        raise DomainNotVerified(
            f"domain: no TXT record {expected!r} found at {row.domain} ({reason});"
            " publish it and try again (DNS changes can take a while to appear)"
        ).with_audit(
            type=EventType.SSO_DOMAIN_VERIFICATION_FAILED,
            actor=principal.actor,
            org_id=org_id,
            outcome=Outcome.FAILURE,
            resource=("sso_domain", row.id),
            reason=reason,
            metadata={"domain": row.domain},
        )
    try:
        with db.begin_nested():
            row.verified_domain = row.domain
            row.verified_at = utcnow()
            db.flush()
    except IntegrityError:
        raise Conflict("this domain is verified by another organisation") from None
    audit.record(
        db,
        type=EventType.SSO_DOMAIN_VERIFIED,
        actor=principal.actor,
        org_id=org_id,
        resource=("sso_domain", row.id),
        metadata={"domain": row.domain},
    )
    return row


def delete(db: Session, principal: Principal, org_id: str, domain_id: str) -> None:
    principal.require_org(org_id)
    principal.require(Permission.ORG_MANAGE)
    row = _find(db, org_id, domain_id)
    principal.require_recent_auth(STEP_UP_ACTION)
    name = row.domain
    db.delete(row)
    db.flush()
    audit.record(
        db,
        type=EventType.SSO_DOMAIN_REMOVED,
        actor=principal.actor,
        org_id=org_id,
        resource=("sso_domain", domain_id),
        metadata={"domain": name},
    )
