"""Secrets: versioned values at org, workflow or run scope; metadata never carries a
value; reveal needs `secrets:reveal` and is audited (without the value)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.audit.events import EventType
from bastion.authz.permissions import Permission
from bastion.authz.principal import Principal
from bastion.core.errors import InvalidInput, NotFound
from bastion.core.ids import new_id
from bastion.secrets.models import Secret, SecretVersion
from bastion.secrets.vault import Vault

MAX_VALUE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Scope:
    type: str = "org"  # org | workflow | run
    id: str = ""

    @staticmethod
    def of(workflow_id: str | None, run_id: str | None) -> Scope:
        if workflow_id and run_id:
            raise InvalidInput.field("scope", "give workflow_id or run_id, not both")
        if run_id:
            return Scope("run", run_id)
        if workflow_id:
            return Scope("workflow", workflow_id)
        return Scope()


def _find(db: Session, org_id: str, name: str, scope: Scope) -> Secret | None:
    return db.execute(
        select(Secret).where(
            Secret.org_id == org_id,
            Secret.name == name,
            Secret.scope_type == scope.type,
            Secret.scope_id == scope.id,
        )
    ).scalar_one_or_none()


def put_secret(
    db: Session,
    vault: Vault,
    principal: Principal,
    org_id: str,
    name: str,
    value: str,
    *,
    description: str | None,
    scope: Scope,
) -> tuple[Secret, int]:
    """Write a new version (the first creates the secret). Readers pick it up at once."""
    principal.require_org(org_id)
    principal.require(Permission.SECRETS_MANAGE)
    raw = value.encode()
    if len(raw) > MAX_VALUE_BYTES:
        raise InvalidInput.field("value", f"at most {MAX_VALUE_BYTES} bytes")
    secret = _find(db, org_id, name, scope)
    if secret is None:
        secret = Secret(
            id=new_id("sec"),
            org_id=org_id,
            name=name,
            scope_type=scope.type,
            scope_id=scope.id,
            description=description or "",
            current_version=0,
        )
        db.add(secret)
    elif description is not None:
        secret.description = description
    version = secret.current_version + 1
    key_version, blob = vault.encrypt(db, org_id, secret.id, version, raw)
    db.add(
        SecretVersion(
            secret_id=secret.id,
            version=version,
            org_id=org_id,
            ciphertext=blob,
            key_version=key_version,
        )
    )
    secret.current_version = version
    audit.record(
        db,
        type=EventType.SECRET_VERSION_CREATED,
        actor=principal.actor,
        org_id=org_id,
        resource=("secret", secret.id),
        metadata={"name": name, "version": version, "scope": scope.type},
    )
    return secret, version


def list_secrets(db: Session, principal: Principal, org_id: str) -> list[Secret]:
    principal.require_org(org_id)
    principal.require(Permission.SECRETS_READ)
    stmt = select(Secret).where(Secret.org_id == org_id).order_by(Secret.name, Secret.id)
    return list(db.execute(stmt).scalars())


def describe(
    db: Session, principal: Principal, org_id: str, name: str
) -> list[tuple[Secret, list[SecretVersion]]]:
    principal.require_org(org_id)
    principal.require(Permission.SECRETS_READ)
    found = db.execute(
        select(Secret).where(Secret.org_id == org_id, Secret.name == name).order_by(Secret.id)
    ).scalars()
    out = []
    for secret in found:
        versions = db.execute(
            select(SecretVersion)
            .where(SecretVersion.secret_id == secret.id)
            .order_by(SecretVersion.version.desc())
        ).scalars()
        out.append((secret, list(versions)))
    if not out:
        raise NotFound("secret not found")
    return out


@dataclass(frozen=True)
class Revealed:
    value: str = ""
    version: int = 0
    scope: Scope = Scope()


def reveal(
    db: Session,
    vault: Vault,
    principal: Principal,
    org_id: str,
    name: str,
    *,
    version: int | None,
    workflow_id: str | None,
    run_id: str | None,
) -> Revealed:
    """The value at the most specific scope that has one: run > workflow > org."""
    principal.require_org(org_id)
    principal.require(Permission.SECRETS_REVEAL)
    candidates = [Scope("run", run_id)] if run_id else []
    if workflow_id:
        candidates.append(Scope("workflow", workflow_id))
    candidates.append(Scope())
    for scope in candidates:
        secret = _find(db, org_id, name, scope)
        if secret is None:
            continue
        wanted = version or secret.current_version
        row = db.get(SecretVersion, (secret.id, wanted))
        if row is None:
            raise NotFound("no such version")
        value = vault.decrypt(db, org_id, secret.id, wanted, row.key_version, row.ciphertext)
        audit.record(
            db,
            type=EventType.SECRET_REVEALED,
            actor=principal.actor,
            org_id=org_id,
            resource=("secret", secret.id),
            metadata={"name": name, "version": wanted, "scope": scope.type},
        )
        return Revealed(value.decode(), wanted, scope)
    raise NotFound("secret not found")


def delete_secret(db: Session, principal: Principal, org_id: str, name: str) -> int:
    principal.require_org(org_id)
    principal.require(Permission.SECRETS_MANAGE)
    found = list(
        db.execute(select(Secret).where(Secret.org_id == org_id, Secret.name == name)).scalars()
    )
    if not found:
        raise NotFound("secret not found")
    for secret in found:
        db.delete(secret)  # its versions go with it (ON DELETE CASCADE)
    audit.record(
        db,
        type=EventType.SECRET_DELETED,
        actor=principal.actor,
        org_id=org_id,
        resource=("secret", found[0].id),
        metadata={"name": name, "scopes": len(found)},
    )
    return len(found)
