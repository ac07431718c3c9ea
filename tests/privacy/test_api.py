"""The privacy API: scan and redact in batches, tokens that only their organisation's
admins turn back (audited without values), limits answered 422 naming the field, and
texts never in logs or audit events."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from tests.factories import Factory, Org

EMAIL = "sentinel.person@example.com"
TEXT = f"Hi Anna, write to {EMAIL} or call +44 20 7946 0958."


def _post(client: TestClient, org: Org, op: str, body: object, headers: object = None) -> object:
    return client.post(f"/v1/orgs/{org.id}/privacy/{op}", json=body, headers=headers or org.headers)


def test_scan_in_batches_with_code_point_offsets(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    texts = [TEXT, "nothing here", "Grüße, Jürgen: 536-22-8726"]
    r = _post(client, org, "scan", {"texts": texts})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 3
    assert results[1] == {"findings": []}
    first = {(f["type"], texts[0][f["start"] : f["end"]]) for f in results[0]["findings"]}
    assert first == {("PERSON", "Anna"), ("EMAIL", EMAIL), ("PHONE", "+44 20 7946 0958")}
    assert all(0 < f["score"] <= 1 for f in results[0]["findings"])
    ssn = next(f for f in results[2]["findings"] if f["type"] == "US_SSN")
    assert texts[2][ssn["start"] : ssn["end"]] == "536-22-8726"
    only = _post(client, org, "scan", {"texts": texts, "types": ["EMAIL"]}).json()
    assert [f["type"] for f in only["results"][0]["findings"]] == ["EMAIL"]


def test_types_catalogue(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    r = client.get("/v1/privacy/types", headers=org.headers)
    assert r.status_code == 200
    names = [t["name"] for t in r.json()["data"]]
    for kind in ("EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "IP_ADDRESS",
                 "AWS_ACCESS_KEY", "GITHUB_TOKEN", "JWT", "PRIVATE_KEY", "API_KEY", "PERSON",
                 "ADDRESS"):  # fmt: skip
        assert kind in names
    assert client.get("/v1/privacy/types").status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"texts": []}, "texts"),
        ({"texts": ["a"] * 1001}, "texts"),
        ({"texts": ["a" * 100_001]}, "texts"),
        ({"texts": ["a" * 100_000] * 6}, "texts"),
        ({"texts": ["a"], "types": ["NOPE"]}, "types"),
        ({"texts": [1]}, "texts"),
        ({"texts": ["a"], "extra": 1}, '"*"'),  # unknown keys are not echoed
    ],
)
def test_limits_are_422_naming_the_field(
    client: TestClient, factory: Factory, body: dict[str, object], field: str
) -> None:
    org = factory.org()
    r = _post(client, org, "scan", body)
    assert r.status_code == 422, r.text
    assert field in r.text
    assert "aaaa" not in r.text  # problem documents never echo input


def test_redact_modes(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    texts = [TEXT, f"again {EMAIL}"]
    out = {}
    for mode in ("mask", "replace", "hash", "tokenize"):
        r = _post(client, org, "redact", {"texts": texts, "mode": mode})
        assert r.status_code == 200, r.text
        out[mode] = [x["text"] for x in r.json()["results"]]
        assert all(EMAIL not in t for t in out[mode])
    assert out["replace"][0] == "Hi <PERSON>, write to <EMAIL> or call <PHONE>."
    assert out["mask"][0].startswith("Hi ****, write to ***")
    # Stable within the org: the same address gives the same hash and token in both texts.
    hashed = out["hash"][1].split()[1]
    assert hashed in out["hash"][0]
    token = out["tokenize"][1].split()[1]
    assert token.startswith("<EMAIL_")
    assert token in out["tokenize"][0]
    # Another organisation hashes and tokenizes differently.
    other = factory.org()
    theirs = _post(client, other, "redact", {"texts": texts, "mode": "tokenize"}).json()
    assert token not in theirs["results"][1]["text"]
    assert _post(client, org, "redact", {"texts": texts, "mode": "zip"}).status_code == 422


def test_detokenize_needs_its_permission_and_is_audited_without_values(
    client: TestClient, factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    org = factory.org()
    manager = factory.member(org, "manager")
    tokenized = _post(client, org, "redact", {"texts": [TEXT], "mode": "tokenize"}, manager.headers)
    assert tokenized.status_code == 200  # managers scan and redact (privacy:scan) …
    text = tokenized.json()["results"][0]["text"]
    refused = _post(client, org, "detokenize", {"texts": [text]}, manager.headers)
    assert refused.status_code == 403  # … but only admins detokenize
    r = _post(client, org, "detokenize", {"texts": [text, "no tokens"]})
    assert r.status_code == 200, r.text
    assert r.json() == {"results": [{"text": TEXT}, {"text": "no tokens"}], "restored": 3}
    # Another organisation's admin turns nothing back.
    other = factory.org()
    theirs = _post(client, other, "detokenize", {"texts": [text]}).json()
    assert theirs == {"results": [{"text": text}], "restored": 0}
    events = client.get(f"/v1/orgs/{org.id}/audit-events", headers=org.headers).json()["data"]
    kinds = [e["type"] for e in events]
    assert "privacy.detokenized" in kinds
    assert "privacy.key_created" in kinds
    detok = next(e for e in events if e["type"] == "privacy.detokenized")
    assert detok["metadata"]["restored"] == 3
    assert detok["metadata"]["types"] == {"EMAIL": 1, "PERSON": 1, "PHONE": 1}
    everything = client.get(f"/v1/orgs/{org.id}/audit-events", headers=org.headers).text
    assert EMAIL not in everything
    assert "<EMAIL_" not in everything
    assert EMAIL not in caplog.text
    assert "Anna" not in caplog.text


def test_permissions_and_tenancy(client: TestClient, factory: Factory) -> None:
    org = factory.org()
    viewer = factory.member(org, "viewer")
    member = factory.member(org, "member")
    assert _post(client, org, "scan", {"texts": [TEXT]}, viewer.headers).status_code == 403
    assert _post(client, org, "scan", {"texts": [TEXT]}, member.headers).status_code == 200
    other = factory.org()
    r = client.post(
        f"/v1/orgs/{other.id}/privacy/scan", json={"texts": [TEXT]}, headers=org.headers
    )
    assert r.status_code == 404


@pytest.mark.parametrize("mode", ["hash", "tokenize"])
def test_keyed_modes_with_nothing_to_redact_answer_the_texts_unchanged(
    client: TestClient, factory: Factory, mode: str
) -> None:
    """Found by the API fuzzer: with no finding, no key is fetched, and redaction must
    not ask for one (it answered 500)."""
    org = factory.org()
    r = _post(client, org, "redact", {"texts": ["", "nothing here"], "mode": mode})
    assert r.status_code == 200, r.text
    assert [x["text"] for x in r.json()["results"]] == ["", "nothing here"]
