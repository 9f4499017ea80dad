"""Telegram adapter: python-telegram-bot handlers that translate an update and delegate to the service.
May import: python-telegram-bot and the core; nothing of bot."""
import logging

from telegram.ext import Application, CallbackQueryHandler, ContextTypes, MessageHandler, filters

from .callbacks import on_callback
from .logs import bound_to_update
from .messages import on_message

log = logging.getLogger(__name__)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    log.error("update %s failed", getattr(update, "update_id", "?"), exc_info=context.error)


def register(application: Application) -> None:
    application.add_handler(MessageHandler(filters.UpdateType.MESSAGE, bound_to_update(on_message)))
    application.add_handler(CallbackQueryHandler(bound_to_update(on_callback)))
    application.add_error_handler(on_error)
