"""Scoring a detector against gold spans: per type P/R/F1, micro-F1 overall and on the
structured types.

A predicted span matches a gold span of the same type when they overlap by at least
half of the shorter one; each gold span matches at most one prediction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bastion.privacy.types import STRUCTURED, EntityType


@dataclass(frozen=True)
class Span:
    type: str
    start: int
    end: int


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass
class Report:
    by_type: dict[str, Counts] = field(default_factory=dict)

    def _sum(self, types: Iterable[str]) -> Counts:
        total = Counts()
        for t in types:
            c = self.by_type.get(t, Counts())
            total.tp, total.fp, total.fn = total.tp + c.tp, total.fp + c.fp, total.fn + c.fn
        return total

    @property
    def micro(self) -> Counts:
        return self._sum(self.by_type)

    @property
    def structured(self) -> Counts:
        return self._sum(t for t in self.by_type if t in {s.value for s in STRUCTURED})

    def table(self) -> str:
        rows = ["| type | P | R | F1 | gold |", "| --- | --- | --- | --- | --- |"]
        for t in sorted(self.by_type):
            c = self.by_type[t]
            rows.append(
                f"| {t} | {c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} | {c.tp + c.fn} |"
            )
        for name, c in (("structured (micro)", self.structured), ("all (micro)", self.micro)):
            rows.append(
                f"| {name} | {c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} | {c.tp + c.fn} |"
            )
        return "\n".join(rows)


def _overlaps(a: Span, b: Span) -> bool:
    inter = min(a.end, b.end) - max(a.start, b.start)
    return inter > 0 and inter * 2 >= min(a.end - a.start, b.end - b.start)


def score(
    gold: Sequence[Sequence[Span]],
    predicted: Sequence[Sequence[Span]],
    types: Iterable[str] = tuple(EntityType),
) -> Report:
    """Compare per text; types outside `types` are ignored on both sides."""
    wanted = set(types)
    report = Report({t: Counts() for t in wanted})
    for gold_spans, pred_spans in zip(gold, predicted, strict=True):
        unmatched = [g for g in gold_spans if g.type in wanted]
        for p in pred_spans:
            if p.type not in wanted:
                continue
            hit = next((g for g in unmatched if g.type == p.type and _overlaps(g, p)), None)
            if hit is None:
                report.by_type[p.type].fp += 1
            else:
                unmatched.remove(hit)
                report.by_type[p.type].tp += 1
        for g in unmatched:
            report.by_type[g.type].fn += 1
    return report
