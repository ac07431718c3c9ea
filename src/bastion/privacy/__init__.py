"""Personal data and secrets in text: detection and redaction (a library, framework-free).

    from bastion.privacy import scan, redact
    scan(["Mail jane@example.com"])  # [[Finding(type=EMAIL, start=5, end=21, score=0.95)]]

The HTTP API, keys and audit live in `bastion.privacy.service`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache

from bastion.privacy.engine import ENGINE, Detector
from bastion.privacy.redaction import Mode, Redacted, Redactor, redact_text
from bastion.privacy.types import DESCRIPTIONS, STRUCTURED, EntityType, Finding

__all__ = [
    "DESCRIPTIONS",
    "ENGINE",
    "STRUCTURED",
    "Detector",
    "EntityType",
    "Finding",
    "Mode",
    "Redacted",
    "Redactor",
    "detector",
    "redact",
    "redact_text",
    "scan",
]


@cache
def detector() -> Detector:
    """The process's detector (compiling the patterns takes a fraction of a second)."""
    return Detector()


def scan(texts: Sequence[str], types: Iterable[EntityType] | None = None) -> list[list[Finding]]:
    return detector().scan(texts, types)


def redact(
    texts: Sequence[str],
    mode: Mode = Mode.REPLACE,
    types: Iterable[EntityType] | None = None,
    redactor: Redactor | None = None,
) -> list[Redacted]:
    """Each text with its findings replaced; `hash` and `tokenize` need a keyed `redactor`."""
    found = scan(texts, types)
    return [redact_text(t, f, mode, redactor) for t, f in zip(texts, found, strict=True)]
