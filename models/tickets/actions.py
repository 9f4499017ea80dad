"""Ticket actions. Each runs inside the caller's transaction and writes, together,
the state change, its audit event and the messages that report it (outbox)."""
from __future__ import annotations

import functools
from datetime import datetime

import structlog
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.deadlines import timers as deadlines
from models.lifecycle import (
    FINAL,
    LEVELS,
    OPEN,
    STATE_LABELS,
    WORKING,
    Action,
    State,
    TransitionError,
    check,
    sources,
)
from models.messages.i18n import N_
from models.messages.outbox import OutMessage, Target, enqueue
from models.org import tree as org
from models.org.people import load_dialogue, tell
from models.store.db import among, upsert_insert
from models.store.tables import Media, MessageRef, Person, Ticket, TicketCounter, TicketEvent, Unit

from . import cards, follow
from .cards import card_message, notify_reporter


class Denied(Exception):
    """The person may not do this. Carries the untranslated reason, so whoever answers
    the person translates it into their language."""

    def __init__(self, message: str, **params):
        super().__init__(message)
        self.message, self.params = message, params

    def text(self, t) -> str:
        params = {k: t._(v) if k == "state" else v for k, v in self.params.items()}
        return t._(self.message, **params)


# ---- numbering -------------------------------------------------------------------------

async def next_number(session: AsyncSession, core: Core, now: datetime) -> str:
    """``YYYYMMDD-NNNN`` in local time, from a per-day counter row (safe across processes)."""
    day = core.local(now).strftime("%Y%m%d")
    connection = await session.connection()
    seq = (await connection.execute(_count_statement(session.bind.dialect.name),
                                    {"counter_day": day})).scalar_one()
    return f"{day}-{seq:04d}"


@functools.cache
def _count_statement(dialect: str):
    """The day's counter upsert, built once per dialect."""
    insert = upsert_insert(dialect)
    stmt = insert(TicketCounter).values(day=bindparam("counter_day"), last=1)
    stmt = stmt.on_conflict_do_update(index_elements=["day"], set_={"last": TicketCounter.last + 1})
    return stmt.returning(TicketCounter.last)


# ---- audit -----------------------------------------------------------------------------

def audit(session: AsyncSession, ticket: Ticket, actor_id: int | None, kind: str, now: datetime,
          from_state: str | None = None, note: str | None = None, data: dict | None = None) -> None:
    structlog.contextvars.bind_contextvars(ticket_id=ticket.id, ticket=ticket.number)  # log lines
    session.add(TicketEvent(ticket_id=ticket.id, actor_id=actor_id, at=now, kind=kind,
                            from_state=from_state, to_state=ticket.state, note=note, data=data))


