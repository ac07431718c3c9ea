"""The tenancy tests' fixtures: a two-region install (`residency_setup`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tenancy.residency_setup import Install, make_install


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    yield from make_install(tmp_path, monkeypatch)
