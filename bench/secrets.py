"""Secrets benchmark.

- Reveal over HTTP: `POST /v1/orgs/{org}/secrets/{name}/reveal` through
  `bastion serve --workers 2` (SQLite, and PostgreSQL + Redis when reachable): p50/p99
  and requests/s. Every reveal is audited, so each one is a write transaction.
- In-process `Vault` decrypt and encrypt per second against raw AES-256-GCM from
  `cryptography` (one `AESGCM` object, the same 64-byte value and associated data, the
  same stored format: encrypt makes the random nonce and prepends it, decrypt splits it
  off) in the same run. Goal: >= 0.5x.
- `bastion.webhooks.verify` per second (github and standard providers, 1 KiB body)
  against a raw `hmac` + `hashlib` loop doing the same check in the same run. Goal: >= 0.5x.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bench import foundation, load, report
from bench import pg as pg_db
from bench.scale import SCALE

GOAL = 0.5
VALUE = b"ghp_" + b"x" * 60  # a 64-byte token
BODY = (b'{"action":"opened","number":1,"payload":"' + b"a" * 980 + b'"}')[:1024]
NOTES = """
What a reveal costs: authentication (a cache hit), the scoped lookup of the secret and its
version, AES-GCM under the organisation's data key (unwrapped once a minute per worker,
then a ready cipher from memory), and the audit event appended to the organisation's hash
chain in the same transaction, so reveals of one organisation are serialised on its chain
head. `Vault.encrypt` writes under the organisation's active data-key version as this worker
last read it (cached for 5 s, so no database read per write); a foreign key from each secret
version to its data key, not a lock, keeps a finishing re-encryption from destroying a key
a concurrent write still uses.
"""


def _per_second(fn: Callable[[], Any], seconds: float) -> float:
    """Calls per second of `fn`, timed in batches until `seconds` have passed."""
    calls, began = 0, time.perf_counter()
    deadline = began + seconds
    while True:
        for _ in range(200):
            fn()
        calls += 200
        now = time.perf_counter()
        if now >= deadline:
            return calls / (now - began)


def _pair(
    ours: Callable[[], Any], raw: Callable[[], Any], seconds: float, runs: int
) -> tuple[float, float]:
    """Medians over `runs` interleaved runs of each peer."""
    a, b = [], []
    for _ in range(runs):
        a.append(_per_second(ours, seconds))
        b.append(_per_second(raw, seconds))
    return statistics.median(a), statistics.median(b)


# --- in-process: vault ---------------------------------------------------------------


def raw_encrypt(cipher: AESGCM, aad: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + cipher.encrypt(nonce, VALUE, aad)


def _vault_pairs(seconds: float, runs: int) -> dict[str, tuple[float, float]]:
    from bastion.core.context import SYSTEM
    from bastion.core.db import begin_write, make_engine, make_sessionmaker
    from bastion.core.keyring import ROOT_KEY_FILE, create_keyring
    from bastion.migrations.runner import upgrade
    from bastion.secrets.vault import LocalKeyProvider, Vault, value_aad
    from bastion.tenancy import service as tenancy

    with tempfile.TemporaryDirectory(prefix="bastion-bench-vault-") as tmp:
        create_keyring(Path(tmp) / ROOT_KEY_FILE)
        url = f"sqlite:///{tmp}/vault.db"
        upgrade(url)
        engine = make_engine(url)
        vault = Vault(LocalKeyProvider(Path(tmp) / ROOT_KEY_FILE))
        try:
            with make_sessionmaker(engine)() as db:
                begin_write(db)
                org_id = tenancy.create_org(db, SYSTEM, name="bench").id
                key_version, blob = vault.encrypt(db, org_id, "sec_BENCH", 1, VALUE)
                db.commit()
                key = vault.data_key(db, org_id, key_version)
                raw = AESGCM(key)
                aad = value_aad(org_id, "sec_BENCH", 1)
                assert vault.decrypt(db, org_id, "sec_BENCH", 1, key_version, blob) == VALUE
                return {
                    "Vault.decrypt (data key cached)": _pair(
                        lambda: vault.decrypt(db, org_id, "sec_BENCH", 1, key_version, blob),
                        lambda: raw.decrypt(blob[:12], blob[12:], aad),
                        seconds,
                        runs,
                    ),
                    "Vault.encrypt (active key version cached)": _pair(
                        lambda: vault.encrypt(db, org_id, "sec_BENCH", 1, VALUE),
                        lambda: raw_encrypt(raw, aad),
                        seconds,
                        runs,
                    ),
                }
        finally:
            engine.dispose()


# --- in-process: webhook verification ------------------------------------------------


def _verify_pairs(seconds: float, runs: int) -> dict[str, tuple[float, float]]:
    from bastion.webhooks.verify import verify

    secret = "It's a Secret to Everybody"  # noqa: S105 - GitHub's documented test secret
    github_sig = "sha256=" + hmac.new(secret.encode(), BODY, hashlib.sha256).hexdigest()
    github_headers = {"Content-Type": "application/json", "X-Hub-Signature-256": github_sig}
    verify("github", secret, github_headers, BODY)

    def raw_github() -> None:
        value = github_headers["X-Hub-Signature-256"]
        expected = hmac.digest(secret.encode(), BODY, "sha256").hex()
        if not hmac.compare_digest(expected, value.removeprefix("sha256=")):
            raise AssertionError

    std_key = os.urandom(24)
    std_secret = "whsec_" + base64.b64encode(std_key).decode()
    msg_id, stamp = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", str(int(time.time()))
    signed = hmac.new(std_key, f"{msg_id}.{stamp}.".encode() + BODY, hashlib.sha256).digest()
    std_headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(signed).decode(),
    }
    verify("standard", std_secret, std_headers, BODY)

    def raw_standard() -> None:
        key = base64.b64decode(std_secret.removeprefix("whsec_"))
        message = f"{std_headers['webhook-id']}.{std_headers['webhook-timestamp']}.".encode()
        expected = hmac.digest(key, message + BODY, "sha256")
        given = base64.b64decode(std_headers["webhook-signature"].partition(",")[2])
        if not hmac.compare_digest(expected, given):
            raise AssertionError
        if abs(time.time() - int(std_headers["webhook-timestamp"])) > 300:
            raise AssertionError

    return {
        "webhooks.verify github": _pair(
            lambda: verify("github", secret, github_headers, BODY), raw_github, seconds, runs
        ),
        "webhooks.verify standard": _pair(
            lambda: verify("standard", std_secret, std_headers, BODY), raw_standard, seconds, runs
        ),
    }


# --- over HTTP: reveal ---------------------------------------------------------------

_LUA = 'wrk.method = "POST"\nwrk.body = "{}"\nwrk.headers["Content-Type"] = "application/json"\n'


def _reveal_load(url: str, token: str, seconds: int) -> load.LoadResult:
    headers = {"Authorization": f"Bearer {token}"}
    if load.tool() != "wrk":
        return _httpx_post(url, headers, seconds)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_LUA)
    try:
        return load.wrk(url, headers, seconds, 32, script=Path(script.name), timeout_seconds=10)
    finally:
        os.unlink(script.name)


def _httpx_post(url: str, headers: dict[str, str], seconds: int) -> load.LoadResult:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    began = time.perf_counter()
    with httpx.Client(headers=headers, timeout=30) as client:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            errors += client.post(url, json={}).status_code >= 400
            latencies.append((time.perf_counter() - start) * 1e3)
    cuts = statistics.quantiles(latencies, n=100)
    rps = len(latencies) / (time.perf_counter() - began)
    return load.LoadResult(rps, cuts[49], cuts[98], errors, len(latencies))


def _reveal_rows(seconds: int, runs: int, workers: int) -> list[tuple[str, load.LoadResult]]:
    backends: list[tuple[str, str | None, str | None]] = [("SQLite", None, None)]
    pg = pg_db.create_database()
    if pg:
        redis = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
        backends.append(("PostgreSQL + Redis", pg, redis))
    out = []
    try:
        for label, database_url, redis_url in backends:
            with foundation.bastion_server(database_url, redis_url, workers) as (url, tokens):
                token = tokens["api key"]
                auth = {"Authorization": f"Bearer {token}"}
                org = httpx.get(f"{url}/v1/me", headers=auth).json()["org_id"]
                put = httpx.put(
                    f"{url}/v1/orgs/{org}/secrets/github-token",
                    json={"value": VALUE.decode()},
                    headers=auth,
                )
                put.raise_for_status()
                target = f"{url}/v1/orgs/{org}/secrets/github-token/reveal"
                for _ in range(20):  # warm up: each worker unwraps the data key once
                    httpx.post(target, json={}, headers=auth, timeout=30).raise_for_status()
                results = [_reveal_load(target, token, seconds) for _ in range(runs)]
                out.append((label, load.median(results)))
    finally:
        if pg:
            pg_db.drop_database(pg)
    return out


# --- report --------------------------------------------------------------------------


def main(seconds: int, runs: int, workers: int = foundation.WORKERS) -> dict[str, object]:
    figures: dict[str, object] = {}
    inproc_seconds = SCALE.pick(max(1.0, seconds / 5), 0.1)
    pairs = {**_vault_pairs(inproc_seconds, runs), **_verify_pairs(inproc_seconds, runs)}
    rows = []
    for name, (ours, raw) in pairs.items():
        ratio = ours / raw
        figures[name] = {"ops_per_s": ours, "raw_ops_per_s": raw, "ratio": ratio}
        met = "yes" if ratio >= GOAL else "**no**"
        rows.append([name, f"{ours:,.0f}", f"{raw:,.0f}", f"{ratio:.3f}", met])
        print(f"  {name}: {ours:,.0f}/s vs raw {raw:,.0f}/s → {ratio:.2f}x")
    reveal_rows = []
    for label, result in _reveal_rows(seconds, runs, workers):
        figures[f"reveal, {label}"] = result.__dict__
        reveal_rows.append(
            [
                label,
                f"{result.rps:,.0f}",
                f"{result.p50_ms:.2f}",
                f"{result.p99_ms:.2f}",
                str(result.errors),
            ]
        )
        print(f"  reveal, {label}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms")
    intro_http = (
        f"`POST /v1/orgs/{{org}}/secrets/{{name}}/reveal` (64-byte value, API key) through"
        f" `bastion serve --workers {workers}`. Load: {load.tool()}, 2 threads, 32"
        f" connections, {seconds} s per run, {runs} runs; medians."
    )
    intro_inproc = (
        f"In-process, one thread, {inproc_seconds:g} s per run, {runs} interleaved runs per"
        f" peer; medians. Raw peers: one `cryptography` `AESGCM` object (encrypt makes and"
        " prepends the random nonce, decrypt splits the stored nonce off), and one-shot"
        " `hmac.digest(key, msg, 'sha256')` with `hmac.compare_digest`"
        f" over the same headers and 1 KiB body (standard: base64 secret and signature decoded,"
        f" timestamp window checked). Goal: at least {GOAL}x the raw peer."
    )
    body = "\n\n".join(
        [
            "## Secrets: reveal over HTTP, vault and webhook verification in process",
            intro_http,
            report.table(["backend", "reveals/s", "p50 ms", "p99 ms", "errors"], reveal_rows),
            intro_inproc,
            report.table(["operation", "ops/s", "raw ops/s", "ratio", "goal met"], rows),
            NOTES.strip(),
        ]
    )
    report.write_section("secrets", body)
    return figures
