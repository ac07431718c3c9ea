"""The MCP server registry. No credential is stored here: `headers_secret_id` names a
vault secret (sealed by `bastion.secrets.sealed`, scope type `mcp_server`) holding the
static headers the gateway adds to every upstream request; `integration` names an OAuth
integration whose tokens stay in that domain's vault."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core import revisions
from bastion.core.clock import utcnow
from bastion.core.db import Base, JSONType, UTCDateTime


class McpServer(Base):
    """An upstream MCP server (Streamable HTTP) of one organisation."""

    __tablename__ = "mcp_servers"
    __table_args__ = (
        UniqueConstraint("org_id", "name", name="uq_mcp_servers_org_id_name"),
        Index("ix_mcp_servers_org_id_id", "org_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(String(2000))
    # Names of the sealed static headers (shown); their values only in the vault.
    header_names: Mapped[list[str]] = mapped_column(JSONType, default=list)
    headers_secret_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # An integration of the organisation whose access token the gateway adds as the
    # bearer header, and who bound it (their `integrations:use` is checked at every use).
    integration: Mapped[str | None] = mapped_column(String(100), nullable=True)
    integration_by: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_by: Mapped[str] = mapped_column(String(40))
    version: Mapped[int] = mapped_column(BigInteger, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


# A server's URL, headers or name change what the gateway's cached view of a run holds.
revisions.watch(McpServer, counters=(revisions.AuthzRevision,))
