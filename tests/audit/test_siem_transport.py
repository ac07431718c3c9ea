"""SIEM transports against real receivers: syslog over TCP and TLS with octet framing,
OCSF and Splunk HEC over HTTP(S), outage and recovery, error classification, and the
backoff schedule. Every server here is a real socket on 127.0.0.1, started by the test."""

from __future__ import annotations

import datetime as dt
import json
import random
import socket
from typing import Any

import pytest

from bastion.audit.siem_formats import SiemEvent, ocsf, octet_frame, splunk_hec, syslog_5424
from bastion.audit.siem_transport import (
    DeliveryError,
    HttpTransport,
    SyslogTransport,
    backoff_delay,
)
from tests.receivers import Pki, StartHttp, StartSyslog, free_port

TIMEOUT = 2.0
TOKEN = "hec-token-5f0c3d1e-9a77-4b7e-8a2c-topsecret"
TIME = dt.datetime(2024, 5, 1, 12, 30, 45, 123456, tzinfo=dt.UTC)


def make_event(n: int, **metadata: Any) -> SiemEvent:
    return SiemEvent(
        id=f"evt_{n}",
        org_id="org_1",
        seq=n,
        time=TIME + dt.timedelta(seconds=n),
        type="user.created" if n % 2 else "authz.denied",
        actor_type="user",
        actor_id="usr_admin",
        actor_ip="203.0.113.7",
        actor_user_agent="pytest",
        resource_type="user",
        resource_id=f"usr_{n}",
        outcome="success" if n % 2 else "denied",
        reason=None if n % 2 else "missing permission",
        request_id=f"req_{n}",
        metadata=metadata,
        hash=f"{n:064x}",
    )


EVENTS = [make_event(1), make_event(2, note="grüße, 世界"), make_event(3, lines="a\nb")]


def syslog_batch(offset: int = 0) -> list[bytes]:
    return [
        syslog_5424(make_event(e.seq + offset, **e.metadata), hostname="bastion-test")
        for e in EVENTS
    ]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx honours proxy variables; the receivers are on loopback."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("all_proxy", raising=False)


# --- syslog tests ---------------------------------------------------------------------


def test_syslog_batch_arrives_octet_framed_in_order(start_syslog: StartSyslog) -> None:
    receiver = start_syslog()
    batch = syslog_batch()
    with SyslogTransport("127.0.0.1", receiver.port, timeout=TIMEOUT) as transport:
        transport.send(batch)
        assert receiver.wait_for(3) == batch
    assert receiver.raw == b"".join(octet_frame(m) for m in batch)
    # The non-ASCII metadata is counted in bytes, not characters.
    assert "grüße".encode() in receiver.messages[1]


def test_syslog_reuses_the_connection_across_batches(start_syslog: StartSyslog) -> None:
    receiver = start_syslog()
    first, second = syslog_batch(), syslog_batch(offset=10)
    with SyslogTransport("127.0.0.1", receiver.port, timeout=TIMEOUT) as transport:
        transport.send(first)
        receiver.wait_for(3)
        transport.send(second)
        assert receiver.wait_for(6) == first + second
    assert receiver.connections == 1


def test_syslog_empty_batch_is_a_no_op(start_syslog: StartSyslog) -> None:
    receiver = start_syslog()
    with SyslogTransport("127.0.0.1", receiver.port, timeout=TIMEOUT) as transport:
        transport.send([])
    assert receiver.connections == 0
    with pytest.raises(TypeError):
        transport.send(["not bytes"])  # type: ignore[list-item]


def test_syslog_closed_port_is_a_retryable_error() -> None:
    port = free_port()
    transport = SyslogTransport("127.0.0.1", port, timeout=TIMEOUT)
    with transport, pytest.raises(DeliveryError) as caught:
        transport.send(syslog_batch())
    assert caught.value.retryable is True
    assert f"127.0.0.1:{port}" in str(caught.value)


