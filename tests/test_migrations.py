"""The Alembic migrations build exactly the schema the models describe, and upgrading
an up-to-date database changes nothing."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from bot.migrate import alembic_config, upgrade
from models.store.tables import Base


def _diff(connection) -> list:
    context = MigrationContext.configure(connection, opts={"compare_type": True,
                                                           "compare_server_default": True})
    return compare_metadata(context, Base.metadata)


def _snapshot(connection) -> dict:
    inspector = inspect(connection)
    return {table: (sorted(c["name"] for c in inspector.get_columns(table)),
                    sorted(str(i["name"]) for i in inspector.get_indexes(table)),
                    sorted(str(u["column_names"]) for u in inspector.get_unique_constraints(table)))
            for table in sorted(inspector.get_table_names())}


async def test_migrations_match_the_models(database_url):
    await upgrade(database_url)
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    assert diff == [], "models and migrations differ:\n" + "\n".join(map(repr, diff))


async def test_upgrade_twice_is_a_no_op(database_url):
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    await upgrade(database_url)
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            first = await conn.run_sync(_snapshot)
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
        await engine.dispose()
        await upgrade(database_url)
        async with engine.connect() as conn:
            second = await conn.run_sync(_snapshot)
            again = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
    finally:
        await engine.dispose()
    assert version == again == [head]
    assert first == second
    assert set(Base.metadata.tables) <= set(first)
