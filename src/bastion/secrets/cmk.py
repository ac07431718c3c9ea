"""Customer-managed keys inside the vault: which organisations have one, building their
provider from the sealed configuration, and unwrapping their data keys.

An `org_keys` row whose `root_version` is `CUSTOMER_WRAPPED` (0; root-key versions
start at 1) holds a data key wrapped by the organisation's own key, in the customer's
system, never by the instance root key: with the database and the root key, but
without the customer's key, nobody can unwrap it.

Caching (see `bastion.secrets.vault.Vault`): a customer-wrapped data key is kept for at
most `DATA_KEY_TTL_SECONDS` (60 s) after the provider last unwrapped it; within that,
each worker re-reads the organisation's `generation` at least every
`CMK_RECHECK_SECONDS` (one primary-key read) and drops the key when it changed ("lock
now", a new provider). So a revocation takes effect within 60 s, and within about 2 s
after "lock now", on every worker and replica sharing the database, while a reveal that
hits the cache costs exactly what it costs for an organisation on the instance key.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.audit import service as audit
from bastion.core.clock import as_utc, utcnow
from bastion.core.context import Actor
from bastion.core.errors import InvalidInput
from bastion.core.events import EventType, Outcome
from bastion.secrets.errors import KeyUnavailable, SecretUnreadable
from bastion.secrets.keys import (
    CustomerKeyProvider,
    KeyContext,
    KeyUnavailableError,
    WrappedValueRejected,
)
from bastion.secrets.keys.local import RootKeys
from bastion.secrets.models import OrgEncryptionKey, OrgKey

CUSTOMER_WRAPPED = 0  # `org_keys.root_version` of a data key wrapped by the customer's key
CMK_RECHECK_SECONDS = 1.0
CHECK_EVERY_SECONDS = 30.0  # the background probe of every customer key
CMK_ACTOR = Actor(type="system", id="secrets.cmk")
_CONFIG_PURPOSE = "org-encryption-key-config"
_monotonic = time.monotonic

log = structlog.get_logger("bastion.secrets")


def root_key_aad(org_id: str, version: int) -> bytes:
    """The associated data of a data key wrapped by the instance root key."""
    return f"org-data-key|{org_id}|{version}".encode()


def data_key_context(org_id: str, version: int) -> KeyContext:
    return KeyContext(org_id, f"org-data-key|{version}")


def canary_context(org_id: str) -> KeyContext:
    return KeyContext(org_id, "canary")


def _config_aad(org_id: str) -> bytes:
    return f"{_CONFIG_PURPOSE}|{org_id}".encode()


@dataclass(frozen=True)
class ProviderPolicy:
    """What the operator allows organisations' key providers to reach: outbound HTTP
    destinations (`BASTION_OUTBOUND_ALLOW`, `BASTION_OUTBOUND_PLAINTEXT_ALLOW`) and the
    PKCS#11 libraries that may be loaded (`BASTION_PKCS11_LIBRARIES`)."""

    allow: Sequence[str] = ()
    plaintext: Sequence[str] = ()
    pkcs11_libraries: Sequence[str] = ()


def _text(config: Mapping[str, Any], name: str, *, required: bool = True) -> str | None:
    value = config.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 2000:
        raise InvalidInput.field(f"config.{name}", "is required (a non-empty string)")
    return value


