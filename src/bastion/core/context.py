"""Who is acting and from where: what every audit event records about its actor."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    type: str  # "user" | "api_key" | "service_account" | "agent_run" | "system" | "anonymous"
    id: str | None
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


SYSTEM = Actor(type="system", id=None)
