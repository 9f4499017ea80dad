"""The sender: delivers outbox rows after their transaction committed, from any number
of processes sharing one database.

- **One process per chat at a time, in order.** A pass leases the oldest pending row of
  each chat (``lease_owner``/``lease_until``, a guarded UPDATE, so two processes cannot
  both win); the chat's next row waits until that one is settled.
- **Shared budgets.** The same transaction reserves the message in the bot's and the
  chat's sliding windows in ``rate_counter`` (``bot/budget.py``), so all processes
  together stay within Telegram's limits. No transaction is open during an HTTP call.
- **Honest outcomes.** Sent; retried with backoff (network errors, 5xx, 429 after
  ``retry_after``); failed after ``max_attempts`` or a permanent refusal (the admins are
  told once per chat per incident); or *uncertain*: the request went out but its answer
  was lost, so Telegram may have shown it — a new message is then not sent again (a
  duplicate is worse than a gap the admins can see), an edit in place is retried.
  A lease that ran out unsettled (its process died mid-send) is uncertain the same way."""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import func, or_, select, update

from bot.budget import Ledger, Window, lock_and_now, prune as prune_budgets, record
from bot.config import SenderConfig
from models import failures, limits
from models.db import Database
from models.messages import OutMessage
from models.tables import Outbox

if TYPE_CHECKING:
    from models.context import Core

log = logging.getLogger(__name__)
BATCH = 200
RUN = 10  # a chat's due messages one process takes at a time, sent one after the other
SETTLE_TRIES = 8
PRUNE_EVERY = 10.0  # seconds between deletions of counters that no longer count


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

    async def deliver(self, row: Outbox, message: OutMessage) -> None: ...

    # optional: ``cost(message)`` API calls a row may take (default 1), and
    # ``windows(chat_id)`` budgets other than Telegram's


def idempotent(message: OutMessage) -> bool:
    """Editing a remembered message in place may safely be done twice."""
    return bool(message.edit and message.ref)


@dataclass
class Claim:
    row: Outbox
    message: OutMessage
    windows: dict[str, Window]
    cost: int


@dataclass
class Outcome:
    claim: Claim
    changes: dict
    alert: str | None  # tell the admins: why it failed


