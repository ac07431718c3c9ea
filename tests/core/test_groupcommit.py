"""Group commit: units of work from concurrent callers share transactions, and a
faulty unit fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Session

from bastion.core import groupcommit
from bastion.core.db import make_engine, make_sessionmaker
from bastion.core.groupcommit import GroupCommit

metadata = MetaData()
rows = Table("rows", metadata, Column("id", Integer, primary_key=True), Column("v", String))


@pytest.fixture
def engine(tmp_path) -> Iterator[Engine]:  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{tmp_path / 'g.db'}")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def _insert(row_id: int):  # type: ignore[no-untyped-def]
    def work(db: Session) -> int:
        db.execute(rows.insert().values(id=row_id, v=str(row_id)))
        return row_id

    return work


class _Base(DeclarativeBase):
    pass


class _Row(_Base):
    __table__ = rows


def _stored(engine: Engine) -> list[int]:
    with engine.connect() as c:
        return sorted(c.execute(select(rows.c.id)).scalars())


def test_concurrent_units_commit_together_and_each_gets_its_result(engine: Engine) -> None:
    group = GroupCommit(make_sessionmaker(engine, write=True), linger=0.01)

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
    """A batch with a duplicate key among its units: each good unit's row is written
    exactly once, the faulty unit alone fails (its savepoint is rolled back), and nothing
    of it is left behind — also when the rows are left for `before_commit` (then the
    batch fails only when they are inserted, and its units are run again one per
    transaction)."""
    group = GroupCommit(
        make_sessionmaker(engine, write=True), before_commit=before_commit, linger=0.05
    )

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
    group = GroupCommit(make_sessionmaker(engine, write=True), linger=0.01)

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
    group = GroupCommit(make_sessionmaker(engine, write=True), linger=0.01)

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


def test_a_failing_unit_is_rolled_back_to_its_savepoint_and_the_others_commit(
    engine: Engine,
) -> None:
    """A batch runs its units together first; when one fails, the batch runs again with a
    savepoint per unit, and the batches after it start that way: a failing unit then
    costs the others nothing."""
    group = GroupCommit(make_sessionmaker(engine, write=True), linger=0.05)
    runs: list[int] = []

    def unit(row_id: int, fail: bool = False):  # type: ignore[no-untyped-def]
        def work(db: Session) -> int:
            runs.append(row_id)
            db.execute(rows.insert().values(id=row_id, v="x"))
            groupcommit.stage(db, "test.rows", {"id": row_id + 100, "v": "staged"})
            if fail:
                raise ValueError("this unit fails after writing and staging")
            return row_id

        return work

    async def main(first: int) -> list[object]:
        units = [
            group.run(unit(first)),
            group.run(unit(first + 1, fail=True)),
            group.run(unit(first + 2)),
        ]
        return await asyncio.gather(*units, return_exceptions=True)

    groupcommit.on_flush("test.rows", lambda db, staged: db.execute(rows.insert(), staged))
    # The first batch stops at the failing unit and runs again contained; the second
    # starts contained.
    for first, tried in ((1, [1, 2]), (4, [])):
        runs.clear()
        results = asyncio.run(main(first))
        assert results[0] == first
        assert results[2] == first + 2
        assert isinstance(results[1], ValueError)
        assert sorted(runs) == sorted([*tried, first, first + 1, first + 2])
    group.close()
    assert group.batches == 2
    # The failed units' rows and staged rows: gone.
    assert _stored(engine) == [1, 3, 4, 6, 101, 103, 104, 106]


def test_an_object_a_unit_added_is_inserted_again_when_its_batch_reruns(
    engine: Engine,
) -> None:
    """A unit adds an object made before the batch (as services do: built on the reader,
    added in the writer) and flushes it; another unit of the batch fails, so the batch
    runs again contained. The object is inserted in the rerun: not left detached with its
    key from the rolled-back flush, which would add it without an INSERT."""
    group = GroupCommit(make_sessionmaker(engine, write=True), linger=0.05)
    made = _Row(id=1, v="made before the batch")

    def add(db: Session) -> int:
        db.add(made)
        db.flush()
        return 1

    def fail(db: Session) -> int:
        raise ValueError("a later unit of the batch fails")

    async def main() -> list[object]:
        return await asyncio.gather(group.run(add), group.run(fail), return_exceptions=True)

    first, second = asyncio.run(main())
    group.close()
    assert first == 1
    assert isinstance(second, ValueError)
    assert _stored(engine) == [1]


def test_units_of_a_batch_commit_together_without_savepoints(engine: Engine) -> None:
    """Without failures a batch runs no savepoint: one transaction, no SAVEPOINT."""
    group = GroupCommit(make_sessionmaker(engine, write=True), linger=0.05)
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement.split()[0].upper())

    def unit(row_id: int):  # type: ignore[no-untyped-def]
        def work(db: Session) -> int:
            db.execute(rows.insert().values(id=row_id, v="x"))
            return row_id

        return work

    async def main() -> list[object]:
        return await asyncio.gather(*(group.run(unit(i)) for i in (1, 2, 3)))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        assert asyncio.run(main()) == [1, 2, 3]
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    group.close()
    assert group.batches == 1
    assert "SAVEPOINT" not in statements, statements
    assert _stored(engine) == [1, 2, 3]


def test_a_blocking_caller_on_a_thread_gets_its_result_and_its_error(engine: Engine) -> None:
    group = GroupCommit(make_sessionmaker(engine, write=True), linger=0.01)
    assert group.run_blocking(_insert(5)) == 5
    with pytest.raises(IntegrityError):
        group.run_blocking(_insert(5))
    group.close()
    assert _stored(engine) == [5]


def test_a_deferring_session_holds_its_writes_and_refuses_to_flush(engine: Engine) -> None:
    """A request's reader hands its writes to the unit; an ordinary session writes them
    at once; a write through the reader itself is a programming error, refused."""
    written: list[str] = []
    with make_sessionmaker(engine)() as reader:
        groupcommit.deferring(reader)
        groupcommit.defer(reader, lambda db: written.append("held"))
        assert written == []
        held = groupcommit.deferred(reader)
        assert len(held) == 1
        assert groupcommit.deferred(reader) == []
        held[0](reader)
        assert written == ["held"]
    with make_sessionmaker(engine)() as plain:
        groupcommit.defer(plain, lambda db: written.append("now"))
        assert written == ["held", "now"]

    with make_sessionmaker(engine)() as reader:
        groupcommit.deferring(reader)
        reader.add(_Row(id=9, v="no"))
        with pytest.raises(RuntimeError, match="does not write"):
            reader.flush()
    assert _stored(engine) == []


def test_a_batch_that_cannot_begin_fails_its_units_at_once(engine: Engine) -> None:
    """The writer slot is taken once per batch: when it cannot be had, every unit of the
    batch hears so, and none is tried again slot by slot."""
    calls: list[int] = []

    def refuse() -> Session:
        calls.append(1)
        raise OSError("no connection")

    group = GroupCommit(refuse, linger=0.05)  # type: ignore[arg-type]

    async def main() -> list[object]:
        return await asyncio.gather(
            *(group.run(_insert(i)) for i in range(3)), return_exceptions=True
        )

    results = asyncio.run(main())
    group.close()
    assert all(isinstance(r, OSError) for r in results)
    assert len(calls) == 1  # one batch, one try


def test_past_its_queue_bound_a_unit_is_refused_at_once(engine: Engine) -> None:
    """Overload answers 503 at once instead of queueing without bound."""
    from bastion.core.db import WriterBusy, database_busy

    group = GroupCommit(make_sessionmaker(engine, write=True), max_queued=0)
    with pytest.raises(WriterBusy) as refused:
        group.run_blocking(_insert(1))
    assert database_busy(refused.value)
    group.close()
    assert _stored(engine) == []


def test_a_unit_sees_what_the_units_before_it_staged_but_not_a_failed_ones(
    engine: Engine,
) -> None:
    """`staged`: the rows of a kind the batch holds when a unit runs, its own included;
    in a batch run unit by unit, a failed unit's rows are gone from what the next sees
    (the gate counts a run's spent budget this way)."""
    group = GroupCommit(make_sessionmaker(engine, write=True), linger=0.05)
    seen: dict[str, list[str]] = {}

    def unit(name: str, fail: bool = False):  # type: ignore[no-untyped-def]
        def work(db: Session) -> str:
            assert groupcommit.in_batch(db)
            groupcommit.stage(db, "test.seen", name)
            seen[name] = list(groupcommit.staged(db, "test.seen"))
            if fail:
                raise ValueError("fails after staging")
            return name

        return work

    async def main() -> list[object]:
        units = [group.run(unit("a"), order="1"), group.run(unit("b", fail=True), order="2")]
        units.append(group.run(unit("c"), order="3"))
        return await asyncio.gather(*units, return_exceptions=True)

    groupcommit.on_flush("test.seen", lambda db, staged: None)
    results = asyncio.run(main())
    group.close()
    assert results[0] == "a"
    assert results[2] == "c"
    assert isinstance(results[1], ValueError)
    assert group.batches == 1
    # The batch's last run (contained): "b" failed, so "c" sees only "a" before it.
    assert seen == {"a": ["a"], "b": ["a", "b"], "c": ["a", "c"]}
    with make_sessionmaker(engine)() as db:
        assert not groupcommit.in_batch(db)
        assert groupcommit.staged(db, "test.seen") == []
