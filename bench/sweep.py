"""Sweep cost: one deadline sweep with N open tickets (each with a running resolve
timer) and ``--closed`` closed ones (with their finished timers) in the database, of
which ``--due`` have a deadline that has just passed. The sweep must read only the
due timers (an index on timer.next_at), so its time should hardly grow with N; the
messages it queues stay bounded by the chats and people involved, not the tickets.

One database per run: the closed tickets are loaded once, then the open ones grow
step by step (10k, then 100k, then 1M); each step has its own fresh due timers.

Run: .venv/bin/python bench/sweep.py [--db sqlite|postgres|URL] [--open 10000 100000 1000000]
                                     [--closed 5000000] [--due 100]"""
import argparse
import asyncio
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, analyze, bulk_insert, fix_sequences, header, load_now, temp_database  # noqa: E402
from sqlalchemy import delete, func, select, text, update  # noqa: E402

from bot.app import Whistle  # noqa: E402
from bot.config import load_config  # noqa: E402
from models.store.tables import Outbox, Person, Ticket, Timer, Unit  # noqa: E402
from scheduler.jobs import run_sweep  # noqa: E402

NOW = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)  # Monday 11:00 in Beijing
CHUNK = 50_000
NAIVE = NOW.replace(tzinfo=None)  # bulk rows bypass the UTC column type


