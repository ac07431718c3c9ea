"""Errors of inbound webhooks (rendered by the one problem-document handler).

    BastionError
    └── Unauthenticated
        └── SignatureRejected   401  unauthenticated   the provider's signature does not
                                                       verify (missing, wrong, stale)

A hook endpoint's credential is the provider's signature, not a bearer token, so its
401 challenges with `WebhookSignature` rather than `Bearer` (a 401 must name a scheme;
this one names what the endpoint checks, and no client will try to answer it).
"""

from __future__ import annotations

from bastion.core.errors import Unauthenticated

SIGNATURE_CHALLENGE = 'WebhookSignature realm="bastion"'


class SignatureRejected(Unauthenticated):
    challenge = SIGNATURE_CHALLENGE
