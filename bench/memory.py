"""Memory: peak RSS of a real bot process (``python -m bot --config … run``, a
subprocess against the fake Bot API in this process) with ``--tickets`` tickets in the
database (default 1M: 5 % open with running timers, the rest closed), under load:
simulated residents keep filing reports while psutil samples the process's RSS every
50 ms. The scheduler is on (deadline sweeps every 30 s, digests), as in production.
Target: under 200 MB.

Run: .venv/bin/python bench/memory.py [--db sqlite postgres] [--tickets 1000000] [--seconds 60]"""
import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil  # noqa: E402
from common import (  # noqa: E402
    ROOT, Arrivals, BotProcess, Resident, StepLost, analyze, fake_telegram, grid_points, header,
    load_now, raw_config, temp_database, write_toml,
)

from bot.app import Whistle  # noqa: E402
from bot.config import load_config  # noqa: E402


async def fill(url: str, tickets: int) -> float:
    """The database migrated, the district imported and ``tickets`` tickets written."""
    from sweep import Filler
    config = load_config(ROOT / "config.example.toml", env={})
    config.database.url = url
    config.media_dir = Path(tempfile.gettempdir()) / "whistle-bench-media-unused"  # never written
    whistle = Whistle(config)
    started = time.perf_counter()
    await whistle.prepare()
    filler = Filler(whistle)
    await filler.setup()
    open_count = tickets // 20
    await filler.closed(tickets - open_count, progress=False)
    await filler.open(0, open_count, 0)
    await analyze(whistle.db)
    await whistle.db.dispose()
    return time.perf_counter() - started


class Sampler:
    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.peak = 0
        self.samples: list[int] = []

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                rss = self.process.memory_info().rss
            except psutil.NoSuchProcess:
                return
            self.samples.append(rss)
            self.peak = max(self.peak, rss)
            await asyncio.sleep(0.05)


async def measure(kind: str, tickets: int, seconds: float, residents: int) -> None:
    api = await fake_telegram()
    arrivals = Arrivals(api)
    try:
        async with temp_database(kind) as url:
            filled = await fill(url, tickets)
            with tempfile.TemporaryDirectory(prefix="whistle-bench-") as folder:
                folder = Path(folder)
                config = write_toml(raw_config(url, api, folder, schedule=True), folder / "config.toml")
                bot = BotProcess(config, folder / "bot.log", api)
                await bot.start()
                idle_rss = psutil.Process(bot.pid).memory_info().rss
                stop = asyncio.Event()
                sampler = Sampler(bot.pid)
                sampling = asyncio.create_task(sampler.run(stop))
                points = list(grid_points().values())
                people = [Resident(api, arrivals, 400_000 + i, timeout=60) for i in range(residents)]
                filed = 0
                ends = time.perf_counter() + seconds

                async def resident(i: int, r: Resident) -> None:
                    nonlocal filed
                    n = 0
                    while time.perf_counter() < ends:
                        try:
                            await r.report(points[(i + n) % len(points)], f"Memory test report {n} by {r.id}")
                            filed += 1
                        except StepLost:
                            pass
                        n += 1
                started = time.perf_counter()
                await asyncio.gather(*(resident(i, r) for i, r in enumerate(people)))
                elapsed = time.perf_counter() - started
                stop.set()
                await sampling
                end_rss = sampler.samples[-1] if sampler.samples else 0
                await bot.stop()
                mb = 1024 * 1024
                print(f"{kind:8}: {tickets:,} tickets (filled in {filled:.0f} s); bot RSS after start "
                      f"{idle_rss / mb:6.1f} MB, peak {sampler.peak / mb:6.1f} MB, at the end "
                      f"{end_rss / mb:6.1f} MB while {residents} residents filed {filed} reports in "
                      f"{elapsed:.0f} s (target peak < 200 MB); {load_now()}", flush=True)
                log = (folder / "bot.log").read_text(errors="replace").splitlines()
                problems = [line for line in log if " ERROR " in line or " WARNING " in line
                            or '"level": "error"' in line or '"level": "warning"' in line]
                print(f"          bot log: {len(log)} lines, {len(problems)} warnings or errors")
                for line in (problems or (log[-25:] if not filed else []))[:25]:
                    print("            " + line[:220])
    finally:
        await api.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--residents", type=int, default=20)
    args = parser.parse_args()
    header("sender limits lifted far above Telegram's; scheduler on")
    for kind in args.db:
        await measure(kind, args.tickets, args.seconds, args.residents)


if __name__ == "__main__":
    asyncio.run(main())