class Filler:
    """Writes tickets and timers with explicit ids, in big chunks."""

    def __init__(self, whistle: Whistle):
        self.whistle = whistle
        self.next_ticket = self.next_timer = 0
        self.grids: list[int] = []
        self.chief = 0

    async def setup(self) -> None:
        async def read(session):
            grids = list(await session.scalars(select(Unit.id).where(Unit.kind == "grid")))
            chief = await session.scalar(select(Person.id).where(Person.code.is_not(None)))
            tickets = await session.scalar(select(func.coalesce(func.max(Ticket.id), 0)))
            timers = await session.scalar(select(func.coalesce(func.max(Timer.id), 0)))
            return grids, chief, tickets, timers
        self.grids, self.chief, self.next_ticket, self.next_timer = await self.whistle.db.run(read)

    def ticket(self, number: str, grid: int, closed: bool) -> dict:
        self.next_ticket += 1
        created = NAIVE - timedelta(days=60 if closed else 7)
        return dict(id=self.next_ticket, number=number, category="garbage", klass="request",
                    order_type="routine", state="closed" if closed else "claimed",
                    description="bench", channel="telegram", reporter_id=self.chief, anonymous=True,
                    grid_id=grid, unit_id=grid, level="grid", route_reason="point",
                    assignee_id=self.chief, created_at=created, updated_at=created,
                    claimed_at=created, resolved_at=created if closed else None,
                    closed_at=created if closed else None, reopens=0, escalations=0,
                    unrated=False, followers=0)

    def timer(self, ticket_id: int, kind: str, grid: int, stage: str, next_at, due_at) -> dict:
        self.next_timer += 1
        return dict(id=self.next_timer, ticket_id=ticket_id, kind=kind, unit_id=grid, working=True,
                    starts_at=NAIVE - timedelta(days=7), warn_at=due_at - timedelta(hours=2),
                    due_at=due_at, stage=stage, next_at=next_at,
                    met=True if stage == "done" else None,
                    done_at=due_at - timedelta(days=1) if stage == "done" else None)

    async def closed(self, count: int, progress: bool = True) -> None:
        """Closed tickets, each with its two finished timers (claim, resolve)."""
        old = NAIVE - timedelta(days=50)
        for start in range(0, count, CHUNK):
            n = min(CHUNK, count - start)
            tickets, timers = [], []
            for i in range(start, start + n):
                grid = self.grids[i % len(self.grids)]
                row = self.ticket(f"C{i:010d}", grid, closed=True)
                tickets.append(row)
                timers.append(self.timer(row["id"], "claim", grid, "done", None, old))
                timers.append(self.timer(row["id"], "resolve", grid, "done", None, old))
            await self._write(tickets, timers)
            if progress and (start // CHUNK) % 20 == 19:
                print(f"    … {start + n:,} closed tickets written", flush=True)

    async def open(self, first: int, count: int, due: int) -> list[int]:
        """Open tickets with running resolve timers; the first ``due`` are due now.
        Returns the due timers' ids."""
        far = NAIVE + timedelta(days=30)
        due_ids = []
        for start in range(0, count, CHUNK):
            n = min(CHUNK, count - start)
            tickets, timers = [], []
            for i in range(start, start + n):
                grid = self.grids[i % len(self.grids)]
                row = self.ticket(f"B{first + i:010d}", grid, closed=False)
                tickets.append(row)
                if i < due:
                    timers.append(self.timer(row["id"], "resolve", grid, "warned",
                                             NAIVE - timedelta(minutes=1), NAIVE - timedelta(minutes=1)))
                    due_ids.append(self.next_timer)
                else:
                    timers.append(self.timer(row["id"], "resolve", grid, "running",
                                             far - timedelta(days=1), far))
            await self._write(tickets, timers)
        return due_ids

    async def _write(self, tickets: list[dict], timers: list[dict]) -> None:
        async def write(session):
            await bulk_insert(session, Ticket, tickets)
            await bulk_insert(session, Timer, timers)
            await fix_sequences(session, "ticket", "timer")  # the bot adds rows of its own later
        await self.whistle.db.run(write)


async def plan(whistle: Whistle) -> str:
    sql = ("SELECT * FROM timer WHERE next_at <= :now AND paused_at IS NULL "
           "ORDER BY next_at, id LIMIT 500")
    prefix = "EXPLAIN QUERY PLAN " if whistle.db.dialect == "sqlite" else "EXPLAIN "
    rows = await whistle.db.run(lambda s: s.execute(text(prefix + sql), {"now": NAIVE}))
    return " | ".join(str(row[-1]).strip() for row in rows)


async def sweep_once(whistle: Whistle) -> tuple[float, object, int, int]:
    await whistle.db.run(lambda s: s.execute(delete(Outbox)))
    started = time.perf_counter()
    result = await run_sweep(whistle.db, whistle.core, NOW)
    elapsed = time.perf_counter() - started

    async def queued(session):
        messages = await session.scalar(select(func.count()).select_from(Outbox))
        chats = await session.scalar(select(func.count(func.distinct(Outbox.chat_id))))
        return messages, chats
    messages, chats = await whistle.db.run(queued)
    return elapsed, result, messages, chats


async def bench(url: str, sizes: list[int], n_closed: int, n_due: int) -> None:
    config = load_config(ROOT / "config.example.toml", env={})
    config.database.url = url
    config.media_dir = Path(tempfile.gettempdir()) / "whistle-bench-media-unused"  # never written
    whistle = Whistle(config, clock=lambda: NOW)
    await whistle.prepare()
    filler = Filler(whistle)
    await filler.setup()
    started = time.perf_counter()
    await filler.closed(n_closed)
    print(f"  {n_closed:>9,} closed tickets (+{2 * n_closed:,} finished timers) written in "
          f"{time.perf_counter() - started:6.1f} s", flush=True)
    # a first sweep over only the due tickets warms the caches (SQL compilation, imports),
    # so that the first measured size is not penalised
    previous_due = await filler.open(0, n_due, n_due)
    await sweep_once(whistle)
    have = n_due
    for size in sorted(sizes):
        started = time.perf_counter()
        if previous_due:  # last step's due timers are done with: this step has fresh ones
            await whistle.db.run(lambda s: s.execute(update(Timer).where(
                Timer.id.in_(previous_due)).values(stage="done", next_at=None)))
        previous_due = await filler.open(have, size - have, n_due)
        have = size
        await analyze(whistle.db)
        filled = time.perf_counter() - started
        elapsed, result, messages, chats = await sweep_once(whistle)
        print(f"  {size:>9,} open + {n_closed:,} closed ({n_due} due; fill {filled:5.1f} s): one sweep "
              f"{elapsed * 1000:7.1f} ms ({result.breached} breached, {result.escalated} escalated), "
              f"{messages} messages to {chats} chats; {load_now()}", flush=True)
    print(f"  due-timer query plan: {await plan(whistle)}")
    await whistle.db.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite", help="sqlite, postgres, or a database URL to use as is")
    parser.add_argument("--open", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--closed", type=int, default=5_000_000)
    parser.add_argument("--due", type=int, default=100)
    args = parser.parse_args()
    header()
    if "://" in args.db:
        await bench(args.db, args.open, args.closed, args.due)
        return
    async with temp_database(args.db) as url:
        print(f"database: {args.db} (temporary)")
        await bench(url, args.open, args.closed, args.due)


if __name__ == "__main__":
    asyncio.run(main())
