"""What people see about a ticket: the card in a unit's chat, the resident's
notifications and the timeline. Rendered per recipient locale, channel-neutral."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.lifecycle import STATE_LABELS, TRANSITIONS, WAITING, WORKING, Action, State
from models.messages.i18n import N_, Translator
from models.messages.masking import mask
from models.messages.outbox import Button, KeyButton, OutMessage
from models.org import tree as org
from models.org.names import category_name, unit_name
from models.org.people import first_name, tell
from models.store.tables import Assignment, Person, Ticket, TicketEvent, Unit

from . import follow

ROLE_LABELS = {
    "grid_chief": N_("grid chief"),
    "grid_worker": N_("grid worker"),
    "community_secretary": N_("community secretary"),
    "street_dispatcher": N_("street dispatcher"),
    "department_officer": N_("department officer"),
    "commander": N_("command centre"),
    "admin": N_("administrator"),
}
CLASS_LABELS = {"enforcement": N_("enforcement"), "request": N_("resident request")}
ORDER_LABELS = {"emergency": N_("emergency order"), "routine": N_("routine order"),
                "key": N_("key order")}
CLOSE_LABELS = {"not_fixable": N_("Cannot be fixed"), "not_ours": N_("Not our responsibility"),
                "referred": N_("Referred elsewhere")}
ORDER_ICONS = {"emergency": "🚨", "routine": "🟢", "key": "⭐"}
EVENT_LABELS = {
    "created": N_("reported"),
    "routed": N_("routed"),
    "claimed": N_("claimed"),
    "progress": N_("progress"),
    "resolved": N_("resolved"),
    "returned": N_("returned for re-routing"),
    "escalated": N_("escalated"),
    "whistled": N_("whistled to departments"),
    "reported_for_duty": N_("department reported for duty"),
    "reopened": N_("reopened"),
    "closed": N_("closed"),
    "retyped": N_("order type changed"),
    "onsite": N_("on site"),
    "asked": N_("question to the resident"),
    "answered": N_("the resident answered"),
    "rated": N_("department rated"),
    "followed": N_("another resident reported it too"),
    "comment": N_("more information from a resident"),
    "merged": N_("a duplicate was merged into it"),
    "closed_duplicate": N_("closed as a duplicate"),
    "closed_not_fixed": N_("closed, not fixed"),
}
REPORT_BUTTON = N_("📝 Report a problem")
NO_DESCRIPTION = N_("(no description)")  # an Open311 report may come without one


def main_keyboard(t: Translator) -> list[list[KeyButton]]:
    """The persistent reply keyboard of a resident's private chat."""
    return [[KeyButton(t._(REPORT_BUTTON))], [KeyButton(t._("📋 My reports"))]]


async def role_label(session: AsyncSession, t: Translator, person: Person, unit_id: int) -> str:
    """``grid chief 王建国``: the person's role nearest to the unit, then their name."""
    roles = await org.roles_of(session, person.id)
    chain = [u.id for u in await org.ancestors(session, unit_id)]
    ranked = sorted(roles, key=lambda r: chain.index(r.unit_id) if r.unit_id in chain else 99)
    label = t._(ROLE_LABELS.get(ranked[0].role, ranked[0].role)) if ranked else ""
    return f"{label} {person.name}".strip()


