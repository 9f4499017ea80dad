"""Intake throughput: complete report dialogues per second through the real Whistle
service (its python-telegram-bot Application, long polling) against the fake Bot API
on loopback, many simulated residents at once; then, in the same run and on the same
fake server, a bare python-telegram-bot echo bot (one MessageHandler that replies)
driven by the same residents. Whistle's updates/s over the echo bot's is the figure
(target >= 0.5). Each line also gives the CPU per update over its measured part (the
whole process's: fake server and residents included).

Everything shares one process and one event loop (fake server, residents, bot), so
the fake's own cost is in both figures. The sender's limits are set far above
Telegram's, as in the tests: Telegram's 30 messages/s would otherwise be the only
thing measured (bench/sender_limit.py measures the sender at those limits).

Run: .venv/bin/python bench/intake.py [--db sqlite postgres] [--residents 50] [--reports 4] [--echoes 20]"""
import argparse
import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    TOKEN, Arrivals, Resident, fake_telegram, grid_points, header, load_now, make_config,
    raw_config, temp_database,
)
from telegram import Update  # noqa: E402
from telegram.ext import ApplicationBuilder, ContextTypes, MessageHandler, filters  # noqa: E402

from bot.app import Whistle  # noqa: E402
from bot.telegram.http import AiohttpRequest  # noqa: E402


def settle() -> None:
    """Before each measured part: what earlier parts left (the fake server's log of every
    request, finished bots) is collected or set aside, so that the collector does not scan
    it again and again during the part (it would tax whichever part runs later)."""
    gc.collect()
    gc.freeze()


DESCRIPTION = "Rubbish piling up by the gate, report {n} from resident {who}"


async def whistle_run(kind: str, api, arrivals: Arrivals, residents: list[Resident],
                      reports: int) -> tuple[float, int, int, float]:
    """(seconds, dialogues, updates, CPU seconds) for every resident filing ``reports``
    reports; the CPU is the whole process's (fake server and residents included)."""
    points = list(grid_points().values())
    async with temp_database(kind) as url:
        with tempfile.TemporaryDirectory(prefix="whistle-bench-") as folder:
            config = make_config(raw_config(url, api, Path(folder)), Path(folder))
            whistle = Whistle(config)
            await whistle.start()
            try:
                # one report each first: connections, caches, the residents' person rows
                await asyncio.gather(*(r.report(points[i % len(points)], DESCRIPTION.format(n=0, who=r.id))
                                       for i, r in enumerate(residents)))
                before = sum(r.updates for r in residents)
                settle()
                started, cpu = time.perf_counter(), time.process_time()

                async def resident(i: int, r: Resident) -> None:
                    for n in range(1, reports + 1):
                        await r.report(points[(i + n) % len(points)], DESCRIPTION.format(n=n, who=r.id))
                await asyncio.gather(*(resident(i, r) for i, r in enumerate(residents)))
                elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
                return elapsed, len(residents) * reports, sum(r.updates for r in residents) - before, cpu
            finally:
                await whistle.stop()


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_text(update.effective_message.text)


