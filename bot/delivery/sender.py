"""The sender: delivers outbox rows after their transaction committed, from any number
of processes sharing one database.

- **One process per chat at a time, in order.** A pass leases the oldest pending rows of
  each chat (``lease_owner``/``lease_until``) while it holds the budget lock, so two
  processes cannot both take them; the chat's next rows wait until those are settled.
- **Shared budgets.** The same transaction reserves the message in the bot's and the
  chat's sliding windows in ``rate_counter`` (``bot/delivery/budget.py``), so all processes
  together stay within Telegram's limits. No transaction is open during an HTTP call.
- **Honest outcomes.** Sent; retried with backoff (network errors, 5xx, 429 after
  ``retry_after``); failed after ``max_attempts`` or a permanent refusal (the admins are
  told once per chat per incident); or *uncertain*: the request went out but its answer
  was lost, so Telegram may have shown it — a new message is then not sent again (a
  duplicate is worse than a gap the admins can see), an edit in place is retried.
- **After a crash.** A lease that ran out unsettled means its process died mid-send,
  most likely before the request left (a pass leases many rows at once). The message is
  sent again rather than lost, and a new one is marked with its ``doubt`` (counted with
  the uncertain ones: it may show twice).
- **Few transactions.** A pass reads the oldest pending rows once and leases whole runs;
  outcomes arriving together are recorded in one transaction of a few statements."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import bindparam, select, update

from bot.config import SenderConfig
from models.messages.outbox import NewerPayload, OutMessage
from models.org import failures, limits
from models.residents.privacy import FORGOTTEN, forgotten_chats, looks_forgotten
from models.store.db import Database, among, upsert_insert
from models.store.tables import MessageRef, Outbox

from .budget import Ledger, Window, lock_and_now, record
from .budget import prune as prune_budgets

if TYPE_CHECKING:
    from models.context import Core

log = logging.getLogger(__name__)
BATCH = 200  # chats one pass may lease (fewer when sends are in flight: ``concurrency``)
PAGE = 250  # pending rows one pass reads at a time, oldest first …
WINDOW = 2000  # … and at most
RUN = 10  # a chat's due messages one process takes at a time, sent one after the other
SETTLE_TRIES = 8
QUICK_LINE = 2  # transactions waiting (SQLite) before a pass waits its turn
PRUNE_EVERY = 10.0  # seconds between deletions of counters that no longer count
# A message whose budget frees within LEAD seconds is leased now and sent the moment it
# frees: the pass, not the budget, would otherwise decide how soon it leaves (each pass
# costs milliseconds (tens on a long SQLite queue), and at Telegram's limits a pass runs
# for every few messages).
LEAD = 0.25


class Permanent(Exception):
    """The channel refused the message for good (bad request, blocked by the user).
    ``alert``: the admins should hear of it (not for a resident who blocked the bot)."""

    def __init__(self, reason: str, alert: bool = True):
        super().__init__(reason)
        self.alert = alert


class Retry(Exception):
    """Try again later (rate limited, network trouble); ``after`` seconds if the channel
    said. ``uncertain``: the request was sent and its answer lost — it may have arrived."""

    def __init__(self, reason: str, after: float | None = None, uncertain: bool = False):
        super().__init__(reason)
        self.after, self.uncertain = after, uncertain


class Channel(Protocol):
    name: str

    def is_group(self, chat_id: str) -> bool: ...

    async def deliver(self, row: Outbox, message: OutMessage) -> "Posted | None": ...

    # optional: ``cost(message)`` API calls a row may take (default 1), and
    # ``windows(chat_id)`` budgets other than Telegram's


def _bot_wide(key: str) -> bool:
    """The budget of the whole bot on a channel (``telegram:*``), not of one chat."""
    return key.endswith(":*")


def idempotent(message: OutMessage) -> bool:
    """Editing a remembered message in place may safely be done twice."""
    return bool(message.edit and message.ref)


@dataclass
class Claim:
    row: Outbox
    message: OutMessage
    windows: dict[str, Window]
    cost: int
    not_before: float | None = None  # time.monotonic() at which its budget has room


@dataclass
class Plan:
    """What one pass may lease, read from the oldest pending rows: per chat, its head and
    the due rows behind it (``runs``, oldest chat first), and the rows others (or this
    process) are delivering now (``flying``, they hold budget). ``more``: rows were left
    behind a chat that is busy, so a finished send should look again."""

    runs: list[list[int]]
    flying: list[int]
    more: bool

    @classmethod
    def of(cls, queue, now: datetime, owner: str, mine: Collection[int] = ()) -> "Plan":
        """``mine``: the rows this process is sending right now. Its other leases are left
        from a send that never got its outcome recorded (a database outage, a stop): they
        are orphans at once, like another process's lease that ran out."""
        runs: dict[tuple[str, str], list[int]] = {}
        closed: dict[tuple[str, str], bool] = {}  # nothing more this pass; True: look again soon
        flying: list[int] = []
        more = False
        for row_id, channel, chat_id, next_try_at, lease_owner, lease_until in queue:
            key = (channel, chat_id)
            # our own sends are settled by our own tasks, however late (the business clock
            # may jump, as in tests); only another process's lease can run out
            if row_id in mine or (lease_owner is not None and lease_owner != owner
                                  and (lease_until is None or lease_until >= now)):
                flying.append(row_id)
                runs.pop(key, None)  # out of order if it had a run: leave it to its sender
                closed[key] = True  # what is behind goes when this send is done
            elif key in closed:
                more = more or closed[key]
            elif key not in runs:  # the chat's head; with an expired lease, its sender died
                if len(runs) >= BATCH:
                    closed[key] = more = True
                elif next_try_at > now:
                    closed[key] = False  # not due yet: the loop's timer looks again
                else:
                    runs[key] = [row_id]
            elif len(runs[key]) >= RUN:
                closed[key] = more = True
            elif next_try_at > now:
                closed[key] = False
            else:
                runs[key].append(row_id)
        return cls(list(runs.values()), flying, more)


