"""A person's second factors: TOTP (RFC 6238), recovery codes, the `mfa_token` between
a right password and a verified factor, and step-up (RFC 9470).

    totp.py        the algorithm's use: secrets, `otpauth://` URIs, matching a code
    store.py       factor rows and their sealed secrets (used by user deletion too)
    factors.py     enrol, confirm, list, delete, reset; recovery codes; verify a code
    challenges.py  `mfa_token`s: issue, redeem, count wrong codes; enrolment bearer
    signin.py      finish a sign-in with a factor; step-up
    passkeys.py    WebAuthn: register credentials, verify assertions (second factor,
                   passwordless sign-in, step-up) with py_webauthn
    webauthn_challenges.py  WebAuthn challenges: issued, bound, used once

The policy vocabulary (`mfa_policy` values, `amr`) is `bastion.core.mfa`. See docs/mfa.md.
"""