async def echo_run(api, residents: list[Resident], messages: int, concurrent: bool,
                   transport: bool = False) -> tuple[float, int, float]:
    """(seconds, updates, CPU seconds) for every resident sending ``messages`` texts, each
    waiting for its echo. ``transport``: on Whistle's aiohttp client (bot/telegram/http.py) instead
    of PTB's httpx."""
    builder = (ApplicationBuilder().token(TOKEN).base_url(api.base_url)
               .base_file_url(api.base_file_url).concurrent_updates(concurrent))
    if transport:
        builder = builder.request(AiohttpRequest(verify=False)).get_updates_request(
            AiohttpRequest(connection_pool_size=1, read_timeout=11, verify=False))
    application = builder.build()
    application.add_handler(MessageHandler(filters.TEXT, echo))
    await application.initialize()
    await application.start()
    await application.updater.start_polling(poll_interval=0, timeout=1)
    try:
        await asyncio.gather(*(r.echo(f"warm up {r.id}") for r in residents))
        before = sum(r.updates for r in residents)
        settle()
        started, cpu = time.perf_counter(), time.process_time()

        async def resident(r: Resident) -> None:
            for n in range(messages):
                await r.echo(f"hello {n} from {r.id}")
        await asyncio.gather(*(resident(r) for r in residents))
        return (time.perf_counter() - started, sum(r.updates for r in residents) - before,
                time.process_time() - cpu)
    finally:
        await application.updater.stop()
        await application.stop()
        await application.shutdown()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument("--residents", type=int, default=50, help="simulated residents at once")
    parser.add_argument("--reports", type=int, default=4, help="reports per resident (after one warm-up)")
    parser.add_argument("--echoes", type=int, default=20, help="messages per resident to the echo bot")
    args = parser.parse_args()
    header("sender limits lifted far above Telegram's (as in tests/conftest.py), so the "
           "rate limiter is not what is measured")
    api = await fake_telegram()
    arrivals = Arrivals(api)
    try:
        next_id = 100_000
        echo_rates: dict[str, list[float]] = {}

        async def echoes(when: str) -> None:
            """Both echo variants; measured before and after Whistle, as the load may drift."""
            nonlocal next_id
            for concurrent in (False, True):
                residents = [Resident(api, arrivals, next_id + i, timeout=60) for i in range(args.residents)]
                next_id += args.residents
                elapsed, updates, cpu = await echo_run(api, residents, args.echoes, concurrent)
                name = "echo (concurrent_updates)" if concurrent else "echo (PTB defaults)"
                echo_rates.setdefault(name, []).append(updates / elapsed)
                print(f"{name:26} {when:6}: {updates} updates by {args.residents} residents in "
                      f"{elapsed:6.2f} s = {updates / elapsed:7.1f} updates/s, "
                      f"CPU {1000 * cpu / updates:.2f} ms/update; {load_now()}", flush=True)

        await echoes("before")
        results = {}
        for kind in args.db:
            residents = [Resident(api, arrivals, next_id + i, timeout=60) for i in range(args.residents)]
            next_id += args.residents
            elapsed, dialogues, updates, cpu = await whistle_run(kind, api, arrivals, residents,
                                                                 args.reports)
            results[kind] = updates / elapsed
            print(f"whistle/{kind:8}: {dialogues} dialogues ({updates} updates) by {args.residents} "
                  f"residents in {elapsed:6.2f} s = {dialogues / elapsed:6.1f} dialogues/s, "
                  f"{updates / elapsed:7.1f} updates/s, CPU {1000 * cpu / updates:.2f} ms/update; "
                  f"{load_now()}", flush=True)
        await echoes("after")
        # for information, not in the ratio: the echo bot on Whistle's own HTTP client, so
        # the figure can be read apart from the transport Whistle brings along
        residents = [Resident(api, arrivals, next_id + i, timeout=60) for i in range(args.residents)]
        elapsed, updates, _ = await echo_run(api, residents, args.echoes, False, transport=True)
        print(f"{'echo (aiohttp transport)':26} (information, not in the ratio): {updates} updates in "
              f"{elapsed:6.2f} s = {updates / elapsed:7.1f} updates/s; ratios "
              + ", ".join(f"whistle/{kind} {rate / (updates / elapsed):.2f}" for kind, rate in results.items()),
              flush=True)
        means = {name: sum(rates) / len(rates) for name, rates in echo_rates.items()}
        best_name, best = max(means.items(), key=lambda item: item[1])
        for kind, rate in results.items():
            print(f"ratio whistle/{kind} : {best_name} (mean {best:.1f}/s) = {rate / best:.2f} "
                  f"(target >= 0.5)")
    finally:
        await api.stop()


if __name__ == "__main__":
    asyncio.run(main())
