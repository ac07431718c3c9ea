"""MFA benchmark (issue 14).

- In process, one thread: a TOTP code checked as Bastion checks it
  (`bastion.identity.mfa.totp.match`: the codes of the step before, the step and the step
  after, each compared in constant time, no early exit) against `pyotp`'s own
  `TOTP.verify(code, valid_window=1)`; and a WebAuthn assertion verified by py_webauthn's
  `verify_authentication_response` (what Bastion calls; ES256, from the suite's software
  authenticator) against a raw `cryptography` ECDSA P-256 verification of the same
  signature over the same bytes.
- Over HTTP: sign-in with a second factor end to end, password → `mfa_token` → TOTP →
  session (`POST /v1/auth/login` then `POST /v1/auth/mfa`), against `bastion serve`
  (SQLite). A TOTP code is accepted once per factor, so the load cycles over a pool of
  people, each signing in at most once per 30-second step and code.
"""

from __future__ import annotations

import hashlib
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pyotp
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from tests.identity.webauthn_authenticator import SoftAuthenticator, b64url, unb64url

from bench import foundation, load, report
from bench.scale import SCALE

USERS = SCALE.pick(120, 2)  # the sign-in pool: each signs in at most twice per 30 s
THREADS = SCALE.pick(8, 2)
PASSWORD = "throwaway-mfa-passphrase-long-enough"  # noqa: S105 - throwaway users (no context word: the org is "Bench")
NOTES = """
What a sign-in with a second factor costs: the password's argon2id hash (64 MiB, 3 passes,
by default: by far the largest part, and deliberately so), the mfa token issued (its keyed
hash stored, an audit event), then the token read and locked, the factor's sealed secret
opened (AES-GCM under the organisation's data key), the code checked and its time step
recorded by compare-and-set, the session opened and two more audit events, in two
transactions. The in-process figures show that checking the factor itself is small beside
that: a TOTP check is three HMAC-SHA-1s, a WebAuthn assertion one ECDSA P-256 verification
plus parsing (CBOR, JSON, base64url) and the RP, origin, flag and counter checks.
"""


def _per_second(fn: Callable[[], Any], seconds: float) -> float:
    calls, began = 0, time.perf_counter()
    deadline = began + seconds
    while True:
        for _ in range(100):
            fn()
        calls += 100
        now = time.perf_counter()
        if now >= deadline:
            return calls / (now - began)


def _pair(
    ours: Callable[[], Any], raw: Callable[[], Any], seconds: float, runs: int
) -> tuple[float, float]:
    a, b = [], []
    for _ in range(runs):  # interleaved, so drift hits both peers alike
        a.append(_per_second(ours, seconds))
        b.append(_per_second(raw, seconds))
    return statistics.median(a), statistics.median(b)


# --- in process -----------------------------------------------------------------------


def _totp_pair(seconds: float, runs: int) -> tuple[float, float]:
    from bastion.core.clock import utcnow
    from bastion.identity.mfa import totp

    secret = totp.new_secret()
    now = utcnow()
    code = pyotp.TOTP(secret).at(now)
    assert totp.match(secret, code, now, None) is not None
    reference = pyotp.TOTP(secret)
    assert reference.verify(code, for_time=now, valid_window=1)
    return _pair(
        lambda: totp.match(secret, code, now, None),
        lambda: reference.verify(code, for_time=now, valid_window=1),
        seconds,
        runs,
    )


def _webauthn_pair(seconds: float, runs: int) -> tuple[float, float]:
    from webauthn import verify_authentication_response

    authenticator = SoftAuthenticator(origin="https://bench.example")
    options = {
        "rp": {"id": "bench.example"},
        "user": {"id": b64url(b"usr_bench")},
        "challenge": b64url(b"\x00" * 32),
    }
    registration = authenticator.create(options)
    (credential,) = authenticator.credentials.values()
    public_key = credential.cose_key()
    challenge = b"\x07" * 32
    assertion = authenticator.get({"challenge": b64url(challenge), "rpId": "bench.example"})
    assert registration["id"] == assertion["id"]

    def ours() -> None:
        verify_authentication_response(
            credential=assertion,
            expected_challenge=challenge,
            expected_rp_id="bench.example",
            expected_origin="https://bench.example",
            credential_public_key=public_key,
            credential_current_sign_count=0,
            require_user_verification=True,
        )

    ours()
    response = assertion["response"]
    signed = (
        unb64url(response["authenticatorData"])
        + hashlib.sha256(unb64url(response["clientDataJSON"])).digest()
    )
    signature = unb64url(response["signature"])
    key = credential.key.public_key()

    def raw() -> None:
        key.verify(signature, signed, ec.ECDSA(hashes.SHA256()))

    return _pair(ours, raw, seconds, runs)


# --- over HTTP ------------------------------------------------------------------------


