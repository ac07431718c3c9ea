"""The organisation's redaction key: which vault secret holds it (never the key)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from bastion.core.clock import utcnow
from bastion.core.db import Base, UTCDateTime


class PrivacyKey(Base):
    """One per organisation, made on first use of `hash` or `tokenize`: 32 random bytes
    sealed in the vault (`secrets` at scope `privacy`), from which the hash key and the
    AES-SIV token key are derived. Crypto-shredding the organisation destroys it."""

    __tablename__ = "privacy_keys"

    org_id: Mapped[str] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    secret_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
