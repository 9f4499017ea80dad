"""Staff actions from a unit's chat: claim, return, progress, resolve, escalate, route.

Notes (a progress note, a resolution, a reason) are collected by a reply to the
bot's prompt, because with group privacy mode a bot only sees replies to itself
and commands; the staff member may also send the note in a private chat."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.inputs import Input, Reply, parse_id
from models.lifecycle import FINAL, STATE_LABELS, Action, State, TransitionError, sources
from models.media.photos import PhotoError, require, store_photo
from models.messages.i18n import N_, Translator
from models.messages.outbox import Button, OutMessage, Target, enqueue
from models.org import tree as org
from models.org.people import load_dialogue, tell
from models.store.tables import Person, Ticket, Unit

from . import actions as tickets
from . import resolution
from .cards import CLOSE_LABELS, ORDER_LABELS

NOTE_ACTIONS = {"progress": Action.PROGRESS, "resolve": Action.RESOLVE,
                "return": Action.RETURN, "escalate": Action.ESCALATE, "ask": Action.PROGRESS,
                "dup": Action.CLOSE_DUPLICATE, "close": Action.CLOSE_NOT_FIXED}
NOTE_PROMPTS = {
    "progress": N_("{name}, reply to this message with a progress note for #{number}."),
    "resolve": N_("{name}, reply to this message with the resolution of #{number} "
                  "(text, or a photo with a caption)."),
    "return": N_("{name}, reply to this message with the reason for returning #{number}."),
    "escalate": N_("{name}, reply to this message with the reason for escalating #{number}."),
    "ask": N_("{name}, reply to this message with your question to the resident about "
              "#{number}. Deadlines pause until they answer."),
    "dup": N_("{name}, reply to this message with the number of the ticket that #{number} "
              "duplicates."),
    "close": N_("{name}, reply to this message with the reason for closing #{number}; the "
                "resident will see it."),
}

STAFF_ACTIONS = {"claim", "return", "progress", "resolve", "escalate", "ask", "onsite", "type",
                 "ty", "route", "rc", "rg", "dup", "close", "cr", "resume"}
ORDER_TYPES = ("emergency", "routine", "key")
TWO_PART = {"rc", "rg", "ty", "cr"}  # actions whose data is "ticket.choice"


async def ticket_or_none(session: AsyncSession, arg: str) -> Ticket | None:
    return await session.get(Ticket, parse_id(arg)) if parse_id(arg) else None


async def on_button(session: AsyncSession, core: Core, person: Person, t: Translator,
                    inp: Input) -> Reply:
    stale = Reply(alert=t._("This button is no longer active."))
    ticket_arg, dot, extra = inp.arg.partition(".")
    ticket = await ticket_or_none(session, ticket_arg)
    if ticket is None or (dot and inp.action not in TWO_PART):
        return stale
    try:
        if inp.action == "claim":
            await tickets.claim(session, core, person, ticket)
            await _share_contact(session, core, person, ticket)
            return Reply(alert=t._("You claimed #{number}.", number=ticket.number))
        if inp.action == "close":
            return await _close_menu(session, core, person, t, ticket, inp.chat)
        if inp.action == "cr" and extra in CLOSE_LABELS:
            return await _ask_note(session, core, person, t, ticket, inp, "close", reason=extra)
        if inp.action in NOTE_ACTIONS:
            return await _ask_note(session, core, person, t, ticket, inp, inp.action)
        if inp.action == "resume":
            if not await tickets.may_work(session, person, ticket):
                return Reply(alert=t._("Only the person handling #{number} (or their superiors) "
                                       "can do this.", number=ticket.number), show_alert=True)
            await tickets.stop_waiting(session, core, person, ticket)
            return Reply(alert=t._("Deadlines run again for #{number}.", number=ticket.number))
        if inp.action == "onsite":
            await tickets.mark_onsite(session, core, person, ticket)
            return Reply(alert=t._("On site at #{number} recorded.", number=ticket.number))
        if inp.action == "type":
            return await _type_menu(session, core, person, t, ticket, inp.chat)
        if inp.action == "ty" and extra in ORDER_TYPES:
            await tickets.change_type(session, core, person, ticket, extra)
            return Reply(alert=t._("Order type changed."))
        if inp.action == "route":
            return await _route_menu(session, core, person, t, ticket, inp.chat, None)
        if inp.action == "rc" and parse_id(extra):
            return await _route_menu(session, core, person, t, ticket, inp.chat, int(extra))
        if inp.action == "rg" and parse_id(extra):
            await tickets.reroute(session, core, person, ticket, int(extra))
            return Reply(alert=t._("Routed #{number}.", number=ticket.number))
    except tickets.Denied as exc:
        return Reply(alert=exc.text(t), show_alert=True)
    except TransitionError:
        return stale
    return stale


async def _share_contact(session, core: Core, assignee: Person, ticket: Ticket) -> None:
    """Only the assignee learns the reporter's phone, and only if it was shared."""
    if not ticket.contact_phone:
        return
    await tell(session, core, assignee.id, lambda t: OutMessage(text=t._(
        "Reporter's phone for #{number}: {phone}", number=ticket.number,
        phone=ticket.contact_phone)))