class _Pool:
    """People with a TOTP factor; each code (a 30-second step, or the next one) is
    accepted once per factor, so a sign-in takes a person and a step not used yet."""

    def __init__(self, people: list[tuple[str, str]]) -> None:
        self.people = people
        # Confirming each factor used the code of its step: now, at the latest.
        self.last = [int(time.time()) // 30] * len(people)
        self.lock = threading.Lock()
        self.turn = 0

    def take(self) -> tuple[str, str] | None:
        now = int(time.time()) // 30
        with self.lock:
            for _ in range(len(self.people)):
                i = self.turn = (self.turn + 1) % len(self.people)
                step = max(now, self.last[i] + 1)
                if step <= now + 1:
                    self.last[i] = step
                    email, secret = self.people[i]
                    return email, pyotp.TOTP(secret).at(step * 30)
        return None


def _person(client: httpx.Client, url: str, org: str, api_key: str) -> tuple[str, str]:
    email = f"mfa-{uuid.uuid4().hex[:10]}@example.com"
    created = client.post(
        f"{url}/v1/orgs/{org}/users",
        json={"email": email, "role": "member", "password": PASSWORD},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    created.raise_for_status()
    login = client.post(f"{url}/v1/auth/login", json={"email": email, "password": PASSWORD})
    login.raise_for_status()
    session = {"Authorization": f"Bearer {login.json()['token']}"}
    started = client.post(f"{url}/v1/me/mfa/totp", headers=session)
    started.raise_for_status()
    body = started.json()
    confirmed = client.post(
        f"{url}/v1/me/mfa/totp/{body['factor_id']}/confirm",
        json={"code": pyotp.TOTP(body["secret"]).now()},
        headers=session,
    )
    confirmed.raise_for_status()
    return email, body["secret"]


def _sign_in(client: httpx.Client, url: str, pool: _Pool) -> tuple[float, bool] | None:
    """One sign-in's latency and success; None when every person has used this step's
    and the next step's code (the pool is too small for the rate: wait)."""
    taken = pool.take()
    if taken is None:
        time.sleep(0.05)
        return None
    email, code = taken
    began = time.perf_counter()
    owed = client.post(f"{url}/v1/auth/login", json={"email": email, "password": PASSWORD})
    ok = owed.status_code == 200 and owed.json().get("mfa_required") is True
    if ok:
        done = client.post(
            f"{url}/v1/auth/mfa",
            json={"mfa_token": owed.json()["mfa_token"], "method": "totp", "code": code},
        )
        ok = done.status_code == 200 and "token" in done.json()
    return (time.perf_counter() - began) * 1e3, ok


def _sign_in_load(url: str, pool: _Pool, seconds: int) -> load.LoadResult:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        nonlocal errors
        with httpx.Client(timeout=60) as client:
            while time.perf_counter() < deadline:
                outcome = _sign_in(client, url, pool)
                if outcome is None:
                    continue
                ms, ok = outcome
                with lock:
                    if ok:
                        latencies.append(ms)
                    else:
                        errors += 1

    began = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as threads:
        for future in [threads.submit(worker) for _ in range(THREADS)]:
            future.result()
    elapsed = time.perf_counter() - began
    if len(latencies) < 2:
        latencies = (latencies or [0.0]) * 2
    cuts = statistics.quantiles(latencies, n=100)
    return load.LoadResult(len(latencies) / elapsed, cuts[49], cuts[98], errors, len(latencies))


def _http(seconds: int, runs: int, workers: int) -> load.LoadResult:
    with (
        foundation.bastion_server(None, None, workers) as (url, tokens),
        httpx.Client(timeout=60) as client,
    ):
        api_key = tokens["api key"]
        me = client.get(f"{url}/v1/me", headers={"Authorization": f"Bearer {api_key}"})
        org = me.json()["org_id"]
        pool = _Pool([_person(client, url, org, api_key) for _ in range(USERS)])
        return load.median([_sign_in_load(url, pool, seconds) for _ in range(runs)])


# --- report ---------------------------------------------------------------------------


def main(seconds: int, runs: int, workers: int = foundation.WORKERS) -> dict[str, object]:
    figures: dict[str, object] = {}
    inproc_seconds = SCALE.pick(max(1.0, seconds / 5), 0.1)
    pairs = {
        "TOTP check (Bastion: totp.match) vs pyotp verify": _totp_pair(inproc_seconds, runs),
        "WebAuthn assertion (py_webauthn) vs raw ECDSA P-256 verify": _webauthn_pair(
            inproc_seconds, runs
        ),
    }
    rows = []
    for name, (ours, raw) in pairs.items():
        figures[name] = {"ops_per_s": ours, "raw_ops_per_s": raw, "ratio": ours / raw}
        rows.append([name, f"{ours:,.0f}", f"{raw:,.0f}", f"{ours / raw:.3f}"])
        print(f"  {name}: {ours:,.0f}/s vs raw {raw:,.0f}/s → {ours / raw:.2f}x")
    result = _http(seconds, runs, workers)
    figures["sign-in with TOTP, SQLite"] = result.__dict__
    print(f"  sign-in with TOTP: {result.rps:,.1f}/s, p50 {result.p50_ms:.1f} ms")
    http_row = [
        "SQLite",
        f"{result.rps:,.1f}",
        f"{result.p50_ms:.1f}",
        f"{result.p99_ms:.1f}",
        str(result.errors),
    ]
    intro_http = (
        f"Password → `mfa_token` → TOTP → session (`POST /v1/auth/login`, `POST /v1/auth/mfa`)"
        f" against `bastion serve --workers {workers}` with the default argon2id cost,"
        f" {THREADS} client threads, a pool of {USERS} people with a TOTP factor,"
        f" {seconds} s per run, {runs} runs; medians. Latency is of the two requests together."
    )
    intro_inproc = (
        f"In process, one thread, {inproc_seconds:g} s per run, {runs} interleaved runs per"
        " peer; medians. Peers: `pyotp.TOTP.verify(code, valid_window=1)` (compares with"
        " early exit), and `cryptography`'s ECDSA P-256 / SHA-256 verification of the same"
        " assertion signature over the same authenticator data and client-data hash."
    )
    body = "\n\n".join(
        [
            "## MFA: TOTP and WebAuthn checks in process, sign-in with TOTP over HTTP",
            intro_http,
            report.table(["backend", "sign-ins/s", "p50 ms", "p99 ms", "errors"], [http_row]),
            intro_inproc,
            report.table(["operation", "ops/s", "raw ops/s", "ratio"], rows),
            NOTES.strip(),
        ]
    )
    report.write_section("mfa", body)
    return figures
