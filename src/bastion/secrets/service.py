"""Secrets: versioned values at org, workflow or run scope; metadata never carries a
value; reveal needs `secrets:reveal` and is audited (without the value)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core.context import Actor
from bastion.core.db import fetch
from bastion.core.errors import InvalidInput, NotFound
from bastion.core.events import EventType, Outcome
from bastion.core.ids import new_id
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.secrets import vault as vaults
from bastion.secrets.errors import KeyUnavailable, SecretUnreadable
from bastion.secrets.models import OrgKey, Secret, SecretVersion
from bastion.secrets.vault import KeyState, Vault

MAX_VALUE_BYTES = 64 * 1024
# Background re-encryption after an org data-key rotation: rows per transaction, and
# how often each server looks for unfinished rotations (seconds).
REENCRYPT_BATCH = 200
REENCRYPT_EVERY_SECONDS = 2.0
REENCRYPT_ACTOR = Actor(type="system", id="secrets.reencrypt")

log = structlog.get_logger("bastion.secrets")


# The scopes of the secrets API; others (a webhook endpoint's signing secrets) belong to
# their feature and are never listed, described, revealed or deleted here.
USER_SCOPES = ("org", "workflow", "run")


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
    vaults.add_version(db, vault, org_id, secret.id, version, raw)
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
    stmt = select(Secret).where(Secret.org_id == org_id, Secret.scope_type.in_(USER_SCOPES))
    return list(db.execute(stmt.order_by(Secret.name, Secret.id)).scalars())


def describe(
    db: Session, principal: Principal, org_id: str, name: str
) -> list[tuple[Secret, list[SecretVersion]]]:
    principal.require_org(org_id)
    principal.require(Permission.SECRETS_READ)
    found = db.execute(
        select(Secret)
        .where(Secret.org_id == org_id, Secret.name == name, Secret.scope_type.in_(USER_SCOPES))
        .order_by(Secret.id)
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


def decrypt_version(db: Session, vault: Vault, row: SecretVersion) -> bytes:
    """Decrypt one version."""
    args = (row.org_id, row.secret_id, row.version, row.key_version, row.ciphertext)
    return _decrypt(db, vault, *args)


def decrypt_stored(
    db: Session, vault: Vault, org_id: str, secret_id: str, version: int, stored: tuple[int, bytes]
) -> bytes:
    """Decrypt one version read as plain values: its (key version, ciphertext)."""
    return _decrypt(db, vault, org_id, secret_id, version, stored[0], stored[1])


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
    principal.require_recent_auth("secret.reveal")  # people only; from the principal
    return reveal_granted(
        db,
        vault,
        principal.actor,
        org_id,
        name,
        version=version,
        workflow_id=workflow_id,
        run_id=run_id,
    )


def reveal_granted(
    db: Session,
    vault: Vault,
    actor: Actor,
    org_id: str,
    name: str,
    *,
    version: int | None,
    workflow_id: str | None,
    run_id: str | None,
) -> Revealed:
    """Reveal for a caller whose right to this secret was already decided (people and
    keys: `secrets:reveal`; agent runs: the secrets granted to their agent, see
    `bastion.agents.gate.reveal_secret`). Audited, success or failure, never the value."""
    candidates = [Scope("run", run_id)] if run_id else []
    if workflow_id:
        candidates.append(Scope("workflow", workflow_id))
    candidates.append(Scope())
    found = _revealable(db, org_id, name, candidates, version)
    if found is None:
        raise NotFound("secret not found")
    scope, secret_id, wanted, stored = found
    if stored is None:
        raise NotFound("no such version")
    key_version, blob = stored
    try:
        value = _decrypt(db, vault, org_id, secret_id, wanted, key_version, blob)
    except SecretUnreadable as exc:
        log.warning(
            "secret unreadable",
            org_id=org_id,
            secret_id=secret_id,
            version=wanted,
            key_version=key_version,
            cause=exc.reason,
        )
        raise exc.with_audit(
            type=EventType.SECRET_REVEALED,
            actor=actor,
            org_id=org_id,
            outcome=Outcome.FAILURE,
            resource=("secret", secret_id),
            reason="secret_unreadable",
            metadata={"name": name, "version": wanted, "scope": scope.type, "cause": exc.reason},
        ) from None
    except KeyUnavailable as exc:
        raise exc.with_audit(
            type=EventType.SECRET_REVEALED,
            actor=actor,
            org_id=org_id,
            outcome=Outcome.FAILURE,
            resource=("secret", secret_id),
            reason="key_unavailable",
            metadata={"name": name, "version": wanted, "scope": scope.type, "cause": exc.reason},
        ) from None
    audit.record(
        db,
        type=EventType.SECRET_REVEALED,
        actor=actor,
        org_id=org_id,
        resource=("secret", secret_id),
        metadata={"name": name, "version": wanted, "scope": scope.type},
    )
    return Revealed(value.decode(), wanted, scope)


def _revealable(
    db: Session, org_id: str, name: str, candidates: list[Scope], version: int | None
) -> tuple[Scope, str, int, tuple[int, bytes] | None] | None:
    """The most specific of `candidates` that has the secret: its scope, id, the version
    asked for (else its current one) and that version's (key version, ciphertext), None
    when there is no such version. One query in plain SQL, run by `fetch` (on a request,
    outside the ORM): a reveal is a hot path, and the statement, the session's
    connection and the identity map cost many times the read."""
    params: list[object] = [] if version is None else [version]
    params += [org_id, name]
    for scope in candidates:
        params += [scope.type, scope.id]
    rows = fetch(db, _REVEALABLE[(len(candidates), version is None)], tuple(params))
    found = {(r[0], r[1]): r for r in rows}
    for scope in candidates:
        row = found.get((scope.type, scope.id))
        if row is not None:
            stored = None if row[4] is None else (row[4], bytes(row[5]))
            return scope, row[2], version or row[3], stored
    return None


def _revealable_sql(scopes: int, current: bool) -> str:
    """Parameters: the version (unless `current`), org id, name, then (type, id) per
    candidate scope."""
    wanted = "s.current_version" if current else "?"
    either = " OR ".join(["(s.scope_type = ? AND s.scope_id = ?)"] * scopes)
    columns = "s.scope_type, s.scope_id, s.id, s.current_version, v.key_version, v.ciphertext"
    versions = f"secret_versions AS v ON v.secret_id = s.id AND v.version = {wanted}"
    joined = f"secrets AS s LEFT OUTER JOIN {versions}"
    where = f"s.org_id = ? AND s.name = ? AND ({either})"
    return f"SELECT {columns} FROM {joined} WHERE {where}"  # noqa: S608 - constants; values bound


# By (number of candidate scopes: org, workflow, run; whether the current version).
_REVEALABLE = {
    (n, current): _revealable_sql(n, current) for n in (1, 2, 3) for current in (True, False)
}


def _decrypt(
    db: Session,
    vault: Vault,
    org_id: str,
    secret_id: str,
    version: int,
    key_version: int,
    blob: bytes,
) -> bytes:
    """Decrypt one version read as plain values. If its data key was destroyed between
    reading the row and the key (a finished re-encryption, seen by a non-snapshot read on
    PostgreSQL), the row has been re-encrypted meanwhile: read it again once."""
    try:
        return vault.decrypt(db, org_id, secret_id, version, key_version, blob)
    except SecretUnreadable as exc:
        if exc.reason != "data_key_destroyed":
            raise
        row = db.get(SecretVersion, (secret_id, version), populate_existing=True)
        if row is None or row.key_version == key_version:
            raise
        return vault.decrypt(db, org_id, secret_id, version, row.key_version, row.ciphertext)


def delete_secret(db: Session, principal: Principal, org_id: str, name: str) -> int:
    principal.require_org(org_id)
    principal.require(Permission.SECRETS_MANAGE)
    found = list(
        db.execute(
            select(Secret).where(
                Secret.org_id == org_id, Secret.name == name, Secret.scope_type.in_(USER_SCOPES)
            )
        ).scalars()
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


# --- org data-key rotation and crypto-shredding ---------------------------------------


def data_key_state(db: Session, principal: Principal, org_id: str) -> KeyState:
    principal.require_org(org_id)
    principal.require(Permission.SECRETS_READ)
    return vaults.key_state(db, org_id)


def rotate_data_key(
    db: Session, vault: Vault, actor: Actor, org_id: str, principal: Principal | None = None
) -> KeyState:
    """Add a new data-key version for the organisation: new writes use it at once; the
    servers' background task re-encrypts existing versions under it and then destroys
    the older keys. `principal` is None only for the CLI (instance operator)."""
    if principal is not None:
        principal.require_org(org_id)
        principal.require(Permission.SECRETS_MANAGE)
    version = vault.rotate(db, org_id)
    state = vaults.key_state(db, org_id)
    audit.record(
        db,
        type=EventType.DATA_KEY_ROTATED,
        actor=actor,
        org_id=org_id,
        resource=("data_key", str(version)),
        metadata={
            "version": version,
            "older_versions": list(state.older_versions),
            "pending": state.pending,
        },
    )
    return state


@dataclass(frozen=True)
class Reencrypted:
    moved: int = 0
    unreadable: int = 0
    destroyed: tuple[int, ...] = ()


def _reencrypt_pass(
    sessions: Callable[[], Session],
    vault: Vault,
    org_id: str,
    active: int,
    batch: int,
    progress: Callable[[int], None] | None,
) -> tuple[int, int]:
    """Every row under an older key, `batch` per transaction: (moved, unreadable)."""
    moved = unreadable = 0
    after = ("", 0)
    while True:
        with sessions() as db:
            done = vaults.reencrypt_batch(db, vault, org_id, active, after=after, limit=batch)
            db.commit()
        moved += done.moved
        unreadable += done.unreadable
        if progress is not None:
            progress(done.moved + done.unreadable)
        if done.cursor is None:
            return moved, unreadable
        after = done.cursor


def reencrypt_org(
    sessions: Callable[[], Session],
    vault: Vault,
    org_id: str,
    *,
    batch: int = REENCRYPT_BATCH,
    progress: Callable[[int], None] | None = None,
    wait: bool = True,
) -> Reencrypted:
    """Move the org's secret versions onto its newest data key, `batch` rows per
    transaction (`sessions` must open write transactions), then destroy the older keys
    when none is used any more. Idempotent and safe with other workers doing the same;
    reads keep working throughout (each row names the key version it is under).

    Older keys are destroyed only once the rotation is `vault.DESTROY_AFTER_SECONDS`
    old, when no worker still writes under a cached older version. With `wait` (the
    CLI) this call sleeps until then and re-encrypts what such workers wrote meanwhile;
    without it (the servers' background task) a later pass destroys them."""
    with sessions() as db:
        active = db.execute(
            select(func.max(OrgKey.version)).where(OrgKey.org_id == org_id)
        ).scalar()
    if active is None:
        return Reencrypted()
    active = int(active)
    moved, unreadable = _reencrypt_pass(sessions, vault, org_id, active, batch, progress)
    if wait and not unreadable:
        with sessions() as db:
            remaining = vaults.settling_seconds(db, org_id, active)
        if remaining > 0:
            time.sleep(remaining)
            more, unreadable = _reencrypt_pass(sessions, vault, org_id, active, batch, progress)
            moved += more
    if unreadable:
        log.warning(
            "secret versions unreadable under their data key; older key kept",
            org_id=org_id,
            rows=unreadable,
        )
        return Reencrypted(moved, unreadable)
    with sessions() as db:
        try:
            destroyed = vaults.destroy_older_keys(db, vault, org_id, active)
        except vaults.KeysStillInUse:  # a write under an older key committed meanwhile
            db.rollback()
            return Reencrypted(moved, 0)
        if destroyed:
            audit.record(
                db,
                type=EventType.DATA_KEY_DESTROYED,
                actor=REENCRYPT_ACTOR,
                org_id=org_id,
                resource=("data_key", ",".join(str(v) for v in destroyed)),
                metadata={
                    "versions": destroyed,
                    "active_version": active,
                    "reencrypted": moved,
                },
            )
        db.commit()
    return Reencrypted(moved, 0, tuple(destroyed))


def reencrypt_round(
    read: Callable[[], Session],
    write: Callable[[], Session],
    vault: Vault,
    *,
    batch: int | None = None,
) -> int:
    """One pass of the background task over every unfinished rotation; returns the rows
    re-encrypted."""
    with read() as db:
        orgs = vaults.orgs_rotating(db)
    size = batch or REENCRYPT_BATCH
    moved = 0
    for org_id in orgs:
        try:
            moved += reencrypt_org(write, vault, org_id, batch=size, wait=False).moved
        except KeyUnavailable:
            # Its customer-managed key refuses for now: the rotation waits for it,
            # every other organisation's goes on.
            log.warning("re-encryption waits for the organisation's key", org_id=org_id)
    return moved


def shred_org(db: Session, vault: Vault | None, org_id: str) -> int:
    """Crypto-shredding, for the organisation's deletion (in the caller's transaction):
    delete its secret versions and destroy its data keys. Returns the number of keys
    destroyed."""
    return vaults.shred_org(db, org_id, vault)
