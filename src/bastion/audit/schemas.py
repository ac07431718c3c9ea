from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, StringConstraints

from bastion.core.schemas import In, Name, Out


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


class SigningKeyOut(Out):
    """An instance signing key: it signs (or signed) audit checkpoints, OAuth access
    tokens and reports; the same key is in `/.well-known/jwks.json` under `kid`."""

    key_version: int = Field(description="The key id a checkpoint names in `key_version`.")
    kid: str = Field(description="Its `kid` in /.well-known/jwks.json (RFC 7638 thumbprint).")
    algorithm: Literal["Ed25519"]
    public_key: str = Field(description="Raw 32-byte Ed25519 public key, hex.")
    status: Literal["active", "previous"] = Field(
        description="`active` signs from now on; `previous` only verifies what it signed."
    )
    valid_from: datetime | None = Field(description="When it became active, if recorded.")
    valid_until: datetime | None = Field(
        description="When a newer key replaced it; null while active."
    )


class AuditSinkIn(In):
    """A SIEM destination. `syslog`: `host`, `port`, optional `tls` (RFC 5425) and
    `ca_pem`; format `json` (RFC 5424 with the event as JSON), `cef` or `ocsf`.
    `https`: `url`, optional bearer `token`; format `json` or `ocsf` (a JSON array per
    batch). `splunk_hec`: `url` of the collector's event endpoint and the HEC `token`;
    format `json` or `ocsf`."""

    name: Name
    type: Literal["syslog", "https", "splunk_hec"]
    format: Literal["json", "ocsf", "cef"]
    host: Annotated[str, StringConstraints(min_length=1, max_length=253)] | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    tls: bool = False
    ca_pem: Annotated[str, StringConstraints(max_length=20_000)] | None = Field(
        default=None, description="PEM CA certificate(s) to trust for TLS, if not public."
    )
    url: Annotated[str, StringConstraints(max_length=2000)] | None = None
    token: SecretStr | None = Field(default=None, description="Never returned.")
    index: Annotated[str, StringConstraints(max_length=200)] | None = None
    enabled: bool = True


class AuditSinkOut(Out):
    id: str
    name: str
    type: str
    format: str
    host: str | None
    port: int | None
    tls: bool
    url: str | None
    index: str | None
    enabled: bool
    has_token: bool
    status: Literal["healthy", "delivering", "failing", "disabled"]
    lag: int = Field(description="Events of the organisation not yet accepted by the sink.")
    cursor: int = Field(description="Sequence number of the last event the sink accepted.")
    delivered: int
    failures: int = Field(description="Consecutive failed attempts.")
    last_success_at: datetime | None
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
