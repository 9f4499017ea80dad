"""One decrypted WeCom message: translate, let the core decide, and say what a
Telegram client would show as a button's alert as a short message instead."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from models.messages.outbox import OutMessage, Target, enqueue
from models.store.inbox import first_delivery

from .cards import CHANNEL, MORE_PREFIX, locale_of, more_buttons, record_response_code
from .translate import dedupe_key, message_input

if TYPE_CHECKING:
    from bot.app import Whistle

log = logging.getLogger(__name__)


async def handle_message(whistle: "Whistle", fields: dict[str, str]) -> None:
    service = whistle.wecom
    if fields.get("Event") == "template_card_event" and fields.get("TaskId") \
            and fields.get("ResponseCode"):
        await whistle.db.run(lambda s: record_response_code(
            s, fields["TaskId"], fields["ResponseCode"], whistle.core.now()))
    if fields.get("Event") == "template_card_event" and \
            (fields.get("EventKey") or "").startswith(MORE_PREFIX):
        await whistle.db.run(lambda s: _more(s, whistle, fields))
        return
    inp = await message_input(fields, service.api.media_or_none,
                              whistle.config.intake.max_photo_bytes)
    if inp is None:
        return
    try:
        reply = await whistle.handle(inp)
        alert = None if reply.duplicate else reply.alert
    except Exception:  # nothing was committed: tell the person, keep their step
        log.exception("WeCom message from %s failed", inp.sender.external_id)
        alert = whistle.failure_text(None)
    if alert:
        target = Target(CHANNEL, inp.sender.external_id)
        await whistle.db.run(lambda s: _say(s, target, alert, whistle.core.now()))


async def _say(session, target: Target, text: str, now) -> None:
    enqueue(session, target, OutMessage(text=text), now)


async def _more(session, whistle: "Whistle", fields: dict[str, str]) -> None:
    """"More…" on a card: the buttons it had no room for, in a card of their own."""
    now = whistle.core.now()
    if not await first_delivery(session, CHANNEL, dedupe_key(fields), now):
        return
    userid = fields["FromUserName"]
    buttons = await more_buttons(session, fields["EventKey"][len(MORE_PREFIX):])
    t = whistle.i18n.get(await locale_of(session, whistle.i18n, userid))
    if not buttons:
        enqueue(session, Target(CHANNEL, userid),
                OutMessage(text=t._("This button is no longer active.")), now)
        return
    enqueue(session, Target(CHANNEL, userid), OutMessage(
        text=t._("More actions:"), buttons=[buttons[i:i + 3] for i in range(0, len(buttons), 3)]),
        now)