async def _allowed(session, person: Person, ticket: Ticket, action: str) -> bool:
    if action in ("progress", "resolve", "ask"):
        return await tickets.may_work(session, person, ticket)
    return await org.has_role_at_or_above(session, person.id, ticket.unit_id)


async def _ask_note(session, core: Core, person: Person, t: Translator, ticket: Ticket,
                    inp: Input, action: str, **extra) -> Reply:
    if ticket.state not in sources(NOTE_ACTIONS[action]):
        return Reply(alert=t._("This button is no longer active."))
    if not await _allowed(session, person, ticket, action):
        return Reply(alert=t._("Only the person handling #{number} (or their superiors) can do "
                               "this.", number=ticket.number), show_alert=True)
    if action == "escalate":
        unit = await session.get(Unit, ticket.unit_id)
        if unit.kind not in ("grid", "community"):
            return Reply(alert=t._("This ticket is already at the top level."), show_alert=True)
    row = await load_dialogue(session, person.id, inp.sender.channel, core.now())
    row.pending = {"action": action, "ticket": ticket.id, "chat": inp.chat.chat_id, **extra}
    row.updated_at = core.now()
    group_t = core.i18n.get(None) if not inp.private else t
    enqueue(session, inp.chat, OutMessage(
        text=group_t._(NOTE_PROMPTS[action], name=person.name, number=ticket.number)
        + "\n" + group_t._("(Or send it to me in a private chat. /cancel to stop.)"),
        force_reply=True, placeholder=group_t._("Your note")), core.now())
    return Reply(alert=t._("Reply to my message with the note."))


async def on_note(session: AsyncSession, core: Core, person: Person, t: Translator,
                  inp: Input, pending: dict) -> None:
    """A staff member's answer to a note prompt: apply the pending action."""
    row = await load_dialogue(session, person.id, inp.sender.channel, core.now())
    ticket = await session.get(Ticket, pending["ticket"])
    action = pending["action"]
    limit = core.config.intake.max_note
    if not inp.private and inp.chat.chat_id != pending.get("chat"):
        return  # a reply in some other group is not the note we asked for
    if not await _allowed(session, person, ticket, action):
        row.pending = None  # things changed (escalated, claimed by someone else) meanwhile
        _say(session, core, inp.chat, t._("#{number} has changed meanwhile ({state}); nothing "
                                          "was recorded.", number=ticket.number,
                                          state=t._(STATE_LABELS[State(ticket.state)])))
        return
    if inp.kind == "photo" and action == "resolve":
        require(inp.photo)  # downloaded only now that it is taken as proof
        if inp.photo.data is None or inp.photo.size > core.config.intake.max_photo_bytes:
            _say(session, core, inp.chat, t._("That photo is too large; please send a smaller one."))
            return
        try:
            media = await store_photo(session, core, person, inp, "proof")
        except PhotoError:
            _say(session, core, inp.chat, t._("That file is not a photo I can read."))
            return
        row.pending = {**pending, "photo": media.id}
        if not (inp.text or "").strip():
            _say(session, core, inp.chat, t._("Photo received. Now send the resolution note."))
            return
        pending = row.pending
    elif inp.kind != "text" or not (inp.text or "").strip():
        _say(session, core, inp.chat, t._("Please send the note as text (or /cancel)."))
        return
    note = inp.text.strip()
    if len(note) > limit:
        _say(session, core, inp.chat, t._("That note is too long ({n} characters): please keep "
                                          "it under {max}.", n=len(note), max=limit))
        return
    row.pending = None
    try:
        if action == "progress":
            await tickets.add_progress(session, core, person, ticket, note)
        elif action == "resolve":
            await resolution.resolve(session, core, person, ticket, note, pending.get("photo"))
        elif action == "return":
            await tickets.return_ticket(session, core, person, ticket, note)
        elif action == "escalate":
            await tickets.escalate(session, core, person, ticket, note)
        elif action == "ask":
            await tickets.ask_resident(session, core, person, ticket, note)
        elif action == "dup":
            original = await session.scalar(select(Ticket).where(
                Ticket.number == note.lstrip("#").strip()))
            problem = None
            if original is None:
                problem = t._("No ticket {number}. Reply with a ticket number such as "
                              "20261122-0007 (or /cancel).", number=note[:30])
            elif original.id == ticket.id or original.state in [s.value for s in FINAL]:
                problem = t._("#{number} cannot be the original: choose an open ticket.",
                              number=original.number)
            if problem:
                row.pending = pending  # keep asking
                _say(session, core, inp.chat, problem)
                return
            await tickets.close_duplicate(session, core, person, ticket, original)
        elif action == "close":
            await tickets.close_not_fixed(session, core, person, ticket, pending["reason"], note)
    except tickets.Denied as exc:
        _say(session, core, inp.chat, exc.text(t))
        return
    except TransitionError:
        _say(session, core, inp.chat, t._("#{number} has changed meanwhile ({state}); nothing "
                                          "was recorded.", number=ticket.number,
                                          state=t._(STATE_LABELS[State(ticket.state)])))
        return
    _say(session, core, inp.chat, t._("Recorded for #{number}.", number=ticket.number))


