"""Whistling to departments (吹哨报到, the "work instruction" 工作指令): a community or
street names a lead department and optionally cooperating ones. Each gets the card
in its chat — the lead claims and handles it, the others report for duty — and
when the lead resolves it, the unit that whistled rates the department
(一哨一评, one whistle, one rating)."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.deadlines import timers as deadlines
from models.inputs import Input, Reply, parse_id
from models.lifecycle import Action, TransitionError, sources
from models.messages.i18n import Translator
from models.messages.outbox import Button, OutMessage, Target, enqueue
from models.org import tree as org
from models.org.people import load_dialogue
from models.store.tables import Assignment, DepartmentRating, Person, Ticket, Unit

from . import actions as tickets

WHISTLE_ACTIONS = {"whistle", "wl", "wc", "ws", "duty", "rate"}


def _rows(buttons: list[Button], width: int = 2) -> list[list[Button]]:
    return [buttons[i:i + width] for i in range(0, len(buttons), width)]


async def on_button(session: AsyncSession, core: Core, person: Person, t: Translator,
                    inp: Input) -> Reply:
    stale = Reply(alert=t._("This button is no longer active."))
    ticket_arg, _, extra = inp.arg.partition(".")
    ticket = await session.get(Ticket, parse_id(ticket_arg)) if parse_id(ticket_arg) else None
    if ticket is None:
        return stale
    if inp.action == "duty":
        return await report_for_duty(session, core, person, t, ticket, inp)
    if inp.action == "rate":
        return await rate(session, core, person, t, ticket, inp, extra)
    holder = await session.get(Unit, ticket.unit_id)
    if ticket.state not in sources(Action.WHISTLE) or holder.kind not in ("community", "street"):
        return stale
    if not await org.has_role_at_or_above(session, person.id, holder.id):
        return Reply(alert=t._("Only staff of {unit} can whistle to departments.",
                               unit=org.display_name(holder, t.locale)), show_alert=True)
    row = await load_dialogue(session, person.id, inp.sender.channel, core.now())
    draft = row.pending if (row.pending or {}).get("action") == "whistle" and \
        row.pending.get("ticket") == ticket.id else {"action": "whistle", "ticket": ticket.id,
                                                     "lead": None, "coop": []}
    departments = {d.id for d in await org.units_of_kind(session, "department")}
    choice = parse_id(extra)
    if inp.action == "wl" and choice in departments:
        draft = {**draft, "lead": choice, "coop": [c for c in draft["coop"] if c != choice]}
    elif inp.action == "wc" and choice in departments and draft.get("lead"):
        coop = list(draft["coop"])
        coop.remove(choice) if choice in coop else coop.append(choice)
        draft = {**draft, "coop": coop}
    elif inp.action == "ws" and draft.get("lead"):
        row.pending = None
        try:
            await whistle(session, core, person, ticket, holder, draft["lead"], draft["coop"])
        except TransitionError:
            return stale
        return Reply(alert=t._("Whistle blown for #{number}.", number=ticket.number))
    elif inp.action != "whistle":
        return stale
    row.pending = draft
    await _menu(session, core, ticket, inp.chat, person, draft)
    return Reply()


async def _menu(session, core: Core, ticket: Ticket, chat: Target, person: Person,
                draft: dict) -> None:
    """One message, edited in place as the lead and the cooperating departments are chosen."""
    t = core.i18n.get(None)
    departments = await org.units_of_kind(session, "department")
    tid = ticket.id
    if not draft.get("lead"):
        text = t._("Whistle #{number}: choose the lead department.", number=ticket.number)
        buttons = _rows([Button(org.display_name(d, t.locale), "wl", f"{tid}.{d.id}")
                         for d in departments])
    else:
        lead = next(d for d in departments if d.id == draft["lead"])
        text = t._("Whistle #{number}: lead department {lead}. Add cooperating departments "
                   "(optional), then send.", number=ticket.number,
                   lead=org.display_name(lead, t.locale))
        buttons = _rows([Button(("☑️ " if d.id in draft["coop"] else "⬜ ")
                                + org.display_name(d, t.locale), "wc", f"{tid}.{d.id}")
                         for d in departments if d.id != draft["lead"]])
        buttons.append([Button(t._("📣 Send"), "ws", str(tid))])
    enqueue(session, chat, OutMessage(text=text, buttons=buttons,
                                      ref=f"whistle:{tid}:{person.id}", edit=True), core.now())


async def whistle(session: AsyncSession, core: Core, actor: Person, ticket: Ticket, holder: Unit,
                  lead_id: int, coop_ids: list[int]) -> None:
    lead = await session.get(Unit, lead_id)
    if lead is None or lead.kind != "department":
        raise TransitionError("no such department")
    departments = {d.id for d in await org.units_of_kind(session, "department")}
    coop_ids = [c for c in coop_ids if c in departments and c != lead.id]
    now = core.now()
    previous = await tickets.transition(session, ticket, Action.WHISTLE, now, unit_id=lead.id,
                                        level="department", assignee_id=None, claimed_at=None,
                                        whistler_unit_id=holder.id)
    already = {a.unit_id: a for a in await session.scalars(select(Assignment).where(
        Assignment.ticket_id == ticket.id))}
    for unit_id, role in [(lead.id, "lead"), *[(c, "coop") for c in coop_ids]]:
        if unit_id in already:  # whistled to it before: the same assignment, renewed
            already[unit_id].role, already[unit_id].state = role, "waiting"
            already[unit_id].whistler_unit_id = holder.id
            continue
        session.add(Assignment(ticket_id=ticket.id, unit_id=unit_id, role=role,
                               whistler_unit_id=holder.id, whistled_by=actor.id, state="waiting",
                               created_at=now))
    await session.flush()
    tickets.audit(session, ticket, actor.id, "whistled", now, previous,
                  data={"lead": lead.code, "coop": coop_ids, "by": holder.code})
    await deadlines.after(session, core, ticket, Action.WHISTLE)
    claim_span = core.config.timers_for(ticket.order_type, ticket.category)["claim"]
    for unit_id in coop_ids:  # each cooperating department must report for duty in time
        deadlines.start_timer(session, core, ticket, "duty", claim_span, unit_id)
    await tickets.refresh_cards(session, core, ticket)
    for unit_id in [lead.id, *coop_ids]:
        await tickets.post_card(session, core, ticket, unit_id)
    await tickets.notify_reporter(session, core, ticket, "escalated")


async def assignment_of(session, ticket_id: int, unit_id: int) -> Assignment | None:
    return await session.scalar(select(Assignment).where(Assignment.ticket_id == ticket_id,
                                                         Assignment.unit_id == unit_id))


async def report_for_duty(session, core: Core, person: Person, t: Translator, ticket: Ticket,
                          inp: Input) -> Reply:
    """A cooperating department acknowledges the whistle (报到)."""
    unit = await org.unit_of_chat(session, inp.chat.channel, inp.chat.chat_id)
    assignment = await assignment_of(session, ticket.id, unit.id) if unit else None
    if assignment is None or assignment.state != "waiting":
        return Reply(alert=t._("This button is no longer active."))
    if not await org.has_role_at_or_above(session, person.id, unit.id):
        return Reply(alert=t._("Only staff of {unit} can report for duty.",
                               unit=org.display_name(unit, t.locale)), show_alert=True)
    now = core.now()
    assignment.state, assignment.reported_by, assignment.reported_at = "reported", person.id, now
    for timer in await deadlines.open_timers(session, ticket.id, ["duty"]):
        if timer.unit_id == unit.id:
            deadlines.finish(timer, now)
    tickets.audit(session, ticket, person.id, "reported_for_duty", now, ticket.state,
                  data={"unit": unit.code})
    await tickets.refresh_cards(session, core, ticket)
    group_t = core.i18n.get(None)
    for chat in await org.chats_of_unit(session, assignment.whistler_unit_id, channels=core.channels):
        enqueue(session, Target(chat.channel, chat.chat_id), OutMessage(text=group_t._(
            "📣 {unit} reported for duty on #{number}.", unit=org.display_name(unit, group_t.locale),
            number=ticket.number)), now)
    return Reply(alert=t._("Reported for duty."))


async def ask_rating(session: AsyncSession, core: Core, ticket: Ticket) -> None:
    """When a whistled ticket is resolved, the unit that whistled rates the department."""
    if ticket.whistler_unit_id is None or ticket.resolved_level != "department":
        return
    t = core.i18n.get(None)
    department = await session.get(Unit, ticket.unit_id)
    buttons = [[Button("⭐" * n, "rate", f"{ticket.id}.{n}") for n in range(1, 6)]]
    for chat in await org.chats_of_unit(session, ticket.whistler_unit_id, channels=core.channels):
        enqueue(session, Target(chat.channel, chat.chat_id), OutMessage(text=t._(
            "{unit} resolved #{number}. Rate its response (one whistle, one rating):",
            unit=org.display_name(department, t.locale), number=ticket.number), buttons=buttons),
            core.now())


async def rate(session, core: Core, person: Person, t: Translator, ticket: Ticket, inp: Input,
               extra: str) -> Reply:
    if ticket.whistler_unit_id is None or extra not in ("1", "2", "3", "4", "5"):
        return Reply(alert=t._("This button is no longer active."))
    if not await org.has_role_at_or_above(session, person.id, ticket.whistler_unit_id):
        return Reply(alert=t._("Only the unit that whistled can rate."), show_alert=True)
    department_id = ticket.unit_id
    rating = await session.scalar(select(DepartmentRating).where(
        DepartmentRating.ticket_id == ticket.id, DepartmentRating.department_id == department_id))
    now = core.now()
    if rating is None:
        session.add(DepartmentRating(ticket_id=ticket.id, department_id=department_id,
                                     rater_unit_id=ticket.whistler_unit_id, rater_id=person.id,
                                     score=int(extra), created_at=now))
    else:
        rating.score, rating.rater_id = int(extra), person.id
    tickets.audit(session, ticket, person.id, "rated", now, ticket.state, data={"score": int(extra)})
    row = await load_dialogue(session, person.id, inp.sender.channel, now)
    row.pending = {"action": "rating_comment", "ticket": ticket.id}
    group_t = core.i18n.get(None)
    enqueue(session, inp.chat, OutMessage(text=group_t._(
        "{name}: {score} ⭐ recorded for #{number}. Reply to this message to add a comment "
        "(optional).", name=person.name, score=extra, number=ticket.number), force_reply=True),
        now)
    return Reply(alert=t._("Rating recorded."))


async def rating_comment(session, core: Core, person: Person, t: Translator, inp: Input,
                         pending: dict) -> None:
    row = await load_dialogue(session, person.id, inp.sender.channel, core.now())
    row.pending = None
    text = (inp.text or "").strip() if inp.kind == "text" else ""
    ticket = await session.get(Ticket, pending["ticket"])
    rating = await session.scalar(select(DepartmentRating).where(
        DepartmentRating.ticket_id == ticket.id, DepartmentRating.department_id == ticket.unit_id))
    if text and rating is not None:
        rating.comment = text[:core.config.intake.max_note]
        enqueue(session, inp.chat, OutMessage(text=t._("Comment recorded. Thank you!")), core.now())
