"""Telling the admins that messages could not be delivered: once per chat per incident
(``[sender] alert_minutes``), with how many failed, never once per message."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.messages.outbox import OutMessage, Target, enqueue
from models.store.tables import ChatBinding, Outbox, Unit

from . import tree as org
from .limits import PREFIX, bump


async def alert_targets(session: AsyncSession, core: Core) -> list[Target]:
    """The command centre's chats, or else the Telegram admins privately."""
    centre = await org.command_centre(session, core)
    chats = [Target(b.channel, b.chat_id) for b in await session.scalars(
        select(ChatBinding).where(ChatBinding.unit_id == centre.id,
                                  ChatBinding.channel.in_(list(core.channels))))]
    admins = [Target("telegram", str(admin)) for admin in core.config.telegram.admins]
    return chats or admins


async def delivery_failed(session: AsyncSession, core: Core, channel: str, chat_id: str,
                          error: str) -> bool:
    """Called in the transaction that marks a message failed; True if an alert was queued."""
    now = core.now()
    minutes = core.config.sender.alert_minutes
    slot = int(now.timestamp() // (minutes * 60))
    expires = now + timedelta(minutes=minutes)
    if await bump(session, f"{PREFIX}alert:{channel}:{chat_id}", str(slot), expires) != 1:
        return False  # this incident was reported already
    failing = Target(channel, chat_id)
    targets = [t for t in await alert_targets(session, core) if t != failing]
    if not targets and failing.channel == "telegram":
        targets = [Target("telegram", str(a)) for a in core.config.telegram.admins
                   if str(a) != chat_id]
    if not targets:
        return False
    failed = await session.scalar(select(func.count(Outbox.id)).where(
        Outbox.channel == channel, Outbox.chat_id == chat_id, Outbox.state == "failed",
        Outbox.created_at > now - timedelta(minutes=minutes)))
    unit = await session.scalar(select(Unit).join(ChatBinding, ChatBinding.unit_id == Unit.id)
                                .where(ChatBinding.channel == channel,
                                       ChatBinding.chat_id == chat_id))
    t = core.i18n.get(None)
    where = (t._("the chat of {unit}", unit=org.display_name(unit, t.locale)) if unit
             else t._("chat {chat}", chat=chat_id))
    text = t._("⚠️ Messages to {where} could not be delivered ({count} in the last {minutes} "
               "minutes). Last error: {error}\nFurther failures there are reported at most "
               "once every {minutes} minutes.", where=where, count=max(failed, 1),
               minutes=int(minutes), error=error[:300])
    for target in targets:
        enqueue(session, target, OutMessage(text=text), now)
    return True
