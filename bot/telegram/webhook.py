"""Webhook mode: Telegram posts each update to ``[telegram] webhook_path`` on the bot's
own web server, with the secret we gave it in ``X-Telegram-Bot-Api-Secret-Token``.

A request without the right secret is refused (403) before anything is read; a body that
is not an update gets 400. An update is handled before the answer: 200 means its
transaction committed (or it was a redelivery the inbox recognised), so a process that
dies mid-update leaves Telegram to deliver it again — to this process or another, which
is why several processes can stand behind one webhook."""
from __future__ import annotations

import asyncio
import hmac
import json
import logging

from aiohttp import web
from telegram import Bot, Update
from telegram.error import RetryAfter, TelegramError

from bot.config import Config, TelegramConfig

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
SET_WEBHOOK_TRIES = 5


def routes(config: Config):
    """The face for ``_faces``: ``POST {webhook_path}``, checked against this config's secret."""
    secret = config.telegram.secret_token.encode()

    async def receive(request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not secret or not hmac.compare_digest(given, secret):
            log.warning("webhook request refused: wrong or missing secret (from %s)", request.remote)
            raise web.HTTPForbidden(text="forbidden")
        from bot.web import whistle_of
        whistle = whistle_of(request)
        application = whistle.application
        if application is None or not application.running:
            raise web.HTTPServiceUnavailable(text="not running, try again")
        update = _parse(await request.read(), application.bot)
        await application.update_processor.process_update(update, application.process_update(update))
        return web.Response(text="ok")

    def add(app: web.Application) -> None:
        from bot.web import UPDATE_BODY_BYTES, body_limit
        app.router.add_post(config.telegram.webhook_path, body_limit(UPDATE_BODY_BYTES)(receive))
    return add


def _parse(body: bytes, bot: Bot) -> Update:
    """The update in the body, or 400: a sender holding the secret but posting junk."""
    try:
        data = json.loads(body)
    except ValueError:
        raise web.HTTPBadRequest(text="body is not JSON") from None
    if (not isinstance(data, dict) or not isinstance(data.get("update_id"), int)
            or isinstance(data["update_id"], bool)):
        raise web.HTTPBadRequest(text="not a Telegram update")
    try:
        return Update.de_json(data, bot)
    except Exception as exc:  # python-telegram-bot raises whatever the bad field causes
        log.warning("webhook: malformed update %s: %s", data.get("update_id"), exc)
        raise web.HTTPBadRequest(text="malformed update") from None


async def register(bot: Bot, telegram: TelegramConfig, allowed_updates: list[str]) -> None:
    """Tell Telegram where to post. Every process does this on start: setting the same URL
    and secret again changes nothing, and pending updates are kept. A 429 (setWebhook is
    rate limited) is waited out; other failures stop the start, since without the webhook
    no update would ever arrive."""
    for attempt in range(SET_WEBHOOK_TRIES):
        try:
            await bot.set_webhook(url=telegram.webhook_url, secret_token=telegram.secret_token,
                                  allowed_updates=allowed_updates, drop_pending_updates=False)
            log.info("webhook set to %s", telegram.webhook_url)
            return
        except RetryAfter as exc:
            if attempt == SET_WEBHOOK_TRIES - 1:
                raise
            delay = exc.retry_after.total_seconds() if hasattr(exc.retry_after, "total_seconds") \
                else float(exc.retry_after)
            log.warning("setWebhook rate limited; trying again in %.0f s", delay)
            await asyncio.sleep(delay)
        except TelegramError:
            log.error("could not set the webhook to %s", telegram.webhook_url)
            raise
