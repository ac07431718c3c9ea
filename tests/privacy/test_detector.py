"""The detector on hand-written cases: each type found with its validator, the hard
negatives refused, offsets in code points, batches equal to one-by-one scans, and the
pure-`re` engine equal to the compiled one."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from bastion.privacy import EntityType, redact, scan
from bastion.privacy import engine as engine_mod
from bastion.privacy.redaction import Mode, Redactor, detokenize_text

T = EntityType


def found(text: str) -> list[tuple[str, str]]:
    return [(f.type.value, text[f.start : f.end]) for f in scan([text])[0]]


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("mail me: jane.doe+ops@example.co.uk today", T.EMAIL, "jane.doe+ops@example.co.uk"),
        ("call +44 20 7946 0958 now", T.PHONE, "+44 20 7946 0958"),
        ("office (415) 555-2671", T.PHONE, "(415) 555-2671"),
        ("Berlin: 030 12345678", T.PHONE, "030 12345678"),
        ("card 4111 1111 1111 1111 exp 12/29", T.CREDIT_CARD, "4111 1111 1111 1111"),
        ("amex 3782 822463 10005", T.CREDIT_CARD, "3782 822463 10005"),
        ("ssn 536-22-8726.", T.US_SSN, "536-22-8726"),
        ("my ssn is 536228726", T.US_SSN, "536228726"),
        ("IBAN DE89 3704 0044 0532 0130 00 please", T.IBAN, "DE89 3704 0044 0532 0130 00"),
        ("iban GB82WEST12345698765432", T.IBAN, "GB82WEST12345698765432"),
        ("from 203.0.113.7 at", T.IP_ADDRESS, "203.0.113.7"),
        ("peer 2001:db8::8a2e:370:7334 up", T.IP_ADDRESS, "2001:db8::8a2e:370:7334"),
        ("AWS AKIAIOSFODNN7EXAMPL3 leaked", T.AWS_ACCESS_KEY, "AKIAIOSFODNN7EXAMPL3"),
        ("t=ghp_" + "a1B2" * 9, T.GITHUB_TOKEN, "ghp_" + "a1B2" * 9),
        ("x github_pat_" + "A" * 22 + "_" + "b" * 59, T.GITHUB_TOKEN,
         "github_pat_" + "A" * 22 + "_" + "b" * 59),
        ("key sk-proj-" + "Ab3d" * 10, T.API_KEY, "sk-proj-" + "Ab3d" * 10),
        ("bastion bsk_01hx2k_" + "Zz9y" * 8, T.API_KEY, "bsk_01hx2k_" + "Zz9y" * 8),
        ('api_key = "Zx8kP2qLm9Rt4Vw7Yb3Nc6Hd"', T.API_KEY, "Zx8kP2qLm9Rt4Vw7Yb3Nc6Hd"),
        ("Hi Anna, the report is late.", T.PERSON, "Anna"),
        ("Ms. O'Sullivan called.", T.PERSON, "O'Sullivan"),
        ("Contact: Maria Garcia, sales.", T.PERSON, "Maria Garcia"),
        ("Ship to 221B Baker Street, London NW1 6XE.", T.ADDRESS,
         "221B Baker Street, London NW1 6XE"),
        ("at 1600 Pennsylvania Avenue NW, Washington, DC 20500", T.ADDRESS,
         "1600 Pennsylvania Avenue NW, Washington, DC 20500"),
    ],
)  # fmt: skip
def test_each_type_is_found(text: str, kind: EntityType, value: str) -> None:
    assert (kind.value, value) in found(text)


def test_jwt_and_private_key() -> None:
    token = (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    )
    assert found(f"Bearer {token}") == [("JWT", token)]
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow" + "A" * 60 + "\n-----END RSA PRIVATE KEY-----"
    assert found(f"key:\n{pem}\nthanks") == [("PRIVATE_KEY", pem)]


@pytest.mark.parametrize(
    "text",
    [
        "order 4111111111111111 shipped",  # an order number, Luhn or not
        "card 4111 1111 1111 1112 was refused",  # Luhn-invalid
        "IBAN DE88 3704 0044 0532 0130 00 is wrong",  # bad checksum
        "upgraded to version 10.0.19041.1 today",
        "build 1.2.3.4 passed",
        "at 12:30:45 and 2024-03-15T10:22:31Z",
        "request 123e4567-e89b-12d3-a456-426614174000",
        "commit 3f786850e387550fdab836ed7e6dc881de23001b",
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "invoice 123456789 due",  # nine digits without an SSN word
        "ssn 000-12-3456 and 666-12-3456 and 912-12-3456",  # outside the valid ranges
        "mac 00:1A:2B:3C:4D:5E",
        "ISBN 978-3-16-148410-0",
        "The Quarterly Review is on Monday in San Francisco.",
        "We use Google Cloud Platform and Visual Studio Code.",
        "jwt eyJub3QiOiJqc29uIn0.eyJhIjoxfQ.c2lnbmF0dXJlMTIz (no alg)",
    ],
)
def test_hard_negatives_are_refused(text: str) -> None:
    assert found(text) == []


def test_offsets_are_code_points() -> None:
    text = "Grüße 👋 von Jürgen Müller: jürgen@example.com, +49 30 12345678"
    got = {f.type: text[f.start : f.end] for f in scan([text])[0]}
    assert got[T.PHONE] == "+49 30 12345678"
    assert got[T.PERSON] == "Jürgen Müller"
    assert got[T.EMAIL] == "jürgen@example.com"


def test_batch_equals_one_by_one_and_types_filter() -> None:
    texts = ["a jane@example.com b", "", "ssn 536-22-8726", "é" * 50 + " 203.0.113.7"]
    batch = scan(texts)
    assert batch == [scan([t])[0] for t in texts]
    only = scan(texts, [T.US_SSN])
    assert [[f.type for f in fs] for fs in only] == [[], [], [T.US_SSN], []]


def test_pure_re_engine_finds_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = ["mail jane@example.com, card 4111 1111 1111 1111, ip 203.0.113.7, Hi Anna."]
    compiled = engine_mod.Detector().scan(texts)
    monkeypatch.setattr(engine_mod, "HAVE_HYPERSCAN", False)
    assert engine_mod.Detector().scan(texts) == compiled


def test_redaction_modes() -> None:
    text = "mail jane@example.com or jane@example.com"
    assert redact([text], Mode.MASK)[0].text == "mail " + "*" * 16 + " or " + "*" * 16
    assert redact([text], Mode.REPLACE)[0].text == "mail <EMAIL> or <EMAIL>"
    keys = Redactor.from_master(b"k" * 32)
    other = Redactor.from_master(b"o" * 32)
    hashed = redact([text], Mode.HASH, redactor=keys)[0].text
    assert hashed.count(hashed.split()[1]) == 2  # equal values, equal hashes
    assert hashed != redact([text], Mode.HASH, redactor=other)[0].text
    tokens = redact([text], Mode.TOKENIZE, redactor=keys)[0].text
    assert tokens.startswith("mail <EMAIL_")
    assert "jane" not in tokens
    assert detokenize_text(tokens, keys).text == text
    refused = detokenize_text(tokens, other)  # another org's key turns nothing back
    assert (refused.text, refused.restored) == (tokens, 0)


def test_threads_scan_at_once_with_the_same_detector() -> None:
    """The server scans in worker threads, several at a time, with the process's one
    detector: each must get its own answer (Hyperscan's scratch space is per scan, and
    two scans sharing one failed with ScratchInUseError: a 500 under concurrent load)."""
    texts = [
        f"Mail user{i}@example.com, card 4111 1111 1111 1111 and more text" for i in range(400)
    ]
    expected = scan(texts)
    start = threading.Barrier(4)

    def work(_: int) -> list[list[object]]:
        start.wait()
        return [scan(texts) for _ in range(5)]  # type: ignore[misc]

    with ThreadPoolExecutor(4) as pool:
        for rounds in pool.map(work, range(4)):
            assert all(found == expected for found in rounds)
