"""Telegram's transport: rendering outbox rows for the Bot API, the HTTP client, per-chat update order, the update journal, the webhook.
May import: python-telegram-bot, aiohttp, bot.delivery, bot.config, bot.web and the core; never bot.app at run time."""