@dataclass
class Posted:
    """A channel's answer to a new message that shows ``ref`` (a ticket's card): the
    sender remembers its id with the outcome, so later edits go to it."""

    ref: str
    message_id: str


async def keep_rest(db: Database, row: Outbox, changes: dict) -> None:
    """A row a channel sends as several messages (photos, a long text's parts) failed
    after some of them went: the row keeps only what is left (``changes`` to its
    payload), so its retry goes on where it stopped and shows nothing twice."""
    payload = {**row.payload, **changes}
    try:
        await db.run(lambda s: s.execute(update(Outbox).where(Outbox.id == row.id)
                                         .values(payload=payload)))
    except Exception:  # the send's own failure is what the sender must hear
        log.exception("outbox %s: could not keep what is left to send", row.id)
        return
    row.payload = payload


@dataclass
class Outcome:
    claim: Claim
    changes: dict
    alert: str | None  # tell the admins: why it failed
    posted: Posted | None = None


# settling one row: every column an outcome may change (executed for many rows at once)
SETTLE = (update(Outbox.__table__).where(Outbox.__table__.c.id == bindparam("row_id"))
          .values(state=bindparam("state"), attempts=bindparam("attempts"),
                  error=bindparam("error"), next_try_at=bindparam("next_try_at"),
                  sent_at=bindparam("sent_at"), lease_owner=None, lease_until=None))


# a settled row's chat renamed (``OutMessage.then_rename``)
RENAME = (update(Outbox.__table__).where(Outbox.__table__.c.id == bindparam("row_id"))
          .values(chat_id=bindparam("chat")))


def _settled(outcome: Outcome, forgotten: bool = False) -> dict:
    """The row's columns after ``outcome``. ``forgotten``: the resident used /forget
    meanwhile, so a message that was to be tried again is dropped instead."""
    row = outcome.claim.row
    values = {"state": row.state, "attempts": row.attempts, "error": row.error,
              "next_try_at": row.next_try_at, "sent_at": row.sent_at} | outcome.changes
    if forgotten and values["state"] == "pending":
        values |= {"state": "failed", "error": FORGOTTEN}
    return {"row_id": row.id, **values}


async def _give_up(session, row: Outbox, error: str) -> None:
    """The row will not be sent: failed, with why, and no longer leased."""
    await session.execute(update(Outbox).where(Outbox.id == row.id).values(
        state="failed", error=error, lease_owner=None, lease_until=None))


