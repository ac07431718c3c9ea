"""The one error of the SAML library: a short machine code and a safe message.

`code` is what the sign-in flow puts in `?error=…` and the audit reason; `message` is for
the operator's log and troubleshooting (docs/saml.md lists every code). Neither ever
carries key material, a raw assertion or an XML dump: what the identity provider sent
may hold personal data and is untrusted input.
"""

from __future__ import annotations

# Every code `SamlError` is raised with, sorted (docs/saml.md explains each).
CODES = frozenset(
    {
        "assertion_missing",  # a Success response without an assertion
        "audience_mismatch",  # the assertion is not for this service provider
        "destination_mismatch",  # the response was sent to another endpoint
        "dtd_forbidden",  # a DOCTYPE or an entity declaration (XXE, billion laughs)
        "email_missing",  # no e-mail address in the NameID or the attributes
        "encrypted_assertion",  # assertion or NameID encryption is not supported
        "expired",  # NotOnOrAfter (conditions or subject confirmation) has passed
        "idp_initiated_disabled",  # unsolicited response while IdP-initiated is off
        "in_response_to_mismatch",  # answers another (or no) AuthnRequest
        "invalid_metadata",  # IdP metadata unreadable or incomplete
        "invalid_relay_state",  # RelayState longer than the binding allows
        "invalid_credentials",  # the SP key cannot sign
        "issuer_mismatch",  # the response or assertion comes from another IdP
        "malformed",  # not base64, not XML, not a SAML 2.0 Response
        "metadata_fetch_failed",  # the metadata URL could not be fetched safely
        "multiple_assertions",  # more than one assertion (a classic wrapping shape)
        "not_yet_valid",  # NotBefore (or IssueInstant) is in the future
        "recipient_mismatch",  # the bearer confirmation names another ACS URL
        "signature_invalid",  # a signature does not verify with the IdP's certificates
        "signature_missing",  # neither the response nor the assertion is signed
        "signature_unsupported",  # an algorithm or transform outside the allowed list
        "signature_wrapping",  # signature placement or reference not the used assertion
        "status_not_success",  # the IdP reports a failure (its status code is named)
        "subject_confirmation_missing",  # no bearer subject confirmation
    }
)


class SamlError(Exception):
    """A SAML message or metadata refused; `code` is one of `CODES`."""

    def __init__(self, code: str, message: str) -> None:
        if code not in CODES:  # a typo here would leak past the docs and the tests
            raise ValueError(f"unknown SAML error code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
