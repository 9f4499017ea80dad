"""Every incoming message goes the same way: translate, then let the core decide."""
from __future__ import annotations

from telegram import Update
from telegram.ext import ContextTypes

from .translate import message_input


async def on_message(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    whistle = context.bot_data["whistle"]
    inp = await message_input(update, context, whistle.config.intake.max_photo_bytes)
    if inp is not None:
        await whistle.handle(inp)
