"""Stored first responses for `Idempotency-Key` on POST.

A record is keyed by the credential and the caller's key, and holds a digest of the
request plus the first response. The response is encrypted (AES-256-GCM) under a key
derived from the caller's own credential, so a creation response that carries a
one-time secret is never readable from the database, and only the same credential can
ever replay it. Only successful (2xx) responses are stored, in the same transaction as
the change they describe. Two requests with the same key at once: the first to commit
keeps its change and response; the other is rolled back and answered 409 (its primary
key collides, or it finds the first's record), and its retry replays the first response.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidTag
from sqlalchemy import Integer, LargeBinary, String, delete
from sqlalchemy.orm import Mapped, Session, mapped_column

from bastion.core.clock import utcnow
from bastion.core.crypto import aead_decrypt, aead_encrypt, derive_key, hmac_sha256_hex, sha256_hex
from bastion.core.db import Base, UTCDateTime

MAX_KEY_LENGTH = 255


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_records"

    lookup: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_digest: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    response: Mapped[bytes] = mapped_column(LargeBinary, info={"secret": True})
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class KeyTaken(Exception):
    """Another request with the same key was answered and stored while this one ran."""


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class IdempotencyScope:
    lookup: str
    request_digest: str
    _key: bytes

    def __repr__(self) -> str:
        return f"IdempotencyScope(lookup={self.lookup[:8]}…)"


def scope_for(
    credential: str, idempotency_key: str, method: str, path: str, body: bytes
) -> IdempotencyScope:
    master = derive_key(credential.encode(), "idempotency")
    return IdempotencyScope(
        lookup=hmac_sha256_hex(master, idempotency_key),
        request_digest=sha256_hex(method.encode() + b" " + path.encode() + b"\n" + body),
        _key=derive_key(master, "idempotency-response"),
    )


def find(
    db: Session, scope: IdempotencyScope, ttl: int
) -> tuple[IdempotencyRecord, StoredResponse | None] | None:
    record = db.get(IdempotencyRecord, scope.lookup)
    if record is None or record.created_at < utcnow() - timedelta(seconds=ttl):
        return None
    try:
        raw = json.loads(aead_decrypt(scope._key, record.response, scope.lookup.encode()))
    except (InvalidTag, ValueError):
        return record, None
    return record, StoredResponse(
        raw["status"], [tuple(h) for h in raw["headers"]], bytes.fromhex(raw["body"])
    )


def store(db: Session, scope: IdempotencyScope, response: StoredResponse, ttl: int) -> None:
    payload = json.dumps(
        {"status": response.status, "headers": response.headers, "body": response.body.hex()}
    ).encode()
    existing = db.get(IdempotencyRecord, scope.lookup)
    if existing is not None:
        if existing.created_at >= utcnow() - timedelta(seconds=ttl):
            # The same key's other request committed first (they ran at once): this one
            # is rolled back and answered 409; its retry replays the first response.
            raise KeyTaken
        db.delete(existing)  # an expired record under the same key
        db.flush()
    db.add(
        IdempotencyRecord(
            lookup=scope.lookup,
            request_digest=scope.request_digest,
            status=response.status,
            response=aead_encrypt(scope._key, payload, scope.lookup.encode()),
        )
    )
    db.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.created_at < utcnow() - timedelta(seconds=ttl)
        )
    )


__all__ = [
    "IdempotencyRecord",
    "IdempotencyScope",
    "KeyTaken",
    "StoredResponse",
    "find",
    "scope_for",
    "store",
]
