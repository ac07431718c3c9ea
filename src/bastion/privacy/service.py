"""Privacy operations for callers: scan, redact and detokenize, with the permission
checks, the organisation's redaction key (sealed in the vault) and the audit.

Texts are never logged, audited or kept: only counts and types leave this module.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core import crypto
from bastion.core.context import Actor
from bastion.core.errors import InvalidInput
from bastion.core.events import EventType
from bastion.core.permissions import Permission
from bastion.core.principal import Principal
from bastion.privacy import detector, policies, retention
from bastion.privacy.errors import KeyUnreadable
from bastion.privacy.models import PrivacyKey
from bastion.privacy.redaction import Mode, Redacted, Redactor, detokenize_text, redact_text
from bastion.privacy.types import EntityType, Finding
from bastion.secrets import sealed
from bastion.secrets.vault import Vault

KEY_SCOPE = "privacy"
KEY_NAME = "privacy.redaction-key"

# Request limits (the API answers 422 naming the field past them).
MAX_TEXTS = 1000
MAX_TEXT_CHARS = 100_000
MAX_TOTAL_CHARS = 500_000  # below the 1 MiB request body limit

# Scanning is CPU work under the GIL: at most this many scans at once, the rest wait in
# their worker threads (never on the event loop).
_SCANS = threading.BoundedSemaphore(max(1, min(4, os.cpu_count() or 1)))


def _scan(texts: Sequence[str], types: Sequence[EntityType] | None) -> list[list[Finding]]:
    with _SCANS:
        return detector().scan(texts, types)


def scan(
    principal: Principal,
    org_id: str,
    texts: Sequence[str],
    types: Sequence[EntityType] | None,
) -> list[list[Finding]]:
    """Findings per text. CPU work: callers run it off the event loop."""
    principal.require_org(org_id)
    principal.require(Permission.PRIVACY_SCAN)
    return _scan(texts, types)


def redact(
    db: Session,
    vault: Vault,
    principal: Principal,
    org_id: str,
    texts: Sequence[str],
    mode: Mode,
    types: Sequence[EntityType] | None,
) -> list[Redacted]:
    principal.require_org(org_id)
    principal.require(Permission.PRIVACY_SCAN)
    found = _scan(texts, types)
    redactor = None
    if mode in (Mode.HASH, Mode.TOKENIZE) and any(found):
        redactor = _redactor(db, vault, principal.actor, org_id)
    return [redact_text(t, f, mode, redactor) for t, f in zip(texts, found, strict=True)]


@dataclass(frozen=True)
class Detokenized:
    texts: list[str]
    restored: int


def detokenize(
    db: Session, vault: Vault, principal: Principal, org_id: str, texts: Sequence[str]
) -> Detokenized:
    """Every token of this organisation turned back into its value (audited, without
    values); tokens of another organisation or altered ones stay as they are."""
    principal.require_org(org_id)
    principal.require(Permission.PRIVACY_DETOKENIZE)
    key = db.get(PrivacyKey, org_id)
    out: list[str] = list(texts)
    per_type: dict[str, int] = {}
    if key is not None:
        redactor = _open(db, vault, key)
        for i, text in enumerate(texts):
            restored = detokenize_text(text, redactor)
            out[i] = restored.text
            for kind, n in restored.types.items():
                per_type[kind] = per_type.get(kind, 0) + n
    total = sum(per_type.values())
    audit.record(
        db,
        type=EventType.PRIVACY_DETOKENIZED,
        actor=principal.actor,
        org_id=org_id,
        resource=("org", org_id),
        metadata={"texts": len(texts), "restored": total, "types": dict(sorted(per_type.items()))},
    )
    return Detokenized(out, total)


def _redactor(db: Session, vault: Vault, actor: Actor, org_id: str) -> Redactor:
    """The organisation's keys, made and sealed on first use (audited)."""
    key = db.get(PrivacyKey, org_id)
    if key is None:
        master = crypto.random_bytes(32)
        try:
            with db.begin_nested():
                secret_id = sealed.create(
                    db,
                    vault,
                    org_id,
                    name=KEY_NAME,
                    scope_type=KEY_SCOPE,
                    scope_id="",
                    description="Redaction key (hash and tokenize modes)",
                    value=master,
                )
                db.add(PrivacyKey(org_id=org_id, secret_id=secret_id))
                db.flush()
        except IntegrityError:  # another request made it first: use theirs
            key = db.get(PrivacyKey, org_id, populate_existing=True)
            if key is None:  # pragma: no cover - the row that conflicted is there
                raise InvalidInput("the redaction key could not be made; retry") from None
        else:
            audit.record(
                db,
                type=EventType.PRIVACY_KEY_CREATED,
                actor=actor,
                org_id=org_id,
                resource=("org", org_id),
                metadata={"secret_id": secret_id},
            )
            return Redactor.from_master(master)
    return _open(db, vault, key)


def _open(db: Session, vault: Vault, key: PrivacyKey) -> Redactor:
    try:
        return Redactor.from_master(sealed.read_current(db, vault, key.secret_id))
    except sealed.Unreadable:
        raise KeyUnreadable() from None


# --- data policies (what the gate, the MCP gateway and webhooks call) -------------------

Policies = policies.Policies
Applied = policies.Applied
NO_POLICIES = policies.NONE
policies_of = policies.policies_of
apply_policies = policies.apply


def run_artifacts_hours(db: Session, org_id: str) -> int:
    """How long the organisation keeps run artifacts (a destroyed sandbox fork's diff):
    its `run_artifacts_hours` retention setting (24 unless set)."""
    return retention.period_of(db, org_id, "run_artifacts_hours")
