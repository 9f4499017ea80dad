"""Sweep cost: one deadline sweep with N open tickets (and their timers) in the
database, of which ``--due`` have a deadline that has just passed. The sweep must
read only the due timers (an index on timer.next_at), so its time should hardly
grow with N; the messages it queues stay bounded by the chats and people involved.

Run: .venv/bin/python bench/sweep.py [--open 10000 100000] [--due 100] [--db URL]"""
import argparse
import asyncio
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import delete, func, insert, select, text  # noqa: E402

from bot.app import Whistle  # noqa: E402
from bot.config import load_config  # noqa: E402
from models.tables import Outbox, Person, Ticket, Timer, Unit  # noqa: E402
from scheduler.jobs import run_sweep  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 23, 3, 0, tzinfo=timezone.utc)  # Monday 11:00 in Beijing
CHUNK = 20000


async def fill(whistle: Whistle, n_open: int, n_due: int) -> None:
    async def rows(session):
        grids = list(await session.scalars(select(Unit.id).where(Unit.kind == "grid")))
        chief = await session.scalar(select(Person.id).where(Person.code.is_not(None)))
        return grids, chief
    grids, chief = await whistle.db.run(rows)
    far = NOW + timedelta(days=30)
    for start in range(0, n_open, CHUNK):
        count = min(CHUNK, n_open - start)

        async def chunk(session, start=start, count=count):
            tickets = [dict(number=f"B{start + i:09d}", category="garbage", klass="request",
                            order_type="routine", state="claimed", description="bench",
                            channel="telegram", reporter_id=chief, anonymous=True,
                            grid_id=grids[i % len(grids)], unit_id=grids[i % len(grids)],
                            level="grid", route_reason="point", assignee_id=chief,
                            created_at=NOW, updated_at=NOW, claimed_at=NOW, reopens=0,
                            escalations=0, unrated=False) for i in range(count)]
            ids = list(await session.scalars(insert(Ticket).returning(Ticket.id), tickets))
            due_here = max(0, min(count, n_due - start))
            timers = [dict(ticket_id=tid, kind="resolve", unit_id=grids[i % len(grids)],
                           working=True, starts_at=NOW - timedelta(days=7),
                           **(dict(warn_at=NOW - timedelta(hours=2), due_at=NOW - timedelta(minutes=1),
                                   stage="warned", next_at=NOW - timedelta(minutes=1))
                              if i < due_here else
                              dict(warn_at=far - timedelta(days=1), due_at=far, stage="running",
                                   next_at=far - timedelta(days=1))))
                      for i, tid in enumerate(ids)]
            await session.execute(insert(Timer), timers)
        await whistle.db.run(chunk)


async def bench(url: str, n_open: int, n_due: int) -> None:
    config = load_config(ROOT / "config.example.toml", env={})
    config.database.url = url
    config.media_dir = Path(tempfile.mkdtemp()) / "media"
    whistle = Whistle(config, clock=lambda: NOW)
    await whistle.prepare()
    started = time.perf_counter()
    await fill(whistle, n_open, n_due)
    filled = time.perf_counter() - started
    await whistle.db.run(lambda s: s.execute(delete(Outbox)))
    started = time.perf_counter()
    result = await run_sweep(whistle.db, whistle.core, NOW)
    swept = time.perf_counter() - started
    messages = await whistle.db.run(lambda s: s.scalar(select(func.count()).select_from(Outbox)))
    plan = await whistle.db.run(lambda s: s.execute(text(
        ("EXPLAIN QUERY PLAN " if whistle.db.dialect == "sqlite" else "EXPLAIN ")
        + "SELECT * FROM timer WHERE next_at <= :now ORDER BY next_at LIMIT 500"),
        {"now": NOW.replace(tzinfo=None)}))
    plan_text = " | ".join(str(row[-1]) for row in plan)
    print(f"{n_open:>8} open tickets ({n_due} due): fill {filled:6.1f} s, one sweep "
          f"{swept * 1000:8.1f} ms ({result.breached} breached, {result.escalated} escalated), "
          f"{messages} messages queued; plan: {plan_text}")
    await whistle.db.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--open", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--due", type=int, default=100)
    parser.add_argument("--db", default=None, help="database URL (default: a temporary SQLite)")
    args = parser.parse_args()
    print("command:", " ".join(sys.argv))
    for n in args.open:
        url = args.db or f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/bench.db"
        await bench(url, n, args.due)


if __name__ == "__main__":
    asyncio.run(main())