def build_provider(
    name: str, config: Mapping[str, Any], policy: ProviderPolicy
) -> CustomerKeyProvider:
    """The provider `name` for `config`; `InvalidInput` naming the field for a bad or
    missing setting, or for a provider this installation does not ship."""
    if name == "vault_transit":
        from bastion.secrets.keys.vault_transit import VaultTransitProvider

        address = _text(config, "address") or ""
        if not address.startswith(("https://", "http://")):
            raise InvalidInput.field("config.address", "must be an https:// URL")
        mount = _text(config, "mount", required=False) or "transit"
        key_name = _text(config, "key_name") or ""
        for field_name, value in (("key_name", key_name), ("mount", mount)):
            if not all(c.isalnum() or c in "-_/." for c in value) or ".." in value:
                raise InvalidInput.field(f"config.{field_name}", "has characters not allowed")
        return VaultTransitProvider(
            address=address,
            token=_text(config, "token") or "",
            key_name=key_name,
            mount=mount,
            namespace=_text(config, "namespace", required=False),
            allow=policy.allow,
            plaintext=policy.plaintext,
        )
    if name == "pkcs11":
        from bastion.secrets.keys.pkcs11 import Pkcs11Provider

        library = _text(config, "library") or ""
        if library not in policy.pkcs11_libraries:
            raise InvalidInput.field(
                "config.library", "is not a PKCS#11 library the operator allows"
            )
        return Pkcs11Provider(
            library=library,
            token_label=_text(config, "token_label") or "",
            pin=_text(config, "pin") or "",
            key_label=_text(config, "key_label") or "",
        )
    raise InvalidInput.field("provider", "is not available on this installation")


def seal_config(root: RootKeys, org_id: str, config: Mapping[str, Any]) -> tuple[int, bytes]:
    return root.wrap(json.dumps(dict(config)).encode(), _config_aad(org_id))


def open_config(root: RootKeys, org_id: str, version: int, blob: bytes) -> dict[str, Any]:
    opened: dict[str, Any] = json.loads(root.unwrap(version, blob, _config_aad(org_id)))
    return opened


@dataclass
class _Held:
    expires: float  # hard: when the provider must be asked again
    generation: int
    key: bytes = field(repr=False)


def mark(db: Session, org_id: str, status: str, reason: str | None) -> None:
    """Record the key's status as just observed (in the caller's transaction); a change
    of status is audited (`unavailable` feeds the `encryption_key_unavailable` alert)."""
    row = db.get(OrgEncryptionKey, org_id)
    if row is None:
        return
    if row.status == status and (status == "active" or row.reason == reason):
        row.last_checked_at = utcnow()  # no change: no audit event, no chain lock
        return
    audit.lock_chain(db, org_id)  # before the row, as every writer does
    row = db.get(OrgEncryptionKey, org_id, with_for_update=True, populate_existing=True)
    if row is None:
        return
    previous = row.status
    row.last_checked_at = utcnow()
    if previous == status and (status == "active" or row.reason == reason):
        return
    row.status, row.reason = status, (None if status == "active" else reason)
    if status == "active":
        audit.record(
            db,
            type=EventType.ORG_ENCRYPTION_KEY_RESTORED,
            actor=CMK_ACTOR,
            org_id=org_id,
            resource=("org", org_id),
            metadata={"provider": row.provider, "previous_status": previous},
        )
    else:
        audit.record(
            db,
            type=EventType.ORG_ENCRYPTION_KEY_UNAVAILABLE,
            actor=CMK_ACTOR,
            org_id=org_id,
            outcome=Outcome.FAILURE,
            resource=("org", org_id),
            reason=reason,
            metadata={"provider": row.provider, "status": status, "reason": reason},
        )


MARK_EVERY_SECONDS = 10.0  # a worker records the same refusal at most this often


def unavailable(
    org_id: str, exc: KeyUnavailableError, marked: dict[str, tuple[str, float]] | None = None
) -> KeyUnavailable:
    """The 503 for a provider's refusal, with the status write that outlives the
    request's rollback (and audits a change of status). A burst of refused requests
    writes once per `MARK_EVERY_SECONDS` per worker (`marked`), not once each."""
    status, reason = exc.status, exc.reason
    log.warning("customer key unavailable", org_id=org_id, status=status, reason=reason)
    error = KeyUnavailable(status, reason)
    now, seen_as = _monotonic(), f"{status}:{reason}"
    seen = marked.get(org_id) if marked is not None else None
    if seen is not None and seen[0] == seen_as and now - seen[1] < MARK_EVERY_SECONDS:
        return error
    if marked is not None:
        marked[org_id] = (seen_as, now)
    return error.with_write(lambda db: mark(db, org_id, status, reason))


