"""The word lists behind PERSON and ADDRESS (see data/NOTICE.md for their sources)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources


def _words(name: str) -> frozenset[str]:
    text = resources.files("bastion.privacy").joinpath("data").joinpath(name).read_text("utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


@dataclass(frozen=True)
class Gazetteers:
    first_names: frozenset[str]
    surnames: frozenset[str]
    stopwords: frozenset[str]
    street_suffixes: frozenset[str]
    cities: frozenset[str]


@cache
def load() -> Gazetteers:
    stop = _words("stopwords.txt")
    return Gazetteers(
        first_names=_words("first_names.txt") | _words("first_names_intl.txt"),
        surnames=_words("surnames.txt") | _words("surnames_intl.txt"),
        stopwords=stop,
        street_suffixes=_words("street_suffixes.txt"),
        cities=_words("cities.txt"),
    )
