"""Typed, time-sortable identifiers: `usr_01JD3...` (prefix + 26 Crockford base32 chars).

48 bits of millisecond time then 80 random bits, as in ULID: lexical order is creation
order, which keeps "newest first" lists and cursors cheap.
"""

from __future__ import annotations

import time

from bastion.core.crypto import random_int_bits

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DIGITS = frozenset(_ALPHABET)
_BODY_LEN = 26

PREFIXES = frozenset(
    {
        "org",
        "chk",
        "usr",
        "team",
        "role",
        "key",
        "sa",
        "ses",
        "grt",
        "agt",
        "run",
        "call",
        "apn",
        "apr",
        "apl",
        "src",
        "doc",
        "whe",
        "mcs",
        "evt",
        "req",
        "inv",
        "pwr",
        "snk",
        "alr",
        "alt",
        "acl",
        "arl",
        "sec",
        "wev",
        "whs",
        "whd",
        "wf",
        "mfa",
        "mfc",
        "sct",
        "rc",
        "wac",
        "oac",  # OAuth client (its client_id)
        "oat",  # OAuth access token (its jti)
        "ssoc",
        "dom",
        "ssor",
        "ssox",
        "int",  # OAuth integration
        "intr",  # an integration's connect request in flight
        "cst",  # compliance control status (one evaluated state of a control)
        "att",  # compliance attestation
        "rpt",  # compliance report
        "arv",  # access review campaign
        "ari",  # access review item
        "dpol",  # privacy data policy
        "dsr",  # data subject request (access or erasure)
        "wks",  # sandbox workspace
        "sbf",  # a run's fork of a sandbox workspace
    }
)


def new_id(prefix: str) -> str:
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    value = (int(time.time() * 1000) << 80) | random_int_bits(80)
    chars = []
    for _ in range(_BODY_LEN):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


def has_prefix(value: str, prefix: str) -> bool:
    """True when `value` is a well-formed id of type `prefix`; anything else is not found."""
    head, sep, body = value.partition("_")
    return sep == "_" and head == prefix and len(body) == _BODY_LEN and _DIGITS.issuperset(body)
