"""SQLite called on the event loop's thread for short transactions (models/store/db.py):
where the calls run, and that another process's write lock is waited for without
stopping the loop. On an SQLite file of their own, whichever database the suite runs
on: PostgreSQL's driver has no worker thread to skip."""
from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import datetime, timezone

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import IntegrityError

from models.store.db import Database
from models.store.tables import Base, Person


@pytest.fixture
def database_path(tmp_path):
    return tmp_path / "inline.db"


@pytest.fixture
async def db(database_path):
    database = Database(f"sqlite+aiosqlite:///{database_path}")
    for engine in (database.engine.sync_engine, database.inline_engine):
        event.listen(engine, "connect", _thread_function)
    yield database
    await database.dispose()


def _thread_function(dbapi_conn, _record):
    dbapi_conn.create_function("thread_id", 0, threading.get_ident)


async def thread_of(session) -> int:
    return await session.scalar(text("SELECT thread_id()"))


async def test_inline_transactions_call_sqlite_on_the_loops_thread(db):
    loop_thread = threading.get_ident()
    assert await db.run(thread_of, inline=True) == loop_thread
    assert await db.run(thread_of) != loop_thread  # long ones keep aiosqlite's worker


async def test_inline_connections_never_sleep_in_sqlites_busy_handler(db):
    """It would stop the loop: ``run`` waits for the lock instead (the test below). They
    also leave the WAL checkpoints (a copy and an fsync) to the worker thread's commits."""
    pragma = lambda name: lambda s: s.scalar(text(f"PRAGMA {name}"))  # noqa: E731
    assert await db.run(pragma("busy_timeout"), inline=True) == 0
    assert await db.run(pragma("busy_timeout")) == 5000
    assert await db.run(pragma("wal_autocheckpoint")) == 1000
    assert await db.run(pragma("wal_autocheckpoint"), inline=True) > 1000


async def test_a_task_started_inside_an_inline_transaction_is_not_inline(db):
    """Inline is a property of the transaction (its connection), not of the task."""
    later: list[asyncio.Task] = []

    async def action(session):
        later.append(asyncio.create_task(db.run(thread_of)))
        return await thread_of(session)
    assert await db.run(action, inline=True) == threading.get_ident()
    assert await later[0] != threading.get_ident()


async def test_another_process_holding_the_lock_is_waited_for_without_stopping_the_loop(
        db, database_path):
    await db.run(lambda s: s.execute(text("SELECT 1")))  # the file exists, in WAL mode
    blocker = sqlite3.connect(database_path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1
    clock = asyncio.create_task(ticker())
    try:
        write = asyncio.create_task(db.run(lambda s: s.execute(text(
            "CREATE TABLE held (id INTEGER)")), inline=True))
        await asyncio.sleep(0.5)
        assert not write.done()  # still waiting for the lock …
        assert ticks >= 10  # … and the loop went on meanwhile (SQLite's busy wait would block it)
        blocker.execute("COMMIT")
        await asyncio.wait_for(write, 10)
    finally:
        clock.cancel()
        blocker.close()
    assert await db.run(lambda s: s.scalar(text("SELECT count(*) FROM held")), inline=True) == 0


# ---- the session an inline transaction hands the core (models/store/loop_session.py) -----------

@pytest.fixture
async def schema(db):
    async with db.engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    return db


async def test_the_core_s_session_calls_work_inline_and_commit_together(schema):
    db = schema
    now = datetime(2026, 11, 23, tzinfo=timezone.utc)

    async def write(session):
        person = Person(code="p1", name="Li", created_at=now)
        session.add(person)
        await session.flush()  # the id, as the core needs it mid-transaction
        assert await session.get(Person, person.id) is person
        connection = await session.connection()
        assert (await connection.execute(select(func.count(Person.id)))).scalar_one() == 1
        person.name = "Li Wei"
        await session.flush()
        await session.refresh(person)
        assert person.name == "Li Wei"
        return person.id, session.bind.dialect.name
    person_id, dialect = await db.run(write, inline=True)
    assert dialect == "sqlite"
    # committed, and seen by the worker thread's connections too
    assert await db.run(lambda s: s.scalar(select(Person.name).where(Person.id == person_id))) == "Li Wei"


async def test_a_failed_savepoint_keeps_the_rest_of_an_inline_transaction(schema):
    """As models/tickets/external.py uses it: a unique row that another report won is read back."""
    db = schema
    now = datetime(2026, 11, 23, tzinfo=timezone.utc)
    await db.run(lambda s: _add(s, Person(code="taken", created_at=now)), inline=True)

    async def action(session):
        session.add(Person(code="kept", created_at=now))
        with pytest.raises(IntegrityError):
            async with session.begin_nested():
                session.add(Person(code="taken", created_at=now))
        return list(await session.scalars(select(Person.code).order_by(Person.code)))
    assert await db.run(action, inline=True) == ["kept", "taken"]
    assert list(await db.run(lambda s: s.scalars(select(Person.code).order_by(Person.code)))) == [
        "kept", "taken"]


async def test_an_inline_action_that_raises_leaves_nothing(schema):
    db = schema
    now = datetime(2026, 11, 23, tzinfo=timezone.utc)

    async def action(session):
        session.add(Person(code="half", created_at=now))
        await session.flush()
        raise ValueError("the update failed half-way")
    with pytest.raises(ValueError):
        await db.run(action, inline=True)
    assert await db.run(lambda s: s.scalar(select(func.count(Person.id))), inline=True) == 0


async def test_a_session_call_the_core_does_not_use_is_missing_not_half_working(schema):
    async def action(session):
        with pytest.raises(AttributeError):
            session.stream  # noqa: B018 (AsyncSession has it; LoopSession does not)
        return True
    assert await schema.run(action, inline=True)


async def _add(session, row) -> None:
    session.add(row)
