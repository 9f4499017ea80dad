"""The overdue board: one message per bound chat, edited in place on each sweep
that changes it (Telegram allows a group about 20 messages a minute, so chats are
never flooded). A fresh board is posted when the old one is older than
``board_max_age``; a long board is split into pages of at most 4,096 characters."""
from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.lifecycle import OPEN
from models.messages.i18n import N_, Translator
from models.messages.outbox import OutMessage, Target, enqueue, utf16_len
from models.org import tree as org
from models.org.names import category_name
from models.store.tables import MessageRef, Person, Ticket, Timer, Unit

LIMIT = 4096


def paginate(header: str, lines: list[str], limit: int = LIMIT) -> list[str]:
    """Split into messages of at most ``limit`` UTF-16 units (Telegram's measure),
    whole lines only."""
    pages, current = [], header
    for line in lines:
        while utf16_len(line) > limit - 1:
            line = line[:-1]
        if utf16_len(current) + 1 + utf16_len(line) > limit:
            pages.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    pages.append(current)
    return pages


async def board_lines(session: AsyncSession, core: Core, unit_id: int, t: Translator) -> list[str]:
    rows = await session.execute(
        select(Ticket, Timer).join(Ticket, Ticket.id == Timer.ticket_id)
        .where(Timer.unit_id == unit_id, Timer.stage.in_(["warned", "breached"]),
               Timer.kind != "vote", Ticket.state.in_([s.value for s in OPEN]))
        .order_by(Timer.due_at))
    lines = []
    now = core.now()
    for ticket, timer in rows:
        assignee = await session.get(Person, ticket.assignee_id) if ticket.assignee_id else None
        late = now >= timer.due_at
        lines.append(t._("{icon} #{number} {category} — {kind} {when} — {who}",
                         icon="❗" if late else "⏰", number=ticket.number,
                         category=category_name(core, ticket.category, t),
                         kind=t._(KIND_WORDS[timer.kind]),
                         when=(t._("overdue since {time}") if late else t._("due {time}")).format(
                             time=core.local(timer.due_at).strftime("%m-%d %H:%M")),
                         who=assignee.name if assignee else t._("unclaimed")))
    return lines


KIND_WORDS = {"claim": N_("claim"), "onsite": N_("on-site"), "resolve": N_("resolve"),
              "progress": N_("progress"), "duty": N_("report for duty")}


async def refresh(session: AsyncSession, core: Core, unit_id: int) -> None:
    chats = await org.chats_of_unit(session, unit_id, channels=core.channels)
    if not chats:
        return
    t = core.i18n.get(None)
    unit = await session.get(Unit, unit_id)
    lines = await board_lines(session, core, unit_id, t)
    header = t._("📋 Deadlines board — {unit} (updated {time})",
                 unit=org.display_name(unit, t.locale),
                 time=core.local(core.now()).strftime("%m-%d %H:%M"))
    pages = paginate(header, lines or [t._("✅ Nothing due or overdue.")])
    max_age = core.config.deadlines.board_max_age
    for chat in chats:
        target = Target(chat.channel, chat.chat_id)
        refs = list(await session.scalars(select(MessageRef).where(
            MessageRef.ref.like(f"board:{unit_id}:%"), MessageRef.channel == chat.channel,
            MessageRef.chat_id == chat.chat_id)))
        if any(r.created_at and core.calendar.add(r.created_at, max_age) <= core.now()
               for r in refs):
            await session.execute(delete(MessageRef).where(MessageRef.id.in_([r.id for r in refs])))
            refs = []
        for number, page in enumerate(pages):
            enqueue(session, target, OutMessage(text=page, ref=f"board:{unit_id}:{number}",
                                                edit=True), core.now())
        for stale in refs:
            if int(stale.ref.rsplit(":", 1)[1]) >= len(pages):
                enqueue(session, target, OutMessage(text="—", ref=stale.ref, edit=True), core.now())
