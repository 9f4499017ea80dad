"""Sender at Telegram's limits: a burst of ``--messages`` outbox rows to ``--chats``
chats (a fifth of the messages to groups, the rest to private chats), written in one
transaction, delivered by the real Whistle sender to a fake Bot API that enforces
Telegram's limits (30/s overall, 20/min per group, 1/s per private chat: 429 with
retry_after beyond them). The sender is configured with the same limits.

Figures: the delivered rate as a share of the fastest schedule the limits allow
(target >= 95 %), the 429s the fake answered (target 0), and — second run — the same
with injected 502s and timeouts (the fake carries out the request, then answers after
the client gave up): lost messages (target 0), and how many were recorded uncertain.

Every row has a unique text, so the fake's chats are reconciled exactly with the outbox.

Run: .venv/bin/python bench/sender_limit.py [--db sqlite] [--messages 10000] [--chats 1000]
                                            [--fault-messages 2000] [--fault-every 20]"""
import argparse
import asyncio
import math
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict, deque
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    Arrivals, body, fake_telegram, header, load_now, make_config, raw_config, temp_database,
)
from sqlalchemy import func, select  # noqa: E402

from bot.app import Whistle  # noqa: E402
from models.messages.outbox import OutMessage, Target, enqueue  # noqa: E402
from models.store.tables import Outbox  # noqa: E402

PER_SECOND, GROUP_PER_MINUTE, PRIVATE_PER_SECOND = 30, 20, 1
PRIVATE_BASE, GROUP_BASE = 500_000, -1_000_000_000_000


