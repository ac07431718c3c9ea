"""The goals on the committed dev evaluation set (bench/privacy_devset.py makes it):
micro-F1 >= 0.95 on the structured types, >= 0.85 overall, >= 0.70 on each of PERSON
and ADDRESS; and the scorer itself on small cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.privacy import STRUCTURED, EntityType, scan
from bastion.privacy.evaluate import Report, Span, score

DEVSET = Path(__file__).parent / "data" / "devset.jsonl"


def load() -> tuple[list[str], list[list[Span]]]:
    rows = [json.loads(line) for line in DEVSET.read_text("utf-8").splitlines()]
    texts = [r["text"] for r in rows]
    gold = [[Span(s["type"], s["start"], s["end"]) for s in r["spans"]] for r in rows]
    return texts, gold


@pytest.fixture(scope="module")
def report() -> Report:
    texts, gold = load()
    found = scan(texts)
    return score(gold, [[Span(f.type.value, f.start, f.end) for f in fs] for fs in found])


def test_the_set_is_large_and_has_hard_negatives() -> None:
    texts, gold = load()
    assert len(texts) >= 500
    assert sum(1 for g in gold if not g) >= 100  # texts with nothing to find
    kinds = {s.type for g in gold for s in g}
    assert kinds == {t.value for t in EntityType}


def test_goals(report: Report) -> None:
    assert report.structured.f1 >= 0.95, report.table()
    assert report.micro.f1 >= 0.85, report.table()
    assert report.by_type["PERSON"].f1 >= 0.70, report.table()
    assert report.by_type["ADDRESS"].f1 >= 0.70, report.table()


def test_scorer_counts_overlaps_once() -> None:
    gold = [[Span("PERSON", 0, 10), Span("EMAIL", 20, 30)]]
    predicted = [[Span("PERSON", 0, 4), Span("PERSON", 5, 10), Span("PHONE", 20, 30)]]
    r = score(gold, predicted)
    # "0-4" covers less than half of "0-10"? 4 >= min(10, 4) / 2: a match; "5-10" is left over.
    assert (r.by_type["PERSON"].tp, r.by_type["PERSON"].fp, r.by_type["PERSON"].fn) == (1, 1, 0)
    assert (r.by_type["EMAIL"].fn, r.by_type["PHONE"].fp) == (1, 1)
    assert r.structured.tp == 0
    assert {t.value for t in STRUCTURED} >= {"EMAIL", "PHONE"}