async def card_text(session: AsyncSession, core: Core, ticket: Ticket, t: Translator) -> str:
    grid = await session.get(Unit, ticket.grid_id) if ticket.grid_id else None
    holder = await session.get(Unit, ticket.unit_id)
    lines = [
        f"{ORDER_ICONS.get(ticket.order_type, '')} #{ticket.number} · "
        f"{category_name(core, ticket.category, t)}",
        f"{t._(CLASS_LABELS[ticket.klass])} · {t._(ORDER_LABELS[ticket.order_type])}",
        "",
        ticket.description or t._(NO_DESCRIPTION),
        "",
        t._("📍 Grid: {grid}", grid=unit_name(grid, t)),
    ]
    if ticket.address:
        lines.append(t._("🏠 Address: {address}", address=ticket.address))
    if ticket.lat is not None:
        lines.append(f"🌐 {ticket.lat:.5f}, {ticket.lon:.5f}")
    reporter = await session.get(Person, ticket.reporter_id)
    shown = t._("anonymous") if ticket.anonymous else (first_name(reporter.name) or t._("anonymous"))
    lines.append(t._("👤 Reporter: {name}", name=shown))
    lines.append(t._("🕒 Reported: {time}", time=core.local(ticket.created_at).strftime("%m-%d %H:%M")))
    status = t._(STATE_LABELS[State(ticket.state)])
    lines.append(t._("📌 Status: {status} — {unit}", status=status, unit=unit_name(holder, t)))
    if ticket.assignee_id and ticket.claimed_at:
        assignee = await session.get(Person, ticket.assignee_id)
        lines.append(t._("🙋 Claimed by {who} at {time}",
                         who=await role_label(session, t, assignee, ticket.unit_id),
                         time=core.local(ticket.claimed_at).strftime("%m-%d %H:%M")))
    if ticket.resolve_due_at and ticket.state not in (State.RESOLVED, State.CLOSED):
        lines.append(t._("⏳ Resolve by {time}",
                         time=core.local(ticket.resolve_due_at).strftime("%m-%d %H:%M")))
    if ticket.waiting_since is not None:
        lines.append(t._("💬 Waiting for the resident's answer (deadlines paused)"))
    if ticket.followers:
        lines.append(t.n_("👥 Also reported by {n} resident", "👥 Also reported by {n} residents",
                          ticket.followers))
    if ticket.state == State.CLOSED_DUPLICATE and ticket.duplicate_of_id:
        original = await session.get(Ticket, ticket.duplicate_of_id)
        lines.append(t._("🔗 Duplicate of #{number}", number=original.number))
    if ticket.close_note and ticket.state == State.CLOSED_NOT_FIXED:
        lines.append(t._("🚫 Closed: {reason}", reason=ticket.close_note))
    if ticket.reopens:
        lines.append(t.n_("🔁 Reopened {n} time", "🔁 Reopened {n} times", ticket.reopens))
    if ticket.resolution_note and ticket.state in (State.RESOLVED, State.CLOSED):
        lines.append(t._("✅ Resolution: {note}", note=ticket.resolution_note))
    return "\n".join(lines)


def card_buttons(ticket: Ticket, t: Translator, holder: Unit | None) -> list[list[Button]]:
    """Buttons for the chat of the unit that holds the ticket now."""
    tid = str(ticket.id)
    state = State(ticket.state)
    upper = holder is not None and holder.kind in ("community", "street")
    triage = [Button(t._("Order type…"), "type", tid)]
    if upper:
        triage.append(Button(t._("Whistle to departments…"), "whistle", tid))
    closing = [Button(t._("Duplicate…"), "dup", tid), Button(t._("Close…"), "close", tid)]
    if state in WAITING:
        first = [Button(t._("Claim"), "claim", tid)]
        if state in TRANSITIONS[Action.RETURN][0]:
            first.append(Button(t._("Return"), "return", tid))
        return [first, triage, closing]
    if state in WORKING:
        row = [Button(t._("Progress"), "progress", tid), Button(t._("Resolve"), "resolve", tid)]
        if holder is not None and holder.kind in ("grid", "community"):
            row.append(Button(t._("Escalate"), "escalate", tid))
        extra = []
        if ticket.order_type == "emergency":
            extra.append(Button(t._("On site"), "onsite", tid))
        if ticket.waiting_since is None:
            extra.append(Button(t._("Ask the resident"), "ask", tid))
        else:
            extra.append(Button(t._("Stop waiting"), "resume", tid))
        return [row, extra + triage, closing]
    if state in (State.REPORTED, State.RETURNED):
        return [[Button(t._("Route to a grid…"), "route", tid)], triage[:1], closing]
    return []


async def card_message(session: AsyncSession, core: Core, ticket: Ticket,
                       chat_unit_id: int | None) -> OutMessage:
    t = core.i18n.get(None)  # group chats speak the deployment's default language
    holder = await session.get(Unit, ticket.unit_id)
    if chat_unit_id == ticket.unit_id:
        buttons = card_buttons(ticket, t, holder)
    elif chat_unit_id is not None and await _waiting_assignment(session, ticket, chat_unit_id):
        buttons = [[Button(t._("Report for duty"), "duty", str(ticket.id))]]
    else:
        buttons = []
    return OutMessage(text=await card_text(session, core, ticket, t), buttons=buttons,
                      ref=f"card:{ticket.id}")


async def _waiting_assignment(session: AsyncSession, ticket: Ticket, unit_id: int) -> bool:
    return await session.scalar(select(Assignment.id).where(
        Assignment.ticket_id == ticket.id, Assignment.unit_id == unit_id,
        Assignment.role == "coop", Assignment.state == "waiting")) is not None


