"""The closed vocabulary of what the detector finds, and a finding."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class EntityType(StrEnum):
    ADDRESS = "ADDRESS"
    API_KEY = "API_KEY"
    AWS_ACCESS_KEY = "AWS_ACCESS_KEY"
    CREDIT_CARD = "CREDIT_CARD"
    EMAIL = "EMAIL"
    GITHUB_TOKEN = "GITHUB_TOKEN"  # noqa: S105 - a type's name
    IBAN = "IBAN"
    IP_ADDRESS = "IP_ADDRESS"
    JWT = "JWT"
    PERSON = "PERSON"
    PHONE = "PHONE"
    PRIVATE_KEY = "PRIVATE_KEY"
    US_SSN = "US_SSN"


# Types found by a pattern and a validator (checksums, ranges, formats); the rest
# (PERSON, ADDRESS) by gazetteers and context.
STRUCTURED: frozenset[EntityType] = frozenset(EntityType) - {
    EntityType.PERSON,
    EntityType.ADDRESS,
}

DESCRIPTIONS: dict[EntityType, str] = {
    EntityType.ADDRESS: "A postal street address (house number, street, optional unit, city, "
    "region and postcode).",
    EntityType.API_KEY: "An API key of a known provider (OpenAI, Anthropic, Stripe, Slack, Google, "
    "SendGrid, GitLab, npm, PyPI, Hugging Face, Bastion's bsk_/bat_/bss_) or a long random "
    "value assigned to a key-like name.",
    EntityType.AWS_ACCESS_KEY: "An AWS access key id (AKIA…, ASIA…).",
    EntityType.CREDIT_CARD: "A payment card number of 13-19 digits with a known issuer prefix "
    "and a valid Luhn check digit.",
    EntityType.EMAIL: "An email address.",
    EntityType.GITHUB_TOKEN: "A GitHub token: classic (ghp_, gho_, ghu_, ghs_, ghr_) or "
    "fine-grained (github_pat_).",
    EntityType.IBAN: "An International Bank Account Number with its country's length and a "
    "valid mod-97 checksum.",
    EntityType.IP_ADDRESS: "An IPv4 or IPv6 address (not a version string or a time).",
    EntityType.JWT: "A JSON Web Token whose header decodes to JSON naming an algorithm.",
    EntityType.PERSON: "A person's name.",
    EntityType.PHONE: "A telephone number valid in its numbering plan (international or national "
    "formats).",
    EntityType.PRIVATE_KEY: "A PEM-armoured private key block.",
    EntityType.US_SSN: "A US Social Security number in the valid ranges (area not 000, 666 or "
    "9xx; group not 00; serial not 0000).",
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected value: `start`/`end` are offsets in Unicode code points (end exclusive)."""

    type: EntityType
    start: int
    end: int
    score: float
