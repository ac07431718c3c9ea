"""Webhook gateway benchmark: accepted deliveries per second on `POST /v1/hooks/{id}`
through `bastion serve --workers 2` (SQLite, and PostgreSQL + Redis when reachable).

Every request is a distinct, validly signed delivery (Standard Webhooks with its own
`webhook-id`; GitHub with its own body), pre-generated and sent by wrk with
bench/webhooks_post.lua, so the load generator does no signing. Each accepted delivery
is verified, recorded against replay, stored and audited in one write transaction."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bastion.core.crypto import hmac_sha256_hex, random_bytes
from bastion.webhooks.verify import sign_standard
from bench import foundation, load, report
from bench import pg as pg_db

SCRIPT = Path(__file__).resolve().parent / "webhooks_post.lua"
THREADS, CONNECTIONS = 2, 32
PER_SECOND = 6000  # pre-generated deliveries per second of load: more than ever accepted
NOTES = """
What an accepted delivery costs: one read of the endpoint and of its current secret
versions, the secret decrypted under the organisation's cached data key, the provider's
HMAC, then one write transaction that inserts the replay key (its primary key is what
makes a second acceptance impossible), the stored event and the audit event, which
appends to the organisation's hash chain under a lock on the chain head. All deliveries
here go to one endpoint of one organisation, so they serialise on that chain head, which
stays locked until the request's unit of work commits in the middleware (and, on SQLite,
on the database's single writer): throughput is bounded like every other audited write
(compare the secrets reveal figures above), not by signature checks, which take
microseconds (see the `webhooks.verify` rows in the secrets section). Deliveries to
endpoints of different organisations append to different chains.
"""


def _standard(secret: str, n: int, now: int) -> list[str]:
    lines = []
    for i in range(n):
        msg_id = f"msg_{uuid.uuid4().hex}"
        body = json.dumps({"type": "bench.event", "data": {"n": i}}, separators=(",", ":"))
        signature = sign_standard(secret, msg_id, now, body.encode())
        headers = [
            "Content-Type: application/json",
            f"webhook-id: {msg_id}",
            f"webhook-timestamp: {now}",
            f"webhook-signature: {signature}",
        ]
        lines.append("\t".join([*headers, body]))
    return lines


def _github(secret: str, n: int, _now: int) -> list[str]:
    lines = []
    for i in range(n):
        body = json.dumps(
            {"action": "opened", "number": i, "nonce": uuid.uuid4().hex}, separators=(",", ":")
        )
        signature = "sha256=" + hmac_sha256_hex(secret.encode(), body.encode())
        headers = [
            "Content-Type: application/json",
            "X-GitHub-Event: pull_request",
            f"X-Hub-Signature-256: {signature}",
        ]
        lines.append("\t".join([*headers, body]))
    return lines


PROVIDERS = {"standard": _standard, "github": _github}


def _secret(provider: str) -> str:
    raw = base64.b64encode(random_bytes(32)).decode()
    return "whsec_" + raw if provider == "standard" else raw


def _endpoint(url: str, key: str, provider: str, secret: str) -> str:
    headers = {"Authorization": f"Bearer {key}"}
    org = httpx.get(f"{url}/v1/me", headers=headers).json()["org_id"]
    body: dict[str, Any] = {"name": f"bench {provider}", "provider": provider, "secret": secret}
    if provider == "standard":
        body["tolerance_seconds"] = 3600
    made = httpx.post(f"{url}/v1/orgs/{org}/webhook-endpoints", json=body, headers=headers)
    made.raise_for_status()
    return str(made.json()["url"])


def _wrk(target: str, requests: Path, seconds: int) -> load.LoadResult:
    command = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"]
    command += ["--timeout", "10s"]  # wrk's default (2 s) would count slow accepts as errors
    command += ["-s", str(SCRIPT), target]
    env = {**os.environ, "BENCH_REQUESTS": str(requests), "BENCH_THREADS": str(THREADS)}
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return load.parse_wrk(out)


def _measure(
    label: str, database_url: str | None, redis_url: str | None, seconds: int, runs: int
) -> list[tuple[str, load.LoadResult]]:
    out = []
    with foundation.bastion_server(database_url, redis_url, foundation.WORKERS) as (url, tokens):
        for provider, generate in PROVIDERS.items():
            secret = _secret(provider)
            target = url + _endpoint(url, tokens["api key"], provider, secret)
            results = []
            with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
                for run in range(runs):
                    requests = Path(tmp) / f"run-{run}.tsv"
                    lines = generate(secret, PER_SECOND * seconds, int(time.time()))
                    requests.write_text("\n".join(lines) + "\n")
                    results.append(_wrk(target, requests, seconds))
            result = load.median(results)
            name = f"{label}, {provider}"
            print(f"  {name}: {result.rps:,.0f} accepted/s, p99 {result.p99_ms:.1f} ms")
            out.append((name, result))
    return out


def main(seconds: int, runs: int) -> dict[str, object]:
    if load.tool() != "wrk":
        print("  skipped: wrk is not installed")
        return {}
    backends: list[tuple[str, str | None, str | None]] = [("SQLite", None, None)]
    pg = pg_db.create_database()
    if pg:
        redis = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
        backends.append(("PostgreSQL + Redis", pg, redis))
    measured: list[tuple[str, load.LoadResult]] = []
    try:
        for label, database_url, redis_url in backends:
            measured += _measure(label, database_url, redis_url, seconds, runs)
    finally:
        if pg:
            pg_db.drop_database(pg)
    rows = [
        [name, f"{r.rps:,.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", str(r.errors)]
        for name, r in measured
    ]
    intro = (
        "`POST /v1/hooks/{id}` through `bastion serve --workers 2`; every request a distinct"
        " delivery with a valid signature (pre-generated; wrk with bench/webhooks_post.lua,"
        f" {THREADS} threads, {CONNECTIONS} connections, {seconds} s per run, {runs} runs;"
        " medians). All 202 Accepted: an error is any other answer (a 409 would mean a"
        " pre-generated delivery was sent twice). The load generator shares the machine's"
        " CPUs with the server."
    )
    table = report.table(["scenario", "accepted deliveries/s", "p50 ms", "p99 ms", "errors"], rows)
    body = "\n\n".join(["## Webhook gateway: `POST /v1/hooks/{id}`", intro, table, NOTES.strip()])
    report.write_section("webhooks", body)
    figures: dict[str, Any] = {name: r.__dict__ for name, r in measured}
    return figures
