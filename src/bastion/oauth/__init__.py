"""OAuth 2.0 for machines: client credentials for service accounts, JWT access tokens
signed by the instance signing keys, introspection (RFC 7662) and revocation (RFC 7009)."""

# Registered whenever any part of this package is imported: which oauth rows change
# what cached credentials depend on, and the client secrets the pepper hashes.
from bastion.oauth import credentials as _credentials  # noqa: F401
