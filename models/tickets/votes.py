"""The resident's verdict. When a ticket is resolved the reporter is asked: is it
solved (已解决 / 未解决) and how satisfied (满意 / 基本满意 / 不满意), with an optional
comment. One vote per person and ticket, changeable for ``vote_change``.
"Not solved" or "not satisfied" reopens the ticket; no answer gets one reminder,
then the ticket closes as unrated (never counted as satisfied). A ticket resolved again
after a reopen asks again, as a new question (the change window starts anew); if the
resident stays silent then, the vote they gave stands and counts: "unrated" means that
nobody voted at all."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.deadlines.timers import finish
from models.inputs import Input, Reply, parse_id
from models.lifecycle import State, TransitionError
from models.messages.i18n import N_, Translator
from models.messages.outbox import Button, OutMessage, enqueue
from models.org.people import load_dialogue, tell
from models.store.tables import Person, Ticket, Timer, Vote

from . import actions as tickets
from . import follow

VOTE_ACTIONS = {"vs", "vq"}
SATISFACTION = {"s": "satisfied", "b": "basic", "u": "unsatisfied"}
SATISFACTION_LABELS = {"satisfied": N_("Satisfied"), "basic": N_("Basically satisfied"),
                       "unsatisfied": N_("Not satisfied")}


def solved_buttons(t: Translator, ticket_id: int) -> list[list[Button]]:
    return [[Button(t._("✅ Solved"), "vs", f"{ticket_id}.1"),
             Button(t._("❌ Not solved"), "vs", f"{ticket_id}.0")]]


def satisfaction_buttons(t: Translator, ticket_id: int) -> list[list[Button]]:
    return [[Button(t._(SATISFACTION_LABELS[v]), "vq", f"{ticket_id}.{k}")
             for k, v in SATISFACTION.items()]]


async def voters(session: AsyncSession, ticket: Ticket) -> list[int]:
    """Who is asked for a verdict: the reporter and every follower, one vote each."""
    return await follow.audience(session, ticket)


async def ask(session: AsyncSession, core: Core, ticket: Ticket, reminder: bool = False) -> None:
    def question(t: Translator) -> OutMessage:
        text = (t._("⏰ Reminder: is the problem in report {number} solved?", number=ticket.number)
                if reminder else
                t._("Report {number} was marked resolved. Is the problem solved?",
                    number=ticket.number))
        return OutMessage(text=text, buttons=solved_buttons(t, ticket.id))
    for person_id in await voters(session, ticket):
        await tell(session, core, person_id, question)


async def on_button(session: AsyncSession, core: Core, person: Person, t: Translator,
                    inp: Input) -> Reply:
    stale = Reply(alert=t._("This button is no longer active."))
    ticket_arg, _, choice = inp.arg.partition(".")
    ticket = await session.get(Ticket, parse_id(ticket_arg)) if parse_id(ticket_arg) else None
    if ticket is None or person.id not in await voters(session, ticket):
        return stale
    if ticket.state not in (State.RESOLVED, State.CLOSED, State.REOPENED):
        return stale
    now = core.now()
    vote = await session.scalar(select(Vote).where(Vote.ticket_id == ticket.id,
                                                   Vote.person_id == person.id))
    window = core.config.deadlines.vote_change
    # resolved again since this vote: the question is new, and so is its window
    new_round = vote is not None and ticket.resolved_at is not None \
        and ticket.resolved_at > vote.updated_at
    # the window runs from the vote, or from the latest resolution when that came later
    since = max(filter(None, (vote.created_at if vote else None,
                              ticket.resolved_at or ticket.closed_at)), default=None)
    if since is not None and now > core.calendar.add(since, window):
        return Reply(alert=t._("The time to change this vote has passed."), show_alert=True)
    if vote is None:
        vote = Vote(ticket_id=ticket.id, person_id=person.id, created_at=now, updated_at=now)
        session.add(vote)
    if inp.action == "vs" and choice in ("0", "1"):
        vote.solved, vote.updated_at = choice == "1", now
        if new_round:
            vote.satisfaction = None  # the satisfaction of the earlier round is asked anew
        if not vote.solved:  # "not solved" reopens at once; how satisfied is optional
            await session.flush()
            await settle(session, core, person, ticket, vote)
        enqueue(session, inp.chat, OutMessage(
            text=t._("How satisfied are you with how report {number} was handled?",
                     number=ticket.number), buttons=satisfaction_buttons(t, ticket.id)), now)
        return Reply()
    if inp.action == "vq" and choice in SATISFACTION:
        if vote.solved is None:
            return stale
        vote.satisfaction, vote.updated_at = SATISFACTION[choice], now
        await settle(session, core, person, ticket, vote)
        row = await load_dialogue(session, person.id, inp.sender.channel, now)
        row.pending = {"action": "vote_comment", "ticket": ticket.id}
        enqueue(session, inp.chat, OutMessage(text=t._(
            "Thank you for your vote. You may send a comment now (or /cancel)."),
            force_reply=True, placeholder=t._("Your comment")), now)
        return Reply(alert=t._("Thank you!"))
    return stale


async def settle(session: AsyncSession, core: Core, person: Person, ticket: Ticket,
                 vote: Vote) -> None:
    """A complete vote closes the ticket, or reopens it when the resident is not content."""
    content = vote.solved and vote.satisfaction != "unsatisfied"
    try:
        if content and ticket.state == State.RESOLVED:
            await tickets.close(session, core, person, ticket)
        elif not content and ticket.state in (State.RESOLVED, State.CLOSED):
            reason = (SATISFACTION_LABELS[vote.satisfaction] if vote.satisfaction
                      else N_("Not solved"))
            await tickets.reopen(session, core, person, ticket, core.i18n.get(None)._(reason))
    except TransitionError:
        pass  # a concurrent change already moved the ticket; the vote itself is kept


async def comment(session: AsyncSession, core: Core, person: Person, t: Translator, inp: Input,
                  pending: dict) -> None:
    row = await load_dialogue(session, person.id, inp.sender.channel, core.now())
    row.pending = None
    text = (inp.text or "").strip() if inp.kind == "text" else ""
    vote = await session.scalar(select(Vote).where(Vote.ticket_id == pending["ticket"],
                                                   Vote.person_id == person.id))
    if not text or vote is None:
        enqueue(session, inp.chat, OutMessage(text=t._("No comment recorded.")), core.now())
        return
    vote.comment = text[:core.config.intake.max_note]
    enqueue(session, inp.chat, OutMessage(text=t._("Comment recorded. Thank you!")), core.now())


async def on_timer(session: AsyncSession, core: Core, timer: Timer, ticket: Ticket,
                   now: datetime, result) -> None:
    """First the reminder, then closing: as unrated when nobody ever voted, else on the
    vote that stands (the resident's earlier verdict, still counted)."""
    if ticket.state != State.RESOLVED:
        finish(timer, now)
        return
    if timer.stage == "running" and now < timer.due_at:
        timer.stage, timer.next_at = "warned", timer.due_at
        await ask(session, core, ticket, reminder=True)
        return
    finish(timer, now)
    voted = await session.scalar(select(Vote.id).where(Vote.ticket_id == ticket.id).limit(1))
    await tickets.close(session, core, None, ticket, unrated=voted is None)
    if voted is None:
        result.closed_unrated += 1