async def remember(session, posted: dict[tuple[str, str, str], str], now: datetime) -> None:
    """Which message shows each ref now: one statement for the batch's rows (in key order,
    so two processes upserting the same refs take their locks in one order)."""
    await session.execute(_remember_statement(session.bind.dialect.name), [
        {"ref_channel": channel, "ref_chat": chat_id, "ref_ref": ref, "ref_message": message_id,
         "ref_created": now} for (channel, chat_id, ref), message_id in sorted(posted.items())])


@functools.cache
def _remember_statement(dialect: str):
    """The upsert of one ref, built once per dialect and run for a batch's rows: a VALUES
    list of varying length would be compiled (and, on PostgreSQL, prepared) per batch."""
    table = MessageRef.__table__
    statement = upsert_insert(dialect)(table).values(
        channel=bindparam("ref_channel"), chat_id=bindparam("ref_chat"), ref=bindparam("ref_ref"),
        message_id=bindparam("ref_message"), created_at=bindparam("ref_created"))
    return statement.on_conflict_do_update(
        index_elements=["ref", "channel", "chat_id"],
        set_={"message_id": statement.excluded.message_id,
              "created_at": statement.excluded.created_at})


class Sender:
    def __init__(self, db: Database, channels: dict[str, Channel], config: SenderConfig,
                 clock: Callable[[], datetime], *, core: "Core | None" = None,
                 owner: str | None = None):
        """``core``: lets the sender tell the admins of failures (without it, only logs)."""
        self.db, self.channels, self.config, self.clock = db, channels, config, clock
        self.core = core
        self.owner = owner or f"{socket.gethostname()[:12]}:{os.getpid()}:{secrets.token_hex(3)}"
        self.stats: Counter[str] = Counter()  # sent, retried, failed, uncertain, rate_limited, led
        self._newer: set[frozenset[str]] = set()  # unknown payload fields warned about
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._sends: set[asyncio.Task] = set()
        # outbox rows this process is sending now, with the budgets each holds (its windows
        # and cost): a pass counts them without reading their payloads again
        self._mine: dict[int, tuple[dict[str, Window], int]] = {}
        self._leading = 0  # runs waiting for their budget to free (``LEAD``)
        self._settling: list[tuple[Outcome, asyncio.Future]] = []
        self._settler: asyncio.Task | None = None
        self._running = False
        self._pause = 1.0  # how long the loop may sleep after the last pass
        self._more = False  # the last pass left rows behind a send in flight
        self._waiting = False  # the loop sleeps until woken (or its pause is over)
        self._pruned = 0.0
        self.idle = asyncio.Event()
        # progress, for /healthz: when the last pass completed, since when a pass has been
        # tried without one completing (it fails, or hangs: None when the last completed),
        # and when each message now being sent by this process started
        self.passed_at: datetime | None = None
        self.no_pass_since: datetime | None = None
        self._attempts: dict[int, datetime] = {}

    # ------------------------------------------------------------------ life

    def wake(self) -> None:
        """New rows were committed: look again (and ``idle`` no longer holds)."""
        self._wake.set()
        self.idle.clear()

    def start(self) -> None:
        self._running = True
        self.passed_at = self.clock()
        self._task = asyncio.create_task(self._loop(), name="whistle-sender")

    async def stop(self) -> None:
        """Stop after the sends in flight; a wake-up racing with the stop cannot undo it."""
        self._running = False
        self._wake.set()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=10)
            if not self._task.done():
                self._task.cancel()
                await asyncio.wait([self._task])
            self._task = None
        # Sends still running after that are cancelled now, while the database is still
        # open; left running, they would outlive the service and its connections. The
        # outcomes already known are recorded first (the settler goes on a moment); what
        # stays unsettled is an orphan for the next start, sent again with its doubt.
        sends = [t for t in self._sends if not t.done()]
        for task in sends:
            task.cancel()
        if sends:
            await asyncio.wait(sends, timeout=5)
        if self._settler is not None and not self._settler.done():
            await asyncio.wait([self._settler], timeout=5)
            self._settler.cancel()
            await asyncio.wait([self._settler], timeout=5)
        if sends := [t for t in sends if not t.done()]:
            await asyncio.wait(sends, timeout=5)

    async def _loop(self) -> None:
        try:
            while self._running:
                self._wake.clear()
                self.no_pass_since = self.no_pass_since or self.clock()
                try:
                    claims = await self.due_rows()
                    self.no_pass_since = None
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("sender pass failed")
                    claims = []
                for run in claims:
                    task = asyncio.create_task(self._send(run))
                    self._sends.add(task)
                    task.add_done_callback(self._sent)
                # What this pass left waits for a commit, a finished send (``_more``) or
                # the budget (``_pause``): looking again at once would find the same.
                self._waiting = True
                if not self._sends and not self._wake.is_set():
                    self.idle.set()
                try:
                    async with asyncio.timeout(max(self._pause, 0.01)):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                finally:
                    self._waiting = False
                self.idle.clear()
        finally:
            if self._sends:  # drain: a message Telegram accepted must not stay pending
                await asyncio.wait(set(self._sends), timeout=30)

    def _sent(self, task: asyncio.Task) -> None:
        self._sends.discard(task)
        if self._more:
            self._wake.set()  # a chat's next row may go now
        elif not self._sends and self._waiting and not self._wake.is_set():
            self.idle.set()  # the last send of the last pass is done, nothing new came
        if not task.cancelled() and task.exception() is not None:
            log.error("sending a run failed; its rows wait for their lease to run out",
                      exc_info=task.exception())

    def stalled(self, now: datetime) -> timedelta:
        """How long this process's sender has made no progress on what it may send now:
        since it began a pass that has not completed (passes fail, or one hangs), since the
        oldest send it has under way started, or since its last pass if its loop ended
        while it should run. A chat waiting for its budget, or for the time Telegram told
        it to wait, is no part of it: nothing may be sent there now."""
        since = [*self._attempts.values()]
        if self.no_pass_since is not None:
            since.append(self.no_pass_since)
        if self._running and self._task is not None and self._task.done():
            since.append(self.passed_at or now)
        return max(timedelta(0), now - min(since, default=now))

    async def flush(self) -> int:
        """One pass, waiting for its sends (tests and benchmarks); how many were settled."""
        runs = await self.due_rows()
        return sum(await asyncio.gather(*(self._send(run) for run in runs)))

    # ------------------------------------------------------------------ claiming

    def windows(self, channel: Channel, chat_id: str) -> dict[str, Window]:
        custom = getattr(channel, "windows", None)
        if custom is not None:
            return custom(chat_id)
        c = self.config
        overall = max(1, round(c.per_second))
        chat = (Window(c.group_burst, c.group_burst * 60 / c.group_per_minute)
                if channel.is_group(chat_id)
                else Window(c.private_burst, c.private_burst / c.private_per_second))
        return {f"{channel.name}:*": Window(overall, overall / c.per_second),
                f"{channel.name}:{chat_id}": chat}

    async def due_rows(self) -> list[list[Claim]]:
        """Lease the head row of each chat that is due and within every budget, with up
        to ``RUN`` due rows behind it — one short transaction, holding the budget lock.
        Each chat's run is then sent in order by one task.

        The pass reads the oldest pending rows a page at a time (through the pending
        index), until every free slot has a chat or ``WINDOW`` rows were read: a chat's head
        is older than the rest of its queue, so every chat seen is seen from its head on.
        The rows in flight (leased, by anyone) come from their own index: they hold budget
        wherever they are in the queue. A head whose lease ran out unsettled was being
        sent when its process died: it is sent again (an edit in place simply is; a new
        message is marked with its doubt, as it may show twice)."""
        now = self.clock()
        self._pause = 1.0

        async def claim(session) -> list[list[Claim]]:
            wall = await lock_and_now(session)
            mono = time.monotonic()  # the same moment on this process's own clock
            leased = (await session.execute(select(Outbox.id, Outbox.lease_owner, Outbox.lease_until)
                                            .where(Outbox.lease_owner.is_not(None),
                                                   Outbox.state == "pending"))).all()
            flying = {row_id for row_id, owner, until in leased if row_id in self._mine
                      or owner != self.owner and (until is None or until >= now)}
            queue, after, slots = [], 0, self._slots()
            while True:
                page = (await session.execute(select(
                    Outbox.id, Outbox.channel, Outbox.chat_id, Outbox.next_try_at,
                    Outbox.lease_owner, Outbox.lease_until).where(
                    Outbox.state == "pending", Outbox.id > after,
                    Outbox.channel.in_(list(self.channels)))
                    .order_by(Outbox.id).limit(PAGE))).all()
                queue += page
                plan = Plan.of(queue, now, self.owner, self._mine)
                if len(page) < PAGE or len(plan.runs) >= BATCH or len(queue) >= WINDOW:
                    break
                after = page[-1][0]
            plan.flying = sorted(flying | set(plan.flying))
            self._more = plan.more or len(page) == PAGE
            if plan.runs and slots:
                chosen = await self._choose(session, plan, wall, mono, now, slots)
            else:
                chosen = []
            if wall - self._pruned > PRUNE_EVERY:
                self._pruned = wall
                await prune_budgets(session, wall)
                await limits.prune(session, now)
            return chosen
        # Ahead of a short line, so that a card goes out at once; behind a long one (a burst
        # on SQLite), so that the pass finds what all of it queued and sends it together.
        chosen = await self.db.run(claim, urgent=self.db.queued() <= QUICK_LINE)
        self.passed_at = max(self.passed_at or now, self.clock())
        self._mine.update({c.row.id: (c.windows, c.cost) for run in chosen for c in run})
        return chosen

    def _slots(self) -> int:
        """Runs this process may start now: a bounded number of sends at once (runs
        waiting for their budget to free do not count; they hold no connection)."""
        return max(0, min(BATCH, self.config.concurrency - len(self._sends) + self._leading))

    async def _choose(self, session, plan: "Plan", wall: float, mono: float, now: datetime,
                      slots: int) -> list[list[Claim]]:
        """Within the budgets (in-flight messages hold theirs), which of the planned runs go
        now — or within ``LEAD``, when enough of the counted messages will have aged out of
        their windows: those wait for that moment after their lease. This is as safe as
        a pass at that moment: until then nothing new is counted that is not counted now
        (answers come only from messages in flight, which hold their share already, and
        other passes see these leases as in flight). Leases them."""
        # this process's own sends hold the budgets they were leased with; only another
        # process's (or an orphan's) is read
        flying = [self._mine[row_id] for row_id in plan.flying if row_id in self._mine]
        others = [row_id for row_id in plan.flying if row_id not in self._mine]
        rows = {row.id: row for row in await session.scalars(select(Outbox).where(
            among(session, Outbox.id, [*others, *(run[0] for run in plan.runs)])))}
        for row_id in others:
            row = rows.get(row_id)
            if row is None:  # settled meanwhile (an SQLite reader sees no later commit)
                continue
            try:
                windows = self.windows(self.channels[row.channel], row.chat_id)
                cost = self._cost(self.channels[row.channel], OutMessage.from_payload(row.payload),
                                  windows)
            except Exception:
                continue  # it will be marked unsendable as a head
            flying.append((windows, cost))
        ledger = Ledger(session, wall, self.config.margin)
        await ledger.load({key: window for run in plan.runs if run[0] in rows
                           for key, window in self.windows(self.channels[rows[run[0]].channel],
                                                           rows[run[0]].chat_id).items()}
                          | {key: window for windows, _ in flying for key, window in windows.items()})
        for windows, cost in flying:
            for key in windows:
                ledger.spend(key, cost)
        doubted: list[tuple[int, str]] = []
        bot_bound = False  # the bot's own budget is spent

        async def admit(row_id: int, head: bool) -> Claim | None:
            """The row's claim if it can go now (its budgets spent), else None."""
            nonlocal bot_bound
            row = rows.get(row_id)
            if row is None:
                return None
            channel = self.channels[row.channel]
            if looks_forgotten(row.chat_id) and await forgotten_chats(
                    session, [(row.channel, row.chat_id)]):
                await self._drop_forgotten(session, row)
                self._more = True  # what was queued behind it is dropped in its turn
                return None
            try:
                message = OutMessage.from_payload(row.payload)
                windows = self.windows(channel, row.chat_id)
                cost = self._cost(channel, message, windows)
            except NewerPayload as exc:  # a newer process queued it: it is theirs to send
                if exc.unknown not in self._newer:
                    self._newer.add(exc.unknown)
                    log.warning("outbox %s was queued by a newer version (%s): left to it",
                                row.id, exc)
                return None
            except Exception as exc:  # one bad row must not stop every pass
                if head:
                    await self._unsendable(session, row, exc)
                return None  # behind a run: it will be the head, and marked, in its turn
            # a row read after the plan may name another chat by now (``/forget``
            # rewrites chat ids): its budgets are loaded as it comes
            await ledger.load(windows)
            short = [key for key in windows if ledger.room(key) < cost]
            ready = {key: ledger.ready_at(key, cost) for key in short}
            at = None if None in ready.values() else max(ready.values(), default=wall)
            # Ahead only of the bot-wide budget, when it is what the message waits for:
            # ahead of a chat's own budget, the bot's share it holds would sit idle.
            waits_for_bot = at is not None and any(
                _bot_wide(k) and ready[k] >= at for k in short)
            if short and not (waits_for_bot and at - wall <= LEAD):
                bot_short = any(_bot_wide(k) for k in short)
                if head or bot_short:  # the next pass when the budget frees
                    self._pause = min(self._pause, at - wall - LEAD if waits_for_bot
                                      else max(ledger.free_in(k) for k in short))
                if not head:
                    self._more = True
                bot_bound = bot_bound or bot_short
                return None
            for key in windows:
                ledger.spend(key, cost)
            # a run goes out back to back, its outcomes recorded meanwhile: any row of it a
            # dead process had leased may have left
            if row.lease_owner is not None and not idempotent(message):
                doubted.append((row.id, f"sent again: sender {row.lease_owner} stopped mid-send"))
                log.warning("outbox %s to %s was in flight when %s stopped: sending again",
                            row.id, row.chat_id, row.lease_owner)
                self.stats["uncertain"] += 1
            if at > wall:
                self.stats["led"] += 1  # leased ahead of its budget, sent when it frees
                return Claim(row, message, windows, cost, not_before=mono + (at - wall))
            return Claim(row, message, windows, cost)

        # Every chat's head first, then the rows behind them while the budgets last: a
        # run's rows go one after the other, so the budget goes to many chats at once.
        chosen: list[list[Claim]] = []
        behind: list[list[int]] = []
        for run_ids in plan.runs:
            if len(chosen) >= slots:
                self._more = True  # a chat whose budget allows waits for a free slot
                break
            if (head := await admit(run_ids[0], head=True)) is not None:
                chosen.append([head])
                behind.append(run_ids[1:])
        if any(behind):  # the rows queued behind the heads that go
            rows.update({row.id: row for row in await session.scalars(select(Outbox).where(
                among(session, Outbox.id, [i for rest in behind for i in rest])))})
        for run, rest in zip(chosen, behind):
            for row_id in rest:  # order: nothing may jump the row that has to wait
                if (claim := await admit(row_id, head=False)) is None:
                    break
                run.append(claim)
        if bot_bound:
            self._more = False  # a finished send frees no budget: the pause looks again
        if chosen:  # under the lock nobody else can lease these rows meanwhile
            await session.execute(update(Outbox).where(
                among(session, Outbox.id, [c.row.id for run in chosen for c in run])).values(
                lease_owner=self.owner,
                lease_until=now + timedelta(seconds=self.config.lease_seconds)))
            for row_id, doubt in doubted:  # kept if this process dies too
                await session.execute(update(Outbox).where(Outbox.id == row_id).values(doubt=doubt))
        return chosen

    def _cost(self, channel: Channel, message: OutMessage, windows: dict[str, Window]) -> int:
        cost = getattr(channel, "cost", lambda m: 1)(message)
        return min(cost, *(w.limit for w in windows.values()))  # else it could never go

    async def _drop_forgotten(self, session, row: Outbox) -> None:
        """A row that still waited when its resident used /forget: a sender that had
        leased it died, and its lease ran out. There is no chat to send it to."""
        log.info("outbox %s: dropped, the resident erased their data", row.id)
        await _give_up(session, row, FORGOTTEN)

    async def _unsendable(self, session, row: Outbox, exc: Exception) -> None:
        log.error("outbox %s to %s cannot be sent: %r", row.id, row.chat_id, exc)
        await _give_up(session, row, f"unsendable: {type(exc).__name__}: {exc}"[:1000])
        self.stats["failed"] += 1

    # ------------------------------------------------------------------ sending

    async def _send(self, run: list[Claim]) -> int:
        """Send one chat's run in order, each message once the one before it was answered;
        their outcomes are recorded meanwhile, not in between (a card's map pin and the
        card go out back to back). An edit waits for those records, as it may go to a
        card posted just before it. The first message that is not sent ends the run (the
        rest are released for a later pass, keeping the order). Returns how many settled."""
        recording: list[asyncio.Future] = []
        settled = 0
        try:
            for claim in run:
                if idempotent(claim.message) and recording:
                    await asyncio.gather(*recording)
                if claim.not_before is not None:  # its budget frees in a moment
                    self._leading += 1
                    try:
                        await asyncio.sleep(max(0.0, claim.not_before - time.monotonic()))
                    finally:
                        self._leading -= 1
                settled += 1
                outcome = await self._attempt(claim)
                recording.append(self._settle(outcome))
                if outcome.changes.get("state") != "sent":
                    await self._release([c.row.id for c in run[settled:]])
                    break
        except asyncio.CancelledError:
            # a stop: the rows not yet tried go back to the queue now, not when their lease
            # runs out, and without a doubt they have not earned; the one being sent, if
            # any, stays leased (an orphan, sent again with its doubt)
            with contextlib.suppress(Exception):
                await self._release([c.row.id for c in run[settled:]])
            raise
        finally:
            try:
                if recording:
                    await asyncio.gather(*recording)
            finally:  # settled, or left leased in the database: an orphan for the next pass
                for c in run:
                    self._mine.pop(c.row.id, None)
        return settled

    async def _release(self, ids: list[int]) -> None:
        """Give back leases of ours on rows that were not tried."""
        if ids:
            await self.db.run(lambda s: s.execute(update(Outbox).where(
                among(s, Outbox.id, ids), Outbox.lease_owner == self.owner).values(
                lease_owner=None, lease_until=None)))

    async def _attempt(self, claim: Claim) -> "Outcome":
        row, message = claim.row, claim.message
        channel = self.channels[row.channel]
        alert: str | None = None
        posted: Posted | None = None
        changes: dict
        self._attempts[row.id] = self.clock()
        try:
            posted = await channel.deliver(row, message)
            changes = {"state": "sent", "sent_at": self.clock(), "error": None}
        except Retry as exc:
            changes = self._retry(row, message, exc)
            if changes.get("state") == "failed":
                alert = str(exc)
        except Permanent as exc:
            changes = {"state": "failed", "attempts": row.attempts + 1, "error": str(exc)}
            log.warning("outbox %s to %s failed: %s", row.id, row.chat_id, exc)
            alert = str(exc) if exc.alert else None
        except Exception as exc:  # a bug or a missing file: retried, then given up, never stuck
            log.exception("outbox %s to %s raised", row.id, row.chat_id)
            attempts = row.attempts + 1
            changes = {"attempts": attempts, "error": f"{type(exc).__name__}: {exc}"}
            if attempts >= self.config.max_attempts:
                changes["state"] = "failed"
                alert = changes["error"]
            else:
                changes["next_try_at"] = self.clock() + timedelta(seconds=min(2 ** attempts, 300))
        finally:
            self._attempts.pop(row.id, None)
        self.stats[changes.get("state", "retried")] += 1
        return Outcome(claim, changes, alert, posted)

    def _settle(self, outcome: "Outcome") -> asyncio.Future:
        """Record an outcome (the future is done once it is committed). Outcomes arriving
        together share one transaction (a group commit), so a burst of answers does not
        queue up for the database one by one."""
        future = asyncio.get_running_loop().create_future()
        self._settling.append((outcome, future))
        if self._settler is None or self._settler.done():
            self._settler = asyncio.create_task(self._settle_batches())
        return future

    async def _settle_batches(self) -> None:
        """The outcomes are known, so recording them is retried for a while (a database
        restarting) before giving up on them. Stopped, it lets go of every waiting send."""
        batch: list[tuple[Outcome, asyncio.Future]] = []
        try:
            await self._settle_all(batch)
        except asyncio.CancelledError:
            for _, future in [*batch, *self._settling]:
                future.cancel()
            self._settling = []
            raise

    async def _settle_all(self, batch: list) -> None:
        while self._settling:
            batch[:], self._settling = self._settling, []
            for attempt in range(SETTLE_TRIES):
                try:
                    await self.db.run(lambda s: self._record(s, [o for o, _ in batch]), urgent=True)
                except Exception as exc:
                    if attempt == SETTLE_TRIES - 1:
                        for _, future in batch:
                            if not future.done():  # a stopped send no longer waits
                                future.set_exception(exc)
                        break
                    log.warning("recording %d send outcomes failed, retrying: %r", len(batch), exc)
                    await asyncio.sleep(min(0.1 * 2 ** attempt, 5))
                else:
                    for _, future in batch:
                        if not future.done():
                            future.set_result(None)
                    break

    async def _record(self, session, outcomes: list["Outcome"]) -> None:
        """A batch of outcomes in a few statements: the budgets counted, the rows still
        leased by us settled, the messages that now show a ref remembered."""
        wall = await lock_and_now(session)  # the answers are in: count them from now
        await record(session, [(o.claim.windows, o.claim.cost) for o in outcomes], wall,
                     self.config.margin)
        ids = [o.claim.row.id for o in outcomes]
        # locked, so that a /forget renaming the chat (models/residents/privacy.py) is either seen
        # here or comes after this transaction and renames what it writes too
        found = (await session.execute(select(Outbox.id, Outbox.lease_owner, Outbox.chat_id)
                                       .where(among(session, Outbox.id, ids))
                                       .with_for_update())).all()
        ours = {row_id for row_id, owner, _ in found if owner == self.owner}
        chat_now = {row_id: chat_id for row_id, _, chat_id in found}
        # the resident used /forget: while the message was on its way, or before a dead
        # sender's lease on it ran out (then it went to the pseudonym, and was refused)
        gone = await forgotten_chats(session, {(o.claim.row.channel, chat_now[o.claim.row.id])
                                               for o in outcomes if o.claim.row.id in chat_now})
        forgotten = {o.claim.row.id for o in outcomes if o.claim.row.id in chat_now
                     and (o.claim.row.channel, chat_now[o.claim.row.id]) in gone}
        settled = [o for o in outcomes if o.claim.row.id in ours]
        for outcome in outcomes:
            if outcome.claim.row.id not in ours:
                log.warning("outbox %s: lease lost before its outcome (%s) was recorded",
                            outcome.claim.row.id, outcome.changes.get("state", "retry"))
        if settled:
            values = [_settled(o, o.claim.row.id in forgotten) for o in settled]
            await session.execute(SETTLE, values)
            renames = [{"row_id": v["row_id"], "chat": o.claim.message.then_rename}
                       for o, v in zip(settled, values)
                       if o.claim.message.then_rename and v["state"] != "pending"]
            if renames:  # a forgotten resident's goodbye went: no trace of their chat stays
                await session.execute(RENAME, renames)
        # a message that was posted shows its ref, whoever holds the lease now — unless
        # the chat was forgotten meanwhile (``/forget`` renames its rows): its id must not
        # come back with the ref, or later edits would go to the resident again
        posted = {(o.claim.row.channel, o.claim.row.chat_id, o.posted.ref): o.posted.message_id
                  for o in outcomes if o.posted is not None
                  and chat_now.get(o.claim.row.id, o.claim.row.chat_id) == o.claim.row.chat_id}
        if posted:
            await remember(session, posted, self.clock())
        for outcome in settled:
            row = outcome.claim.row
            if outcome.alert is not None and self.core is not None and row.id not in forgotten:
                # the chat as it is now (a group that migrated: its new id)
                if await failures.delivery_failed(session, self.core, row.channel,
                                                  chat_now[row.id], outcome.alert):
                    self.stats["alerts"] += 1

    def _retry(self, row: Outbox, message: OutMessage, exc: Retry) -> dict:
        if exc.uncertain and not idempotent(message):
            log.warning("outbox %s to %s is uncertain (not sent again): %s",
                        row.id, row.chat_id, exc)
            return {"state": "uncertain", "attempts": row.attempts + 1, "error": str(exc)}
        if exc.after is not None and not exc.uncertain:
            self.stats["rate_limited"] += 1
            attempts = row.attempts  # the channel said when: not a failed attempt
        else:
            attempts = row.attempts + 1
        if attempts >= self.config.max_attempts:
            log.error("giving up on outbox %s to %s: %s", row.id, row.chat_id, exc)
            return {"state": "failed", "attempts": attempts, "error": str(exc)}
        delay = exc.after if exc.after is not None else min(2 ** attempts, 300)
        return {"attempts": attempts, "error": str(exc),
                "next_try_at": self.clock() + timedelta(seconds=delay)}