async def transition(session: AsyncSession, ticket: Ticket, action: Action, now: datetime,
                     **changes) -> str:
    """Move ``ticket`` by ``action`` with a guarded UPDATE, so two concurrent
    actors (two chiefs pressing Claim) cannot both win: the loser gets TransitionError."""
    target = check(action, ticket.state)
    previous = ticket.state
    result = await session.execute(
        update(Ticket)
        .where(Ticket.id == ticket.id, Ticket.state.in_(sources(action)))
        .values(state=target.value, updated_at=now, **changes)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise TransitionError(f"{action} lost a race on ticket {ticket.id}")
    await session.refresh(ticket)
    return previous


# ---- creating and routing --------------------------------------------------------------

async def duty_unit(session: AsyncSession, core: Core) -> Unit:
    """Where tickets go that nothing routes: the configured unit, else the first street."""
    if core.config.duty_unit:
        unit = await org.unit_by_code(session, core.config.duty_unit)
        if unit is not None:
            return unit
    streets = await org.units_of_kind(session, "street")
    return streets[0]


async def create(session: AsyncSession, core: Core, reporter: Person, draft: dict,
                 channel: str) -> Ticket:
    """File a confirmed report: number it, route it, post it, tell the reporter."""
    now = core.now()
    category = core.config.category(draft["category"])
    grid_id, reason = route_draft(core, draft)
    # ``holder`` is held to the end: the card and the reporter's message read it from the session
    if grid_id is not None:
        unit_id, level, state = grid_id, "grid", State.ROUTED
        holder = await session.get(Unit, grid_id)
    else:
        holder = await duty_unit(session, core)
        unit_id, level, state = holder.id, "street", State.REPORTED
    location = draft.get("location")
    ticket = Ticket(
        number=await next_number(session, core, now), category=category.code,
        klass=category.klass, order_type=category.order_type, state=state.value,
        description=draft["description"], lat=location[0] if location else None,
        lon=location[1] if location else None, address=draft.get("address"), channel=channel,
        reporter_id=reporter.id, anonymous=draft.get("anonymous", True),
        contact_phone=draft.get("phone"), grid_id=grid_id, unit_id=unit_id, level=level,
        route_reason=reason, created_at=now, updated_at=now)
    session.add(ticket)
    await session.flush()
    if draft.get("photos"):
        await session.execute(update(Media).where(among(session, Media.id, draft["photos"]))
                              .values(ticket_id=ticket.id))
    audit(session, ticket, reporter.id, "created", now, data={"route_reason": reason})
    await deadlines.after(session, core, ticket, "created")
    # a report without photos has none to look up for its card
    await post_card(session, core, ticket, unit_id, photos=None if draft.get("photos") else [])
    await notify_reporter(session, core, ticket, "created")
    return ticket


def route_draft(core: Core, draft: dict) -> tuple[int | None, str]:
    """Point in a grid polygon first; else the grid chosen from the menu; else nobody."""
    location = draft.get("location")
    if location:
        grid_id = core.router.locate(location[0], location[1])
        if grid_id is not None:
            return grid_id, "point"
    if draft.get("grid_id"):
        return int(draft["grid_id"]), "menu"
    return None, "outside" if location else "none"


async def post_card(session: AsyncSession, core: Core, ticket: Ticket, unit_id: int,
                    photos: list[int] | None = None) -> None:
    """Post the ticket (album, pin, card with buttons) to every chat bound to ``unit_id``;
    when a unit has no chat, the duty chat gets it so nothing is silently lost.
    ``photos``: the ticket's report photos when the caller knows them."""
    chats = await org.chats_of_unit(session, unit_id, channels=core.channels)
    if not chats:  # the duty chat stands in for a unit without a chat, with its buttons
        duty = await duty_unit(session, core)
        chats = await org.chats_of_unit(session, duty.id, channels=core.channels)
    if photos is None:
        photos = list(await session.scalars(select(Media.id).where(
            Media.ticket_id == ticket.id, Media.kind == "report").order_by(Media.id)))
    for chat in chats:
        target = Target(chat.channel, chat.chat_id)
        if photos or ticket.lat is not None:
            enqueue(session, target, OutMessage(
                text="", photos=photos,
                location=(ticket.lat, ticket.lon) if ticket.lat is not None else None), core.now())
        message = await card_message(session, core, ticket, unit_id)
        enqueue(session, target, message, core.now())
        await _remember_card(session, message.ref, chat.channel, chat.chat_id)


async def _remember_card(session: AsyncSession, ref: str, channel: str, chat_id: str) -> None:
    """A ``message_ref`` row for the card in this chat, unless it has one (a card posted
    again keeps the row, and with it the message the sender edits)."""
    connection = await session.connection()
    await connection.execute(_remember_statement(session.bind.dialect.name), {
        "ref_ref": ref, "ref_channel": channel, "ref_chat": chat_id})


@functools.cache
def _remember_statement(dialect: str):
    """The insert, built once per dialect."""
    insert = upsert_insert(dialect)
    return (insert(MessageRef).values(ref=bindparam("ref_ref"), channel=bindparam("ref_channel"),
                                      chat_id=bindparam("ref_chat"), message_id=None)
            .on_conflict_do_nothing(index_elements=["ref", "channel", "chat_id"]))


async def refresh_cards(session: AsyncSession, core: Core, ticket: Ticket) -> None:
    """Edit every posted card of ``ticket`` in place to show its new state and buttons."""
    refs = await session.scalars(select(MessageRef).where(MessageRef.ref == f"card:{ticket.id}"))
    holder_has_chat = bool(await org.chats_of_unit(session, ticket.unit_id, channels=core.channels))
    duty = await duty_unit(session, core)
    for ref in refs:
        unit = await org.unit_of_chat(session, ref.channel, ref.chat_id)
        speaks_for = unit.id if unit else None
        if speaks_for == duty.id and not holder_has_chat:
            speaks_for = ticket.unit_id  # the duty chat stands in for a unit without a chat
        message = await card_message(session, core, ticket, speaks_for)
        message.edit = True
        enqueue(session, Target(ref.channel, ref.chat_id), message, core.now())


async def reroute(session: AsyncSession, core: Core, actor: Person, ticket: Ticket,
                  grid_id: int) -> None:
    """Dispatch re-routes a waiting or returned ticket to a grid."""
    if not await org.has_role_at_or_above(session, actor.id, ticket.unit_id):
        raise Denied(N_("Only the dispatch centre can route this ticket."))
    grid = await session.get(Unit, grid_id)
    if grid is None or grid.kind != "grid":
        raise Denied(N_("That grid no longer exists."))
    now = core.now()
    previous = await transition(session, ticket, Action.ROUTE, now, unit_id=grid.id,
                                grid_id=grid.id, level="grid", assignee_id=None,
                                route_reason="manual")
    audit(session, ticket, actor.id, "routed", now, previous, data={"grid": grid.code})
    await deadlines.after(session, core, ticket, Action.ROUTE)
    await refresh_cards(session, core, ticket)
    await post_card(session, core, ticket, grid.id)
    await notify_reporter(session, core, ticket, "routed")


# ---- the grid's actions ------------------------------------------------------------------

async def claim(session: AsyncSession, core: Core, actor: Person, ticket: Ticket) -> None:
    if not await org.has_role_at_or_above(session, actor.id, ticket.unit_id):
        raise Denied(N_("Only staff of this grid or above can claim this ticket."))
    if ticket.state not in sources(Action.CLAIM):
        raise await _taken(session, ticket)
    now = core.now()
    try:
        previous = await transition(session, ticket, Action.CLAIM, now, assignee_id=actor.id,
                                    claimed_at=now)
    except TransitionError:
        await session.refresh(ticket)
        raise await _taken(session, ticket) from None
    audit(session, ticket, actor.id, "claimed", now, previous)
    await deadlines.after(session, core, ticket, Action.CLAIM)
    await refresh_cards(session, core, ticket)
    await notify_reporter(session, core, ticket, "claimed", actor=actor)


async def _taken(session, ticket: Ticket) -> Denied:
    """Why a claim did not go through: someone has it, or it is past claiming."""
    if ticket.assignee_id and ticket.state in [x.value for x in WORKING]:
        who = await session.get(Person, ticket.assignee_id)
        return Denied(N_("Already claimed by {name}."), name=who.name)
    return Denied(N_("This ticket can no longer be claimed ({state})."),
                  state=STATE_LABELS[State(ticket.state)])


async def may_work(session: AsyncSession, actor: Person, ticket: Ticket) -> bool:
    """The assignee, or anyone above the ticket's unit, may report progress or resolve."""
    if ticket.assignee_id == actor.id:
        return True
    units = await org.ancestors(session, ticket.unit_id)
    return any([await org.has_role_at_or_above(session, actor.id, u.id) for u in units[1:]])


async def add_progress(session: AsyncSession, core: Core, actor: Person, ticket: Ticket,
                       note: str) -> None:
    now = core.now()
    previous = await transition(session, ticket, Action.PROGRESS, now)
    audit(session, ticket, actor.id, "progress", now, previous, note=note)
    await deadlines.after(session, core, ticket, Action.PROGRESS)
    await notify_whistler(session, core, ticket, actor, note)
    await refresh_cards(session, core, ticket)
    await notify_reporter(session, core, ticket, "progress", actor=actor, note=note)


async def return_ticket(session: AsyncSession, core: Core, actor: Person, ticket: Ticket,
                        reason: str) -> None:
    """Mis-routed: back to the dispatch chat, which re-routes it."""
    now = core.now()
    duty = await duty_unit(session, core)
    previous = await transition(session, ticket, Action.RETURN, now, unit_id=duty.id,
                                level="street", assignee_id=None, claimed_at=None)
    audit(session, ticket, actor.id, "returned", now, previous, note=reason)
    await deadlines.after(session, core, ticket, Action.RETURN)
    await refresh_cards(session, core, ticket)
    await post_card(session, core, ticket, duty.id)
    await notify_reporter(session, core, ticket, "returned")


async def escalate(session: AsyncSession, core: Core, actor: Person | None, ticket: Ticket,
                   reason: str | None) -> Unit:
    """Whistle one level up: grid → community → street; the upper chat gets a card to claim."""
    unit = await session.get(Unit, ticket.unit_id)
    if unit.parent_id is None or unit.kind not in ("grid", "community"):
        raise Denied(N_("This ticket is already at the top level."))
    upper = await session.get(Unit, unit.parent_id)
    now = core.now()
    former = ticket.assignee_id
    previous = await transition(session, ticket, Action.ESCALATE, now, unit_id=upper.id,
                                level=upper.kind if upper.kind in LEVELS else "street",
                                assignee_id=None, claimed_at=None,
                                escalations=ticket.escalations + 1)
    audit(session, ticket, actor.id if actor else None, "escalated", now, previous, note=reason,
          data={"to": upper.code})
    await deadlines.after(session, core, ticket, Action.ESCALATE)
    await refresh_cards(session, core, ticket)
    await post_card(session, core, ticket, upper.id)
    await notify_reporter(session, core, ticket, "escalated")
    if former is not None and (actor is None or former != actor.id):
        await _tell_former_assignee(session, core, former, ticket, upper, reason)
    return upper


async def _tell_former_assignee(session, core: Core, person_id: int, ticket: Ticket, upper: Unit,
                                reason: str | None) -> None:
    """The grid assignee stays informed when the ticket goes up without them."""
    await tell(session, core, person_id, lambda t: OutMessage(text=t._(
        "⬆️ #{number} was escalated to {unit}: {reason}", number=ticket.number,
        unit=org.display_name(upper, t.locale), reason=reason or "—")))


async def reopen(session: AsyncSession, core: Core, actor: Person | None, ticket: Ticket,
                 reason: str | None) -> None:
    """The resident is not satisfied: back to the assignee with a new resolve deadline;
    the second time, one level up."""
    now = core.now()
    previous = await transition(session, ticket, Action.REOPEN, now, reopens=ticket.reopens + 1,
                                resolved_at=None, closed_at=None, resolved_level=None)
    audit(session, ticket, actor.id if actor else None, "reopened", now, previous, note=reason)
    await deadlines.after(session, core, ticket, Action.REOPEN)
    await refresh_cards(session, core, ticket)
    t = core.i18n.get(None)
    for chat in await org.chats_of_unit(session, ticket.unit_id, channels=core.channels):
        enqueue(session, Target(chat.channel, chat.chat_id), OutMessage(text=t._(
            "🔁 #{number} was reopened: the resident says it is not solved.",
            number=ticket.number)), now)
    if ticket.reopens >= 2:
        unit = await session.get(Unit, ticket.unit_id)
        if unit.kind in ("grid", "community"):
            await escalate(session, core, None, ticket, t._("reopened a second time"))


async def close(session: AsyncSession, core: Core, actor: Person | None, ticket: Ticket,
                unrated: bool = False) -> None:
    now = core.now()
    previous = await transition(session, ticket, Action.CLOSE, now, closed_at=now, unrated=unrated)
    audit(session, ticket, actor.id if actor else None, "closed", now, previous,
          data={"unrated": True} if unrated else None)
    await deadlines.after(session, core, ticket, Action.CLOSE)
    await refresh_cards(session, core, ticket)


async def change_type(session: AsyncSession, core: Core, actor: Person, ticket: Ticket,
                      order_type: str) -> None:
    """Triage: whoever holds the ticket (or is above it) changes its order type."""
    if not await org.has_role_at_or_above(session, actor.id, ticket.unit_id):
        raise Denied(N_("Only staff of this unit or above can change the order type."))
    if ticket.state not in [s.value for s in OPEN] or order_type == ticket.order_type:
        raise TransitionError("nothing to change")
    previous_type = ticket.order_type
    ticket.order_type, ticket.updated_at = order_type, core.now()
    audit(session, ticket, actor.id, "retyped", core.now(), ticket.state,
          data={"from": previous_type, "to": order_type})
    await deadlines.retime(session, core, ticket)
    await refresh_cards(session, core, ticket)


async def mark_onsite(session: AsyncSession, core: Core, actor: Person, ticket: Ticket) -> None:
    """Emergency orders: the handler reports arriving on site."""
    if not await may_work(session, actor, ticket) or ticket.state not in sources(Action.PROGRESS):
        raise TransitionError("not the handler")
    audit(session, ticket, actor.id, "onsite", core.now(), ticket.state)
    await deadlines.after(session, core, ticket, "onsite")
    await refresh_cards(session, core, ticket)


async def ask_resident(session: AsyncSession, core: Core, actor: Person, ticket: Ticket,
                       question: str) -> None:
    """Need more information: the question goes to the reporter and the timers stop
    until they answer (their next message in the private chat)."""
    if ticket.waiting_since is not None:
        raise TransitionError("already waiting")
    row = await load_dialogue(session, ticket.reporter_id, ticket.channel, core.now())
    if row.pending:  # the reporter is already answering something: don't overwrite it
        raise Denied(N_("The resident is answering another question; try again later."))
    audit(session, ticket, actor.id, "asked", core.now(), ticket.state, note=question)
    await deadlines.pause(session, core, ticket)
    row.pending = {"action": "answer", "ticket": ticket.id}
    await notify_reporter(session, core, ticket, "asked", actor=actor, note=question)
    await refresh_cards(session, core, ticket)


async def stop_waiting(session: AsyncSession, core: Core, actor: Person | None,
                       ticket: Ticket) -> None:
    """Waiting on the resident ends without an answer (staff press "Stop waiting", or the
    resident cancels): the timers go on, so a ticket can never stay frozen."""
    if ticket.waiting_since is None:
        raise TransitionError("not waiting")
    audit(session, ticket, actor.id if actor else None, "stopped_waiting", core.now(),
          ticket.state)
    await deadlines.resume(session, core, ticket)
    row = await load_dialogue(session, ticket.reporter_id, ticket.channel, core.now())
    if (row.pending or {}).get("action") == "answer" and row.pending.get("ticket") == ticket.id:
        row.pending = None
    await refresh_cards(session, core, ticket)


async def answer_resident(session: AsyncSession, core: Core, reporter: Person, ticket: Ticket,
                          answer: str, media_id: int | None = None) -> None:
    audit(session, ticket, reporter.id, "answered", core.now(), ticket.state, note=answer,
          data={"photo": media_id} if media_id else None)
    if media_id is not None:
        await session.execute(update(Media).where(Media.id == media_id).values(ticket_id=ticket.id))
    await deadlines.resume(session, core, ticket)
    await refresh_cards(session, core, ticket)
    if ticket.assignee_id:
        await tell(session, core, ticket.assignee_id, lambda t: OutMessage(text=t._(
            "💬 The resident answered on #{number}: {answer}", number=ticket.number,
            answer=answer), photos=[media_id] if media_id else []))


async def notify_whistler(session, core: Core, ticket: Ticket, actor: Person, note: str) -> None:
    """The lead department's progress is seen by the unit that whistled."""
    if ticket.whistler_unit_id is None or ticket.level != "department":
        return
    t = core.i18n.get(None)
    holder = await session.get(Unit, ticket.unit_id)
    for chat in await org.chats_of_unit(session, ticket.whistler_unit_id, channels=core.channels):
        enqueue(session, Target(chat.channel, chat.chat_id), OutMessage(text=t._(
            "📣 {unit} on #{number}: {note}", unit=org.display_name(holder, t.locale),
            number=ticket.number, note=note)), core.now())


async def me_too(session: AsyncSession, core: Core, person: Person, ticket: Ticket,
                 draft: dict) -> bool:
    """A resident reports what is already reported: they follow it instead, and what they
    wrote and photographed is added to it."""
    if not await follow.follow(session, ticket, person.id, core.now()):
        return False
    note = draft.get("description")
    audit(session, ticket, person.id, "followed", core.now(), ticket.state, note=note)
    if draft.get("photos"):
        await session.execute(update(Media).where(among(session, Media.id, draft["photos"]))
                              .values(ticket_id=ticket.id))
    await refresh_cards(session, core, ticket)
    return True


async def add_info(session: AsyncSession, core: Core, person: Person, ticket: Ticket, note: str,
                   media_id: int | None = None) -> None:
    """A reporter or follower adds a comment or a photo to an open ticket."""
    if ticket.state not in [s.value for s in OPEN]:
        raise TransitionError("closed")
    audit(session, ticket, person.id, "comment", core.now(), ticket.state, note=note,
          data={"photo": media_id} if media_id else None)
    if media_id is not None:
        await session.execute(update(Media).where(Media.id == media_id).values(ticket_id=ticket.id))
    def message(t):
        return OutMessage(text=t._("💬 More information on #{number}: {note}",
                                   number=ticket.number, note=note),
                          photos=[media_id] if media_id else [])
    if ticket.assignee_id:
        await tell(session, core, ticket.assignee_id, message)
    else:
        for chat in await org.chats_of_unit(session, ticket.unit_id, channels=core.channels):
            enqueue(session, Target(chat.channel, chat.chat_id), message(core.i18n.get(None)),
                    core.now())


async def close_duplicate(session: AsyncSession, core: Core, actor: Person, ticket: Ticket,
                          original: Ticket) -> None:
    """Staff close a ticket as a duplicate: its reporter and followers move to the original."""
    if not await org.has_role_at_or_above(session, actor.id, ticket.unit_id):
        raise Denied(N_("Only staff of this unit or above can close this ticket."))
    if original.id == ticket.id or original.state in [s.value for s in FINAL]:
        raise Denied(N_("#{number} cannot be the original: choose an open ticket."),
                     number=original.number)
    now = core.now()
    people = await follow.audience(session, ticket)
    previous = await transition(session, ticket, Action.CLOSE_DUPLICATE, now, closed_at=now,
                                duplicate_of_id=original.id)
    audit(session, ticket, actor.id, "closed_duplicate", now, previous,
          data={"original": original.number})
    await deadlines.after(session, core, ticket, Action.CLOSE_DUPLICATE)
    moved = [p for p in people if await follow.follow(session, original, p, now)]
    audit(session, original, actor.id, "merged", now, original.state,
          data={"duplicate": ticket.number, "followers": len(moved)})
    await refresh_cards(session, core, ticket)
    await refresh_cards(session, core, original)
    for person_id in moved:
        await cards._notify_one(session, core, original, "merged", person_id, actor,
                                ticket.number, None)


CLOSE_REASONS = ("not_fixable", "not_ours", "referred")


async def close_not_fixed(session: AsyncSession, core: Core, actor: Person, ticket: Ticket,
                          reason: str, note: str) -> None:
    """An honest end: not fixable, not our responsibility, or referred elsewhere — with the
    reason shown to the resident. It never counts as resolved."""
    if reason not in CLOSE_REASONS:
        raise Denied(N_("This button is no longer active."))
    if not await org.has_role_at_or_above(session, actor.id, ticket.unit_id):
        raise Denied(N_("Only staff of this unit or above can close this ticket."))
    now = core.now()
    previous = await transition(session, ticket, Action.CLOSE_NOT_FIXED, now, closed_at=now,
                                close_reason=reason, close_note=note)
    audit(session, ticket, actor.id, "closed_not_fixed", now, previous, note=note,
          data={"reason": reason})
    await deadlines.after(session, core, ticket, Action.CLOSE_NOT_FIXED)
    await refresh_cards(session, core, ticket)
    await notify_reporter(session, core, ticket, "closed_not_fixed", actor=actor, note=note)
