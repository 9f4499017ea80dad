"""Button presses: the core answers with an optional alert; everything else is queued."""
from __future__ import annotations

import logging

from telegram import Update
from telegram.error import BadRequest
from telegram.ext import ContextTypes

from .translate import callback_input

log = logging.getLogger(__name__)


async def on_callback(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    whistle = context.bot_data["whistle"]
    query = update.callback_query
    inp = callback_input(update, context.bot.id)
    if inp is None:
        reply_text, show_alert = whistle.stale_text(query.from_user.language_code), False
    else:
        try:
            reply = await whistle.handle(inp)
            reply_text, show_alert = reply.alert, reply.show_alert
        except Exception:  # nothing was committed; the person still gets an answer
            log.exception("button %r from %s failed", query.data, query.from_user.id)
            reply_text = whistle.failure_text(query.from_user.language_code)
            show_alert = True
    try:
        await query.answer(reply_text, show_alert=show_alert)
    except BadRequest:
        pass  # the query expired while we worked; the outcome is already in the chat
