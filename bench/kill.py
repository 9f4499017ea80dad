"""Kill test: the bot runs as a real process (``python -m bot --config … run``) against
the fake Bot API in this process; simulated residents file ``--reports`` complete
reports while the bot is killed with SIGKILL at random moments (``--kills`` times) and
started again each time. At the end, with the bot drained, everything is reconciled.

Definitions (every report carries a unique description, so tickets can be matched):

- **lost report**: a resident was shown a ticket number that has no ticket, or pressed
  "confirm" (and, after ``--patience`` seconds without an answer, pressed it once more,
  as a person would) and no ticket with their description exists.
- **lost answer**: a ticket exists but its reporter never received the message with its
  number.
- **lost card**: a ticket whose card never arrived in its grid chat.
- **lost notification**: an outbox row still pending or failed after the drain, or a row
  recorded *sent* whose message the fake server never received.
- **duplicate ticket**: two tickets with the same description.
- **duplicate message**: a (chat, text) delivered more often than the outbox has rows for
  it that are sent or uncertain; only rows recorded *uncertain*, or sent again after a
  kill (their ``doubt`` is set), may be delivered twice (the target is 0 duplicates
  beyond those).
- **uncertain**: rows the sender recorded as uncertain (a read timeout); reported with
  how many of them did arrive. **sent again**: rows a killed process had leased and not
  settled, which the next sender sent again with their ``doubt``; reported with how many
  showed twice.
- **unanswered steps**: dialogue steps not answered within ``--patience`` (default 90 s, longer
  than the sender's 60-second lease that a killed process leaves on its chats), so the
  resident repeated them. Before the update journal (bot/telegram/journal.py) an update fetched by
  the killed process was lost (python-telegram-bot confirms a batch of updates to Telegram
  when it asks for the next one, before handling them); now the next start handles it.

Run: .venv/bin/python bench/kill.py [--db sqlite] [--reports 1000] [--residents 40] [--kills 8]"""
import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    Arrivals, BotProcess, Resident, StepLost, body, district_chats, fake_telegram, grid_points,
    header, load_now, raw_config, temp_database, write_toml,
)
from sqlalchemy import select  # noqa: E402

from models.store.db import Database  # noqa: E402
from models.store.tables import Outbox, Ticket, Unit  # noqa: E402

DESCRIPTION = "Kill test report {id} from resident {who}"


class Load:
    """Residents filing reports until ``total`` have been started."""

    def __init__(self, api, arrivals, residents: int, total: int, patience: float):
        self.api, self.total = api, total
        self.residents = [Resident(api, arrivals, 300_000 + i, timeout=patience, retry=True)
                          for i in range(residents)]
        self.points = list(grid_points().values())
        self.started = 0
        self.confirmed: list[str] = []  # descriptions whose confirm was pressed
        self.shown: dict[str, str] = {}  # description -> number shown to the resident
        self.stuck: list[str] = []  # descriptions whose dialogue never got an answer
        self.done = 0

    async def resident(self, r: Resident) -> None:
        while self.started < self.total:
            n = self.started
            self.started += 1
            description = DESCRIPTION.format(id=n, who=r.id)
            try:
                number, _, _ = await r.report(self.points[n % len(self.points)], description,
                                              on_confirm=lambda d=description: self.confirmed.append(d))
                self.shown[description] = number
            except StepLost:
                self.stuck.append(description)  # the next report starts over with /start
            self.done += 1

    async def run(self) -> None:
        await asyncio.gather(*(self.resident(r) for r in self.residents))


async def killer(bot: BotProcess, load: Load, kills: int, rng: random.Random, log: list) -> None:
    """Kill -9 at random moments while the load runs, then start the bot again."""
    for k in range(kills):
        # spread the kills over the expected run: after a random share of the reports
        target = (k + rng.random()) * load.total / (kills + 1)
        while load.done < target and load.done < load.total:
            await asyncio.sleep(0.05)
        if load.done >= load.total:
            return
        await asyncio.sleep(rng.random() * 2)
        await bot.kill()
        log.append((time.perf_counter(), load.done))
        if os.environ.get("BENCH_DEBUG"):
            print(f"  [{time.strftime('%X')}] killed the bot", flush=True)
        await asyncio.sleep(rng.random())
        await bot.start()


async def drained(db: Database, api, timeout: float = 180) -> int:
    """Wait until the outbox has nothing pending; returns what is still pending."""
    deadline = time.monotonic() + timeout
    while True:
        pending = await db.run(lambda s: s.scalar(
            select(Outbox.id).where(Outbox.state == "pending").limit(1)))
        if pending is None or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    await api.wait_idle(quiet=1.0, timeout=60)
    return 0 if pending is None else 1


