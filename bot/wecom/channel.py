"""WeCom's side of the sender: neutral messages become app messages of a self-built app.

- A chat id is a member's userid, or ``unit:CODE`` — the unit's staff who have WeCom
  userids (an app cannot post cards into ordinary group chats, so a unit's "chat" is
  its members, each getting the card in their chat with the app).
- Buttons become a ``template_card`` of type button_interaction. The card's key is the
  button's data, so a press comes back as the same ``action:arg`` a Telegram button
  carries. A card holds 6 buttons: with more, the sixth is "More…", which sends the
  presser the rest (kept with the card in ``wecom_card``).
- A card is edited with ``update_template_card`` and the latest response code (from
  the send or from the press), which works once; without one a fresh card is sent.
- Reply keyboards: plain labels become card buttons (``kb:`` + label, pressed like
  typing the label); location and contact requests become instructions. The
  resident's main keyboard is the app's menu in WeCom, so it is left out.
- WeCom lets a member receive ``member_per_minute`` app messages a minute: a message
  that would exceed it for any recipient is put back with Retry until the minute has
  room — delayed, never dropped."""
from __future__ import annotations

import contextlib
import logging
import mimetypes
import secrets
import unicodedata
from collections import deque
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from pathlib import PurePath

from sqlalchemy import select, update

from bot.delivery.sender import Permanent, Retry, keep_rest
from handlers.wecom.cards import CHANNEL, KEYBOARD_PREFIX, MORE_PREFIX, UNIT_PREFIX, locale_of
from models.media.store import MediaStore
from models.messages.i18n import I18n
from models.messages.outbox import Button, OutMessage
from models.store.db import Database
from models.store.tables import Identity, Media, MessageRef, Outbox, Role, Unit, WecomCard

from .api import RATE_ERRORS, WecomApi, WecomError

log = logging.getLogger(__name__)
TEXT_BYTES = 2048  # WeCom's limit for a text message
TITLE_CHARS = 36  # a card's main title (WeCom truncates beyond this)
SUB_CHARS = 512  # a card's body; longer texts go first as a text message
CARD_BUTTONS = 6  # WeCom's limit per button_interaction card
# a button's text: WeCom recommends at most 10 characters (字), so 10 Chinese characters
# or 20 half-width ones (columns, see ``label_width``)
BUTTON_WIDTH = 20
CODE_LIFE = timedelta(hours=72)  # a response code can be used once within this
UNREACHABLE = {81013, 60111, 40031}  # userid not in the app's visible range / unknown


def clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars - 1] + "…"


def _char_width(char: str) -> int:
    if unicodedata.category(char) in ("Mn", "Me", "Cf"):  # combining marks, variation selectors
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def label_width(text: str) -> int:
    """Columns a text takes: a Chinese character (or an emoji) two, a letter one."""
    return sum(_char_width(c) for c in text)


def clip_label(text: str, width: int = BUTTON_WIDTH) -> str:
    """A button's text within ``width`` columns, shortened with "…" if need be."""
    if label_width(text) <= width:
        return text
    kept, used = [], label_width("…")
    for char in text:
        used += _char_width(char)
        if used > width:
            break
        kept.append(char)
    return "".join(kept).rstrip() + "…"


def split_bytes(text: str, limit: int = TEXT_BYTES) -> list[str]:
    """Split at line breaks into parts of at most ``limit`` UTF-8 bytes."""
    parts, current = [], ""
    for line in text.split("\n"):
        while len(line.encode()) > limit:  # one very long line: cut by characters
            cut = len(line)
            while len(line[:cut].encode()) > limit:
                cut = cut * limit // len(line[:cut].encode())
            parts, current = ([*parts, current] if current else parts), ""
            parts.append(line[:cut])
            line = line[cut:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate.encode()) > limit:
            parts.append(current)
            current = line
        else:
            current = candidate
    return [p for p in [*parts, current] if p] or [""]


