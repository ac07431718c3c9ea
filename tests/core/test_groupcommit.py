"""Group commit: units of work from concurrent callers share transactions, and a
faulty unit fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bastion.core.groupcommit import GroupCommit

metadata = MetaData()
rows = Table("rows", metadata, Column("id", Integer, primary_key=True), Column("v", String))


@pytest.fixture
def engine(tmp_path) -> Iterator[Engine]:  # type: ignore[no-untyped-def]
    engine = create_engine(f"sqlite:///{tmp_path / 'g.db'}")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def _insert(row_id: int):  # type: ignore[no-untyped-def]
    def work(db: Session) -> int:
        db.execute(rows.insert().values(id=row_id, v=str(row_id)))
        return row_id

    return work


def _stored(engine: Engine) -> list[int]:
    with engine.connect() as c:
        return sorted(c.execute(select(rows.c.id)).scalars())


def test_concurrent_units_commit_together_and_each_gets_its_result(engine: Engine) -> None:
    group = GroupCommit(sessionmaker(engine), linger=0.01)

    async def main() -> list[int]:
        return await asyncio.gather(*(group.run(_insert(i), order=str(i)) for i in range(50)))

    assert asyncio.run(main()) == list(range(50))
    group.close()
    assert _stored(engine) == list(range(50))
    assert group.units == 50
    assert group.batches < 50  # they were grouped


def _defer(row_id: int):  # type: ignore[no-untyped-def]
    """A unit that leaves its row for `before_commit`, as the gate's decided calls do."""

    def work(db: Session) -> int:
        db.info.setdefault("rows", []).append({"id": row_id, "v": str(row_id)})
        return row_id

    return work


def _write_deferred(db: Session) -> None:
    deferred = db.info.pop("rows", [])
    if deferred:
        db.execute(rows.insert(), deferred)


@pytest.mark.parametrize(
    ("unit", "before_commit"), [(_insert, None), (_defer, _write_deferred)], ids=["now", "deferred"]
)
def test_a_faulty_unit_fails_alone(engine: Engine, unit, before_commit) -> None:  # type: ignore[no-untyped-def]
    """A batch with a duplicate key among its units is run again one unit per transaction:
    each good unit's row is written exactly once, the faulty unit alone fails, and nothing
    of the failed batch is left behind — also when the rows are left for `before_commit`
    (then the batch fails only when they are inserted)."""
    group = GroupCommit(sessionmaker(engine), before_commit=before_commit, linger=0.05)

    async def main() -> list[object]:
        units = [group.run(unit(i)) for i in (1, 2, 3)]
        units.append(group.run(unit(2)))  # a duplicate key: this one fails
        units += [group.run(unit(i)) for i in (4, 5)]
        return await asyncio.gather(*units, return_exceptions=True)

    results = asyncio.run(main())
    group.close()
    assert [r for r in results if not isinstance(r, Exception)] == [1, 2, 3, 4, 5]
    assert [type(r) for r in results if isinstance(r, Exception)] == [IntegrityError]
    assert _stored(engine) == [1, 2, 3, 4, 5]


def test_a_closed_group_finishes_its_work_and_starts_again_when_asked(engine: Engine) -> None:
    """An app's shutdown closes it; the same app started again (as tests do) uses it."""
    group = GroupCommit(sessionmaker(engine), linger=0.01)

    async def main(row_id: int) -> int:
        return await group.run(_insert(row_id))

    assert asyncio.run(main(1)) == 1
    group.close()
    assert asyncio.run(main(2)) == 2
    group.close()
    assert _stored(engine) == [1, 2]


class _Halt(BaseException):
    """Not an Exception: what would end a thread (as SystemExit does)."""


def test_a_writer_thread_that_ends_tells_its_callers_and_another_takes_over(
    engine: Engine,
) -> None:
    group = GroupCommit(sessionmaker(engine), linger=0.01)

    def halt(db: Session) -> int:
        raise _Halt

    async def main(work) -> int:  # type: ignore[no-untyped-def]
        return await asyncio.wait_for(group.run(work), timeout=5)  # never a hang

    with pytest.raises(RuntimeError, match="writer stopped"):
        asyncio.run(main(halt))
    assert asyncio.run(main(_insert(7))) == 7
    with pytest.raises(RuntimeError, match="writer stopped"):
        asyncio.run(main(halt))
    group.close()  # after its thread ended: leaves no stop behind for the next thread
    assert asyncio.run(main(_insert(8))) == 8
    group.close()
    assert _stored(engine) == [7, 8]