class CustomerKeyring:
    """Per-process state of the organisations' customer-managed keys: providers built
    from their sealed configurations (one per organisation and generation) and the
    data keys they unwrapped, kept until `ttl` seconds after the unwrap or until the
    organisation's generation changes."""

    def __init__(
        self,
        root: RootKeys,
        policy: ProviderPolicy,
        ttl: float,
        recheck: float = CMK_RECHECK_SECONDS,
    ) -> None:
        self._root = root
        self.policy = policy
        self._ttl = ttl
        self.recheck = recheck
        self._providers: dict[str, tuple[int, CustomerKeyProvider]] = {}
        self._held: dict[tuple[str, int], _Held] = {}
        # Data keys wrapped by this process, by the generation they were wrapped under:
        # held once their transaction commits (`hold`), never before.
        self._wrapped: dict[tuple[str, int], int] = {}
        self._marked: dict[str, tuple[str, float]] = {}  # org -> (status:reason, when)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CustomerKeyring(orgs={len(self._providers)})"

    def provider(self, org_id: str, row: OrgEncryptionKey) -> CustomerKeyProvider:
        hit = self._providers.get(org_id)
        if hit is not None and hit[0] == row.generation:
            return hit[1]
        config = open_config(self._root, org_id, row.config_root_version, row.config_sealed)
        try:
            built = build_provider(row.provider, config, self.policy)
        except InvalidInput:
            # Saved when the operator allowed it (a PKCS#11 library since removed from
            # BASTION_PKCS11_LIBRARIES): unusable now, not the caller's bad input.
            raise KeyUnavailableError("configuration_not_allowed") from None
        with self._lock:
            old = self._providers.get(org_id)
            self._providers[org_id] = (row.generation, built)
        if old is not None:
            old[1].close()
        return built

    def wrapper(self, db: Session, org_id: str) -> CustomerKeyProvider | None:
        """The provider new data keys of `org_id` are wrapped by; None: the root key."""
        row = db.get(OrgEncryptionKey, org_id)
        return None if row is None else self.provider(org_id, row)

    def wrap(self, db: Session, org_id: str, version: int, key: bytes) -> bytes | None:
        """The new data key wrapped by the org's customer key; None: it has none."""
        row = db.get(OrgEncryptionKey, org_id)
        if row is None:
            return None
        try:
            wrapped = self.provider(org_id, row).wrap(key, data_key_context(org_id, version))
        except KeyUnavailableError as exc:
            raise unavailable(org_id, exc, self._marked) from None
        with self._lock:
            self._wrapped[(org_id, version)] = row.generation
        return wrapped

    def hold(self, org_id: str, version: int, key: bytes) -> None:
        """A data key this process wrapped, now committed: held as if just unwrapped."""
        with self._lock:
            generation = self._wrapped.pop((org_id, version), None)
            if generation is not None:
                self._held[(org_id, version)] = _Held(_monotonic() + self._ttl, generation, key)

    def unwrap(self, db: Session, org_id: str, version: int, blob: bytes) -> bytes:
        """The data key `version` of `org_id`, wrapped by its customer key: from this
        process's hold while the generation is unchanged and the unwrap recent, else one
        provider round trip. `KeyUnavailable` (503) when the provider refuses."""
        row = db.get(OrgEncryptionKey, org_id, populate_existing=True)
        if row is None:  # a customer-wrapped key without its configuration
            raise SecretUnreadable("data_key_destroyed")
        now = _monotonic()
        held = self._held.get((org_id, version))
        if held is not None and held.generation == row.generation and held.expires >= now:
            return held.key
        try:
            key = self.provider(org_id, row).unwrap(blob, data_key_context(org_id, version))
        except KeyUnavailableError as exc:
            self.forget(org_id)
            raise unavailable(org_id, exc, self._marked) from None
        except WrappedValueRejected:
            raise SecretUnreadable("authentication_failed") from None
        with self._lock:
            self._held[(org_id, version)] = _Held(now + self._ttl, row.generation, key)
            self._marked.pop(org_id, None)
        return key

    def forget(self, org_id: str | None = None) -> None:
        with self._lock:
            for cached in [k for k in self._held if org_id is None or k[0] == org_id]:
                del self._held[cached]

    def probe(self, db: Session, org_id: str) -> tuple[str, str | None]:
        """Unwrap the organisation's canary (one round trip): ("active", None), or the
        status and reason the provider's refusal means."""
        row = db.get(OrgEncryptionKey, org_id)
        if row is None:
            return "active", None
        try:
            self.provider(org_id, row).unwrap(row.canary, canary_context(org_id))
        except KeyUnavailableError as exc:
            return exc.status, exc.reason
        except WrappedValueRejected:
            return "key_unavailable", "canary_rejected"
        return "active", None


