"""The secrets domain's read-only facts for compliance evidence (`bastion.compliance`):
when the organisation's active data key was made, and how many secret versions it
holds. Never a key or a value."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bastion.core.clock import as_utc
from bastion.secrets.models import OrgKey, Secret, SecretVersion


@dataclass(frozen=True)
class DataKeyFact:
    active_version: int | None
    active_since: datetime | None
    older_versions: int
    secret_versions: int


def data_key(db: Session, org_id: str) -> DataKeyFact:
    rows = list(
        db.execute(
            select(OrgKey.version, OrgKey.created_at)
            .where(OrgKey.org_id == org_id)
            .order_by(OrgKey.version)
        )
    )
    total = db.execute(
        select(func.count()).select_from(SecretVersion).where(SecretVersion.org_id == org_id)
    ).scalar_one()
    if not rows:
        return DataKeyFact(None, None, 0, int(total))
    version, created = rows[-1]
    return DataKeyFact(int(version), as_utc(created), len(rows) - 1, int(total))


def secret_names(db: Session, org_id: str) -> list[str]:
    """Names of the organisation's secrets (org, workflow and run scoped)."""
    return sorted(set(db.execute(select(Secret.name).where(Secret.org_id == org_id)).scalars()))