def test_syslog_outage_and_recovery(start_syslog: StartSyslog) -> None:
    receiver = start_syslog()
    port = receiver.port
    transport = SyslogTransport("127.0.0.1", port, timeout=TIMEOUT)
    try:
        transport.send(syslog_batch())
        receiver.wait_for(3)

        receiver.stop()
        with pytest.raises(DeliveryError) as caught:
            transport.send(syslog_batch(offset=10))
        assert caught.value.retryable is True

        recovered = start_syslog(port=port)
        assert recovered.port == port
        transport.send(syslog_batch(offset=10))
        assert recovered.wait_for(3) == syslog_batch(offset=10)
    finally:
        transport.close()


@pytest.mark.parametrize("tls", [False, True])
def test_syslog_receiver_restart_between_batches_loses_nothing(
    start_syslog: StartSyslog, pki: Pki, tls: bool
) -> None:
    """A receiver that went away while the connection sat idle: the next batch must not
    be written into the dead connection (where the kernel would accept and drop it)."""
    context = pki.server_context() if tls else None
    receiver = start_syslog(context=context)
    port = receiver.port
    options: dict[str, Any] = {"tls": True, "ca_file": str(pki.ca_file)} if tls else {}
    with SyslogTransport("127.0.0.1", port, timeout=TIMEOUT, **options) as transport:
        transport.send(syslog_batch())
        receiver.wait_for(3)
        receiver.stop()
        restarted = start_syslog(port=port, context=context)
        transport.send(syslog_batch(offset=10))
        assert restarted.wait_for(3) == syslog_batch(offset=10)
    assert receiver.connections == restarted.connections == 1


@pytest.mark.parametrize(
    ("host", "server_hostname"),
    [("127.0.0.1", None), ("127.0.0.1", "localhost"), ("localhost", None)],
)
def test_syslog_over_tls_with_the_ca(
    start_syslog: StartSyslog, pki: Pki, host: str, server_hostname: str | None
) -> None:
    receiver = start_syslog(context=pki.server_context())
    batch = syslog_batch()
    with SyslogTransport(
        host,
        receiver.port,
        tls=True,
        ca_file=str(pki.ca_file),
        server_hostname=server_hostname,
        timeout=TIMEOUT,
    ) as transport:
        transport.send(batch)
        assert receiver.wait_for(3) == batch
        # TLS 1.3 session tickets pending on the idle connection do not force a reconnect.
        transport.send(syslog_batch(offset=10))
        assert receiver.wait_for(6) == batch + syslog_batch(offset=10)
    assert receiver.connections == 1


def test_syslog_tls_without_the_ca_is_refused(start_syslog: StartSyslog, pki: Pki) -> None:
    receiver = start_syslog(context=pki.server_context())
    transport = SyslogTransport("127.0.0.1", receiver.port, tls=True, timeout=TIMEOUT)
    with transport, pytest.raises(DeliveryError) as caught:
        transport.send(syslog_batch())
    assert caught.value.retryable is True
    assert "certificate" in str(caught.value).lower()
    assert receiver.messages == []


def test_syslog_tls_checks_the_host_name(start_syslog: StartSyslog, pki: Pki) -> None:
    receiver = start_syslog(context=pki.server_context())
    transport = SyslogTransport(
        "127.0.0.1",
        receiver.port,
        tls=True,
        ca_file=str(pki.ca_file),
        server_hostname="siem.example.com",
        timeout=TIMEOUT,
    )
    with transport, pytest.raises(DeliveryError):
        transport.send(syslog_batch())
    assert receiver.messages == []


def test_syslog_tls_to_a_plain_tcp_receiver_fails(start_syslog: StartSyslog, pki: Pki) -> None:
    receiver = start_syslog()
    transport = SyslogTransport(
        "127.0.0.1", receiver.port, tls=True, ca_file=str(pki.ca_file), timeout=TIMEOUT
    )
    with transport, pytest.raises(DeliveryError) as caught:
        transport.send(syslog_batch())
    assert caught.value.retryable is True
    assert receiver.messages == []