def _say(session, core: Core, chat: Target, text: str) -> None:
    enqueue(session, chat, OutMessage(text=text), core.now())


async def _close_menu(session, core: Core, person: Person, t: Translator, ticket: Ticket,
                      chat: Target) -> Reply:
    if not await org.has_role_at_or_above(session, person.id, ticket.unit_id):
        return Reply(alert=t._("Only staff of this unit or above can close this ticket."),
                     show_alert=True)
    group_t = core.i18n.get(None)
    buttons = [[Button(group_t._(label), "cr", f"{ticket.id}.{kind}")]
               for kind, label in CLOSE_LABELS.items()]
    enqueue(session, chat, OutMessage(text=group_t._("Close #{number} without a fix, because:",
                                                     number=ticket.number), buttons=buttons),
            core.now())
    return Reply()


async def _type_menu(session, core: Core, person: Person, t: Translator, ticket: Ticket,
                     chat: Target) -> Reply:
    if not await org.has_role_at_or_above(session, person.id, ticket.unit_id):
        return Reply(alert=t._("Only staff of this unit or above can change the order type."),
                     show_alert=True)
    group_t = core.i18n.get(None)
    buttons = [Button(("• " if kind == ticket.order_type else "") + group_t._(ORDER_LABELS[kind]),
                      "ty", f"{ticket.id}.{kind}") for kind in ORDER_TYPES]
    enqueue(session, chat, OutMessage(text=group_t._("Order type of #{number}:",
                                                     number=ticket.number), buttons=[buttons]),
            core.now())
    return Reply()


async def _route_menu(session, core: Core, person: Person, t: Translator, ticket: Ticket,
                      chat: Target, community_id: int | None) -> Reply:
    if ticket.state not in sources(Action.ROUTE):
        return Reply(alert=t._("This button is no longer active."))
    if not await org.has_role_at_or_above(session, person.id, ticket.unit_id):
        return Reply(alert=t._("Only the dispatch centre can route this ticket."), show_alert=True)
    group_t = core.i18n.get(None)
    if community_id is None:
        units = await org.units_of_kind(session, "community")
        buttons = [Button(org.display_name(u, group_t.locale), "rc", f"{ticket.id}.{u.id}")
                   for u in units]
        text = group_t._("Route #{number}: choose the community.", number=ticket.number)
    else:
        units = await org.children(session, community_id, kind="grid")
        buttons = [Button(org.display_name(u, group_t.locale), "rg", f"{ticket.id}.{u.id}")
                   for u in units]
        text = group_t._("Route #{number}: choose the grid.", number=ticket.number)
    if not buttons:
        return Reply(alert=t._("This button is no longer active."))
    enqueue(session, chat, OutMessage(text=text, buttons=[buttons[i:i + 2] for i in
                                                          range(0, len(buttons), 2)]), core.now())
    return Reply()

