"""Deadlines as rows ("两类三单限时办结"). Each ticket action starts or finishes
timers here, in the same transaction; the sweep (``models/tickets/sweep.py``) acts on
the rows whose ``next_at`` has come.

Timers by kind: claim (response; per level — an escalation starts a new one),
onsite (emergency orders), resolve, progress (key orders, restarts with each
progress note) and vote (the resident's verdict after resolution)."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.lifecycle import Action
from models.store.tables import Ticket, Timer

from . import board
from .calendar import Span

WORK_KINDS = ("claim", "onsite", "resolve", "progress", "duty")
TYPED_KINDS = ("claim", "onsite", "resolve", "progress")  # set by the order type


async def open_timers(session: AsyncSession, ticket_id: int, kinds=None) -> list[Timer]:
    query = select(Timer).where(Timer.ticket_id == ticket_id, Timer.stage != "done")
    if kinds:
        query = query.where(Timer.kind.in_(kinds))
    return list(await session.scalars(query.order_by(Timer.id)))


def start_timer(session: AsyncSession, core: Core, ticket: Ticket, kind: str, span: Span,
                unit_id: int, start: datetime | None = None) -> Timer:
    start = start or core.now()
    due = core.calendar.add(start, span)
    warn = core.calendar.warn_at(start, due, span.working)
    timer = Timer(ticket_id=ticket.id, kind=kind, unit_id=unit_id, working=span.working,
                  starts_at=start, warn_at=warn, due_at=due, stage="running", next_at=warn)
    session.add(timer)
    return timer


def finish(timer: Timer, now: datetime) -> None:
    timer.stage, timer.next_at, timer.done_at = "done", None, now
    if timer.met is None:
        timer.met = now <= timer.due_at


async def finish_kinds(session: AsyncSession, ticket: Ticket, kinds, now: datetime) -> set[int]:
    """Finish the ticket's open timers of ``kinds``; returns the units whose overdue board
    listed one of them (it must be redrawn)."""
    listed = set()
    for timer in await open_timers(session, ticket.id, kinds):
        if timer.stage in ("warned", "breached"):
            listed.add(timer.unit_id)
        finish(timer, now)
    return listed


async def after(session: AsyncSession, core: Core, ticket: Ticket, action: Action | str) -> None:
    """Start and finish the timers that ``action`` implies for ``ticket``, and redraw the
    overdue boards that listed a timer now finished."""
    listed = await _timers_after(session, core, ticket, str(action))
    for unit_id in sorted(listed or ()):
        await board.refresh(session, core, unit_id)


async def _timers_after(session: AsyncSession, core: Core, ticket: Ticket, action: str) -> set[int]:
    now = core.now()
    spans = core.config.timers_for(ticket.order_type, ticket.category)
    listed: set[int] = set()
    if action == "created":
        claim = start_timer(session, core, ticket, "claim", spans["claim"], ticket.unit_id)
        resolve = start_timer(session, core, ticket, "resolve", spans["resolve"], ticket.unit_id)
        ticket.claim_due_at, ticket.resolve_due_at = claim.due_at, resolve.due_at
        if "onsite" in spans:
            start_timer(session, core, ticket, "onsite", spans["onsite"], ticket.unit_id)
    elif action in (Action.ROUTE, Action.ESCALATE, Action.WHISTLE, Action.RETURN):
        # whoever holds the ticket now (a grid, the level above, dispatch) must claim it in time
        listed |= await finish_kinds(session, ticket, ["claim", "progress", "duty"], now)
        start_timer(session, core, ticket, "claim", spans["claim"], ticket.unit_id)
        listed |= await _move(session, ticket, ["resolve", "onsite"])
    elif action == Action.CLAIM:
        listed |= await finish_kinds(session, ticket, ["claim"], now)
        if "progress" in spans:
            start_timer(session, core, ticket, "progress", spans["progress"], ticket.unit_id)
    elif action == Action.PROGRESS:
        if "progress" in spans:
            listed |= await finish_kinds(session, ticket, ["progress"], now)
            start_timer(session, core, ticket, "progress", spans["progress"], ticket.unit_id)
    elif action == "onsite":
        listed |= await finish_kinds(session, ticket, ["onsite"], now)
    elif action == Action.RESOLVE:
        listed |= await finish_kinds(session, ticket, WORK_KINDS, now)
        d = core.config.deadlines
        timer = start_timer(session, core, ticket, "vote", d.vote_close, ticket.unit_id)
        timer.warn_at = timer.next_at = core.calendar.add(now, d.vote_reminder)
    elif action == Action.REOPEN:
        listed |= await finish_kinds(session, ticket, ["vote"], now)
        resolve = start_timer(session, core, ticket, "resolve", spans["resolve"], ticket.unit_id)
        ticket.resolve_due_at = resolve.due_at
        if "progress" in spans:
            start_timer(session, core, ticket, "progress", spans["progress"], ticket.unit_id)
    elif action in (Action.CLOSE, Action.CLOSE_DUPLICATE, Action.CLOSE_NOT_FIXED):
        listed |= await finish_kinds(session, ticket, [*WORK_KINDS, "vote"], now)
    return listed


async def _move(session: AsyncSession, ticket: Ticket, kinds) -> set[int]:
    """Running timers follow the ticket to the unit that holds it now; returns the units
    whose board listed one of them."""
    listed = set()
    for timer in await open_timers(session, ticket.id, kinds):
        if timer.stage in ("warned", "breached") and timer.unit_id != ticket.unit_id:
            listed.add(timer.unit_id)
        timer.unit_id = ticket.unit_id
    return listed


async def retime(session: AsyncSession, core: Core, ticket: Ticket) -> None:
    """The order type changed: running timers are recomputed from their start, timers
    the new type does not have end, and an emergency gains its on-site timer."""
    spans = core.config.timers_for(ticket.order_type, ticket.category)
    now = core.now()
    present = set()
    for timer in await open_timers(session, ticket.id, TYPED_KINDS):
        present.add(timer.kind)
        if timer.kind not in spans:
            finish(timer, now)
            continue
        span = spans[timer.kind]
        timer.working = span.working
        timer.due_at = core.calendar.add(timer.starts_at, span)
        timer.warn_at = core.calendar.warn_at(timer.starts_at, timer.due_at, span.working)
        if timer.stage == "breached" and now < timer.due_at:
            timer.stage = "warned"  # the new deadline has not passed yet
            timer.next_at = timer.due_at
        elif timer.stage != "breached":  # a missed one keeps its grace (or its done escalation)
            timer.next_at = next_step(timer)
        if timer.kind == "resolve":
            ticket.resolve_due_at = timer.due_at
        elif timer.kind == "claim" and ticket.claimed_at is None:
            ticket.claim_due_at = timer.due_at
    if "onsite" in spans and "onsite" not in present and ticket.claimed_at is None:
        start_timer(session, core, ticket, "onsite", spans["onsite"], ticket.unit_id,
                    start=ticket.created_at)


def next_step(timer: Timer) -> datetime | None:
    """When the sweep must look at a running or warned ``timer`` again."""
    return {"running": timer.warn_at, "warned": timer.due_at}.get(timer.stage)


async def pause(session: AsyncSession, core: Core, ticket: Ticket) -> None:
    """Waiting on the resident: work timers stop (the sweep skips paused rows)."""
    now = core.now()
    ticket.waiting_since = now
    for timer in await open_timers(session, ticket.id, WORK_KINDS):
        timer.paused_at = now


async def resume(session: AsyncSession, core: Core, ticket: Ticket) -> None:
    """The resident answered: every step still ahead of each timer (warning, deadline,
    escalation after a grace) moves by the time the ticket waited, in the timer's measure."""
    now = core.now()
    ticket.waiting_since = None
    for timer in await open_timers(session, ticket.id, WORK_KINDS):
        if timer.paused_at is None:
            continue
        paused = timer.paused_at

        def moved(moment: datetime) -> datetime:
            return core.calendar.resume(moment, paused, now, timer.working)
        if timer.next_at is not None and timer.next_at > paused:
            timer.next_at = moved(timer.next_at)
        if timer.due_at > paused:
            timer.due_at = moved(timer.due_at)
        if timer.warn_at > paused:
            timer.warn_at = moved(timer.warn_at)
        timer.paused_at = None
        if timer.kind == "resolve":
            ticket.resolve_due_at = timer.due_at
