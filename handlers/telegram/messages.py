"""Every incoming message goes the same way: translate, then let the core decide."""
from __future__ import annotations

import logging

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from .translate import message_input

log = logging.getLogger(__name__)


async def on_message(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    whistle = context.bot_data["whistle"]
    inp = await message_input(update, context, whistle.config.intake.max_photo_bytes)
    if inp is None:
        return
    try:
        await whistle.handle(inp)
    except Exception:
        # nothing was committed, so nothing is queued: say so directly, and keep the step
        log.exception("message %s from %s failed", update.update_id, inp.sender.external_id)
        if inp.private:
            try:
                await update.effective_chat.send_message(
                    whistle.failure_text(update.effective_user.language_code))
            except TelegramError:
                pass