class Sender:
    def __init__(self, db: Database, channels: dict[str, Channel], config: SenderConfig,
                 clock: Callable[[], datetime], *, core: "Core | None" = None,
                 owner: str | None = None):
        """``core``: lets the sender tell the admins of failures (without it, only logs)."""
        self.db, self.channels, self.config, self.clock = db, channels, config, clock
        self.core = core
        self.owner = owner or f"{socket.gethostname()[:12]}:{os.getpid()}:{secrets.token_hex(3)}"
        self.stats: Counter[str] = Counter()  # sent, retried, failed, uncertain, rate_limited
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._sends: set[asyncio.Task] = set()
        self._settling: list[tuple[Outcome, asyncio.Future]] = []
        self._settler: asyncio.Task | None = None
        self._running = False
        self._pause = 1.0  # how long the loop may sleep after the last pass
        self._pruned = 0.0
        self.idle = asyncio.Event()

    # ------------------------------------------------------------------ life

    def wake(self) -> None:
        """New rows were committed: look again (and ``idle`` no longer holds)."""
        self._wake.set()
        self.idle.clear()

    def start(self) -> None:
        self._running = True
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
        # open (their leases run out and are settled by the next start); left running,
        # they would outlive the service and its connections.
        leftovers = [t for t in (*self._sends, self._settler) if t is not None and not t.done()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            await asyncio.wait(leftovers, timeout=5)

    async def _loop(self) -> None:
        try:
            while self._running:
                self._wake.clear()
                try:
                    claims = await self.due_rows()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("sender pass failed")
                    claims = []
                for run in claims:
                    task = asyncio.create_task(self._send(run))
                    self._sends.add(task)
                    task.add_done_callback(self._sent)
                if claims:
                    continue
                if not self._sends:
                    self.idle.set()
                try:
                    async with asyncio.timeout(max(self._pause, 0.01)):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                self.idle.clear()
        finally:
            if self._sends:  # drain: a message Telegram accepted must not stay pending
                await asyncio.wait(set(self._sends), timeout=30)

    def _sent(self, task: asyncio.Task) -> None:
        self._sends.discard(task)
        self._wake.set()  # the chat's next row may go now
        if not task.cancelled() and task.exception() is not None:
            log.error("sending a run failed; its rows wait for their lease to run out",
                      exc_info=task.exception())

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
        Each chat's run is then sent in order by one task. Orphans (a head whose lease ran
        out unsettled) of new messages become uncertain instead of being sent again."""
        now = self.clock()
        self._pause = 1.0

        async def claim(session) -> list[list[Claim]]:
            wall = await lock_and_now(session)
            heads = (select(func.min(Outbox.id)).where(Outbox.state == "pending")
                     .group_by(Outbox.channel, Outbox.chat_id))
            rows = list(await session.scalars(select(Outbox).where(
                Outbox.id.in_(heads), Outbox.next_try_at <= now,
                Outbox.channel.in_(list(self.channels)),
                or_(Outbox.lease_until.is_(None), Outbox.lease_until < now),
                # our own leases are settled by our own tasks, however late (the business
                # clock may jump, as in tests); only another process's can be orphaned
                or_(Outbox.lease_owner.is_(None), Outbox.lease_owner != self.owner))
                .order_by(Outbox.id).limit(BATCH)))
            flying = list(await session.execute(select(Outbox.channel, Outbox.chat_id,
                                                       Outbox.payload).where(
                Outbox.lease_owner.is_not(None), Outbox.lease_until >= now,
                Outbox.channel.in_(list(self.channels)))))
            if not rows:
                return []
            ledger = Ledger(session, wall, self.config.margin)
            await ledger.load({key: window for channel, chat_id in
                               {(r[0], r[1]) for r in flying} | {(r.channel, r.chat_id) for r in rows}
                               for key, window in self.windows(self.channels[channel],
                                                               chat_id).items()})
            for channel, chat_id, payload in flying:  # leased, not yet answered: they hold budget
                windows = self.windows(self.channels[channel], chat_id)
                cost = self._cost(self.channels[channel], OutMessage.from_payload(payload), windows)
                for key in windows:
                    ledger.spend(key, cost)
            chosen: list[list[Claim]] = []
            for row in rows:
                channel = self.channels[row.channel]
                try:
                    message = OutMessage.from_payload(row.payload)
                    windows = self.windows(channel, row.chat_id)
                    cost = self._cost(channel, message, windows)
                except Exception as exc:  # one bad row must not stop every pass
                    await self._unsendable(session, row, exc)
                    continue
                if row.lease_owner is not None and not idempotent(message):
                    await self._orphaned(session, row)
                    continue
                short = [key for key in windows if ledger.room(key) < cost]
                if short:
                    self._pause = min(self._pause, max(ledger.free_in(k) for k in short))
                    continue
                for key in windows:
                    ledger.spend(key, cost)
                chosen.append([Claim(row, message, windows, cost)])
            await self._extend(session, ledger, chosen, now)
            if chosen:  # under the lock nobody else can lease these rows meanwhile
                await session.execute(update(Outbox).where(
                    Outbox.id.in_([c.row.id for run in chosen for c in run])).values(
                    lease_owner=self.owner,
                    lease_until=now + timedelta(seconds=self.config.lease_seconds)))
            if wall - self._pruned > PRUNE_EVERY:
                self._pruned = wall
                await prune_budgets(session, wall)
                await limits.prune(session, now)
            return chosen
        return await self.db.run(claim)

    async def _extend(self, session, ledger: Ledger, runs: list[list[Claim]],
                      now: datetime) -> None:
        """Add to each chat's run the due rows queued behind its head, while the budgets
        allow (fewer transactions per message when a chat has a backlog)."""
        if not runs:
            return
        heads = {(run[0].row.channel, run[0].row.chat_id): run for run in runs}
        behind = await session.scalars(select(Outbox).where(
            Outbox.state == "pending", Outbox.chat_id.in_([chat for _, chat in heads]),
            Outbox.id.not_in([run[0].row.id for run in runs])).order_by(Outbox.id))
        closed: set[tuple[str, str]] = set()
        for row in behind:
            key = (row.channel, row.chat_id)
            run = heads.get(key)
            if run is None or key in closed:
                continue
            try:
                message = OutMessage.from_payload(row.payload)
                windows = run[0].windows
                cost = self._cost(self.channels[row.channel], message, windows)
            except Exception:
                closed.add(key)  # it will be the head, and marked unsendable, in its turn
                continue
            if (len(run) >= RUN or row.next_try_at > now
                    or any(ledger.room(k) < cost for k in windows)):
                closed.add(key)  # order: nothing may jump the row that has to wait
                continue
            for k in windows:
                ledger.spend(k, cost)
            run.append(Claim(row, message, windows, cost))

    def _cost(self, channel: Channel, message: OutMessage, windows: dict[str, Window]) -> int:
        cost = getattr(channel, "cost", lambda m: 1)(message)
        return min(cost, *(w.limit for w in windows.values()))  # else it could never go

    async def _unsendable(self, session, row: Outbox, exc: Exception) -> None:
        log.error("outbox %s to %s cannot be sent: %r", row.id, row.chat_id, exc)
        await session.execute(update(Outbox).where(Outbox.id == row.id).values(
            state="failed", error=f"unsendable: {type(exc).__name__}: {exc}"[:1000],
            lease_owner=None, lease_until=None))
        self.stats["failed"] += 1

    async def _orphaned(self, session, row: Outbox) -> None:
        """A process leased this new message and died before recording the outcome:
        Telegram may have shown it, so it is not sent again. The rows leased behind it
        were never tried (a run is sent one by one), so they are simply released."""
        log.warning("outbox %s to %s was in flight when %s stopped: uncertain",
                    row.id, row.chat_id, row.lease_owner)
        await session.execute(update(Outbox).where(Outbox.id == row.id).values(
            state="uncertain", lease_owner=None, lease_until=None,
            error=f"in flight when sender {row.lease_owner} stopped"))
        await session.execute(update(Outbox).where(
            Outbox.channel == row.channel, Outbox.chat_id == row.chat_id,
            Outbox.lease_owner == row.lease_owner, Outbox.id != row.id).values(
            lease_owner=None, lease_until=None))
        self.stats["uncertain"] += 1

    # ------------------------------------------------------------------ sending

    async def _send(self, run: list[Claim]) -> int:
        """Send one chat's run in order; the first message that is not sent ends it (the
        rest are released for a later pass, keeping the order). Returns how many settled."""
        settled = 0
        for claim in run:
            settled += 1
            if not await self._send_one(claim):
                rest = [c.row.id for c in run[settled:]]
                if rest:
                    await self.db.run(lambda s: s.execute(update(Outbox).where(
                        Outbox.id.in_(rest), Outbox.lease_owner == self.owner).values(
                        lease_owner=None, lease_until=None)))
                break
        return settled

    async def _send_one(self, claim: Claim) -> bool:
        row, message = claim.row, claim.message
        channel = self.channels[row.channel]
        alert: str | None = None
        changes: dict
        try:
            await channel.deliver(row, message)
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
        self.stats[changes.get("state", "retried")] += 1
        await self._settle(Outcome(claim, changes, alert))
        return changes.get("state") == "sent"

    async def _settle(self, outcome: "Outcome") -> None:
        """Record an outcome. Outcomes arriving together share one transaction (a group
        commit), so a burst of answers does not queue up for the database one by one."""
        future = asyncio.get_running_loop().create_future()
        self._settling.append((outcome, future))
        if self._settler is None or self._settler.done():
            self._settler = asyncio.create_task(self._settle_batches())
        await future

    async def _settle_batches(self) -> None:
        """The outcomes are known, so recording them is retried for a while (a database
        restarting) before giving up on them."""
        while self._settling:
            batch, self._settling = self._settling, []
            for attempt in range(SETTLE_TRIES):
                try:
                    await self.db.run(lambda s: self._record(s, [o for o, _ in batch]))
                except Exception as exc:
                    if attempt == SETTLE_TRIES - 1:
                        for _, future in batch:
                            future.set_exception(exc)
                        break
                    log.warning("recording %d send outcomes failed, retrying: %r", len(batch), exc)
                    await asyncio.sleep(min(0.1 * 2 ** attempt, 5))
                else:
                    for _, future in batch:
                        future.set_result(None)
                    break

    async def _record(self, session, outcomes: list["Outcome"]) -> None:
        wall = await lock_and_now(session)  # the answers are in: count them from now
        for outcome in outcomes:
            claim, changes = outcome.claim, outcome.changes
            row = claim.row
            await record(session, claim.windows, claim.cost, wall, self.config.margin)
            result = await session.execute(update(Outbox).where(
                Outbox.id == row.id, Outbox.lease_owner == self.owner).values(
                **changes, lease_owner=None, lease_until=None))
            if result.rowcount != 1:
                log.warning("outbox %s: lease lost before its outcome (%s) was recorded",
                            row.id, changes.get("state", "retry"))
                continue
            if outcome.alert is not None and self.core is not None:
                if await failures.delivery_failed(session, self.core, row.channel, row.chat_id,
                                                  outcome.alert):
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
