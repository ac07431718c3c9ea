"""What oauth registers with the layers below it, at import (`bastion.oauth` imports
this module, so any use of the package has it in place):

- which oauth rows change what cached credentials depend on (`bastion.core.revisions`):
  deleting a client, or revoking one of its tokens, bumps the organisation's auth
  revision, so a cached access token of it is read again (and refused) by the very next
  request on every worker. A new client bumps nothing (none of its tokens is cached
  yet); its `last_used_at` is bookkeeping.
- client secrets as pepper-hashed secrets (`identity.credentials.register_secret_store`):
  a pepper version is retired only once no client secret needs it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, true

from bastion.core import revisions
from bastion.identity import credentials
from bastion.oauth.models import OAuthClient, OAuthRevokedToken


def _live(_now: datetime) -> ColumnElement[bool]:
    return true()  # a client's secret works until the client is deleted


credentials.register_secret_store(
    credentials.SecretStore(digest=OAuthClient.secret_hash, live=_live, name="oauth_clients")
)
revisions.watch(OAuthClient, bookkeeping={"last_used_at"}, inserts_change_nothing=True)
revisions.watch(OAuthRevokedToken)
