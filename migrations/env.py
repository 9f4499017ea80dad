"""Alembic environment: runs migrations on Whistle's async engine."""
import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from models.store.tables import Base

config = context.config
target_metadata = Base.metadata


def do_run_migrations(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # several processes starting at once: one migrates, the others wait here and
            # then find the schema up to date (the lock ends with the transaction)
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7781234501)")
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_async_engine(config.get_main_option("sqlalchemy.url"))
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(run_async_migrations())
