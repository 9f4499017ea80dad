"""``enqueue`` keeps a transaction's outbox rows in the session and writes them in one
statement: at commit, or before the transaction's next statement through the session.
They must arrive in the order they were queued, be visible to what the transaction
does next, and vanish with a transaction that fails — on both databases, through the
worker-thread session and the inline one."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import select, update

from models.store.db import QUEUED, Database
from models.messages.outbox import OutMessage, Target, enqueue
from models.store.tables import Outbox

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=timezone.utc)


def texts(rows) -> list[str]:
    return [row.payload["text"] for row in rows]


@pytest.fixture
async def db(database_url):
    database = Database(database_url)
    yield database
    await database.dispose()


@pytest.mark.parametrize("inline", [False, True])
async def test_queued_rows_keep_their_order_and_are_seen_by_later_statements(db, inline):
    async def queue(session):
        enqueue(session, Target("telegram", "501"), OutMessage(text="first"), NOW)
        enqueue(session, Target("telegram", "502"), OutMessage(text="other chat"), NOW)
        # a statement through the session writes what was queued before it …
        seen = list(await session.scalars(select(Outbox).order_by(Outbox.id)))
        await session.execute(update(Outbox).where(Outbox.chat_id == "502")
                              .values(chat_id="503"))
        # … and what is queued after it goes in at commit, behind it
        enqueue(session, Target("telegram", "501"), OutMessage(text="second"), NOW)
        enqueue(session, Target("telegram", "501"),
                OutMessage(text="", location=(39.9, 116.4)), NOW)
        return texts(seen), session.info[QUEUED]
    seen, flagged = await db.run(queue, inline=inline)
    assert seen == ["first", "other chat"]
    assert flagged is True
    rows = list(await db.run(lambda s: s.scalars(select(Outbox).order_by(Outbox.id))))
    assert [(r.chat_id, r.payload.get("text"), r.state, r.attempts) for r in rows] == [
        ("501", "first", "pending", 0), ("503", "other chat", "pending", 0),
        ("501", "second", "pending", 0), ("501", "", "pending", 0)]
    assert rows[3].payload["location"] == [39.9, 116.4]
    assert all(r.next_try_at == NOW and r.created_at == NOW for r in rows)


@pytest.mark.parametrize("inline", [False, True])
async def test_a_failed_transaction_leaves_no_queued_row(db, inline):
    async def fail(session):
        enqueue(session, Target("telegram", "601"), OutMessage(text="never"), NOW)
        raise RuntimeError("the change failed")
    with pytest.raises(RuntimeError):
        await db.run(fail, inline=inline)

    async def ok(session):
        enqueue(session, Target("telegram", "601"), OutMessage(text="kept"), NOW)
    await db.run(ok, inline=inline)
    rows = await db.run(lambda s: s.scalars(select(Outbox)))
    assert texts(rows) == ["kept"]


class Undone(Exception):
    pass


@pytest.mark.parametrize("inline", [False, True])
async def test_a_savepoint_that_fails_takes_only_what_was_queued_inside_it(db, inline):
    """Rows queued before a savepoint are not written inside it (its failure would take
    them along); rows queued inside one that rolls back go, as objects added there do;
    rows queued inside one that holds stay, in order."""
    async def work(session):
        enqueue(session, Target("telegram", "701"), OutMessage(text="before"), NOW)
        with pytest.raises(Undone):
            async with session.begin_nested():
                enqueue(session, Target("telegram", "701"), OutMessage(text="undone"), NOW)
                await session.scalar(select(Outbox.id).limit(1))  # a statement inside it
                raise Undone
        async with session.begin_nested():
            enqueue(session, Target("telegram", "701"), OutMessage(text="held"), NOW)
        enqueue(session, Target("telegram", "701"), OutMessage(text="after"), NOW)
    await db.run(work, inline=inline)
    rows = await db.run(lambda s: s.scalars(select(Outbox).order_by(Outbox.id)))
    assert texts(rows) == ["before", "held", "after"]


async def test_a_rolled_back_session_used_again_writes_only_what_came_after(db):
    """A whole transaction rolled back takes every row it queued, savepoint marks
    included; the same session's next transaction starts with an empty queue."""
    async with db.sessions() as session:
        enqueue(session, Target("telegram", "801"), OutMessage(text="dropped"), NOW)
        async with session.begin_nested():
            enqueue(session, Target("telegram", "801"), OutMessage(text="dropped too"), NOW)
        await session.rollback()
        enqueue(session, Target("telegram", "801"), OutMessage(text="kept"), NOW)
        await session.commit()
    rows = await db.run(lambda s: s.scalars(select(Outbox).order_by(Outbox.id)))
    assert texts(rows) == ["kept"]


@pytest.mark.parametrize("inline", [False, True])
async def test_the_sender_is_woken_only_by_a_commit_that_wrote_rows(db, inline):
    """Messages queued only inside a savepoint that rolled back leave nothing to send:
    no wake-up for the sender. A commit that wrote rows wakes it once."""
    wakes: list[int] = []
    db.on_commit(lambda: wakes.append(1))

    async def undone(session):
        with pytest.raises(Undone):
            async with session.begin_nested():
                enqueue(session, Target("telegram", "901"), OutMessage(text="undone"), NOW)
                raise Undone
    await db.run(undone, inline=inline)
    assert wakes == []

    async def kept(session):
        enqueue(session, Target("telegram", "901"), OutMessage(text="kept"), NOW)
    await db.run(kept, inline=inline)
    assert wakes == [1]
    rows = await db.run(lambda s: s.scalars(select(Outbox)))
    assert texts(rows) == ["kept"]
