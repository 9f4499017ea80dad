"""PostgreSQL connections cut while they rested in the pool (a server restart) are
replaced before a transaction uses them (models/store/db.py: a ping after a rest, not at every
checkout). PostgreSQL only: an SQLite file has no server to lose; in the SQLite half
of the suite these tests are skipped, and they run in the PostgreSQL half."""
from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from models.store.db import Database


@pytest.fixture
def pg_url(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only (runs in the PostgreSQL half of the suite)")
    return database_url


async def cut_connections(url: str) -> int:
    """What a server restart does to the pool: every other connection to the database ends."""
    admin = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        return await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    finally:
        await admin.close()


LOST = "database connection lost"


async def test_a_connection_cut_while_resting_is_replaced_before_use(pg_url, caplog):
    db = Database(pg_url, rest_before_ping=0.05)
    try:
        assert await db.run(lambda s: s.scalar(text("SELECT 1"))) == 1
        assert await cut_connections(pg_url) >= 1
        await asyncio.sleep(0.1)  # it rested: the next checkout pings it and finds it gone
        assert await db.run(lambda s: s.scalar(text("SELECT 2"))) == 2
    finally:
        await db.dispose()
    assert LOST not in caplog.text  # the transaction never met the dead connection


async def test_a_connection_cut_while_in_use_costs_one_retry(pg_url, caplog):
    """Cut within the rest (no ping): the transaction meets the dead connection, the pool
    replaces it, and ``run`` tries once more at once."""
    db = Database(pg_url, rest_before_ping=3600)
    try:
        assert await db.run(lambda s: s.scalar(text("SELECT 1"))) == 1
        assert await cut_connections(pg_url) >= 1
        assert await db.run(lambda s: s.scalar(text("SELECT 2"))) == 2
    finally:
        await db.dispose()
    assert LOST in caplog.text


async def test_a_second_cut_in_a_row_is_an_error(pg_url):
    """One retry, not a loop: a database that keeps dropping connections is reported."""
    db = Database(pg_url, rest_before_ping=3600)
    cuts = 0

    async def cut_then_query(session):
        nonlocal cuts
        await session.scalar(text("SELECT 1"))
        cuts += 1
        await cut_connections(pg_url)
        return await session.scalar(text("SELECT 2"))
    try:
        with pytest.raises(DBAPIError):
            await db.run(cut_then_query)
    finally:
        await db.dispose()
    assert cuts == 2
