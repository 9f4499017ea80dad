"""The WeCom channel of one process: API client, callback crypto, the sender's
channels (app messages and group robots), and the callback's background work."""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import delete, select

from handlers.wecom.cards import CHANNEL, UNIT_PREFIX
from models.store.tables import ChatBinding, Identity, Role, Unit
from models.tickets.cards import REPORT_BUTTON

from .api import WecomApi
from .channel import WecomChannel
from .crypto import MsgCrypt
from .robot import RobotChannel

if TYPE_CHECKING:
    from bot.app import Whistle

log = logging.getLogger(__name__)
MY_BUTTON = "📋 My reports"


class WecomService:
    def __init__(self, whistle: "Whistle", random_bytes: Callable[[int], bytes] | None = None):
        cfg = whistle.config.wecom
        self.whistle, self.config = whistle, cfg
        self.api = WecomApi(cfg.api_base_url, cfg.corp_id, cfg.secret, cfg.agent_id)
        self.crypt = MsgCrypt(cfg.token, cfg.encoding_aes_key, cfg.corp_id,
                              random_bytes or os.urandom)
        i18n = whistle.i18n
        self.channel = WecomChannel(self.api, whistle.db, whistle.media, i18n, whistle.core.now,
                                    cfg.member_per_minute,
                                    i18n.labels(REPORT_BUTTON) | i18n.labels(MY_BUTTON))
        self.robot = RobotChannel(cfg.digest_webhooks)
        self._tasks: set[asyncio.Task] = set()
        self._locks: dict[str, asyncio.Lock] = {}  # one member's messages, one at a time
        self._queued: dict[str, int] = {}  # how many of a member's messages hold or await it

    async def start(self) -> None:
        await self.whistle.db.run(lambda s: sync_unit_bindings(s))

    @property
    def channels(self) -> list:
        return [self.channel, self.robot]

    async def drain(self) -> None:
        """Let the messages being handled finish (the web server no longer takes new ones)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)

    async def close(self) -> None:
        await self.api.close()
        await self.robot.close()

    def process_later(self, fields: dict[str, str]) -> None:
        """Handle a verified message in the background (WeCom wants its answer within
        5 s); one member's messages are handled in the order they came."""
        task = asyncio.create_task(self._process(fields))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process(self, fields: dict[str, str]) -> None:
        from handlers.wecom.messages import handle_message
        userid = fields.get("FromUserName", "")
        lock = self._locks.setdefault(userid, asyncio.Lock())
        self._queued[userid] = self._queued.get(userid, 0) + 1
        try:
            async with lock:
                await handle_message(self.whistle, fields)
        except Exception:
            log.exception("WeCom message %s failed", fields.get("MsgId") or fields.get("Event"))
        finally:
            self._queued[userid] -= 1
            if not self._queued[userid]:  # nobody else waits on this member's lock
                del self._queued[userid], self._locks[userid]

    def now(self) -> datetime:
        return self.whistle.core.now()


async def sync_unit_bindings(session) -> int:
    """Every unit with staff on WeCom gets the binding ``wecom`` ↔ ``unit:CODE`` (its
    members, see the channel); units without any lose it. Returns the number bound."""
    codes = set(await session.scalars(
        select(Unit.code).join(Role, Role.unit_id == Unit.id)
        .join(Identity, Identity.person_id == Role.person_id)
        .where(Identity.channel == CHANNEL)))
    units = {u.code: u for u in await session.scalars(select(Unit).where(Unit.code.in_(codes)))}
    bound = {b.chat_id: b for b in await session.scalars(select(ChatBinding).where(
        ChatBinding.channel == CHANNEL, ChatBinding.chat_id.like(UNIT_PREFIX + "%")))}
    for code, unit in units.items():
        chat_id = UNIT_PREFIX + code
        if chat_id not in bound:
            session.add(ChatBinding(unit_id=unit.id, channel=CHANNEL, chat_id=chat_id))
        elif bound[chat_id].unit_id != unit.id:
            bound[chat_id].unit_id = unit.id
    stale = [b.id for chat_id, b in bound.items() if chat_id[len(UNIT_PREFIX):] not in units]
    if stale:
        await session.execute(delete(ChatBinding).where(ChatBinding.id.in_(stale)))
    return len(units)
