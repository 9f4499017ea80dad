"""Every log line written while a Telegram update is handled carries the update's ids
(``models.logs.log_context``), and each update ends with one line of its duration."""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from models.logs import log_context

log = logging.getLogger(__name__)


def bound_to_update(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap a python-telegram-bot handler so its log lines carry the update's ids."""
    @functools.wraps(handler)
    async def handle(update: Any, context: Any) -> Any:
        with log_context(**update_ids(update)):
            started = time.perf_counter()
            try:
                return await handler(update, context)
            finally:  # with the ticket the update touched, if any
                log.info("update handled in %.1f ms", (time.perf_counter() - started) * 1000)
    return handle


def update_ids(update: Any) -> dict[str, Any]:
    """The ids of a Telegram ``Update`` worth having on every log line."""
    chat = getattr(update, "effective_chat", None)
    user = getattr(update, "effective_user", None)
    return {"update_id": getattr(update, "update_id", None),
            "chat_id": chat.id if chat is not None else None,
            "user_id": user.id if user is not None else None}
