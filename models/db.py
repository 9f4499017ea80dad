"""Engine and transactions. Each core action runs in one transaction; on SQLite
writes take the lock up front (BEGIN IMMEDIATE) so concurrent writers wait for
each other instead of failing half-way, and a briefly locked database is retried."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

log = logging.getLogger(__name__)
T = TypeVar("T")

LOCK_RETRIES = 8
QUEUED = "whistle.outbox"  # session.info flag: this transaction queued messages


def make_engine(url: str, pool_size: int = 10, max_overflow: int = 30) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 15})
        _sqlite_pragmas(engine)
        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=pool_size,
                               max_overflow=max_overflow)


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=5000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def is_lock_error(exc: BaseException) -> bool:
    text = str(getattr(exc, "orig", exc)).lower()
    return "database is locked" in text or "deadlock detected" in text or "could not serialize" in text


class Turns:
    """One transaction at a time, in order of arrival — except that urgent ones go first:
    the sender's short bookkeeping, which a message in the middle of its run waits on."""

    def __init__(self):
        self._busy = False
        self._waiting: tuple[deque, deque] = (deque(), deque())  # urgent, the others

    @contextlib.asynccontextmanager
    async def turn(self, urgent: bool):
        await self._acquire(urgent)
        try:
            yield
        finally:
            self._release()

    def waiting(self) -> int:
        return sum(len(queue) for queue in self._waiting)

    async def _acquire(self, urgent: bool) -> None:
        if not self._busy and not any(self._waiting):
            self._busy = True
            return
        ticket = asyncio.get_running_loop().create_future()
        queue = self._waiting[0 if urgent else 1]
        queue.append(ticket)
        try:
            await ticket
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():
                self._release()  # the turn was handed over as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # unless a release skipped it already
                    queue.remove(ticket)
            raise

    def _release(self) -> None:
        for queue in self._waiting:
            while queue:
                ticket = queue.popleft()
                if not ticket.done():
                    ticket.set_result(None)  # still busy: the turn goes to this one
                    return
        self._busy = False


class Database:
    """Owns the engine; ``run`` executes one action in one transaction."""

    def __init__(self, url: str, pool_size: int = 10, max_overflow: int = 30):
        self.url = url
        self.engine = make_engine(url, pool_size, max_overflow)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._after_commit: list[Callable[[], None]] = []
        # SQLite lets one writer in at a time, and its busy handler makes the others poll
        # with growing sleeps (up to 100 ms each): in one process they queue here instead.
        # Other processes still meet SQLite's own lock.
        self._turns = Turns() if url.startswith("sqlite") else None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Called after a ``run`` that queued outgoing messages (the sender wakes up on it)."""
        self._after_commit.append(callback)

    async def run(self, action: Callable[[AsyncSession], Awaitable[T]], urgent: bool = False) -> T:
        """Run ``action`` in a fresh transaction, retrying if the database is briefly locked.
        ``urgent``: a short transaction others wait on (the sender's), first in line on SQLite."""
        delay = 0.05
        for attempt in range(LOCK_RETRIES):
            try:
                async with self._turn(urgent):
                    async with self.sessions() as session, session.begin():
                        result = await action(session)
                queued = session.info.get(QUEUED, False)
                break
            except (OperationalError, DBAPIError) as exc:
                if not is_lock_error(exc) or attempt == LOCK_RETRIES - 1:
                    raise
                log.warning("database busy, retrying (%s)", exc.orig)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        if queued:
            for callback in self._after_commit:
                callback()
        return result

    def queued(self) -> int:
        """Transactions waiting for their turn in this process (SQLite; 0 on PostgreSQL)."""
        return self._turns.waiting() if self._turns is not None else 0

    def _turn(self, urgent: bool) -> contextlib.AbstractAsyncContextManager:
        return self._turns.turn(urgent) if self._turns is not None else contextlib.nullcontext()

    async def dispose(self) -> None:
        await self.engine.dispose()
