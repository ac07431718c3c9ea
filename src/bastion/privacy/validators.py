"""Checks run on pattern candidates only: checksums, ranges, formats.

Each takes the candidate's text and returns the (possibly shortened) value's length
to keep, or 0 to refuse it. Pure functions; no I/O.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Callable
from functools import lru_cache

import phonenumbers

Validator = Callable[[str], bool]

_NOT_DIGIT = re.compile(r"\D")


def digits(value: str) -> str:
    return _NOT_DIGIT.sub("", value)


def luhn(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# Issuer prefixes (IIN ranges) of the networks whose numbers people paste.
_CARD_PREFIX = re.compile(
    r"^(?:4\d{12}(?:\d{3}){0,2}"  # Visa 13, 16, 19
    r"|(?:5[1-5]\d{2}|222[1-9]|22[3-9]\d|2[3-6]\d{2}|27[01]\d|2720)\d{12}"  # Mastercard
    r"|3[47]\d{13}"  # American Express
    r"|3(?:0[0-5]|[68]\d)\d{11,16}"  # Diners Club
    r"|6(?:011|5\d{2}|4[4-9]\d)\d{12,15}"  # Discover
    r"|35(?:2[89]|[3-8]\d)\d{12,15}"  # JCB
    r"|62\d{14,17}"  # UnionPay
    r"|(?:5018|5020|5038|5893|6304|6759|676[1-3])\d{8,15})$"  # Maestro
)


def credit_card(value: str) -> bool:
    number = digits(value)
    if not 13 <= len(number) <= 19 or len(set(number)) < 2:
        return False
    # Grouped numbers use one separator kind, in groups of 4 (or Amex's 4-6-5).
    seps = {c for c in value if not c.isdigit()}
    if len(seps) > 1:
        return False
    return bool(_CARD_PREFIX.match(number)) and luhn(number)


def us_ssn(value: str) -> bool:
    number = digits(value)
    if len(number) != 9:
        return False
    seps = [c for c in value if not c.isdigit()]
    if seps and (len(seps) != 2 or seps[0] != seps[1]):
        return False
    area, group, serial = int(number[:3]), int(number[3:5]), int(number[5:])
    if area in {0, 666} or area >= 900 or group == 0 or serial == 0:
        return False
    # Advertised and sample numbers, and one digit repeated.
    return number not in {"078051120", "219099999", "123456789"} and len(set(number)) > 1


# ISO 13616 lengths by country (SWIFT IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def iban(value: str) -> bool:
    compact = value.replace(" ", "").upper()
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(ch, 36)) for ch in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


def ipv4(value: str) -> bool:
    parts = value.split(".")
    if len(parts) != 4 or any(len(p) > 1 and p[0] == "0" for p in parts):
        return False
    if any(int(p) > 255 for p in parts):
        return False
    # 0.0.0.0-style placeholders and x.0.0.0 look like version numbers ("10.0.0.0").
    return parts != ["0", "0", "0", "0"] and parts[1:] != ["0", "0", "0"]


def ipv6(value: str) -> bool:
    if value.count(":") < 2 or ("::" not in value and value.count(":") != 7):
        return False
    if value.count("::") > 1:
        return False
    try:
        address = ipaddress.IPv6Address(value)
    except ValueError:
        return False
    groups = [g for g in value.split(":") if g]
    # Times (12:30::) and separators (:::) have no hex letters and few groups.
    return not (len(groups) < 2 and int(address) < 1 << 32)


def _b64json(part: str) -> object:
    padded = part + "=" * (-len(part) % 4)
    try:
        return json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


def jwt(value: str) -> bool:
    parts = value.split(".")
    if len(parts) != 3:
        return False
    header = _b64json(parts[0])
    return isinstance(header, dict) and isinstance(header.get("alg"), str)


# National formats: North American 3-3-4, or a trunk 0 in the plans that have one.
_NANP = ("US",)
_TRUNK = ("GB", "DE", "FR", "NL", "AU", "IN", "IT", "JP", "BR", "ES")


@lru_cache(maxsize=4096)
def phone(value: str) -> bool:
    raw = value.strip()
    number = digits(raw)
    if not 7 <= len(number) <= 15:
        return False
    regions: tuple[str | None, ...] = (None,) if raw.startswith("+") else _NANP
    if raw.startswith("00"):
        raw, regions = "+" + raw[2:], (None,)
    elif raw.startswith("0"):
        regions = _TRUNK
    for region in regions:
        try:
            parsed = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return True
    return False


def email(value: str) -> bool:
    local, _, domain = value.rpartition("@")
    if not 1 <= len(local) <= 64 or len(domain) > 253 or ".." in value:
        return False
    labels = domain.split(".")
    return all(0 < len(lb) <= 63 and lb[0] != "-" and lb[-1] != "-" for lb in labels)


def entropy_ok(value: str) -> bool:
    """A secret-looking value: long, mixed letters and digits, not only hex (hashes,
    UUIDs and commit ids are hex) and not one repeated character."""
    if len(value) < 20 or len(set(value)) < 10:
        return False
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    hexish = all(c in "0123456789abcdefABCDEF-" for c in value)
    return has_digit and has_alpha and not hexish
