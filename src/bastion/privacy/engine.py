"""The detector: one compiled multi-pattern scan per batch, validation on candidates.

The structured types' patterns (`patterns.RULES`) are compiled together into one
Hyperscan database when Hyperscan is available on the platform; a batch of texts is
joined with a separator no pattern matches and scanned in one call, so the C engine
walks every byte once whatever the number of patterns. Where Hyperscan has no build
(it needs x86-64 or vectorscan's ARM port) the same patterns run one by one on
Python's `re`. Candidates then meet their validators and context words, PERSON and
ADDRESS come from `names`, and overlaps resolve by score. Offsets are in code points.
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bastion.privacy import names
from bastion.privacy.patterns import ASSIGNMENT_RULE, ASSIGNMENT_VALUE, PRIVATE_KEY_END, RULES, Rule
from bastion.privacy.types import EntityType, Finding
from bastion.privacy.validators import entropy_ok

try:  # pragma: no cover - which branch runs depends on the platform
    import hyperscan

    HAVE_HYPERSCAN = True
except ImportError:  # pragma: no cover
    HAVE_HYPERSCAN = False

ENGINE = "hyperscan" if HAVE_HYPERSCAN else "re"
_SEPARATOR = b"\n\x00\n"  # no pattern matches a NUL
_ASSIGNED = re.compile(ASSIGNMENT_VALUE)
# Higher wins an overlap: exact formats before checksummed numbers before guesses.
_PRIORITY: dict[EntityType, int] = {
    EntityType.PRIVATE_KEY: 9,
    EntityType.JWT: 8,
    EntityType.GITHUB_TOKEN: 8,
    EntityType.AWS_ACCESS_KEY: 8,
    EntityType.API_KEY: 7,
    EntityType.EMAIL: 7,
    EntityType.IBAN: 6,
    EntityType.CREDIT_CARD: 6,
    EntityType.US_SSN: 5,
    EntityType.IP_ADDRESS: 5,
    EntityType.PHONE: 4,
    EntityType.ADDRESS: 3,
    EntityType.PERSON: 2,
}
_GROUP_GOES_ON = re.compile(r"[ \-]\d")
_UNIT = re.compile(r" ?(?:ms|s|sec|secs|seconds|kb|mb|gb|tb|%|px|x)\b", re.IGNORECASE)
_UPPER = re.compile(r"[A-ZÀ-ÞĀ-Ž]")
_DIGIT = re.compile(r"\d")
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z ]{0,24})[\s#:=.\-]*$")


@dataclass(frozen=True)
class _Candidate:
    rule: int
    start: int  # byte offsets in the text's UTF-8
    end: int


class Detector:
    """Finds personal data and secrets in texts. Thread-safe once built; build once."""

    def __init__(self) -> None:
        self._db = _compile() if HAVE_HYPERSCAN else None
        # Hyperscan's scratch space serves one scan at a time: each thread gets its own
        # (a shared one fails concurrent scans with ScratchInUseError).
        self._scratch = threading.local()
        self._compiled = [re.compile(r.pattern, re.IGNORECASE if r.caseless else 0) for r in RULES]

    def scan(
        self, texts: Sequence[str], types: Iterable[EntityType] | None = None
    ) -> list[list[Finding]]:
        wanted = frozenset(types) if types is not None else frozenset(EntityType)
        encoded = [t.encode("utf-8", "replace") for t in texts]
        candidates = self._candidates(encoded)
        return [
            _resolve(_findings(text, raw, found, wanted))
            for text, raw, found in zip(texts, encoded, candidates, strict=True)
        ]

    def _candidates(self, encoded: list[bytes]) -> list[list[_Candidate]]:
        out: list[list[_Candidate]] = [[] for _ in encoded]
        if self._db is None:
            for i, raw in enumerate(encoded):
                text = raw.decode("latin-1")  # byte offsets: one char per byte
                for rule, rx in enumerate(self._compiled):
                    out[i].extend(_Candidate(rule, m.start(), m.end()) for m in rx.finditer(text))
            return out
        starts: list[int] = []
        pos = 0
        for raw in encoded:
            starts.append(pos)
            pos += len(raw) + len(_SEPARATOR)
        hits: list[tuple[int, int, int]] = []

        def on_match(rule: int, start: int, end: int, _flags: int, _ctx: object) -> None:
            hits.append((rule, start, end))

        scratch = getattr(self._scratch, "space", None)
        if scratch is None:
            scratch = self._scratch.space = hyperscan.Scratch(self._db)
        self._db.scan(_SEPARATOR.join(encoded), match_event_handler=on_match, scratch=scratch)
        for rule, start, end in hits:
            i = bisect_right(starts, start) - 1
            base = starts[i]
            if end - base <= len(encoded[i]):
                out[i].append(_Candidate(rule, start - base, end - base))
        return out


def _compile() -> hyperscan.Database:
    db = hyperscan.Database()
    flags = []
    for rule in RULES:
        flag = hyperscan.HS_FLAG_SOM_LEFTMOST
        if rule.caseless:
            flag |= hyperscan.HS_FLAG_CASELESS
        flags.append(flag)
    db.compile(
        expressions=[r.pattern.encode() for r in RULES],
        ids=list(range(len(RULES))),
        elements=len(RULES),
        flags=flags,
    )
    return db


def _codepoint(raw: bytes, text: str, offset: int) -> int:
    """A UTF-8 byte offset as a code point offset (equal for ASCII texts). Patterns match
    ASCII only, so an offset never falls inside a character."""
    if len(raw) == len(text):
        return offset
    return len(raw[:offset].decode("utf-8", "replace"))


def _findings(
    text: str, raw: bytes, found: list[_Candidate], wanted: frozenset[EntityType]
) -> list[Finding]:
    out: list[Finding] = []
    if found:
        accepted: list[tuple[int, int, EntityType]] = []
        for c in sorted(found, key=lambda c: (c.start, -c.end)):
            rule = RULES[c.rule]
            if rule.type not in wanted:
                continue
            start, end = _codepoint(raw, text, c.start), _codepoint(raw, text, c.end)
            if any(t == rule.type and s < end and start < e for s, e, t in accepted):
                continue
            finding = _check(text, c.rule, rule, start, end)
            if finding is not None:
                accepted.append((finding.start, finding.end, rule.type))
                out.append(finding)
    wants_names = EntityType.PERSON in wanted or EntityType.ADDRESS in wanted
    if wants_names and _UPPER.search(text):
        words = names.tokens(text)
        if EntityType.ADDRESS in wanted and _DIGIT.search(text):
            out.extend(names.addresses(text, words))
        if EntityType.PERSON in wanted:
            out.extend(names.persons(text, words))
    return out


def _context(text: str, start: int, end: int, words: tuple[str, ...], *, after: bool) -> bool:
    window = text[max(0, start - 48) : start].lower()
    if after:
        window += " " + text[end : end + 24].lower()
    return any(w in window for w in words)


def _negative(text: str, start: int, rule: Rule) -> bool:
    """A word right before the value names it as something else ("order 4111…")."""
    if not rule.negative:
        return False
    m = _WORD_BEFORE.search(text[max(0, start - 28) : start])
    if m is None:
        return False
    last = m.group(1).lower().split()
    return bool(last) and (last[-1] in rule.negative or " ".join(last[-2:]) in rule.negative)


def _private_key(text: str, start: int, end: int) -> int:
    """Where the PEM block that starts here ends (its END line, else the text's end)."""
    stop = text.find(PRIVATE_KEY_END, end)
    if stop < 0:
        return len(text)
    line_end = text.find("-----", stop + len(PRIVATE_KEY_END))
    return line_end + 5 if line_end >= 0 else len(text)


def _assigned(text: str, rule: Rule, start: int, end: int) -> Finding | None:
    """The value of `api_key = "…"`, when it looks random."""
    m = _ASSIGNED.search(text, start, end)
    if m is None or not entropy_ok(text[m.end() : end]):
        return None
    return Finding(rule.type, m.end(), end, rule.score)


def _glued(text: str, start: int, end: int) -> bool:
    """A number that is part of a longer token ("v1.2.3.4", "A1234-5678")."""
    before = text[start - 1] if start else " "
    after = text[end] if end < len(text) else " "
    if before.isalnum() or (before in "._/-" and start > 1 and text[start - 2].isalnum()):
        return True
    return after.isalnum() or (after in ".-" and text[end + 1 : end + 2].isdigit())


def _check(text: str, index: int, rule: Rule, start: int, end: int) -> Finding | None:
    if rule.type is EntityType.PRIVATE_KEY:
        return Finding(rule.type, start, _private_key(text, start, end), rule.score)
    if index == ASSIGNMENT_RULE:
        return _assigned(text, rule, start, end)
    if rule.type is EntityType.EMAIL:  # a local part in other scripts: "jürgen@…"
        while start and (text[start - 1].isalnum() or text[start - 1] in "._%+-"):
            start -= 1
    if rule.type in _NUMERIC and _glued(text, start, end):
        return None
    if rule.type is EntityType.CREDIT_CARD and _GROUP_GOES_ON.match(text, end):
        return None  # the first groups of a longer number
    if rule.type is EntityType.IP_ADDRESS and _UNIT.match(text, end):
        return None  # a measurement: "12.5.3.1 ms"
    if rule.validator is not None and not rule.validator(text[start:end]):
        return None
    score = rule.score
    if rule.context:
        has = _context(text, start, end, rule.context, after=False)
        if rule.needs_context and not has:
            return None
        if has:
            score = min(1.0, score + 0.1)
    if _negative(text, start, rule):
        return None
    return Finding(rule.type, start, end, round(score, 2))


_NUMERIC = frozenset(
    {EntityType.PHONE, EntityType.CREDIT_CARD, EntityType.US_SSN, EntityType.IP_ADDRESS}
)


def _resolve(findings: list[Finding]) -> list[Finding]:
    """Keep the best of overlapping findings; return them in text order."""
    if len(findings) < 2:
        return findings
    ranked = sorted(
        findings, key=lambda f: (-_PRIORITY[f.type], -(f.end - f.start), -f.score, f.start)
    )
    kept: list[Finding] = []
    for f in ranked:
        if all(f.end <= k.start or k.end <= f.start for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: (f.start, f.end))
