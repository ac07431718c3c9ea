"""Imports every model so `Base.metadata` knows the whole schema (Alembic, tests), and
with them every domain's registrations with the layers below (the tables that bump
revision counters, credential kinds, privacy's purgers and subject sources, the SSO
protocols): a process
that writes or authenticates (the app, the CLI) imports this first."""

from __future__ import annotations

from sqlalchemy import MetaData

import bastion.agents.models
import bastion.agents.privacy_hooks
import bastion.alerts.models
import bastion.approvals.models
import bastion.approvals.privacy_hooks
import bastion.audit.models
import bastion.authz.models
import bastion.compliance.models
import bastion.core.idempotency
import bastion.core.revisions
import bastion.identity.models
import bastion.integrations.models
import bastion.mcp.models
import bastion.oauth.models
import bastion.privacy.models
import bastion.privacy.policies
import bastion.sandboxes.models
import bastion.sandboxes.privacy_hooks
import bastion.scim.models
import bastion.secrets.models
import bastion.sso.enforcement
import bastion.sso.models
import bastion.sso.oidc_flow
import bastion.sso.saml_flow
import bastion.tenancy.models
import bastion.webhooks.models
import bastion.webhooks.privacy_hooks  # noqa: F401
from bastion.core.db import Base

metadata: MetaData = Base.metadata
