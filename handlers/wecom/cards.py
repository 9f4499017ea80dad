"""What the WeCom channel and its handler share: the channel's name and the prefixes of
its chat ids and button keys, and what a template card leaves in the database — the
buttons behind its "More…" and the response code for updating it — and a member's
language. The channel (``bot/wecom/channel.py``) writes and renders; the handler reads
a press."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update

from models.messages.i18n import I18n
from models.messages.outbox import Button
from models.store.tables import Identity, Person, WecomCard

CHANNEL = "wecom"
UNIT_PREFIX = "unit:"
KEYBOARD_PREFIX = "kb:"
MORE_PREFIX = "more:"  # + task id: "send me this card's other buttons"


async def more_buttons(session, task_id: str) -> list[Button]:
    """What "More…" on the card ``task_id`` offers now (empty if the card is unknown)."""
    card = await session.get(WecomCard, task_id)
    if card is None or not card.more:
        return []
    return [Button(label, action, arg) for label, action, arg in card.more["buttons"]]


async def locale_of(session, i18n: I18n, chat_id: str) -> str | None:
    """The language to add instructions in: the member's, or the deployment's for a unit."""
    if chat_id.startswith(UNIT_PREFIX):
        return None
    row = (await session.execute(select(Person.locale, Identity.language_code)
                                 .join(Identity, Identity.person_id == Person.id)
                                 .where(Identity.channel == CHANNEL,
                                        Identity.external_id == chat_id))).first()
    return i18n.pick(row[0], row[1]) if row else None


async def record_response_code(session, task_id: str, code: str, now: datetime) -> None:
    """A press on a card hands us a fresh response code for updating it."""
    await session.execute(update(WecomCard).where(WecomCard.task_id == task_id)
                          .values(response_code=code, code_at=now))
