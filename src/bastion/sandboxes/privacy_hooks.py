"""Sandboxes' side of retention, registered on import (`bastion.registry` imports it):
a destroyed fork's diff is a run artifact, kept the organisation's `run_artifacts_hours`.

The sweep (`execs.sweep`) stamps each diff's expiry from the period when the fork is
destroyed and forgets it then; this purger applies a period shortened since to the
diffs already kept (the hourly purge, `bastion privacy purge`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.privacy import retention
from bastion.sandboxes.models import SandboxFork


def _purge_diffs(db: Session, org_id: str, cutoff: datetime) -> int:
    """Forget the diffs of forks destroyed before `cutoff` whose expiry is later (a
    period shortened since). A diff forgotten is JSON null, not SQL NULL (the column is
    JSON), so the rows are read and their expiry moved to `cutoff`: none comes back."""
    forks = db.execute(
        select(SandboxFork).where(
            SandboxFork.org_id == org_id,
            SandboxFork.destroyed_at < cutoff,
            SandboxFork.diff_expires_at > cutoff,
        )
    ).scalars()
    forgotten = 0
    for fork in forks:
        forgotten += fork.diff is not None
        fork.diff, fork.diff_expires_at = None, cutoff
    return forgotten


retention.register("run_artifacts", "sandbox_diffs", _purge_diffs)
