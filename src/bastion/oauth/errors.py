"""OAuth's own errors: they leave as RFC 6749 §5.2 error responses (`{"error",
"error_description"}`), not problem documents, because OAuth clients read them so.

    OAuthError                  400 unless said otherwise
      invalid_request           a parameter missing, repeated or malformed
      invalid_client            client authentication failed (401; with Basic:
                                `WWW-Authenticate: Basic`)
      invalid_grant             the client's service account may not get a token now
      unsupported_grant_type    anything but client_credentials
      invalid_scope             an unknown scope, or one beyond what the client may have
"""

from __future__ import annotations

from typing import Any

INVALID_REQUEST = "invalid_request"
INVALID_CLIENT = "invalid_client"
INVALID_GRANT = "invalid_grant"
UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
INVALID_SCOPE = "invalid_scope"


class OAuthError(Exception):
    """An OAuth error response; `audit`, when set, is the failure's audit event (written
    after the request's rollback, sampled per client: anyone can cause these)."""

    def __init__(
        self,
        error: str,
        description: str,
        *,
        status: int = 400,
        audit: dict[str, Any] | None = None,
        challenge: bool = False,
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.audit = audit
        self.challenge = challenge  # answer with `WWW-Authenticate: Basic`

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}
