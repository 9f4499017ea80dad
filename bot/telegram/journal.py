"""The journal of updates fetched by long polling.

python-telegram-bot's updater confirms a batch to Telegram (the next ``getUpdates``
offset) as soon as it has queued it, not once it was handled: a process killed in
between lost those updates — a resident's step went unanswered. So every batch is
written to ``received_update`` before python-telegram-bot sees it, an update leaves
the journal once its handler has run (deleted with the next batch, in its transaction),
and a start hands whatever a killed process left to the application first.

An update handled before the kill and replayed is recognised by the inbox (its key is
in the transaction of its effects) and does nothing. Webhook mode needs no journal:
Telegram keeps an update until the webhook has answered it."""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import delete, select

from models.store.db import Database, among, upsert_insert
from models.store.inbox import KEEP
from models.store.tables import ReceivedUpdate

log = logging.getLogger(__name__)


class UpdateJournal:
    def __init__(self, db: Database, bot_id: int, clock: Callable[[], datetime]):
        self.db, self.bot_id, self.clock = db, bot_id, clock
        self._handled: list[int] = []  # update ids whose handlers ran, to delete
        # set when polling stops: the updater's last getUpdates (``timeout=0``) fetches an
        # update only to drop it unconfirmed, and Telegram sends it again at the next start
        self.stopping = False

    async def record(self, updates: list[dict]) -> None:
        """Write a fetched batch (and forget the updates handled since the last one).
        Raises if the database cannot take it: the batch must not be confirmed then."""
        done, self._handled = self._handled, []
        rows = [] if self.stopping else [
            {"bot_id": self.bot_id, "update_id": u["update_id"], "payload": u,
             "received_at": self.clock()} for u in updates
            if isinstance(u, dict) and isinstance(u.get("update_id"), int)]

        async def write(session) -> None:
            if rows:
                insert = upsert_insert(session.bind.dialect.name)
                await session.execute(insert(ReceivedUpdate).on_conflict_do_nothing(), rows)
            if done:
                await session.execute(delete(ReceivedUpdate).where(
                    ReceivedUpdate.bot_id == self.bot_id,
                    among(session, ReceivedUpdate.update_id, done)))
        if not rows and not done:
            return
        try:
            await self.db.run(write, urgent=True, inline=True)  # every update waits on it
        except BaseException:
            self._handled = done + self._handled  # deleted with a later batch
            raise

    def handled(self, update_id: int) -> None:
        """Its handler ran (whatever the outcome): a restart need not replay it."""
        self._handled.append(update_id)

    async def left_over(self) -> list[dict]:
        """Updates a previous process fetched and did not finish, oldest first. Rows older
        than the inbox keeps its keys are dropped, not replayed: the inbox could no longer
        tell whether they were handled (and a week-old step helps nobody)."""
        since = self.clock() - KEEP

        async def read(session) -> list[dict]:
            stale = await session.execute(delete(ReceivedUpdate).where(
                ReceivedUpdate.bot_id == self.bot_id, ReceivedUpdate.received_at < since))
            if stale.rowcount:
                log.warning("dropped %d journalled updates older than %s", stale.rowcount, KEEP)
            return list(await session.scalars(
                select(ReceivedUpdate.payload).where(ReceivedUpdate.bot_id == self.bot_id)
                .order_by(ReceivedUpdate.update_id)))
        return await self.db.run(read)

    async def flush(self) -> None:
        """At a clean stop: forget what was handled since the last batch."""
        try:
            await self.record([])
        except Exception:  # replayed at the next start, and recognised by the inbox
            log.warning("could not clear %d handled updates from the journal",
                        len(self._handled), exc_info=True)
