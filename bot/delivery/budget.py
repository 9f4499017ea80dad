"""Send budgets shared by every process through the ``rate_counter`` table.

Each budget is a sliding window — at most ``limit`` messages in any ``seconds``. A
message counts from the moment a process leases it (it is *in flight*: the outbox row's
lease) and, once its answer came back, by the time of that answer, kept as counts per
time slot (a hundredth of the window). Telegram received it before we read the answer,
so counting by answer time never undercounts, however late the request left: for any
``limit + 1`` messages, the last one was admitted only after the first one's answer had
aged out of the window — they reached Telegram more than ``seconds`` apart. ``margin``
widens each window a little more (clock granularity).

Admissions and records happen in short transactions that hold a lock (PostgreSQL: an
advisory lock; SQLite: the write lock of BEGIN IMMEDIATE), so two processes never
spend the same budget. Time comes from the database server on PostgreSQL (one clock for
every host) and from this machine on SQLite (one host anyway)."""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import bindparam, delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from models.store.db import among, upsert_insert
from models.store.tables import RateCounter

PREFIX = "send:"
LOCK_KEY = 0x5748_5354  # "WHST": the advisory lock of the send budgets


@dataclass(frozen=True)
class Window:
    """At most ``limit`` in any ``seconds``."""

    limit: int
    seconds: float

    @property
    def slot(self) -> float:
        return max(self.seconds / 100, 0.005)


# the advisory lock, then the shared clock read after it, in one round trip: a FROM
# subquery calling a volatile function is run first and never flattened
LOCK_AND_NOW = text("SELECT extract(epoch from clock_timestamp()) "
                    "FROM (SELECT pg_advisory_xact_lock(:key)) AS locked")


async def lock_and_now(session: AsyncSession) -> float:
    """Serialise budget holders across processes and read the shared clock (seconds)."""
    if session.bind.dialect.name == "postgresql":
        return float(await session.scalar(LOCK_AND_NOW, {"key": LOCK_KEY}))
    return time.time()


def _period(seconds: float) -> str:
    return f"{int(round(seconds * 1000)):015d}"  # milliseconds: sorts as text


class Ledger:
    """The budgets of some keys as of ``now``: loaded once, then spent in memory by the
    claiming transaction (the leases it takes are what keeps them spent)."""

    def __init__(self, session: AsyncSession, now: float, margin: float):
        self.session, self.now, self.margin = session, now, margin
        self.windows: dict[str, Window] = {}
        self.slots: dict[str, dict[float, int]] = {}  # key -> slot start -> count
        self.spent: dict[str, int] = {}  # in flight: leased and not yet answered

    def _first(self, window: Window) -> float:
        """Start of the oldest slot that still counts."""
        return math.floor((self.now - window.seconds - self.margin) / window.slot) * window.slot

    async def load(self, windows: dict[str, Window]) -> None:
        new = {PREFIX + k: w for k, w in windows.items() if PREFIX + k not in self.windows}
        if not new:
            return
        self.windows.update(new)
        oldest = min(self._first(w) for w in new.values())
        rows = await self.session.execute(select(
            RateCounter.key, RateCounter.period, RateCounter.count).where(
            among(self.session, RateCounter.key, new), RateCounter.period >= _period(oldest)))
        # the first counting slot of each key, worked out once rather than per row read
        # (the bot-wide key alone has a hundred slots in its second)
        first = {key: self._first_period(window) for key, window in new.items()}
        for key in new:
            self.slots[key] = {}
        for key, period, count in rows:
            if int(period) >= first[key]:
                start = int(period) / 1000
                self.slots[key][start] = self.slots[key].get(start, 0) + count

    def counts(self, period: str, window: Window) -> bool:
        """Whether the slot stored as ``period`` still counts now. Compared in whole
        milliseconds, as slots are stored: at today's timestamps (1.8e9 s) a float holds
        only about 2e-7 s, and comparing floats dropped some slots up to a slot early."""
        return int(period) >= self._first_period(window)

    def _first_period(self, window: Window) -> int:
        """The oldest slot that still counts, in the whole milliseconds slots are stored in."""
        return int(_period(self._first(window)))

    def room(self, key: str) -> int:
        return self._room(PREFIX + key)

    def _room(self, key: str) -> int:
        used = sum(self.slots[key].values()) + self.spent.get(key, 0)
        return self.windows[key].limit - used

    def free_in(self, key: str) -> float:
        """Seconds until the oldest counted slot of ``key`` stops counting (in-flight
        messages free their share when answered, which wakes the sender anyway)."""
        key = PREFIX + key
        window = self.windows[key]
        if not self.slots[key]:
            return window.slot
        oldest = min(self.slots[key])
        return max(0.0, oldest + window.slot + window.seconds + self.margin - self.now)

    def ready_at(self, key: str, amount: int) -> float | None:
        """The earliest time (on the ledger's clock) at which ``amount`` more fits, as the
        counted slots age out; None if only answers of messages in flight could make room
        (those wake the sender when they come)."""
        key = PREFIX + key
        window = self.windows[key]
        missing = amount - self._room(key)
        if missing <= 0:
            return self.now
        for start in sorted(self.slots[key]):
            missing -= self.slots[key][start]
            if missing <= 0:
                return start + window.slot + window.seconds + self.margin
        return None

    def spend(self, key: str, amount: int) -> None:
        key = PREFIX + key
        self.spent[key] = self.spent.get(key, 0) + amount


async def record(session: AsyncSession, spent: list[tuple[dict[str, Window], int]],
                 now: float, margin: float) -> None:
    """Count messages in their windows at ``now``, the time their answers came back: one
    upsert for a whole batch (``spent``: each message's windows and cost), its rows in key
    order so that two processes counting the same slots take their locks in one order."""
    counts: dict[tuple[str, str], list] = {}
    for windows, amount in spent:
        for key, window in windows.items():
            start = math.floor(now / window.slot) * window.slot
            expires = datetime.fromtimestamp(start + window.slot + window.seconds + margin + 1,
                                             timezone.utc)
            slot = counts.setdefault((PREFIX + key, _period(start)), [0, expires])
            slot[0] += amount
    if not counts:
        return
    await session.execute(_count_statement(session.bind.dialect.name), [
        {"slot_key": key, "slot_period": period, "amount": count, "slot_expires": expires}
        for (key, period), (count, expires) in sorted(counts.items())])


@functools.cache
def _count_statement(dialect: str):
    """The upsert of one slot, built once per dialect and run for a batch's rows: a VALUES
    list of varying length would be compiled again for every batch."""
    table = RateCounter.__table__
    insert = upsert_insert(dialect)
    statement = insert(table).values(
        key=bindparam("slot_key"), period=bindparam("slot_period"), count=bindparam("amount"),
        expires_at=bindparam("slot_expires"))
    return statement.on_conflict_do_update(
        index_elements=["key", "period"], set_={"count": table.c.count + statement.excluded.count})


async def prune(session: AsyncSession, now: float) -> None:
    """Slots that no longer count."""
    await session.execute(delete(RateCounter).where(
        RateCounter.key.startswith(PREFIX),
        RateCounter.expires_at < datetime.fromtimestamp(now, timezone.utc)))