def test_syslog_rejects_tls_options_without_tls() -> None:
    with pytest.raises(ValueError, match="tls=True"):
        SyslogTransport("127.0.0.1", 514, ca_file="/etc/ssl/ca.pem")
    with pytest.raises(ValueError, match="port"):
        SyslogTransport("127.0.0.1", 0)


# --- an HTTP receiver -----------------------------------------------------------------


HEC_HEADERS = {"Authorization": f"Splunk {TOKEN}"}


def assert_no_token(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text
        assert TOKEN.rsplit("-", maxsplit=1)[-1] not in text


# --- HTTP tests -----------------------------------------------------------------------


def test_ocsf_batch_is_one_json_array(start_http: StartHttp) -> None:
    receiver = start_http()
    payloads = [ocsf(e) for e in EVENTS]
    with HttpTransport(receiver.url("/ocsf"), kind="ocsf", timeout=TIMEOUT) as transport:
        transport.send(payloads)
    [request] = receiver.requests
    assert request.path == "/ocsf"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == payloads


def test_splunk_hec_batch_is_newline_separated_objects(start_http: StartHttp) -> None:
    receiver = start_http()
    payloads = [splunk_hec(e, index="audit") for e in EVENTS]
    with HttpTransport(
        receiver.url("/services/collector/event"),
        kind="splunk_hec",
        headers=HEC_HEADERS,
        timeout=TIMEOUT,
    ) as transport:
        transport.send(payloads)
    [request] = receiver.requests
    assert request.path == "/services/collector/event"
    assert request.headers["authorization"] == f"Splunk {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    lines = request.body.split(b"\n")
    assert len(lines) == 3
    assert [json.loads(line) for line in lines] == payloads


def test_http_empty_batch_is_a_no_op(start_http: StartHttp) -> None:
    receiver = start_http()
    with HttpTransport(receiver.url("/ocsf"), kind="ocsf", timeout=TIMEOUT) as transport:
        transport.send([])
    assert receiver.requests == []


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (408, True),
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (413, False),
        (301, False),
    ],
)
def test_http_status_classification(start_http: StartHttp, status: int, retryable: bool) -> None:
    receiver = start_http()
    receiver.status = status
    receiver.echo_headers = True  # the body quotes the token back at us
    if status == 301:
        receiver.response_headers = {"Location": "http://elsewhere.example/collector"}
    transport = HttpTransport(
        receiver.url("/services/collector/event"),
        kind="splunk_hec",
        headers=HEC_HEADERS,
        timeout=TIMEOUT,
    )
    with transport, pytest.raises(DeliveryError) as caught:
        transport.send([splunk_hec(EVENTS[0])])
    error = caught.value
    assert error.retryable is retryable
    assert error.status_code == status
    assert str(status) in str(error)
    assert len(receiver.requests) == 1  # a redirect is not followed
    assert_no_token(str(error), repr(error), repr(transport), repr(error.args))


def test_http_retry_after_is_passed_on(start_http: StartHttp) -> None:
    receiver = start_http()
    receiver.status = 429
    receiver.response_headers = {"Retry-After": "7"}
    transport = HttpTransport(receiver.url("/ocsf"), kind="ocsf", timeout=TIMEOUT)
    with transport, pytest.raises(DeliveryError) as caught:
        transport.send([ocsf(EVENTS[0])])
    assert caught.value.retryable is True
    assert caught.value.retry_after == 7.0


def test_http_repr_hides_headers_and_url_credentials() -> None:
    transport = HttpTransport(
        "https://user:hunter2pass@siem.example:8088/collector?token=querysecret42",
        kind="splunk_hec",
        headers=HEC_HEADERS,
    )
    with transport:
        text = repr(transport)
    assert_no_token(text)
    assert "hunter2pass" not in text
    assert "querysecret42" not in text
    assert "siem.example:8088/collector" in text


