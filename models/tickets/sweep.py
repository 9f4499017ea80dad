"""The deadline sweep: called with "now" by the scheduler (and by tests with a
controlled clock). It reads only timers whose ``next_at`` has come (an index),
acts on each once — on PostgreSQL rows are claimed with FOR UPDATE SKIP LOCKED,
so two processes never both act — and sends what it found batched: one private
reminder per person, one edited overdue board per chat."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.deadlines import board
from models.deadlines.timers import finish
from models.lifecycle import TransitionError
from models.messages.i18n import N_
from models.messages.outbox import OutMessage, Target, enqueue
from models.org import tree as org
from models.org.names import category_name
from models.org.people import tell
from models.store.tables import Ticket, Timer, Unit

from . import actions as tickets
from . import votes

BATCH = 500
REMINDERS = {
    ("claim", "warn"): N_("⏰ #{number} must be claimed by {due}."),
    ("onsite", "warn"): N_("⏰ #{number}: be on site by {due}."),
    ("onsite", "breach"): N_("❗ #{number}: the on-site deadline ({due}) has passed."),
    ("resolve", "warn"): N_("⏰ #{number} must be resolved by {due}."),
    ("resolve", "breach"): N_("❗ #{number} is overdue: it had to be resolved by {due}."),
    ("progress", "warn"): N_("⏰ #{number} (key order): post a progress update by {due}."),
    ("progress", "breach"): N_("❗ #{number} (key order): the progress update due {due} is late."),
}


@dataclass
class SweepResult:
    timers: int = 0
    warned: int = 0
    breached: int = 0
    escalated: int = 0
    closed_unrated: int = 0
    held_quiet: int = 0


@dataclass
class Batch:
    """What one sweep has to say, gathered so each person and chat gets one message."""

    reminders: dict[int, list[tuple]] = field(default_factory=lambda: defaultdict(list))
    alerts: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    units: set[int] = field(default_factory=set)
    escalated: set[int] = field(default_factory=set)  # one level up per ticket and sweep


async def sweep(session: AsyncSession, core: Core, now: datetime) -> SweepResult:
    query = (select(Timer).where(Timer.next_at <= now, Timer.paused_at.is_(None))
             .order_by(Timer.next_at, Timer.id).limit(BATCH))
    if session.bind.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    result, batch = SweepResult(), Batch()
    for timer in list(await session.scalars(query)):
        ticket = await session.get(Ticket, timer.ticket_id)
        result.timers += 1
        urgent = ticket.order_type == "emergency" and timer.kind != "vote"
        if not urgent and core.quiet.contains(now):  # residents' votes wait for the day too
            timer.next_at = core.quiet.end_after(now)
            result.held_quiet += 1
            continue
        await step(session, core, timer, ticket, now, batch, result)
    await flush(session, core, batch)
    return result


async def step(session, core: Core, timer: Timer, ticket: Ticket, now: datetime, batch: Batch,
               result: SweepResult) -> None:
    if timer.kind == "vote":
        await votes.on_timer(session, core, timer, ticket, now, result)
        return
    if timer.stage == "running" and now < timer.due_at:
        timer.stage, timer.next_at = "warned", timer.due_at
        result.warned += 1
        await remind(session, core, batch, timer, ticket, "warn")
        batch.units.add(timer.unit_id)
        return
    if timer.stage in ("running", "warned"):
        timer.stage, timer.met = "breached", False
        result.breached += 1
        batch.units.add(timer.unit_id)
        await breach(session, core, timer, ticket, now, batch, result)
        return
    if timer.stage == "breached" and timer.kind == "resolve":
        timer.next_at = None  # grace is over: whistle one level up
        if await escalate(session, core, batch, ticket, N_("resolve deadline missed")):
            result.escalated += 1
        return
    timer.next_at = None


async def breach(session, core: Core, timer: Timer, ticket: Ticket, now: datetime, batch: Batch,
                 result: SweepResult) -> None:
    if timer.kind == "claim":
        timer.next_at = None
        finish(timer, now)
        timer.met = False
        if await escalate(session, core, batch, ticket, N_("claim deadline missed")):
            result.escalated += 1
        else:
            await alert_above(session, core, batch, ticket, timer)
        return
    await remind(session, core, batch, timer, ticket, "breach")
    if timer.kind == "resolve":
        timer.next_at = core.calendar.add(timer.due_at, core.config.deadlines.resolve_grace)
        await alert_above(session, core, batch, ticket, timer)
    elif timer.kind in ("onsite", "duty"):
        timer.next_at = None
        await alert_above(session, core, batch, ticket, timer)
    else:
        timer.next_at = None


async def escalate(session, core: Core, batch: Batch, ticket: Ticket, reason: str) -> bool:
    """Whistle up a level on a missed deadline; False when there is no level above (or the
    ticket already went up in this sweep: after a downtime it must not jump two levels)."""
    if ticket.id in batch.escalated:
        return True
    unit = await session.get(Unit, ticket.unit_id)
    if unit.kind not in ("grid", "community"):
        return False
    try:
        await tickets.escalate(session, core, None, ticket, core.i18n.get(None)._(reason))
    except (TransitionError, tickets.Denied):
        return False
    batch.escalated.add(ticket.id)
    return True


async def alert_above(session, core: Core, batch: Batch, ticket: Ticket, timer: Timer) -> None:
    """Tell the level above the holder (for a department: whoever whistled), one
    message per chat and sweep."""
    holder = await session.get(Unit, timer.unit_id)  # for "duty": the cooperating department
    if holder.kind == "department":
        target_id = ticket.whistler_unit_id
    elif holder.kind in ("grid", "community"):
        target_id = holder.parent_id
    else:  # a street (or whatever has no level above): the command centre hears of it
        target_id = None
    if target_id is None:
        target_id = (await org.command_centre(session, core)).id
    t = core.i18n.get(None)
    batch.alerts[target_id].append(t._(
        "⚠️ {unit}: #{number} ({category}) missed its {kind} deadline ({due}).",
        unit=org.display_name(holder, t.locale), number=ticket.number,
        category=category_name(core, ticket.category, t), kind=t._(board.KIND_WORDS[timer.kind]),
        due=core.local(timer.due_at).strftime("%m-%d %H:%M")))


async def remind(session, core: Core, batch: Batch, timer: Timer, ticket: Ticket, stage: str) -> None:
    """Queue a private line for the assignee (claim warnings go to the board only)."""
    text = REMINDERS.get((timer.kind, stage))
    if text is None or ticket.assignee_id is None:
        return
    batch.reminders[ticket.assignee_id].append((text, ticket.number, timer.due_at))


async def flush(session, core: Core, batch: Batch) -> None:
    for person_id, lines in batch.reminders.items():
        def reminders(t, lines=lines) -> OutMessage:
            return OutMessage(text="\n".join([t._("Deadlines:"), *(
                t._(text, number=number, due=core.local(due).strftime("%m-%d %H:%M"))
                for text, number, due in lines)]))
        await tell(session, core, person_id, reminders)
    for unit_id, lines in batch.alerts.items():
        for chat in await org.chats_of_unit(session, unit_id, channels=core.channels):
            for page in board.paginate(core.i18n.get(None)._("Missed deadlines:"), lines):
                enqueue(session, Target(chat.channel, chat.chat_id), OutMessage(text=page), core.now())
    for unit_id in sorted(batch.units):
        await board.refresh(session, core, unit_id)