async def notify_reporter(session: AsyncSession, core: Core, ticket: Ticket, event: str,
                          actor: Person | None = None, note: str | None = None,
                          photo: int | None = None) -> None:
    """Tell the reporter and the followers, each in their own language, what just
    happened to the report ("created" goes to the reporter only)."""
    only_reporter = event in ("created", "asked")  # a question is answered by the reporter
    people = [ticket.reporter_id] if only_reporter else await follow.audience(session, ticket)
    for person_id in people:
        await _notify_one(session, core, ticket, event, person_id, actor, note, photo)


async def _notify_one(session, core: Core, ticket: Ticket, event: str, person_id: int,
                      actor: Person | None, note: str | None, photo: int | None) -> None:
    holder = await session.get(Unit, ticket.unit_id)

    async def render(t: Translator) -> OutMessage:
        who = await role_label(session, t, actor, ticket.unit_id) if actor else ""
        status = t._(STATE_LABELS[State(ticket.state)])
        text = {
            "created": lambda: t._("✅ Report received. Your ticket number is {number}.\n"
                                   "Status: {status} — {unit}.\nUse /my to follow it.",
                                   number=ticket.number, status=status,
                                   unit=unit_name(holder, t)),
            "routed": lambda: t._("Your report {number} was sent to {unit}.",
                                  number=ticket.number, unit=unit_name(holder, t)),
            "claimed": lambda: t._("🙋 Your report {number} was claimed by {who}.",
                                   number=ticket.number, who=who),
            "progress": lambda: t._("🔧 Progress on {number} from {who}: {note}",
                                    number=ticket.number, who=who, note=note),
            "resolved": lambda: t._("✅ Your report {number} was resolved by {who}: {note}",
                                    number=ticket.number, who=who, note=note),
            "returned": lambda: t._("Your report {number} is being sent to the right grid.",
                                    number=ticket.number),
            "escalated": lambda: t._("⬆️ Your report {number} was passed up to {unit}.",
                                     number=ticket.number, unit=unit_name(holder, t)),
            "merged": lambda: t._("🔗 Report {old} is the same problem as {number}; you now "
                                  "follow {number}.", old=note, number=ticket.number),
            "closed_not_fixed": lambda: t._(
                "Report {number} was closed without a fix ({kind}) — {reason}",
                number=ticket.number, kind=t._(CLOSE_LABELS.get(ticket.close_reason, "—")),
                reason=note),
            "comment": lambda: t._("💬 Another resident added to {number}: {note}",
                                   number=ticket.number, note=note),
            "asked": lambda: t._("❓ {who} asks about your report {number}: {note}\n"
                                 "Please answer with your next message.",
                                 number=ticket.number, who=who, note=note),
        }[event]()
        message = OutMessage(text=text, photos=[photo] if photo else [])
        if event == "created":
            message.keyboard = main_keyboard(t)
        return message
    await tell(session, core, person_id, render)


async def timeline_text(session: AsyncSession, core: Core, ticket: Ticket, t: Translator,
                        viewer_id: int | None = None) -> str:
    """The resident's view of one ticket: status and every step, staff shown by role and name.
    Someone else's report (a follower's view) has its reporter's phone numbers masked."""
    description = ticket.description if viewer_id == ticket.reporter_id else mask(
        ticket.description)
    lines = [f"#{ticket.number} · {category_name(core, ticket.category, t)}",
             description[:200] or t._(NO_DESCRIPTION), "",
             t._("📌 Status: {status}", status=t._(STATE_LABELS[State(ticket.state)])), ""]
    events = await session.scalars(select(TicketEvent).where(TicketEvent.ticket_id == ticket.id)
                                   .order_by(TicketEvent.at, TicketEvent.id))
    for ev in events:
        if ev.kind in ("ban", "unban"):  # staff's audit only (models/residents/bans.py)
            continue
        line = f"{core.local(ev.at).strftime('%m-%d %H:%M')} {t._(EVENT_LABELS.get(ev.kind, ev.kind))}"
        if ev.actor_id and await org.roles_of(session, ev.actor_id):
            # staff are named with their role; residents (reporter, followers) never are
            actor = await session.get(Person, ev.actor_id)
            line += f" — {await role_label(session, t, actor, ticket.unit_id)}"
        if ev.note and ev.kind in ("progress", "resolved", "asked", "answered", "comment",
                                   "closed_not_fixed"):
            line += f": {ev.note}"
        lines.append(line)
    return "\n".join(lines)
