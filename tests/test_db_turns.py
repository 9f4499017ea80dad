"""SQLite's writers queue in the process (``models.store.db.Turns``): in order of arrival,
the sender's urgent bookkeeping first, and a cancelled waiter never blocks the line."""
import asyncio

import pytest

from models.store.db import Turns


async def test_one_at_a_time_in_order_with_urgent_ones_first():
    turns, order = Turns(), []
    first_in = asyncio.Event()
    release_first = asyncio.Event()

    async def holder():
        async with turns.turn(False):
            first_in.set()
            await release_first.wait()
            order.append("first")

    async def waiter(name, urgent):
        async with turns.turn(urgent):
            order.append(name)
    task = asyncio.create_task(holder())
    await first_in.wait()
    waiters = [asyncio.create_task(waiter(n, u)) for n, u in
               (("a", False), ("b", False), ("sender", True), ("c", False))]
    await asyncio.sleep(0)
    assert turns.waiting() == 4  # what the sender reads to join a long line at its end
    release_first.set()
    await asyncio.gather(task, *waiters)
    assert order == ["first", "sender", "a", "b", "c"]


async def test_a_cancelled_waiter_does_not_hold_up_the_others():
    turns = Turns()
    inside = asyncio.Event()
    leave = asyncio.Event()

    async def holder():
        async with turns.turn(False):
            inside.set()
            await leave.wait()

    async def waiter():
        async with turns.turn(False):
            return "got it"
    held = asyncio.create_task(holder())
    await inside.wait()
    cancelled = asyncio.create_task(waiter())
    behind = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    cancelled.cancel()
    leave.set()
    assert await asyncio.wait_for(behind, 2) == "got it"
    await held
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    async with turns.turn(True):  # and the line is free again
        pass


async def test_a_transaction_started_inside_another_by_the_same_task_fails_at_once(tmp_path):
    """It would wait for its own turn for ever; a task started inside still just waits."""
    from sqlalchemy import text

    from models.store.db import Database
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'nested.db'}")
    try:
        await db.run(lambda s: s.execute(text("CREATE TABLE t (x INTEGER)")))

        async def nested(session):
            await session.execute(text("INSERT INTO t VALUES (1)"))
            await db.run(lambda s: s.execute(text("INSERT INTO t VALUES (2)")))
        for inline in (False, True):
            with pytest.raises(RuntimeError, match="inside another"):
                await asyncio.wait_for(db.run(nested, inline=inline), 5)
        # nothing of the outer transaction stayed, and the line is free again
        assert await db.run(lambda s: s.scalar(text("SELECT count(*) FROM t"))) == 0

        async def spawns(session):
            await session.execute(text("INSERT INTO t VALUES (3)"))
            return asyncio.ensure_future(
                db.run(lambda s: s.execute(text("INSERT INTO t VALUES (4)"))))
        later = await db.run(spawns)
        await asyncio.wait_for(later, 5)
        assert await db.run(lambda s: s.scalar(text("SELECT count(*) FROM t"))) == 2
    finally:
        await db.dispose()
