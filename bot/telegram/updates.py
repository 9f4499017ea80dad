"""Updates of one chat are handled in order; different chats run side by side, so a
flood in one chat never holds up the others.

An update first waits for its chat's turn (a FIFO lock per chat), and only then for
one of the ``max_concurrent_updates`` slots. PTB's own order (slot first) would let
the queued-up updates of one flooding chat take every slot while they wait for each
other, and every other chat would wait behind the whole flood."""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from telegram import Update
from telegram.error import NetworkError
from telegram.ext import BaseUpdateProcessor

from .http import DEFAULT_NONE, AiohttpRequest

if TYPE_CHECKING:
    from .journal import UpdateJournal

log = logging.getLogger(__name__)


class PerChatUpdateProcessor(BaseUpdateProcessor):
    def __init__(self, max_concurrent_updates: int = 64,
                 on_done: Callable[[int], None] | None = None):
        """``on_done(update_id)``: an update's handlers ran (not when cancelled by a stop)."""
        super().__init__(max_concurrent_updates)
        self._slots = asyncio.Semaphore(max_concurrent_updates)
        self._locks: dict[object, asyncio.Lock] = {}
        self._users: dict[object, int] = {}
        self.on_done = on_done

    async def process_update(self, update: object, coroutine: Awaitable) -> None:
        key = _chat_key(update)
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        cancelled = False
        try:
            async with lock, self._slots:
                await self.do_process_update(update, coroutine)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]
            if not cancelled and self.on_done is not None and isinstance(update, Update):
                self.on_done(update.update_id)

    async def do_process_update(self, update: object, coroutine: Awaitable) -> None:
        await coroutine

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass


def _chat_key(update: object) -> object:
    if isinstance(update, Update) and update.effective_chat is not None:
        return update.effective_chat.id
    return None


class TolerantUpdatesRequest(AiohttpRequest):
    """The getUpdates connection, made tolerant of one update python-telegram-bot cannot
    parse: PTB parses a batch all at once, so one bad update (a field shape it does not
    know) would fail every getUpdates and stop the bot for good. Such an update is kept
    as its bare ``update_id`` — no handler matches it, and the offset moves past it.

    With a ``journal`` (bot/telegram/journal.py), each batch is written to the database before
    python-telegram-bot sees it; if that fails, the batch is refused as a network error,
    so it is not confirmed to Telegram and comes again with the next poll."""

    def __init__(self, *args, journal: "UpdateJournal | None" = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.journal = journal

    async def do_request(self, url: str, method: str, request_data=None, read_timeout=DEFAULT_NONE,
                         write_timeout=DEFAULT_NONE, connect_timeout=DEFAULT_NONE,
                         pool_timeout=DEFAULT_NONE) -> tuple[int, bytes]:
        code, payload = await super().do_request(
            url, method, request_data=request_data, read_timeout=read_timeout,
            write_timeout=write_timeout, connect_timeout=connect_timeout,
            pool_timeout=pool_timeout)
        if code != 200:
            return code, payload
        try:
            body = json.loads(payload)
        except ValueError:
            return code, payload  # PTB reports the bad answer itself
        updates = body.get("result") if isinstance(body, dict) else None
        if not isinstance(updates, list):
            return code, payload
        kept = [_parseable(raw) for raw in updates]
        if self.journal is not None:
            try:
                await self.journal.record([u for u in kept if u is not None])
            except Exception as exc:
                log.warning("could not journal %d updates; they come again: %r", len(kept), exc)
                raise NetworkError("the update journal could not be written") from exc
        if kept == updates:
            return code, payload
        return code, json.dumps({**body, "result": [u for u in kept if u is not None]}).encode()


def _parseable(raw: object) -> dict | None:
    """The update as is when PTB can parse it; else only its id (or None without one)."""
    try:
        Update.de_json(raw, None)
        return raw
    except Exception as exc:  # any parse failure: PTB raises many kinds
        update_id = raw.get("update_id") if isinstance(raw, dict) else None
        log.warning("update %r could not be parsed and is skipped: %s", update_id, exc)
        if isinstance(update_id, int) and not isinstance(update_id, bool):
            return {"update_id": update_id}
        return None
