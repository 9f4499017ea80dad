"""PostgreSQL's JIT compilation added 0.1–0.65 s to most of Whistle's list queries
(issue #24: planning-cost estimates on big tables cross jit_above_cost, and compiling
costs more than the query saves): Whistle's connections turn it off
(models/store/db.py make_engine; docs/deploy.md). PostgreSQL only: SQLite has no JIT;
in the SQLite half of the suite this test is skipped, and it runs in the PostgreSQL half."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from models.store.db import Database


@pytest.fixture
def pg_url(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only (runs in the PostgreSQL half of the suite)")
    return database_url


async def test_whistles_connections_have_jit_off(pg_url):
    db = Database(pg_url)
    try:
        # every connection of the pool, not only the first: two held at once
        async def both(session):
            return await session.scalar(text("SHOW jit"))
        first = await db.run(both)
        async with db.engine.connect() as a, db.engine.connect() as b:
            settings = [(await c.execute(text("SHOW jit"))).scalar() for c in (a, b)]
        assert [first, *settings] == ["off", "off", "off"]
    finally:
        await db.dispose()
