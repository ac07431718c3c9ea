from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from bastion.core.schemas import Out


class ActorOut(Out):
    type: str
    id: str | None
    ip: str | None
    user_agent: str | None


class ResourceOut(Out):
    type: str | None
    id: str | None


class AuditEventOut(Out):
    id: str
    seq: int
    time: datetime
    type: str
    actor: ActorOut
    resource: ResourceOut
    outcome: str
    reason: str | None
    request_id: str | None
    metadata: dict[str, Any]
    hash: str
    prev_hash: str


class VerifyOut(Out):
    valid: bool
    checked: int
    head_hash: str
    first_invalid: str | None = Field(default=None, description="Id of the first bad event.")
    problem: str | None = None
    checkpoints: int = Field(default=0, description="Signed checkpoints that matched.")


class CheckpointOut(Out):
    id: str
    seq: int
    hash: str
    created_at: datetime
    key_version: int
    signature: str = Field(description="Ed25519 over the checkpoint statement, hex.")
