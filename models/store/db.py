"""Engine and transactions. Each core action runs in one transaction; on SQLite
writes take the lock up front (BEGIN IMMEDIATE) so concurrent writers wait for
each other instead of failing half-way, and a briefly locked database is retried.

On SQLite, the transaction of each update (``run(..., inline=True)``) runs on a plain
synchronous session over SQLite's own driver, called on the event loop's thread
(``models/store/loop_session.py``): such a statement takes microseconds, while SQLAlchemy's
greenlet bridge and aiosqlite's worker thread (a queue, a future, a wake-up through the
self-pipe) cost the loop more than the statement. The rest (the sender's passes over its
queue, reports, sweeps, exports) keep aiosqlite's worker thread, where SQLite's C code
runs beside the loop, on another core. The inline connections never sleep in SQLite's
busy handler (``run`` waits for another process's lock with ``asyncio.sleep``) and leave
the WAL checkpoints, which copy and fsync, to the others."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiosqlite
from sqlalchemy import Engine, any_, bindparam, create_engine, event
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import sessionmaker

from .loop_session import LoopSession

log = logging.getLogger(__name__)
T = TypeVar("T")

LOCK_RETRIES = 8
BUSY_MS = 5000  # SQLite's busy timeout on the worker thread …
LOCK_WAIT = 5.0  # … and how long an inline transaction waits for another process's lock
# WAL pages before a commit checkpoints: SQLite's default on the worker thread; inline
# only as a backstop (the worker thread's commits come first: every update sends)
CHECKPOINT_PAGES = {False: 1000, True: 20000}
REST_BEFORE_PING = 2.0  # seconds a pooled PostgreSQL connection rests before it is checked
QUEUED = "whistle.outbox"  # session.info flag: this transaction queued messages


def make_engine(url: str, pool_size: int = 20, max_overflow: int = 10,
                rest_before_ping: float = REST_BEFORE_PING) -> AsyncEngine:
    # hide_parameters: a database error names its statement, not the values bound to it
    # (what residents wrote, tokens), since errors are logged
    if url.startswith("sqlite"):
        engine = create_async_engine(url, async_creator=functools.partial(_sqlite_connect, url),
                                     hide_parameters=True)
        _sqlite_pragmas(engine.sync_engine, inline=False)
        return engine
    # JIT off: on big tables the planner's estimates cross jit_above_cost and compiling
    # added 0.1–0.65 s to list queries that run in milliseconds (#24; docs/deploy.md)
    connect_args = {"server_settings": {"jit": "off"}} if "+asyncpg" in url else {}
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=max_overflow,
                                 hide_parameters=True, connect_args=connect_args)
    _ping_after_rest(engine, rest_before_ping)
    return engine


def _ping_after_rest(engine: AsyncEngine, rest: float) -> None:
    """``pool_pre_ping``, for a connection that rested: one a server restart may have cut.
    Under load a connection is back in use within milliseconds, and a ping at every
    checkout (a round trip per transaction) cost a tenth of an update's CPU. A dead one
    is replaced before the transaction starts (the pool tries again on
    ``DisconnectionError``), as with ``pool_pre_ping``."""
    @event.listens_for(engine.sync_engine, "checkin")
    def _checkin(dbapi_conn, record):
        record.info["rests_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checkout(dbapi_conn, record, proxy):
        since = record.info.get("rests_since")
        if since is None or time.monotonic() - since < rest:
            return  # just made, or just used
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise DisconnectionError(f"pooled connection is gone: {exc}") from exc


def make_inline_engine(url: str) -> Engine:
    """The same SQLite file through its own synchronous driver, for ``run(inline=True)``."""
    engine = create_engine(make_url(url).set(drivername="sqlite"),
                           connect_args={"timeout": 0, "check_same_thread": False},
                           hide_parameters=True)  # as make_engine
    _sqlite_pragmas(engine, inline=True)
    return engine


def _sqlite_connect(url: str) -> aiosqlite.Connection:
    """What ``aiosqlite.connect`` makes; the URL's file and options are read as
    SQLAlchemy reads them."""
    parsed = make_url(url)
    args, kwargs = parsed.get_dialect()().create_connect_args(parsed)
    kwargs = {**kwargs, "timeout": 15, "check_same_thread": True}
    connection = aiosqlite.Connection(functools.partial(sqlite3.connect, *args, **kwargs), 64)
    connection._thread.daemon = True  # as SQLAlchemy's aiosqlite dialect does
    return connection


def _sqlite_pragmas(engine: Engine, inline: bool) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # inline, SQLite's busy handler would stop the whole loop while another process
        # holds the lock: ``Database.run`` waits for it with asyncio.sleep instead
        cur.execute(f"PRAGMA busy_timeout={0 if inline else BUSY_MS}")
        cur.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES[inline]}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def upsert_insert(dialect: str):
    """``insert`` with ``on_conflict_do_*`` for the dialect: PostgreSQL's or SQLite's."""
    return pg_insert if dialect == "postgresql" else sqlite_insert


def among(session, column, values):
    """``column IN values`` for a list whose length varies from call to call. PostgreSQL
    prepares each distinct statement text once per connection, and ``IN`` with n values
    is a new text for every n: there it is ``= ANY(array)``, one text for any length.
    SQLite gets the plain ``IN``."""
    values = list(values)
    if session.bind.dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(column.type)))
    return column.in_(values)


def is_lock_error(exc: BaseException) -> bool:
    text = str(getattr(exc, "orig", exc)).lower()
    return "database is locked" in text or "deadlock detected" in text or "could not serialize" in text


class Turns:
    """One transaction at a time, in order of arrival — except that urgent ones go first:
    the sender's short bookkeeping, which a message in the middle of its run waits on."""

    def __init__(self):
        self._busy = False
        self._waiting: tuple[deque, deque] = (deque(), deque())  # urgent, the others
        self._holder: asyncio.Task | None = None

    @contextlib.asynccontextmanager
    async def turn(self, urgent: bool):
        task = asyncio.current_task()
        if self._busy and self._holder is task:
            # a transaction started from inside another one of the same task would wait
            # for its own turn for ever: a programming error, said at once
            raise RuntimeError("a database transaction was started inside another one "
                               "(db.run called from an action): it would wait for itself")
        await self._acquire(urgent)
        self._holder = task
        try:
            yield
        finally:
            self._holder = None
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

    def __init__(self, url: str, pool_size: int = 20, max_overflow: int = 10,
                 rest_before_ping: float = REST_BEFORE_PING):
        self.url = url
        self.engine = make_engine(url, pool_size, max_overflow, rest_before_ping)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite: the synchronous connections called on the loop's thread (``run(inline=True)``)
        self.inline_engine = make_inline_engine(url) if url.startswith("sqlite") else None
        self._inline_sessions = (sessionmaker(self.inline_engine, expire_on_commit=False)
                                 if self.inline_engine is not None else None)
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

    async def run(self, action: Callable[[AsyncSession], Awaitable[T]], urgent: bool = False,
                  inline: bool = False) -> T:
        """Run ``action`` in a fresh transaction, retrying if the database is briefly locked.
        ``urgent``: a short transaction others wait on (the sender's), first in line on SQLite.
        ``inline``: a short transaction, run on the loop's thread on SQLite (see above);
        ``action`` then gets a ``LoopSession``, the part of ``AsyncSession`` the core uses."""
        delay = 0.05
        for attempt in range(LOCK_RETRIES):
            try:
                async with self._turn(urgent):
                    if inline and self._inline_sessions is not None:
                        result, queued = await self._inline(action)
                    else:
                        result, queued = await self._transaction(action, self.sessions)
                break
            except (OperationalError, DBAPIError) as exc:
                if getattr(exc, "connection_invalidated", False) and attempt == 0:
                    # the connection was cut (a failover, a reset) and the pool replaced
                    # it: once more at once. Safe even if the commit had gone through: an
                    # update's inbox key is in the transaction, so it is then a duplicate.
                    log.warning("database connection lost, retrying (%s)", exc.orig)
                    continue
                if not is_lock_error(exc) or attempt == LOCK_RETRIES - 1:
                    raise
                log.warning("database busy, retrying (%s)", exc.orig)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        if queued:
            for callback in self._after_commit:
                callback()
        return result

    async def _transaction(self, action: Callable[[AsyncSession], Awaitable[T]],
                           sessions: async_sessionmaker) -> tuple[T, bool]:
        """(what ``action`` returned, whether it queued messages), once committed."""
        async with sessions() as session, session.begin():
            result = await action(session)
        return result, session.info.get(QUEUED, False)

    async def _inline(self, action: Callable[[AsyncSession], Awaitable[T]]) -> tuple[T, bool]:
        """The transaction with SQLite called inline. Another process's write lock is
        waited for here, holding this process's turn (so the order of arrival is kept),
        with short sleeps that leave the loop free."""
        started, pause = time.monotonic(), 0.002
        while True:
            try:
                with self._inline_sessions() as session, session.begin():
                    result = await action(LoopSession(session))
                return result, session.info.get(QUEUED, False)
            except (OperationalError, DBAPIError) as exc:
                if not is_lock_error(exc) or time.monotonic() - started > LOCK_WAIT:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.1)

    def queued(self) -> int:
        """Transactions waiting for their turn in this process (SQLite; 0 on PostgreSQL)."""
        return self._turns.waiting() if self._turns is not None else 0

    def _turn(self, urgent: bool) -> contextlib.AbstractAsyncContextManager:
        return self._turns.turn(urgent) if self._turns is not None else contextlib.nullcontext()

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.inline_engine is not None:
            self.inline_engine.dispose()
