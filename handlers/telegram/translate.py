"""Telegram ``Update`` → neutral ``Input``. A photo is handed to the core with the
way to download it (``PhotoIn.fetch``), run outside any transaction and only if the
core takes it: a banned or rate-limited person's photo, or one at a step that takes
none, is never downloaded."""
from __future__ import annotations

import functools
import logging
import re

from telegram import Message, Update, User
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from models.inputs import Input, PhotoIn, Sender
from models.messages.outbox import Target

log = logging.getLogger(__name__)
CHANNEL = "telegram"
COMMAND = re.compile(r"^/[A-Za-z0-9_]+(@\w+)?(\s|$)")


def sender_of(user: User) -> Sender:
    name = " ".join(part for part in (user.first_name, user.last_name) if part)
    return Sender(CHANNEL, str(user.id), name, user.language_code)


def is_private(message: Message) -> bool:
    return message.chat.type == "private"


async def message_input(update: Update, context: ContextTypes.DEFAULT_TYPE,
                        max_photo_bytes: int) -> Input | None:
    message = update.message
    if message is None or message.from_user is None or message.from_user.is_bot:
        return None
    base = dict(sender=sender_of(message.from_user), chat=Target(CHANNEL, str(message.chat_id)),
                private=is_private(message), dedupe_key=update_key(update, context.bot.id),
                reply_to_bot=bool(message.reply_to_message and message.reply_to_message.from_user
                                  and message.reply_to_message.from_user.id == context.bot.id))
    if message.text is not None:
        if COMMAND.match(message.text):
            head, *args = message.text[1:].split()
            command, _, target_bot = head.partition("@")
            if target_bot and target_bot.lower() != (context.bot.username or "").lower():
                return None  # a command for another bot in the same group
            return Input(kind="command", command=command.lower(), args=args, text=message.text,
                         **base)
        return Input(kind="text", text=message.text, **base)
    if message.photo or _image_document(message):
        return Input(kind="photo", photo=_photo(context, message, max_photo_bytes),
                     text=message.caption, **base)
    if message.location:
        return Input(kind="location", location=(message.location.latitude,
                                                message.location.longitude), **base)
    if message.contact:
        own = message.contact.user_id == message.from_user.id
        return Input(kind="contact", contact_phone=message.contact.phone_number,
                     contact_is_own=own, **base)
    return Input(kind="other", **base)


def _image_document(message: Message) -> bool:
    doc = message.document
    return bool(doc and (doc.mime_type or "").startswith("image/"))


def _photo(context, message: Message, limit: int) -> PhotoIn:
    """The largest size within the limit, to be downloaded if the core takes it; a
    too-large photo arrives as data=None and is never downloaded."""
    if message.photo:
        sizes = sorted(message.photo, key=lambda p: p.file_size or 0)
        fitting = [p for p in sizes if (p.file_size or 0) <= limit]
        chosen = fitting[-1] if fitting else sizes[-1]
        file_id, size = chosen.file_id, chosen.file_size or 0
    else:
        file_id, size = message.document.file_id, message.document.file_size or 0
    if size > limit:
        return PhotoIn(data=None, size=size, channel_file_id=file_id)
    keep_id = file_id if message.photo else None
    return PhotoIn(data=None, size=size, channel_file_id=file_id,
                   fetch=functools.partial(_fetch, context.bot, file_id, size, keep_id))


async def _fetch(bot, file_id: str, size: int, keep_id: str | None) -> PhotoIn:
    """The photo's bytes; a failed download reads as too large (data=None)."""
    try:
        file = await bot.get_file(file_id)
        data = bytes(await file.download_as_bytearray())
    except TelegramError as exc:
        log.warning("photo download failed: %s", exc)
        return PhotoIn(data=None, size=size, channel_file_id=file_id)
    return PhotoIn(data=data, size=len(data), channel_file_id=keep_id)


def update_key(update: Update, bot_id: int) -> str:
    """Which update this is, for the inbox: a redelivered update (a webhook retried,
    a second process) carries the same key and is handled once."""
    return f"{bot_id}:{update.update_id}"


def callback_input(update: Update, bot_id: int) -> Input | None:
    query = update.callback_query
    if query is None or query.message is None or not query.data:
        return None
    action, _, arg = query.data.partition(":")
    chat = query.message.chat
    return Input(kind="button", sender=sender_of(query.from_user),
                 chat=Target(CHANNEL, str(chat.id)), private=chat.type == "private",
                 action=action, arg=arg, dedupe_key=update_key(update, bot_id))
