from __future__ import annotations

import re
from pathlib import Path

from bastion.core.events import EventType

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit-events.md"


def test_every_event_type_is_documented_and_nothing_else() -> None:
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", DOC.read_text(), flags=re.MULTILINE))
    assert documented == {e.value for e in EventType}


def test_catalogue_is_sorted() -> None:
    values = [e.value for e in EventType]
    assert values == sorted(values)
