"""Helpers for the compliance tests: run one check over an organisation's live state,
and change that state where the API has no way to (time gone by, a tampered row)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy.orm import Session

from bastion.compliance.checks import CheckResult, run
from bastion.compliance.facts import Facts
from bastion.core.db import begin_write
from tests.factories import Factory

Check = Callable[..., CheckResult]


@contextmanager
def writing(factory: Factory) -> Iterator[Session]:
    db = factory.state.sessions()
    begin_write(db)
    try:
        yield db
        db.commit()
    finally:
        db.close()


@pytest.fixture
def check(factory: Factory) -> Check:
    """`check(org_id, name, **params)`: the named check's result now."""

    def _run(org_id: str, name: str, **params: Any) -> CheckResult:
        with factory.state.sessions() as db:
            facts = Facts(db, org_id, factory.state.signer.public_keys)
            return run(name, facts, params)

    return _run
