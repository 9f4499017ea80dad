"""``models.store.db.among``: ``column IN values`` for lists whose length varies. It must pick
exactly the listed rows for any length, none included, on both databases; on
PostgreSQL it must be one statement text whatever the length, as each new text is
prepared again on every connection."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import select

from models.store.db import Database, among
from models.store.tables import RateCounter

KEYS = [f"among:{n}" for n in range(6)]


async def test_among_picks_the_listed_rows_for_any_length(database_url):
    db = Database(database_url)
    try:
        async def fill(session):
            expires = datetime(2030, 1, 1, tzinfo=timezone.utc)
            session.add_all(RateCounter(key=key, period="p", count=n, expires_at=expires)
                            for n, key in enumerate(KEYS))
        await db.run(fill)
        for wanted in ([], [KEYS[2]], KEYS[1:4], [*KEYS, "among:absent"]):
            def query(session, wanted=wanted):
                return select(RateCounter.key).where(among(session, RateCounter.key, wanted))

            async def read(session, query=query):
                return sorted(await session.scalars(query(session)))
            assert await db.run(read) == sorted(set(wanted) & set(KEYS))
            assert await db.run(read, inline=True) == sorted(set(wanted) & set(KEYS))

        async def texts(session):
            dialect = session.bind.dialect
            return {str(select(RateCounter.key).where(among(session, RateCounter.key, KEYS[:n]))
                        .compile(dialect=dialect)) for n in (1, 2, 5)}
        found = await db.run(texts)
        if db.dialect == "postgresql":
            assert len(found) == 1 and "ANY" in found.pop()
        else:
            assert all(" IN " in text for text in found)
    finally:
        await db.dispose()
