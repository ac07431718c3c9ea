"""The SCIM filter parser and evaluator: RFC 7644 §3.4.2.2 examples, what Okta and
Entra send, and hostile input (deep nesting, huge input, odd tokens) refused cleanly."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.scim.filter import (
    MAX_DEPTH,
    MAX_LENGTH,
    InvalidFilter,
    InvalidPath,
    matches,
    parse_filter,
    parse_path,
)

CORE = "urn:ietf:params:scim:schemas:core:2.0:User"
ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
ANN = {
    "userName": "Ann@Example.com",
    "externalId": "00uABC",
    "active": True,
    "displayName": "Ann Lee",
    "name": {"givenName": "Ann", "familyName": "Lee"},
    "emails": [
        {"value": "ann@example.com", "type": "work", "primary": True},
        {"value": "ann@home.test", "type": "home"},
    ],
    "meta": {"lastModified": "2026-12-01T10:00:00Z"},
    ENT: {"department": "R&D"},
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('userName eq "ann@example.com"', True),  # case-insensitive
        ('userName Eq "ann@example.com"', True),
        ('externalId eq "00uabc"', False),  # caseExact
        ('externalId eq "00uABC"', True),
        ('name.familyName co "ee"', True),
        ('userName sw "ann@"', True),
        ('userName ew ".com"', True),
        ("title pr", False),
        ("name pr", True),
        ("active eq true", True),
        ("active eq false", False),
        ('emails eq "ann@home.test"', True),
        ('emails.value eq "ann@home.test"', True),
        ('emails[type eq "work" and value co "example"]', True),
        ('emails[type eq "work"].value eq "ann@example.com"', True),  # Entra
        ('emails[type eq "home"].value eq "ann@example.com"', False),
        ('userName eq "x" or (displayName eq "Ann Lee" and active eq true)', True),
        ('not (userName eq "x")', True),
        ('meta.lastModified gt "2026-01-01T00:00:00Z"', True),
        (f'{CORE}:userName eq "ann@example.com"', True),
        (f'{ENT}:department eq "r&d"', True),
        ('userName ne "ann@example.com"', False),
        ('displayName eq "Ann \\"The\\" Lee"', False),
        ("emails[type eq 'work'].value eq 'ann@example.com'", True),  # single quotes
    ],
)
def test_matches(text: str, expected: bool) -> None:
    assert matches(parse_filter(text, CORE), ANN) is expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "userName",
        "userName eq",
        'userName xx "a"',
        'userName eq "unterminated',
        '(userName eq "a"',
        'userName eq "a")',
        'emails[type eq "work"',
        'emails[value[type eq "x"]]',  # nested value filters
        'and eq "a"',
        'userName eq "a" and',
        "userName eq bare",
        'userName eq "a" "b"',
        "a.b.c.d eq 1",
        "\x00",
        "urn:x: eq 1",
    ],
)
def test_refused(text: str) -> None:
    with pytest.raises(InvalidFilter):
        parse_filter(text, CORE)


def test_hostile_inputs_are_refused_within_the_budget() -> None:
    deep = "(" * (MAX_DEPTH + 2) + 'userName eq "a"' + ")" * (MAX_DEPTH + 2)
    with pytest.raises(InvalidFilter, match="nests"):
        parse_filter(deep)
    nots = "not (" * 500 + 'a eq "b"' + ")" * 500
    with pytest.raises(InvalidFilter):
        parse_filter(nots)
    with pytest.raises(InvalidFilter, match="longer"):
        parse_filter('userName eq "' + "a" * MAX_LENGTH + '"')
    wide = " or ".join(['a eq "b"'] * 100)
    with pytest.raises(InvalidFilter, match="expressions"):
        parse_filter(wide)
    ok = "(" * MAX_DEPTH + 'userName eq "a"' + ")" * MAX_DEPTH
    assert parse_filter(ok) is not None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_parses_or_is_refused_cleanly(text: str) -> None:
    try:
        node = parse_filter(text, CORE)
    except InvalidFilter:
        return
    matches(node, ANN)  # never raises


def test_paths() -> None:
    p = parse_path('emails[type eq "work"].value', CORE)
    assert p.path.names == ("emails",)
    assert p.sub == "value"
    assert p.filter is not None
    p = parse_path(f"{ENT}:manager.value", CORE)
    assert p.path.urn == ENT
    assert p.path.names == ("manager", "value")
    p = parse_path(f"{CORE}:name.givenName", CORE)
    assert p.path.urn == ""
    assert p.path.names == ("name", "givenName")
    for bad in ('emails[type eq "work"] x', "[x]", 'emails[type eq "a"].'):
        with pytest.raises(InvalidPath):
            parse_path(bad, CORE)
