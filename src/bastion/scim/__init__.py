"""SCIM 2.0 provisioning (RFC 7643/7644): users and teams kept in step with an
organisation's identity provider."""

# Registered whenever any part of this package is imported: SCIM tokens as a credential
# kind identity authenticates (and the rows that invalidate cached answers).
from bastion.scim import credentials as _credentials  # noqa: F401