def test_http_url_credentials_stay_out_of_errors(start_http: StartHttp) -> None:
    receiver = start_http()
    receiver.status = 400
    receiver.echo_headers = True
    url = f"http://user:hunter2pass@127.0.0.1:{receiver.port}/c?token=querysecret42"
    transport = HttpTransport(url, kind="ocsf", timeout=TIMEOUT)
    with transport, pytest.raises(DeliveryError) as caught:
        transport.send([ocsf(EVENTS[0])])
    assert "hunter2pass" not in str(caught.value)
    assert "querysecret42" not in str(caught.value)
    assert caught.value.retryable is False


def test_http_closed_port_is_retryable() -> None:
    url = f"http://127.0.0.1:{free_port()}/services/collector/event"
    t = HttpTransport(url, kind="splunk_hec", headers=HEC_HEADERS, timeout=TIMEOUT)
    with t, pytest.raises(DeliveryError) as caught:
        t.send([splunk_hec(EVENTS[0])])
    assert caught.value.retryable is True
    assert caught.value.status_code is None
    assert_no_token(str(caught.value), repr(caught.value))


def test_http_silent_server_times_out_as_retryable() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/ocsf"
        transport = HttpTransport(url, kind="ocsf", timeout=0.3)
        with transport, pytest.raises(DeliveryError) as caught:
            transport.send([ocsf(EVENTS[0])])
    assert caught.value.retryable is True


def test_https_with_the_ca_and_without(start_http: StartHttp, pki: Pki) -> None:
    receiver = start_http(context=pki.server_context())
    payloads = [ocsf(e) for e in EVENTS]
    url = f"https://localhost:{receiver.port}/ocsf"
    with HttpTransport(url, kind="ocsf", verify=str(pki.ca_file), timeout=TIMEOUT) as t:
        t.send(payloads)
    assert json.loads(receiver.requests[0].body) == payloads

    untrusting = HttpTransport(url, kind="ocsf", timeout=TIMEOUT)  # default trust store
    with untrusting, pytest.raises(DeliveryError) as caught:
        untrusting.send(payloads)
    assert caught.value.retryable is True
    assert len(receiver.requests) == 1


def test_http_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="kind"):
        HttpTransport("https://siem.example/", kind="cef")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="url"):
        HttpTransport("ftp://siem.example/", kind="ocsf")
    with pytest.raises(ValueError, match="url"):
        HttpTransport("/relative/path", kind="ocsf")


# --- backoff --------------------------------------------------------------------------


def test_backoff_stays_within_the_exponential_ceiling() -> None:
    rng = random.Random(1234)
    for attempt in range(12):
        for _ in range(50):
            delay = backoff_delay(attempt, rng=rng)
            assert 0.0 <= delay <= min(300.0, 2.0**attempt)


def test_backoff_is_full_jitter_and_reproducible() -> None:
    delays = [backoff_delay(3, base=1.0, rng=random.Random(7)) for _ in range(3)]
    assert len(set(delays)) == 1  # same seed, same delay
    rng = random.Random(99)
    samples = [backoff_delay(3, rng=rng) for _ in range(2000)]
    assert max(samples) <= 8.0
    assert max(samples) > 7.5  # spread over the whole range, from near zero ...
    assert min(samples) < 0.5  # ... to near the ceiling


def test_backoff_is_capped() -> None:
    rng = random.Random(5)
    assert all(backoff_delay(20, cap=10.0, rng=rng) <= 10.0 for _ in range(200))
    assert all(backoff_delay(5000, rng=rng) <= 300.0 for _ in range(50))  # no overflow
    assert backoff_delay(4, base=0.5, cap=300.0, rng=rng) <= 8.0
    assert backoff_delay(0, base=0.0, rng=rng) == 0.0
    assert 0.0 <= backoff_delay(30) <= 300.0  # system randomness by default


def test_backoff_rejects_negative_input() -> None:
    with pytest.raises(ValueError, match="attempt"):
        backoff_delay(-1)
    with pytest.raises(ValueError, match="cap"):
        backoff_delay(1, cap=-1.0)