def settle(db: Session, keyring: CustomerKeyring, org_id: str) -> int:
    """Wrap under the organisation's customer key any of its data keys still wrapped by
    the root key (a rotation that raced the key's configuration), in the caller's
    transaction; returns how many. Raises `KeyUnavailable` when the key refuses."""
    row = db.get(OrgEncryptionKey, org_id)
    if row is None:
        return 0
    stray = list(
        db.execute(
            select(OrgKey).where(OrgKey.org_id == org_id, OrgKey.root_version != CUSTOMER_WRAPPED)
        ).scalars()
    )
    for key_row in stray:
        plain = keyring._root.unwrap(
            key_row.root_version, key_row.wrapped, root_key_aad(org_id, key_row.version)
        )
        try:
            key_row.wrapped = keyring.provider(org_id, row).wrap(
                plain, data_key_context(org_id, key_row.version)
            )
        except KeyUnavailableError as exc:
            raise unavailable(org_id, exc) from None
        key_row.root_version = CUSTOMER_WRAPPED
        del plain
    return len(stray)


def check_all(
    sessions: Callable[[], Session], write_sessions: Callable[[], Session], keyring: CustomerKeyring
) -> int:
    """Probe every organisation's customer key once and record what is seen (status
    changes audited), and wrap under it any data key a racing rotation wrapped by the
    root key (`settle`); returns how many were probed. Runs in the background of every
    server (`CHECK_EVERY_SECONDS`), so a revocation raises its alert even when no
    secret is read, and a restored key shows `active` again."""
    with sessions() as db:
        orgs = list(db.execute(select(OrgEncryptionKey.org_id)).scalars())
    for org_id in orgs:
        with sessions() as db:
            status, reason = keyring.probe(db, org_id)
            seen = db.execute(
                select(
                    OrgEncryptionKey.status,
                    OrgEncryptionKey.reason,
                    OrgEncryptionKey.last_checked_at,
                ).where(OrgEncryptionKey.org_id == org_id)
            ).first()
            strays = db.execute(
                select(func.count())
                .select_from(OrgKey)
                .where(OrgKey.org_id == org_id, OrgKey.root_version != CUSTOMER_WRAPPED)
            ).scalar_one()
        if status != "active":
            keyring.forget(org_id)
        if seen is None:
            continue
        unchanged = seen[0] == status and (status == "active" or seen[1] == reason)
        recent = seen[2] is not None and (
            (utcnow() - as_utc(seen[2])).total_seconds() < CHECK_EVERY_SECONDS / 2
        )
        if not (unchanged and recent):  # another worker just recorded the same
            with write_sessions() as db:
                mark(db, org_id, status, reason)
                db.commit()
        if status == "active" and strays:
            with write_sessions() as db:
                try:
                    settle(db, keyring, org_id)
                    db.commit()
                except KeyUnavailable:
                    db.rollback()  # the next round tries again
    return len(orgs)
