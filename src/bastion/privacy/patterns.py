"""The candidate patterns of the structured types, with their validators and context.

Patterns are written in the common subset of Hyperscan's and Python's syntax (no
look-around, no back-references) so one list serves the compiled engine and the
pure-`re` fallback. A pattern finds candidates; its validator and the context words
decide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bastion.privacy import validators as v
from bastion.privacy.types import EntityType as T


@dataclass(frozen=True)
class Rule:
    type: T
    pattern: str
    score: float
    validator: v.Validator | None = None
    # Words near the value that raise the score (and are required when `needs_context`).
    context: tuple[str, ...] = ()
    needs_context: bool = False
    # Words just before the value that say it is something else (an order number).
    negative: tuple[str, ...] = field(default=())
    caseless: bool = False


_NUMBERS_NOT_PII = (
    "order", "invoice", "tracking", "ticket", "ref", "reference", "sku", "serial", "part",
    "build", "version", "release", "confirmation", "transaction", "txn", "po", "case", "id",
    "isbn", "account no", "booking", "shipment", "item",
)  # fmt: skip
_VERSIONS = ("version", "release", "build", "v", "ver", "firmware", "oid", "sdk")

_WORD = r"[A-Za-z0-9_\-]"

RULES: tuple[Rule, ...] = (
    Rule(
        T.EMAIL,
        r"\b[A-Za-z0-9][A-Za-z0-9._%+\-]*@[A-Za-z0-9](?:[A-Za-z0-9\-]*\.)+[A-Za-z]{2,24}\b",
        0.95,
        v.email,
    ),
    # International (+ or 00), North American and national (trunk 0) formats.
    Rule(
        T.PHONE,
        r"(?:\+|\b00)[1-9]\d{0,2}[ .\-]?(?:\(\d{1,4}\)[ .\-]?)?\d{1,4}(?:[ .\-]?\d{2,4}){1,4}\b",
        0.75,
        v.phone,
        ("phone", "call", "tel", "mobile", "cell", "fax", "whatsapp", "text me", "reach"),
        negative=_NUMBERS_NOT_PII,
    ),
    Rule(
        T.PHONE,
        r"(?:\(\d{3}\)[ .\-]?|\b\d{3}[.\-])\d{3}[.\-]\d{4}\b",
        0.7,
        v.phone,
        ("phone", "call", "tel", "mobile", "cell", "fax", "whatsapp", "text me", "reach"),
        negative=_NUMBERS_NOT_PII,
    ),
    Rule(
        T.PHONE,
        r"\b0\d{1,4}[ \-]\d{3,4}[ \-]?\d{3,4}\b"
        r"|\b0\d(?: \d{2}){4}\b|\b0\d(?:\.\d{2}){4}\b|\b0\d(?:-\d{2}){4}\b",
        0.65,
        v.phone,
        ("phone", "call", "tel", "mobile", "cell", "fax", "whatsapp", "text me", "reach"),
        negative=_NUMBERS_NOT_PII,
    ),
    Rule(
        T.CREDIT_CARD,
        r"\b\d{4}(?:[ \-]?\d{4}){2,3}(?:[ \-]?\d{1,4})?\b"
        r"|\b3[47]\d{2}[ \-]?\d{6}[ \-]?\d{5}\b",
        0.9,
        v.credit_card,
        ("card", "visa", "mastercard", "amex", "credit", "debit", "cc", "payment", "pan"),
        negative=_NUMBERS_NOT_PII,
    ),
    Rule(
        T.US_SSN,
        r"\b\d{3}([ \-])\d{2}[ \-]\d{4}\b",
        0.85,
        v.us_ssn,
        ("ssn", "social security", "social-security", "taxpayer"),
        negative=_NUMBERS_NOT_PII,
    ),
    Rule(
        T.US_SSN,
        r"\b\d{9}\b",
        0.6,
        v.us_ssn,
        ("ssn", "social security", "social-security", "taxpayer"),
        needs_context=True,
    ),
    Rule(
        T.IBAN,
        r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b",
        0.95,
        v.iban,
        ("iban", "bank", "account", "transfer", "wire"),
    ),
    Rule(
        T.IP_ADDRESS,
        r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b",
        0.85,
        v.ipv4,
        ("ip", "address", "host", "server", "from", "client"),
        negative=_VERSIONS,
    ),
    Rule(
        T.IP_ADDRESS,
        r"(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}\b"
        r"|(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,6})?::(?:[0-9A-Fa-f]{1,4}:){0,6}"
        r"[0-9A-Fa-f]{1,4}\b",
        0.85,
        v.ipv6,
        ("ip", "ipv6", "address", "host", "server", "from", "client"),
    ),
    Rule(
        T.AWS_ACCESS_KEY,
        r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}\b",
        0.95,
    ),
    Rule(T.GITHUB_TOKEN, r"\bgh[pousr]_[A-Za-z0-9]{36}\b", 0.99),
    Rule(T.GITHUB_TOKEN, r"\bgithub_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}\b", 0.99),
    Rule(
        T.JWT,
        r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{7,}[A-Za-z0-9_]\b",
        0.95,
        v.jwt,
    ),
    Rule(
        T.PRIVATE_KEY,
        r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----",
        0.99,
    ),
    # Providers' key formats, and Bastion's own credentials.
    Rule(
        T.API_KEY,
        # Each ends at a word boundary: one match per key, not one per length.
        r"(?:\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{31,}"
        r"|\bsk-ant-(?:api|admin)\d\d-[A-Za-z0-9_\-]{31,}"
        r"|\b[srp]k_(?:live|test)_[A-Za-z0-9]{15,}"
        r"|\bxox[abposr]-[A-Za-z0-9\-]{9,}"
        r"|\bAIza[0-9A-Za-z_\-]{34}"
        r"|\bSG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{42}"
        r"|\bglpat-[A-Za-z0-9_\-]{19,}"
        r"|\bnpm_[A-Za-z0-9]{35}"
        r"|\bpypi-AgE[A-Za-z0-9_\-]{49,}"
        r"|\bhf_[A-Za-z0-9]{33}"
        r"|\b(?:bsk|bat|bss|bsp|bsu)_" + _WORD + r"{15,})[A-Za-z0-9_]\b",
        0.95,
    ),
    # A long random value assigned to a key-like name: `api_key = "…"`, `token: …`.
    Rule(
        T.API_KEY,
        r"(?:api[_\-]?key|secret|access[_\-]?token|auth[_\-]?token|token|password|passwd)"
        r"[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9_\-+/]{19,}[A-Za-z0-9_]\b",
        0.7,
        caseless=True,
    ),
)

# The value part of the key-assignment rule (the name before it is context).
ASSIGNMENT_RULE = len(RULES) - 1

# Where the value of an assignment starts: after the `:` or `=` and an opening quote.
ASSIGNMENT_VALUE = r"[:=]\s*[\"']?"

PRIVATE_KEY_END = "-----END "
