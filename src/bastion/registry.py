"""Imports every model so `Base.metadata` knows the whole schema (Alembic, tests)."""

from __future__ import annotations

from sqlalchemy import MetaData

import bastion.agents.models
import bastion.approvals.models
import bastion.audit.models
import bastion.authz.models
import bastion.core.idempotency
import bastion.identity.authcache
import bastion.identity.models
import bastion.secrets.models
import bastion.tenancy.models
import bastion.webhooks.models  # noqa: F401
from bastion.core.db import Base

metadata: MetaData = Base.metadata
