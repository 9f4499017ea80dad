"""Latency: from the resident's confirm press to the ticket's card arriving in the grid
chat, p50 / p99, with confirmations coming in at ``--rate`` a second (target: p99 under
100 ms on loopback).

The residents first walk their dialogues up to the confirm step (not timed); then they
press "confirm" on a fixed schedule, ``--rate`` presses a second spread over the
grids, and the fake server stamps each card's arrival (``time.perf_counter()`` in its
request handler, via FakeBotApi.listen). The real Whistle service runs in this process
against the fake on loopback, sender limits lifted as in the tests.

Run: .venv/bin/python bench/latency.py [--db sqlite postgres] [--reports 200] [--rate 10]"""
import argparse
import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    Arrivals, Resident, StepLost, body, buttons, fake_telegram, grid_points, has_button, header, load_now,
    make_config, percentile, raw_config, temp_database,
)

from bot.app import Whistle  # noqa: E402

NUMBER = re.compile(r"#(\d{8}-\d+)")


async def to_confirm(resident: Resident, point: tuple[float, float], description: str) -> dict:
    """Walk the dialogue up to the summary with the confirm button; that message."""
    msg, _ = await resident.step(resident.send("/start"), has_button("cat:"))
    await resident.step(resident.press(msg, "cat:garbage"), lambda m: True)
    msg, _ = await resident.step(resident.send(description), has_button("ph:"))
    await resident.step(resident.press(msg, "ph:done"), has_button("lc:"))
    msg, _ = await resident.step(lambda: resident.api.user_sends_location(resident.id, resident.id, *point),
                                 lambda m: "contact you" in body(m) or "mn" in buttons(m))
    if "mn" in buttons(msg):
        await resident.step(resident.press(msg, "mn"), lambda m: "contact you" in body(m))
    msg, _ = await resident.step(resident.send("🙈 Stay anonymous"), has_button("cf"))
    return msg


async def measure(kind: str, api, arrivals: Arrivals, first_id: int, reports: int, rate: float) -> list[float]:
    points = list(grid_points().values())
    cards: dict[str, float] = {}

    def card_seen(message: dict, at: float) -> None:
        if message["chat"]["id"] < 0 and (found := NUMBER.search(body(message))):
            cards.setdefault(found.group(1), at)
    arrivals.watchers.append(card_seen)
    async with temp_database(kind) as url:
        with tempfile.TemporaryDirectory(prefix="whistle-bench-") as folder:
            config = make_config(raw_config(url, api, Path(folder)), Path(folder))
            whistle = Whistle(config)
            await whistle.start()
            try:
                residents = [Resident(api, arrivals, first_id + i, timeout=60) for i in range(reports)]
                confirms = []
                for start in range(0, reports, 25):  # prepare in batches: not measured
                    confirms += await asyncio.gather(*(
                        to_confirm(r, points[(start + i) % len(points)], f"Broken lamp number {r.id} here")
                        for i, r in enumerate(residents[start:start + 25])))
                await asyncio.sleep(1)  # let the preparation's messages drain
                pressed: dict[int, float] = {}
                numbers: dict[int, str] = {}
                failed: list[int] = []

                async def confirm(i: int, resident: Resident, msg: dict) -> None:
                    def press():
                        pressed[i] = time.perf_counter()
                        api.user_presses(resident.id, resident.id, msg["message_id"], "cf")
                    try:
                        done, _ = await resident.step(press, lambda m: "ticket number is" in body(m))
                    except StepLost:
                        failed.append(i)  # no ticket number within a minute (an error, or overload)
                        return
                    numbers[i] = done["text"].split("ticket number is ")[1].split(".")[0]

                tasks = []
                began = time.perf_counter()
                for i, (resident, msg) in enumerate(zip(residents, confirms)):
                    delay = began + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(confirm(i, resident, msg)))
                await asyncio.gather(*tasks)
                deadline = time.monotonic() + 30
                while any(numbers[i] not in cards for i in numbers) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                missing = [numbers[i] for i in numbers if numbers[i] not in cards]
                if missing:
                    print(f"  {len(missing)} cards never arrived: {missing[:5]}")
                if failed:
                    print(f"  {len(failed)} confirmations got no ticket number within a minute")
                return [cards[numbers[i]] - pressed[i] for i in numbers if numbers[i] in cards]
            finally:
                await whistle.stop()
                arrivals.watchers.remove(card_seen)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument("--reports", type=int, default=200, help="confirmations measured")
    parser.add_argument("--rate", type=float, default=10, help="confirmations a second")
    args = parser.parse_args()
    header("sender limits lifted far above Telegram's (as in tests/conftest.py)")
    api = await fake_telegram()
    arrivals = Arrivals(api)
    try:
        for n, kind in enumerate(args.db):
            latencies = await measure(kind, api, arrivals, 200_000 + n * 100_000, args.reports, args.rate)
            ms = [x * 1000 for x in latencies]
            print(f"{kind:8}: {len(ms)} confirmations at {args.rate:g}/s → card in the grid chat: "
                  f"p50 {percentile(ms, 50):6.1f} ms, p90 {percentile(ms, 90):6.1f} ms, "
                  f"p99 {percentile(ms, 99):6.1f} ms, max {max(ms, default=float('nan')):6.1f} ms (target p99 < 100 ms); "
                  f"{load_now()}", flush=True)
    finally:
        await api.stop()


if __name__ == "__main__":
    asyncio.run(main())
