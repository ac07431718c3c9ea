"""One redaction function for logs and audit metadata: secrets never leave in plaintext."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"

_SENSITIVE_KEYS = re.compile(
    r"(pass(word)?|secret|token|api[_-]?key|authorization|cookie|pepper|private|credential|"
    r"^key$|recovery)",
    re.IGNORECASE,
)
# Credential-shaped strings anywhere in a value: bsk_/bss_/bat_/bsu_ tokens.
_TOKEN_PATTERN = re.compile(r"\b(bs[ksu]|bat)_[A-Za-z0-9_\-]{8,}")


def redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return _TOKEN_PATTERN.sub(REDACTED, value)
    if isinstance(value, Mapping):
        return redact(value)
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


def redact(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if _SENSITIVE_KEYS.search(str(key)) and not str(key).endswith(("_id", "_prefix")):
            out[key] = REDACTED
        else:
            out[key] = redact_value(value)
    return out
