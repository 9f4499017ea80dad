"""Digest cost: building every bound chat's daily digest (``run_digest``, as the 08:30
job runs it: each unit's digest in a transaction of its own, then all queued at once) with N open tickets of which ``--overdue`` steps are
overdue (a breached resolve timer). The overdue part is a counting query and one with a
LIMIT, so the time should hardly grow with the overdue tickets, and each chat gets one
message however many there are (issue #24: the district's chat once got 48).

Run: .venv/bin/python bench/digest.py [--db sqlite|postgres|URL] [--open 100000]
                                      [--overdue 1000 10000 50000]"""
import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, analyze, header, load_now, temp_database  # noqa: E402
from sqlalchemy import delete, event, func, select, update  # noqa: E402
from sweep import NOW, Filler  # noqa: E402

from bot.app import Whistle  # noqa: E402
from bot.config import load_config  # noqa: E402
from models.store.tables import JobRun, Outbox, Timer  # noqa: E402
from scheduler.jobs import run_digest  # noqa: E402


async def digest_once(whistle: Whistle) -> tuple[float, int, int, int, float]:
    async def clear(session):
        await session.execute(delete(Outbox))
        await session.execute(delete(JobRun).where(JobRun.job == "digest"))
    await whistle.db.run(clear)
    spans, opened = [], {}

    def begin(connection):
        opened[id(connection)] = time.perf_counter()

    def commit(connection):
        if id(connection) in opened:
            spans.append(time.perf_counter() - opened.pop(id(connection)))
    engine = whistle.db.engine.sync_engine
    event.listen(engine, "begin", begin)
    event.listen(engine, "commit", commit)
    started = time.perf_counter()
    try:
        chats = await run_digest(whistle.db, whistle.core, NOW)
    finally:
        event.remove(engine, "begin", begin)
        event.remove(engine, "commit", commit)
    elapsed = time.perf_counter() - started

    rows = (await whistle.db.run(lambda s: s.execute(select(Outbox.chat_id, Outbox.payload)))).all()
    most = max(Counter(chat for chat, _ in rows).values(), default=0)
    longest = max((len(payload.get("text", "")) for _, payload in rows), default=0)
    return elapsed, chats, most, longest, max(spans, default=0)


async def bench(url: str, n_open: int, steps: list[int]) -> None:
    config = load_config(ROOT / "config.example.toml", env={})
    config.database.url = url
    config.web.public_url = "https://whistle.example.org"
    config.media_dir = Path(tempfile.gettempdir()) / "whistle-bench-media-unused"  # never written
    whistle = Whistle(config, clock=lambda: NOW)
    await whistle.prepare()
    filler = Filler(whistle)
    await filler.setup()
    started = time.perf_counter()
    first = await whistle.db.run(lambda s: s.scalar(select(func.min(Timer.id))))
    await filler.open(0, n_open, 0)
    first = (first or 0) + 1
    await analyze(whistle.db)
    print(f"  {n_open:>9,} open tickets written in {time.perf_counter() - started:6.1f} s",
          flush=True)
    await digest_once(whistle)  # warms the caches (SQL compilation, imports)
    for overdue in sorted(steps):
        # the first ``overdue`` open tickets' resolve timers passed, a minute apart
        await whistle.db.run(lambda s: s.execute(
            update(Timer).where(Timer.id >= first, Timer.id < first + overdue)
            .values(stage="breached", next_at=None, due_at=NOW - timedelta(days=2))))
        await analyze(whistle.db)
        elapsed, chats, most, longest, held = await digest_once(whistle)
        print(f"  {overdue:>9,} overdue of {n_open:,} open: all digests {elapsed * 1000:8.1f} ms, "
              f"the longest transaction {held * 1000:6.1f} ms ({chats} chats, at most {most} "
              f"message(s) per chat, the longest {longest:,} characters); "
              f"{load_now()}", flush=True)
    await whistle.db.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite", help="sqlite, postgres, or a database URL to use as is")
    parser.add_argument("--open", type=int, default=100_000)
    parser.add_argument("--overdue", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    args = parser.parse_args()
    header()
    if "://" in args.db:
        await bench(args.db, args.open, args.overdue)
        return
    async with temp_database(args.db) as url:
        print(f"database: {args.db} (temporary)")
        await bench(url, args.open, args.overdue)


if __name__ == "__main__":
    asyncio.run(main())
