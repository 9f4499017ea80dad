"""Telegram's side of the sender: neutral messages become Bot API calls through
python-telegram-bot, and Telegram's errors become retry-or-give-up decisions."""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select, update
from telegram import (
    Bot,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    KeyboardButton,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
)
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, RetryAfter, TimedOut

from bot.delivery.sender import Permanent, Posted, Retry, keep_rest
from models.media.store import MediaStore
from models.messages.outbox import OutMessage, utf16_len
from models.store.db import Database
from models.store.tables import ChatBinding, Identity, Media, MessageRef, Outbox

from .http import never_sent

log = logging.getLogger(__name__)
NOT_MODIFIED = "message is not modified"
TEXT_LIMIT = 4096  # UTF-16 code units, as Telegram counts


def truncate(text: str, limit: int = TEXT_LIMIT) -> str:
    """Cut to ``limit`` UTF-16 units, marking the cut (a card must stay one message)."""
    if utf16_len(text) <= limit:
        return text
    cut = text
    while utf16_len(cut) > limit - 1:
        cut = cut[: max(1, len(cut) - max(1, (utf16_len(cut) - limit + 1) // 2))]
    return cut + "…"


def split(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Split at line breaks into messages of at most ``limit`` UTF-16 units."""
    parts, current = [], ""
    for line in text.split("\n"):
        line = truncate(line, limit)
        candidate = f"{current}\n{line}" if current else line
        if utf16_len(candidate) > limit:
            parts.append(current)
            current = line
        else:
            current = candidate
    return [*parts, current]
EDIT_GONE = ("message to edit not found", "message can't be edited")


def reply_markup(message: OutMessage):
    if message.buttons:
        return InlineKeyboardMarkup([[InlineKeyboardButton(b.label, callback_data=b.data)
                                      for b in row] for row in message.buttons])
    if message.keyboard:
        return ReplyKeyboardMarkup(
            [[KeyboardButton(b.label, request_location=b.request == "location",
                             request_contact=b.request == "contact") for b in row]
             for row in message.keyboard], resize_keyboard=True, is_persistent=True)
    if message.remove_keyboard:
        return ReplyKeyboardRemove()
    if message.force_reply:
        return ForceReply(input_field_placeholder=message.placeholder)
    return None


class TelegramChannel:
    name = "telegram"

    def __init__(self, bot: Bot, db: Database, media: MediaStore,
                 clock: Callable[[], datetime], edit_cost: int = 1):
        self.bot, self.db, self.media, self.clock = bot, db, media, clock
        self.edit_cost = edit_cost

    def is_group(self, chat_id: str) -> bool:
        return chat_id.startswith("-")

    def cost(self, message: OutMessage) -> int:
        """What this message counts against Telegram's limits: an album per 10 photos
        counted per photo, every part of a long text, an edit in place ``edit_cost``
        (``[sender] edit_cost``; a failed edit's rare fallback to a new message is not
        charged ahead: a 429 for it is retried like any other)."""
        if message.photos:
            return len(message.photos)
        if getattr(message, "pictures", None):
            return len(message.pictures)
        if message.location or getattr(message, "document", None):
            return 1
        if message.edit and message.ref:
            return self.edit_cost
        return 1 if message.ref else len(split(message.text))

    async def deliver(self, row: Outbox, message: OutMessage) -> Posted | None:
        try:
            return await self._deliver(row, message)
        except RetryAfter as exc:
            raise Retry(f"rate limited: {exc}", after=_seconds(exc.retry_after)) from exc
        except ChatMigrated as exc:
            await self._migrate(row.chat_id, str(exc.new_chat_id))
            raise Retry(f"chat migrated to {exc.new_chat_id}", after=0) from exc
        except Forbidden as exc:
            if self.is_group(row.chat_id):
                raise Permanent(f"forbidden: {exc.message}") from exc
            await self._blocked(row.chat_id)
            raise Permanent(f"forbidden: {exc.message}", alert=False) from exc
        except TimedOut as exc:
            raise Retry(f"timed out: {exc}", uncertain=not never_sent(exc)) from exc
        except BadRequest as exc:
            raise Permanent(f"bad request: {exc.message}") from exc
        except NetworkError as exc:
            # no cause: Telegram answered with a 5xx, so it did not take the message
            raise Retry(f"network: {exc}", uncertain=exc.__cause__ is not None
                        and not never_sent(exc)) from exc

    async def _deliver(self, row: Outbox, message: OutMessage) -> Posted | None:
        chat_id = row.chat_id
        if message.photos:
            await self._send_photos(chat_id, message.photos)
            return None
        if message.pictures:
            await self._send_pictures(chat_id, message.pictures)
            return None
        if message.document:
            await self.bot.send_document(chat_id, self.media.read(message.document),
                                         filename=message.filename or "document")
            return None
        if message.location:
            await self.bot.send_location(chat_id, latitude=message.location[0],
                                         longitude=message.location[1])
            return None
        markup = reply_markup(message)
        if message.ref:
            message.text = truncate(message.text)
        else:
            *first, message.text = split(message.text)
            for done, part in enumerate(first):
                try:
                    await self.bot.send_message(chat_id, part)
                except Exception:
                    if done:  # a retry goes on from here: the parts shown stay shown once
                        rest = "\n".join([*first[done:], message.text])
                        await keep_rest(self.db, row, {"text": rest})
                    raise
            if first:
                try:
                    return await self._send_last(chat_id, message, markup)
                except Exception:
                    await keep_rest(self.db, row, {"text": message.text})
                    raise
        if message.edit and message.ref:
            message_id = await self._ref_message_id(message.ref, chat_id)
            if message_id is not None:
                try:
                    await self.bot.edit_message_text(message.text, chat_id=chat_id,
                                                     message_id=int(message_id),
                                                     reply_markup=markup)
                    return None
                except BadRequest as exc:
                    reason = exc.message.lower()  # PTB capitalises Telegram's text
                    if NOT_MODIFIED in reason:
                        return None
                    if not any(gone in reason for gone in EDIT_GONE):
                        raise
        return await self._send_last(chat_id, message, markup)

    async def _send_last(self, chat_id: str, message: OutMessage, markup) -> Posted | None:
        sent = await self.bot.send_message(chat_id, message.text, reply_markup=markup)
        if message.ref:
            return Posted(message.ref, str(sent.message_id))  # remembered with the outcome
        return None

    async def _send_photos(self, chat_id: str, media_ids: list[int]) -> None:
        rows = await self.db.run(lambda s: _media_rows(s, media_ids))
        items = [row.telegram_file_id or self.media.read(row.path) for row in rows]
        sent = []
        for start in range(0, len(items), 10):  # Telegram's albums hold 2 to 10 photos
            chunk = items[start:start + 10]
            if len(chunk) == 1:
                sent.append(await self.bot.send_photo(chat_id, chunk[0]))
            else:
                sent += await self.bot.send_media_group(chat_id, [InputMediaPhoto(i) for i in chunk])
        uploaded = {row.id: msg.photo[-1].file_id for row, msg in zip(rows, sent)
                    if not row.telegram_file_id and msg.photo}
        if uploaded:
            async def store(session):
                for media_id, file_id in uploaded.items():
                    await session.execute(update(Media).where(Media.id == media_id)
                                          .values(telegram_file_id=file_id))
            await self.db.run(store)

    async def _send_pictures(self, chat_id: str, paths: list[str]) -> None:
        """Generated images (charts): uploaded from our disk, as one album when several."""
        items = [self.media.read(path) for path in paths]
        for start in range(0, len(items), 10):
            chunk = items[start:start + 10]
            if len(chunk) == 1:
                await self.bot.send_photo(chat_id, chunk[0])
            else:
                await self.bot.send_media_group(chat_id, [InputMediaPhoto(i) for i in chunk])

    async def _ref_message_id(self, ref: str, chat_id: str) -> str | None:
        return await self.db.run(lambda s: s.scalar(select(MessageRef.message_id).where(
            MessageRef.ref == ref, MessageRef.channel == self.name, MessageRef.chat_id == chat_id)))

    async def _migrate(self, old: str, new: str) -> None:
        """A group became a supergroup: its binding, cards and queued messages move along."""
        log.warning("telegram chat %s migrated to %s", old, new)

        async def move(session):
            for table in (ChatBinding, MessageRef, Outbox):
                await session.execute(update(table).where(table.channel == self.name,
                                                          table.chat_id == old).values(chat_id=new))
        await self.db.run(move)

    async def _blocked(self, chat_id: str) -> None:
        """A resident blocked the bot: stop writing to them until they write again —
        nothing more is queued for them, and what is queued is dropped as failed."""
        log.info("telegram user %s blocked the bot", chat_id)

        async def mark(session):
            await session.execute(update(Identity).where(
                Identity.channel == self.name, Identity.external_id == chat_id).values(blocked=True))
            await session.execute(update(Outbox).where(  # leased ones are this run's
                Outbox.channel == self.name, Outbox.chat_id == chat_id, Outbox.state == "pending")
                .values(state="failed", error="forbidden: blocked by the user"))
        await self.db.run(mark)


async def _media_rows(session, media_ids: list[int]) -> list[Media]:
    rows = {m.id: m for m in await session.scalars(select(Media).where(Media.id.in_(media_ids)))}
    return [rows[i] for i in media_ids if i in rows]


def _seconds(value) -> float:
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value)