def plan(messages: int, chats: int, rng: random.Random) -> list[tuple[int, str]]:
    """(chat id, unique text) in a random order: a fifth to groups, the rest private."""
    groups = max(1, chats // 10)
    privates = max(1, chats - groups)
    to_groups = messages // 5
    rows = [(GROUP_BASE - (i % groups), f"group message {i}") for i in range(to_groups)]
    rows += [(PRIVATE_BASE + (i % privates), f"private message {i}") for i in range(messages - to_groups)]
    rng.shuffle(rows)
    return rows


def fastest_span(rows: list[tuple[int, str]]) -> float:
    """Seconds from the first to the last delivery on the fastest schedule the limits allow."""
    per_chat = Counter(chat for chat, _ in rows)
    span = math.ceil(len(rows) / PER_SECOND) - 1
    for chat, count in per_chat.items():
        if chat < 0:
            span = max(span, (count - 1) // GROUP_PER_MINUTE * 60)
        else:
            span = max(span, (count - 1) / PRIVATE_PER_SECOND)
    return float(span)


def violations(stamps: list[tuple[float, int]]) -> int:
    """Deliveries beyond the limits, counted from the arrival times at the fake (a check
    that does not rely on the fake's own 429 logic)."""
    over = 0
    overall: deque[float] = deque()
    chats: dict[int, deque[float]] = defaultdict(deque)
    slack = 0.002  # timer granularity of this process
    for at, chat in sorted(stamps):
        while overall and overall[0] <= at - 1.0 + slack:
            overall.popleft()
        window, limit = (60.0, GROUP_PER_MINUTE) if chat < 0 else (1 / PRIVATE_PER_SECOND, 1)
        times = chats[chat]
        while times and times[0] <= at - window + slack:
            times.popleft()
        if len(overall) >= PER_SECOND or len(times) >= limit:
            over += 1
        overall.append(at)
        times.append(at)
    return over


async def run(kind: str, messages: int, chats: int, fault_every: int, seed: int) -> None:
    api = await fake_telegram()
    arrivals = Arrivals(api)
    limits_in_fake = hasattr(api, "enforce_limits")
    if limits_in_fake:
        api.enforce_limits(per_second=PER_SECOND, group_per_minute=GROUP_PER_MINUTE,
                           private_per_second=PRIVATE_PER_SECOND, private_burst=1)
    rng = random.Random(seed)
    rows = plan(messages, chats, rng)
    for chat in {chat for chat, _ in rows}:
        if chat < 0:
            api.add_group(chat, f"group {chat}")
        else:
            api.add_user(chat, f"user {chat}")
    stamps: list[tuple[float, int]] = []
    arrivals.watchers.append(lambda message, at: stamps.append((at, message["chat"]["id"]))
                             if body(message).startswith(("group message", "private message")) else None)
    injected = Counter()
    try:
        async with temp_database(kind) as url:
            with tempfile.TemporaryDirectory(prefix="whistle-bench-") as folder:
                raw = raw_config(url, api, Path(folder), telegram_limits=True)
                raw["sender"].update(per_second=PER_SECOND, private_per_second=PRIVATE_PER_SECOND,
                                     private_burst=1, group_per_minute=GROUP_PER_MINUTE,
                                     group_burst=GROUP_PER_MINUTE)
                config = make_config(raw, Path(folder))
                whistle = Whistle(config)
                await whistle.start()
                try:
                    now = datetime.now(timezone.utc)

                    async def write(session):
                        for chat, text in rows:
                            enqueue(session, Target("telegram", str(chat)), OutMessage(text=text), now)
                    started = time.perf_counter()
                    await whistle.db.run(write)  # the commit wakes the sender
                    written = time.perf_counter() - started

                    async def faults() -> None:
                        """Every ``fault_every`` deliveries: a 502, or a timeout after the send."""
                        seen = 0
                        while True:
                            await asyncio.sleep(0.05)
                            if len(stamps) >= seen + fault_every:
                                seen = len(stamps)
                                if rng.random() < 0.5:
                                    api.fail_next("sendMessage", 502, "Bad Gateway")
                                    injected["502"] += 1
                                else:
                                    api.delay_next("sendMessage", 8.0)  # PTB gives up after 5 s
                                    injected["timeout"] += 1
                    injector = asyncio.create_task(faults()) if fault_every else None

                    async def pending(session):
                        return await session.scalar(select(func.count()).select_from(Outbox).where(
                            Outbox.state == "pending"))
                    while await whistle.db.run(pending):
                        await asyncio.sleep(0.5)
                    if injector is not None:
                        injector.cancel()
                    states = await whistle.db.run(lambda s: s.execute(
                        select(Outbox.state, func.count()).group_by(Outbox.state)))
                    states = dict(list(states))
                finally:
                    await whistle.stop()
        delivered = Counter()
        for chat, _ in Counter(chat for chat, _ in rows).items():
            for message in api.bot_messages(chat):
                delivered[body(message)] += 1
        lost = sum(1 for _, text in rows if delivered[text] == 0)
        twice = sum(count - 1 for count in delivered.values() if count > 1)
        span = max(at for at, _ in stamps) - min(at for at, _ in stamps) if stamps else float("nan")
        ideal = fastest_span(rows)
        rate = len(stamps) / span if span else float("nan")
        label = "with faults" if fault_every else "clean"
        print(f"{kind} ({label}): {messages} messages to {chats} chats (written in {written:.1f} s); "
              f"delivered {len(stamps)} in {span:.1f} s = {rate:.2f}/s; fastest allowed {ideal:.0f} s "
              f"→ {ideal / span * 100:.1f} % of the allowed rate (target >= 95 %)")
        print(f"    429s answered by the fake: "
              f"{getattr(api, 'rate_limited', 'n/a (this FakeBotApi has no enforce_limits)')}"
              f" (target 0); deliveries beyond the limits by arrival times: {violations(stamps)}")
        if fault_every:
            print(f"    injected {injected['502']} × 502 and {injected['timeout']} × timeout (answer after 8 s)")
        print(f"    outbox states {states}; lost {lost} (target 0), delivered twice {twice}; {load_now()}",
              flush=True)
    finally:
        await api.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--chats", type=int, default=1000)
    parser.add_argument("--fault-messages", type=int, default=2000,
                        help="messages in the run with injected faults (0: skip it)")
    parser.add_argument("--fault-every", type=int, default=20, help="a fault after every N deliveries")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    header(f"limits enforced by the fake and configured in the sender: {PER_SECOND}/s overall, "
           f"{GROUP_PER_MINUTE}/min per group, {PRIVATE_PER_SECOND}/s per private chat")
    if args.messages:
        await run(args.db, args.messages, args.chats, 0, args.seed)
    if args.fault_messages:
        await run(args.db, args.fault_messages, args.chats, args.fault_every, args.seed + 1)


if __name__ == "__main__":
    asyncio.run(main())
