"""The inbox: which updates have been handled. A row is written in the transaction of
the update's effects, so a redelivered update (a webhook retried, WeCom's three
retries, a second process) finds it and does nothing."""
from __future__ import annotations

import functools
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete
from sqlalchemy.ext.asyncio import AsyncSession

from .db import upsert_insert
from .tables import Inbox

KEEP = timedelta(days=7)  # redeliveries come within minutes; a week is plenty


async def first_delivery(session: AsyncSession, channel: str, key: str, now: datetime) -> bool:
    """Record the update; False when it was recorded before. On PostgreSQL a second
    process inserting the same key waits for the first transaction and then sees it."""
    connection = await session.connection()
    result = await connection.execute(_record(session.bind.dialect.name), {
        "inbox_channel": channel, "inbox_key": key[:128], "inbox_received": now})
    return result.rowcount == 1


@functools.cache
def _record(dialect: str):
    """The insert, built once per dialect (every update runs it)."""
    insert = upsert_insert(dialect)
    return (insert(Inbox).values(channel=bindparam("inbox_channel"), key=bindparam("inbox_key"),
                                 received_at=bindparam("inbox_received"))
            .on_conflict_do_nothing(index_elements=["channel", "key"]))


async def prune(session: AsyncSession, now: datetime) -> int:
    """Forget updates old enough never to be redelivered."""
    result = await session.execute(delete(Inbox).where(Inbox.received_at < now - KEEP))
    return result.rowcount
