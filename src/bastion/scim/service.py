"""SCIM 2.0 provisioning: the organisation's SCIM tokens, and its users and teams as SCIM
Users and Groups (RFC 7643/7644).

Users are Bastion users: `userName` is their email (or, when the identity provider's
userName is not an address, their primary email), `active: false` suspends them, and
DELETE deletes them; both end their sessions and stop their API keys at once, on every
worker (identity's own suspension, through `identity.service`). The last active admin
of the organisation is never de-provisioned (409). Groups are teams, with members.
Whatever else the client sends of a resource (externalId, name parts, emails, the
enterprise extension) is kept as sent, in `scim_resources`, and returned as such.

Every change is audited in the request's transaction with the SCIM token as the actor;
de-provisioning (deactivation or deletion) also records `scim_user.deprovisioned` with
the user's role, which the `scim_admin_deprovisioned` alert rule watches.
"""

from __future__ import annotations

from bastion.scim.groups import (
    create_group,
    delete_group,
    get_group,
    list_groups,
    patch_group,
    replace_group,
)
from bastion.scim.resources import (
    ENTERPRISE_URN,
    GROUP_URN,
    LIST_URN,
    MAX_COUNT,
    PATCH_URN,
    USER_URN,
    Call,
    check_if_match,
    etag_of,
)
from bastion.scim.tokens import (
    IssuedToken,
    create_token,
    list_tokens,
    revoke_token,
)
from bastion.scim.users import (
    create_user,
    delete_user,
    get_user,
    list_users,
    patch_user,
    replace_user,
)

__all__ = [
    "ENTERPRISE_URN",
    "GROUP_URN",
    "LIST_URN",
    "MAX_COUNT",
    "PATCH_URN",
    "USER_URN",
    "Call",
    "IssuedToken",
    "check_if_match",
    "create_group",
    "create_token",
    "create_user",
    "delete_group",
    "delete_user",
    "etag_of",
    "get_group",
    "get_user",
    "list_groups",
    "list_tokens",
    "list_users",
    "patch_group",
    "patch_user",
    "replace_group",
    "replace_user",
    "revoke_token",
]