async def reconcile(db: Database, api, load: Load) -> dict:
    async def read(session):
        tickets = list(await session.execute(select(Ticket.number, Ticket.description, Ticket.unit_id)))
        units = {u.id: u.code for u in await session.scalars(select(Unit))}
        rows = list(await session.scalars(select(Outbox)))
        return tickets, units, rows
    tickets, units, rows = await db.run(read)
    chats = district_chats()
    by_description = Counter(t.description for t in tickets)
    numbers = {t.number for t in tickets}
    figures: dict[str, int] = {}
    figures["reports started"] = load.started
    figures["confirm pressed"] = len(set(load.confirmed))
    figures["tickets"] = len(tickets)
    figures["lost reports"] = (sum(1 for d, n in load.shown.items() if n not in numbers)
                               + sum(1 for d in set(load.confirmed) if by_description[d] == 0))
    figures["duplicate tickets"] = sum(c - 1 for c in by_description.values() if c > 1)

    delivered: Counter = Counter()
    answers: Counter = Counter()
    cards: Counter = Counter()
    for chat in list(api._messages):
        for message in api.bot_messages(chat):
            text = body(message) or ("<location>" if "location" in message else "<other>")
            delivered[(str(chat), text)] += 1
            if "ticket number is" in text:
                answers[text.split("ticket number is ")[1].split(".")[0]] += 1
    grid_chat = {t.number: chats.get(units.get(t.unit_id)) for t in tickets}
    for chat in {c for c in grid_chat.values() if c is not None}:
        for message in api.bot_messages(chat):
            if (message.get("reply_markup") or {}).get("inline_keyboard"):
                text = body(message)
                for word in text.split():
                    if word.startswith("#"):
                        cards[word[1:]] += 1
                        break
    figures["lost answers"] = sum(1 for t in tickets if answers[t.number] == 0)
    figures["lost cards"] = sum(1 for t in tickets if grid_chat[t.number] is not None
                                and cards[t.number] == 0)

    sent: Counter = Counter()
    uncertain: Counter = Counter()
    doubted: Counter = Counter()  # sent again after a kill: may show twice
    states = Counter(row.state for row in rows)
    for row in rows:
        payload = row.payload or {}
        if payload.get("edit") and payload.get("ref"):
            continue  # an edit in place, not a new message
        text = payload.get("text") or ("<location>" if payload.get("location") else "<other>")
        if payload.get("photos"):
            continue
        key = (row.chat_id, text)
        if row.state == "sent":
            sent[key] += 1
            if row.doubt:
                doubted[key] += 1
        elif row.state == "uncertain":
            uncertain[key] += 1
    figures["outbox rows"] = len(rows)
    figures["outbox pending/failed at the end"] = states["pending"] + states["failed"]
    figures["outbox uncertain"] = states["uncertain"]
    figures["outbox sent again after a kill (doubt)"] = sum(1 for row in rows if row.doubt)
    lost_sent = dup = uncertain_arrived = twice = 0
    for key in set(sent) | set(uncertain) | set(delivered):
        got, s, u, d = delivered[key], sent[key], uncertain[key], doubted[key]
        if got < s:
            lost_sent += s - got
        uncertain_arrived += max(0, min(u, got - s))
        twice += max(0, min(d, got - s - u))
        if got > s + u + d:
            dup += got - s - u - d
    figures["sent rows never received"] = lost_sent
    figures["sent-again rows that showed twice"] = twice
    unsure = [(row.chat_id, (row.payload or {}).get("text") or "") for row in rows if row.state == "uncertain"]
    no_answer = [t.number for t in tickets if answers[t.number] == 0]
    no_card = [t.number for t in tickets if grid_chat[t.number] is not None and cards[t.number] == 0]
    figures["  lost answers recorded uncertain"] = sum(
        1 for n in no_answer if any(f"ticket number is {n}" in text for _, text in unsure))
    figures["  lost cards recorded uncertain"] = sum(
        1 for n in no_card if any(f"#{n}" in text for _, text in unsure))
    figures["uncertain rows that did arrive"] = uncertain_arrived
    figures["duplicate messages beyond uncertain and sent-again"] = dup
    figures["unanswered steps repeated"] = sum(r.retried for r in load.residents)
    figures["dialogues abandoned (no answer twice)"] = len(load.stuck)
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--residents", type=int, default=40)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--patience", type=float, default=90.0,
                        help="seconds a resident waits for an answer before repeating a step")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    header("sender limits lifted far above Telegram's; the bot is a separate process")
    rng = random.Random(args.seed)
    api = await fake_telegram()
    arrivals = Arrivals(api)
    try:
        async with temp_database(args.db) as url:
            with tempfile.TemporaryDirectory(prefix="whistle-bench-") as folder:
                folder = Path(folder)
                config = write_toml(raw_config(url, api, folder), folder / "config.toml")
                bot = BotProcess(config, folder / "bot.log", api)
                await bot.start()
                load = Load(api, arrivals, args.residents, args.reports, args.patience)
                kills: list = []
                started = time.perf_counter()
                await asyncio.gather(load.run(), killer(bot, load, args.kills, rng, kills))
                elapsed = time.perf_counter() - started
                db = Database(url)
                try:
                    await drained(db, api)
                    await bot.stop()
                    figures = await reconcile(db, api, load)
                finally:
                    await db.dispose()
                print(f"{args.db}: {args.reports} reports by {args.residents} residents in "
                      f"{elapsed:.0f} s, bot killed {len(kills)} times (kill -9), "
                      f"started {bot.starts} times; {load_now()}")
                for name, value in figures.items():
                    print(f"  {name:40} {value}")
                errors = [line for line in (folder / "bot.log").read_text(errors="replace").splitlines()
                          if " ERROR " in line or "Traceback" in line or '"level": "error"' in line]
                print(f"  {'ERROR lines in the bot log':40} {len(errors)}")
                for line in errors[:5]:
                    print("    " + line[:200])
    finally:
        await api.stop()


if __name__ == "__main__":
    asyncio.run(main())
