"""The ban list: ``/ban NUMBER [reason]`` and ``/unban NUMBER`` act on the reporter of a
ticket — staff never see residents' ids — and are allowed to staff above the ticket's
unit (a community secretary for a grid's ticket, …) and to the administrators. Each is
recorded on that ticket's audit trail (who, when, why); the resident's own timeline
does not show it."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.inputs import Input
from models.messages.i18n import Translator
from models.messages.outbox import OutMessage, enqueue
from models.org import limits
from models.org import tree as org
from models.org.people import is_admin
from models.store.tables import Person, Role, Ticket
from models.tickets.actions import audit

BAN_EVENTS = ("ban", "unban")


async def may_ban(session: AsyncSession, core: Core, person: Person, inp: Input,
                  ticket: Ticket) -> bool:
    if await is_admin(session, core, person, inp):
        return True
    above = [unit.id for unit in (await org.ancestors(session, ticket.grid_id or ticket.unit_id))[1:]]
    return bool(above) and await session.scalar(select(Role.id).where(
        Role.person_id == person.id, Role.unit_id.in_(above)).limit(1)) is not None


async def command(session: AsyncSession, core: Core, person: Person, t: Translator,
                  inp: Input) -> None:
    """``/ban`` or ``/unban`` (``inp.command``), answered in the chat it came from."""
    if not inp.private:
        t = core.i18n.get(None)  # group chats speak the default language
    banning = inp.command == "ban"

    def say(text: str) -> None:
        enqueue(session, inp.chat, OutMessage(text=text), core.now())

    number = inp.args[0].lstrip("#") if inp.args else ""
    ticket = (await session.scalar(select(Ticket).where(Ticket.number == number[:20]))
              if number else None)
    if ticket is None:
        say(t._("Usage: /ban NUMBER [reason] or /unban NUMBER — the reporter of that report is "
                "banned from filing reports, or allowed again."))
        return
    if not await may_ban(session, core, person, inp, ticket):
        say(t._("Only staff above the unit of #{number}, or an administrator, can ban or unban "
                "its reporter.", number=ticket.number))
        return
    if await limits.is_staff(session, ticket.reporter_id):
        say(t._("The reporter of #{number} is staff; staff are not banned.", number=ticket.number))
        return
    reason = " ".join(inp.args[1:]).strip()[:500] or None
    if banning:
        changed = await limits.ban(session, ticket.reporter_id, person.id, reason, core.now())
    else:
        changed = await limits.unban(session, ticket.reporter_id)
    if not changed:
        say(t._("The reporter of #{number} is already banned.", number=ticket.number) if banning
            else t._("The reporter of #{number} is not banned.", number=ticket.number))
        return
    audit(session, ticket, person.id, "ban" if banning else "unban", core.now(),
          from_state=ticket.state, note=reason)
    name = person.name or "?"
    say(t._("The reporter of #{number} is banned from filing reports (by {name}).",
            number=ticket.number, name=name) if banning else
        t._("The reporter of #{number} may file reports again (by {name}).",
            number=ticket.number, name=name))
