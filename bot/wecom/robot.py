"""WeCom group robots (群机器人): a webhook per unit that only pushes. The daily digest
of a unit listed in ``[wecom] digest_webhooks`` goes there as markdown, split into
parts of at most 4,096 bytes. The chat id of an outbox row is the unit's code."""
from __future__ import annotations

import asyncio

import aiohttp

from bot.delivery.sender import Permanent, Retry
from models.messages.outbox import OutMessage
from models.store.tables import Outbox

from .api import CONNECT_TIMEOUT, NOT_SENT, describe
from .channel import split_bytes

ROBOT_CHANNEL = "wecom_robot"
MARKDOWN_BYTES = 4096
ROBOT_RATE_ERRORS = {45009, -1}


class RobotChannel:
    name = ROBOT_CHANNEL

    def __init__(self, webhooks: dict[str, str], timeout: float = 15):
        self.webhooks = webhooks
        self._timeout = aiohttp.ClientTimeout(total=timeout,
                                              connect=min(timeout / 2, CONNECT_TIMEOUT))
        self._session: aiohttp.ClientSession | None = None

    def is_group(self, chat_id: str) -> bool:
        return True

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def deliver(self, row: Outbox, message: OutMessage) -> None:
        url = self.webhooks.get(row.chat_id)
        if not url:
            raise Permanent(f"no WeCom robot webhook for unit {row.chat_id}")
        for part in split_bytes(message.text, MARKDOWN_BYTES):
            await self.push(url, part)

    async def push(self, url: str, markdown: str) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(url, json={"msgtype": "markdown",
                                                     "markdown": {"content": markdown}}) as r:
                if r.status != 200:  # an answer: the push was not taken
                    raise Retry(f"WeCom robot: HTTP {r.status}")
                data = await r.json(content_type=None)
        except NOT_SENT as exc:  # no connection: nothing was pushed
            raise Retry(f"WeCom robot: {describe(exc)}") from exc
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise Retry(f"WeCom robot: {describe(exc)}", uncertain=True) from exc
        code = int((data or {}).get("errcode", 0) or 0)
        if code in ROBOT_RATE_ERRORS:
            raise Retry(f"WeCom robot: {code} {data.get('errmsg')}", after=60)
        if code:
            raise Permanent(f"WeCom robot: {code} {data.get('errmsg')}")
