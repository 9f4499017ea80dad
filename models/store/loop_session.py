"""``AsyncSession``'s face over a plain ``Session`` on SQLite's own driver, for the
transaction of each update (``Database.run(..., inline=True)``).

The core is written against ``AsyncSession`` (``await session.execute(...)``), which
passes every statement through SQLAlchemy's greenlet bridge and aiosqlite's worker
thread. For a statement that takes SQLite microseconds that bridge is most of the cost:
measured per ORM statement, about 200 µs through it against 110 µs on a plain session.
Here each awaited method calls the plain session at once, on the loop's thread; nothing
in it ever suspends. Only what the core uses is offered, so a use outside it fails
loudly (``AttributeError``) instead of half-working."""
from __future__ import annotations

import contextlib
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session


class LoopConnection:
    """What ``await session.connection()`` gives the core: an ``execute`` to await."""

    def __init__(self, connection: Connection):
        self.sync_connection = connection
        self.dialect = connection.dialect

    async def execute(self, statement, parameters=None, **kwargs) -> Any:
        return self.sync_connection.execute(statement, parameters, **kwargs)


class LoopSession:
    """The awaited methods of ``AsyncSession`` the core calls, run on ``sync_session``."""

    def __init__(self, sync_session: Session):
        self.sync_session = sync_session
        # plain attributes and methods that are plain in AsyncSession too
        self.bind = sync_session.bind
        self.info = sync_session.info
        self.add = sync_session.add
        self._connection: LoopConnection | None = None

    @property
    def no_autoflush(self):
        return self.sync_session.no_autoflush

    async def execute(self, statement, params=None, **kwargs) -> Any:
        return self.sync_session.execute(statement, params, **kwargs)

    async def scalar(self, statement, params=None, **kwargs) -> Any:
        return self.sync_session.scalar(statement, params, **kwargs)

    async def scalars(self, statement, params=None, **kwargs) -> Any:
        return self.sync_session.scalars(statement, params, **kwargs)

    async def get(self, entity, ident, **kwargs) -> Any:
        return self.sync_session.get(entity, ident, **kwargs)

    async def flush(self, objects=None) -> None:
        self.sync_session.flush(objects)

    async def refresh(self, instance, attribute_names=None, **kwargs) -> None:
        self.sync_session.refresh(instance, attribute_names, **kwargs)

    async def delete(self, instance) -> None:
        self.sync_session.delete(instance)

    async def connection(self) -> LoopConnection:
        """The transaction's one connection (savepoints included), asked for once."""
        if self._connection is None:
            self._connection = LoopConnection(self.sync_session.connection())
        return self._connection

    @contextlib.asynccontextmanager
    async def begin_nested(self):
        """A savepoint: released when the block ends, rolled back if it raises."""
        with self.sync_session.begin_nested() as nested:
            yield nested