class MemberLimiter:
    """Messages each member received in the last minute (on the service's clock)."""

    def __init__(self, per_minute: int, clock: Callable[[], datetime]):
        self.per_minute, self.clock = per_minute, clock
        self.sent: dict[str, deque[datetime]] = {}

    def _window(self, userid: str) -> deque[datetime]:
        window = self.sent.setdefault(userid, deque())
        cutoff = self.clock() - timedelta(minutes=1)
        while window and window[0] <= cutoff:
            window.popleft()
        return window

    def wait(self, userids: Collection[str], cost: int) -> float:
        """Seconds until every member can take ``cost`` more messages (0: now)."""
        cost = min(cost, self.per_minute)
        wait = 0.0
        for userid in userids:
            window = self._window(userid)
            excess = len(window) + cost - self.per_minute
            if excess > 0:
                free_at = window[excess - 1] + timedelta(minutes=1)
                wait = max(wait, (free_at - self.clock()).total_seconds())
        return max(wait, 0.0 if wait == 0 else 1.0)

    def record(self, userids: Collection[str], count: int = 1) -> None:
        now = self.clock()
        for userid in userids:
            self._window(userid).extend([now] * count)


class WecomChannel:
    name = CHANNEL

    def __init__(self, api: WecomApi, db: Database, media: MediaStore, i18n: I18n,
                 clock: Callable[[], datetime], per_minute: int, menu_labels: set[str]):
        self.api, self.db, self.media, self.i18n, self.clock = api, db, media, i18n, clock
        self.limiter = MemberLimiter(per_minute, clock)
        self.menu_labels = menu_labels

    def is_group(self, chat_id: str) -> bool:
        return chat_id.startswith(UNIT_PREFIX)

    def cost(self, message: OutMessage) -> int:
        """Messages a row sends (the sender's shared budgets count them)."""
        return max(1, len(message.photos), len(message.pictures))

    async def deliver(self, row: Outbox, message: OutMessage) -> None:
        userids = await self.db.run(lambda s: recipients(s, row.chat_id))
        if not userids:
            raise Permanent(f"no WeCom member to reach at {row.chat_id}")
        try:
            await self._deliver(row, userids, message)
        except WecomError as exc:
            if exc.code in RATE_ERRORS:
                raise Retry(str(exc), after=60 if exc.code == 45009 else None) from exc
            if exc.retryable:  # uncertain only if a send may have arrived (api.py)
                raise Retry(str(exc), uncertain=exc.uncertain) from exc
            if exc.code in UNREACHABLE and not self.is_group(row.chat_id):
                await self._unreachable(row.chat_id)
            raise Permanent(str(exc), alert=exc.code not in UNREACHABLE) from exc

    # -- rendering -----------------------------------------------------------------------

    async def _deliver(self, row: Outbox, userids: list[str], message: OutMessage) -> None:
        if message.photos:
            rows = await self.db.run(lambda s: _media_rows(s, message.photos))
            self._budget(userids, len(rows))
            async with self._progress(row, "photos", [m.id for m in rows]) as done:
                for media in rows:
                    media_id = await self.api.upload_image(self.media.read(media.path))
                    self._note(await self.api.send_image(userids, media_id), userids)
                    done(media.id)
            return
        if message.pictures:  # generated images (a report's charts)
            self._budget(userids, len(message.pictures))
            async with self._progress(row, "pictures", message.pictures) as done:
                for path in message.pictures:
                    media_id = await self.api.upload_image(self.media.read(path),
                                                           PurePath(path).name)
                    self._note(await self.api.send_image(userids, media_id), userids)
                    done(path)
            return
        if message.document:  # a generated file (a report's workbook)
            self._budget(userids, 1)
            name = message.filename or PurePath(message.document).name
            media_id = await self.api.upload(self.media.read(message.document), "file", name,
                                             mimetypes.guess_type(name)[0]
                                             or "application/octet-stream")
            self._note(await self.api.send_file(userids, media_id), userids)
            return
        if message.location:
            self._budget(userids, 1)
            lat, lon = message.location
            self._note(await self.api.send_text(userids, f"📍 {lat:.5f}, {lon:.5f}"), userids)
            return
        text, buttons = await self._text_and_buttons(row.chat_id, message)
        if message.edit and message.ref:
            if await self._update(row.chat_id, message.ref, text, buttons):
                return
            if not buttons:
                return  # a text cannot be edited in WeCom, and nothing is left to press
        if not buttons:
            parts = split_bytes(text)
            self._budget(userids, len(parts))
            async with self._progress(row, "text", parts, "\n".join) as done:
                for part in parts:
                    self._note(await self.api.send_text(userids, part), userids)
                    done(part)
            return
        await self._send_card(row.chat_id, userids, message.ref, text, buttons)

    async def _text_and_buttons(self, chat_id: str, message: OutMessage) -> tuple[str, list[Button]]:
        buttons = [b for line in message.buttons for b in line]
        text = message.text
        keys = [k for line in (message.keyboard or []) for k in line]
        if keys and not {k.label for k in keys} <= self.menu_labels:
            t = self.i18n.get(await self.db.run(lambda s: locale_of(s, self.i18n, chat_id)))
            notes = []
            for key in keys:
                if key.request == "location":
                    notes.append(t._("📍 To send a location: tap “+” next to the input box, "
                                     "then “Location”."))
                elif key.request == "contact":
                    notes.append(t._("📱 To share your phone number, type it as a message."))
            labels = [Button(k.label, KEYBOARD_PREFIX + k.label) for k in keys if not k.request]
            if not message.buttons:
                buttons = labels
            text = "\n\n".join([text, *notes]) if notes else text
        return text, buttons

    def card(self, task_id: str, text: str, buttons: list[Button], more_label: str = "…") -> dict:
        """The card; with more than six buttons the sixth is ``more_label`` (see ``more``)."""
        if len(buttons) > CARD_BUTTONS:
            buttons = [*buttons[:CARD_BUTTONS - 1], Button(more_label, MORE_PREFIX + task_id)]
        first, _, rest = text.partition("\n")
        if len(first) > TITLE_CHARS:
            rest = text
        card = {"card_type": "button_interaction", "task_id": task_id,
                "main_title": {"title": clip(first, TITLE_CHARS)}}
        if rest.strip():
            card["sub_title_text"] = clip(rest.strip(), SUB_CHARS)
        card["button_list"] = [{"text": clip_label(b.label), "style": 1 if i == 0 else 2,
                                "key": b.action if b.action.startswith((KEYBOARD_PREFIX,
                                                                         MORE_PREFIX))
                                else b.data} for i, b in enumerate(buttons)]
        if not buttons:
            card["replace_text"] = "✔"  # a grey, inactive button: nothing left to press here
        return card

    async def _more_label(self, chat_id: str, buttons: list[Button]) -> str:
        if len(buttons) <= CARD_BUTTONS:
            return "…"
        locale = await self.db.run(lambda s: locale_of(s, self.i18n, chat_id))
        return self.i18n.get(locale)._("More…")

    async def _send_card(self, chat_id: str, userids: list[str], ref: str | None, text: str,
                         buttons: list[Button]) -> None:
        long_text = len(text) > SUB_CHARS + TITLE_CHARS
        parts = split_bytes(text) if long_text else []
        self._budget(userids, 1 + len(parts))
        for part in parts:  # the whole text first; the card then shows the start of it
            self._note(await self.api.send_text(userids, part), userids)
        task_id = f"w{secrets.token_hex(6)}"
        card = self.card(task_id, text, buttons, await self._more_label(chat_id, buttons))
        # recorded first: a press may come back before the send's answer is handled
        await self._remember(task_id, chat_id, userids, more(buttons))
        answer = await self.api.send_card(userids, card)
        self._note(answer, userids)
        await self._sent_card(task_id, chat_id, answer.get("response_code"), ref)

    async def _update(self, chat_id: str, ref: str | None, text: str,
                      buttons: list[Button]) -> bool:
        """Edit the card remembered under ``ref`` in place; False if that is not possible."""
        card = await self._card_to_edit(ref, chat_id)
        if card is None:
            return False
        userids = card.userids.split("|")
        body = self.card(card.task_id, text, buttons, await self._more_label(chat_id, buttons))
        await self._store_more(card.task_id, more(buttons))  # before "More…" can be pressed
        try:
            await self.api.update_card(userids, card.response_code, body)
        except WecomError as exc:
            if exc.retryable:
                raise
            log.warning("WeCom card %s could not be updated (%s); sending a new one",
                        card.task_id, exc)
            await self._spend_code(card.task_id)
            return False
        await self._spend_code(card.task_id)
        return True

    async def _card_to_edit(self, ref: str | None, chat_id: str) -> WecomCard | None:
        if not ref:
            return None
        now = self.clock()

        async def find(session):
            task_id = await session.scalar(select(MessageRef.message_id).where(
                MessageRef.ref == ref, MessageRef.channel == CHANNEL,
                MessageRef.chat_id == chat_id))
            card = await session.get(WecomCard, task_id) if task_id else None
            if card is None or not card.response_code or card.code_at is None:
                return None
            return card if now - card.code_at < CODE_LIFE else None
        return await self.db.run(find)

    # -- bookkeeping ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _progress(self, row: Outbox, field: str, items: list,
                        join: Callable[[list], object] = list):
        """A row sent in several messages (photos, pictures, a long text's parts): when
        one fails after others went, the row keeps only what is left (``field`` becomes
        ``join`` of the rest), so its retry goes on where it stopped and shows nothing
        twice. Call ``done(item)`` after each message that went."""
        sent: list = []
        try:
            yield sent.append
        except Exception:
            if sent and len(sent) < len(items):
                await keep_rest(self.db, row, {field: join(items[len(sent):])})
            raise

    def _budget(self, userids: list[str], cost: int) -> None:
        wait = self.limiter.wait(userids, cost)
        if wait > 0:
            raise Retry(f"WeCom member limit ({self.limiter.per_minute}/min) reached",
                        after=wait)

    def _note(self, answer: dict, userids: list[str]) -> None:
        self.limiter.record(userids)
        if answer.get("invaliduser"):
            log.warning("WeCom could not reach %s", answer["invaliduser"])

    async def _remember(self, task_id: str, chat_id: str, userids: list[str],
                        extra: dict | None) -> None:
        now = self.clock()

        async def store(session):
            session.add(WecomCard(task_id=task_id, chat_id=chat_id, userids="|".join(userids),
                                  response_code=None, code_at=None, more=extra, created_at=now))
        await self.db.run(store)

    async def _sent_card(self, task_id: str, chat_id: str, response_code: str | None,
                         ref: str | None) -> None:
        """Keep the send's response code (unless a press brought a newer one) and point
        ``ref`` at this card."""
        now = self.clock()

        async def store(session):
            if response_code:
                await session.execute(update(WecomCard).where(
                    WecomCard.task_id == task_id, WecomCard.response_code.is_(None))
                    .values(response_code=response_code, code_at=now))
            if ref is None:
                return
            row = await session.scalar(select(MessageRef).where(
                MessageRef.ref == ref, MessageRef.channel == CHANNEL,
                MessageRef.chat_id == chat_id))
            if row is None:
                session.add(MessageRef(ref=ref, channel=CHANNEL, chat_id=chat_id,
                                       message_id=task_id, created_at=now))
            else:
                row.message_id = task_id
                row.created_at = row.created_at or now
        await self.db.run(store)

    async def _spend_code(self, task_id: str) -> None:
        async def spend(session):
            await session.execute(update(WecomCard).where(WecomCard.task_id == task_id)
                                  .values(response_code=None))
        await self.db.run(spend)

    async def _store_more(self, task_id: str, extra: dict | None) -> None:
        async def store(session):
            await session.execute(update(WecomCard).where(WecomCard.task_id == task_id)
                                  .values(more=extra))
        await self.db.run(store)

    async def _unreachable(self, userid: str) -> None:
        async def mark(session):
            await session.execute(update(Identity).where(
                Identity.channel == CHANNEL, Identity.external_id == userid).values(blocked=True))
        await self.db.run(mark)


def more(buttons: list[Button]) -> dict | None:
    """The buttons a card cannot show (beyond the fifth, when there are more than six)."""
    if len(buttons) <= CARD_BUTTONS:
        return None
    return {"buttons": [[b.label, b.action, b.arg] for b in buttons[CARD_BUTTONS - 1:]]}


async def recipients(session, chat_id: str) -> list[str]:
    """The userids a chat id reaches: a member, or a unit's staff with WeCom userids."""
    if not chat_id.startswith(UNIT_PREFIX):
        return [chat_id]
    rows = await session.scalars(
        select(Identity.external_id).join(Role, Role.person_id == Identity.person_id)
        .join(Unit, Unit.id == Role.unit_id)
        .where(Unit.code == chat_id[len(UNIT_PREFIX):], Identity.channel == CHANNEL,
               Identity.blocked.is_(False)).order_by(Identity.external_id))
    return list(dict.fromkeys(rows))


async def _media_rows(session, media_ids: list[int]) -> list[Media]:
    rows = {m.id: m for m in await session.scalars(select(Media).where(Media.id.in_(media_ids)))}
    return [rows[i] for i in media_ids if i in rows]
