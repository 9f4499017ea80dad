"""The sender: delivers outbox rows after their transaction committed.

Order is kept per chat (a chat's next row waits until the one before is done),
Telegram's limits are respected with token buckets, and failures are retried
with backoff or recorded — never dropped silently."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import func, select, update

from bot.config import SenderConfig
from models.db import Database
from models.messages import OutMessage
from models.tables import Outbox

log = logging.getLogger(__name__)
BATCH = 200


class Permanent(Exception):
    """The channel refused the message for good (bad request, blocked by the user)."""


class Retry(Exception):
    """Try again later (rate limited, network trouble); ``after`` seconds if the channel said."""

    def __init__(self, reason: str, after: float | None = None, uncertain: bool = False):
        super().__init__(reason)
        self.after, self.uncertain = after, uncertain


class Channel(Protocol):
    name: str

    def is_group(self, chat_id: str) -> bool: ...

    async def deliver(self, row: Outbox, message: OutMessage) -> None: ...


@dataclass
class Bucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved up."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self):
        self.tokens = self.burst

    def wait_time(self) -> float:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self) -> None:
        self.tokens -= 1


class Limiter:
    def __init__(self, config: SenderConfig):
        self.config = config
        self.overall = Bucket(config.per_second, config.per_second)
        self.chats: dict[tuple[str, str], Bucket] = {}

    def bucket(self, channel: Channel, chat_id: str) -> Bucket:
        key = (channel.name, chat_id)
        if key not in self.chats:
            c = self.config
            self.chats[key] = (Bucket(c.group_per_minute / 60, c.group_burst)
                               if channel.is_group(chat_id)
                               else Bucket(c.private_per_second, c.private_burst))
        return self.chats[key]

    def ready(self, channel: Channel, chat_id: str) -> bool:
        return self.bucket(channel, chat_id).wait_time() == 0

    async def acquire(self, channel: Channel, chat_id: str) -> None:
        chat = self.bucket(channel, chat_id)
        while (delay := max(self.overall.wait_time(), chat.wait_time())) > 0:
            await asyncio.sleep(delay)
        self.overall.take()
        chat.take()


class Sender:
    def __init__(self, db: Database, channels: dict[str, Channel], config: SenderConfig,
                 clock: Callable[[], datetime]):
        self.db, self.channels, self.config, self.clock = db, channels, config, clock
        self.limiter = Limiter(config)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._running = False
        self.idle = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._running = True
        self._task = asyncio.create_task(self._loop(), name="whistle-sender")

    async def stop(self) -> None:
        """Stop after the send in flight; a wake-up racing with the stop cannot undo it."""
        self._running = False
        self._wake.set()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=10)
            if not self._task.done():
                self._task.cancel()
                await asyncio.wait([self._task])
            self._task = None

    async def _loop(self) -> None:
        while self._running:
            self._wake.clear()
            try:
                sent = await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sender pass failed")
                sent = 0
            if sent:
                continue
            self.idle.set()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            except TimeoutError:
                pass
            self.idle.clear()

    async def due_rows(self) -> list[Outbox]:
        """The first pending row of each chat, if it is due and the chat's rate allows a
        message now: later rows of a chat wait their turn, and a busy chat never holds up
        the others."""
        async def pick(session):
            heads = (select(func.min(Outbox.id)).where(Outbox.state == "pending")
                     .group_by(Outbox.channel, Outbox.chat_id))
            rows = await session.scalars(select(Outbox).where(
                Outbox.id.in_(heads), Outbox.next_try_at <= self.clock(),
                Outbox.channel.in_(list(self.channels))).order_by(Outbox.id).limit(BATCH))
            return [row for row in rows if self.limiter.ready(self.channels[row.channel],
                                                              row.chat_id)]
        return await self.db.run(pick)

    async def flush(self) -> int:
        """One pass over what is due; returns how many rows were settled."""
        rows = await self.due_rows()
        results = await asyncio.gather(*(self._send(row) for row in rows))
        return sum(results)

    async def _send(self, row: Outbox) -> int:
        channel = self.channels[row.channel]
        await self.limiter.acquire(channel, row.chat_id)
        message = OutMessage.from_payload(row.payload)
        changes: dict
        try:
            await channel.deliver(row, message)
            changes = {"state": "sent", "sent_at": self.clock(), "error": None}
        except Retry as exc:
            attempts = row.attempts + (0 if exc.after is not None and not exc.uncertain else 1)
            if attempts >= self.config.max_attempts:
                changes = {"state": "uncertain" if exc.uncertain else "failed",
                           "attempts": attempts, "error": str(exc)}
                log.error("giving up on outbox %s to %s: %s", row.id, row.chat_id, exc)
            else:
                delay = exc.after if exc.after is not None else min(2 ** attempts, 300)
                changes = {"attempts": attempts, "error": str(exc),
                           "next_try_at": self.clock() + timedelta(seconds=delay)}
        except Permanent as exc:
            changes = {"state": "failed", "attempts": row.attempts + 1, "error": str(exc)}
            log.warning("outbox %s to %s failed: %s", row.id, row.chat_id, exc)
        except Exception as exc:  # a bug or a missing file: retried, then given up, never stuck
            log.exception("outbox %s to %s raised", row.id, row.chat_id)
            attempts = row.attempts + 1
            changes = {"attempts": attempts, "error": f"{type(exc).__name__}: {exc}"}
            if attempts >= self.config.max_attempts:
                changes["state"] = "failed"
            else:
                changes["next_try_at"] = self.clock() + timedelta(seconds=min(2 ** attempts, 300))

        async def settle(session):
            await session.execute(update(Outbox).where(Outbox.id == row.id).values(**changes))
        await self.db.run(settle)
        return 1
