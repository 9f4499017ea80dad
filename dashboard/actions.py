"""Acting on a ticket from the dashboard: the same core functions the chat buttons call
(``models.tickets.actions``, ``models.tickets.whistle``), so the state change, its audit event (with the
dashboard user's staff member as the actor) and the messages that report it are
written in one transaction exactly as from the chat."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.lifecycle import OPEN, Action, State, TransitionError, sources
from models.messages.i18n import N_
from models.org import tree as org
from models.store.tables import Person, Ticket, Unit
from models.tickets import actions as tickets
from models.tickets import whistle
from models.tickets.cards import CLOSE_LABELS, ORDER_LABELS

from .auth import Viewer
from .queries import ticket_in_scope


class ActionError(Exception):
    """The action cannot be done; ``message`` is an untranslated msgid (with params)."""

    def __init__(self, message: str, status: int = 400, **params):
        super().__init__(message)
        self.message, self.status, self.params = message, status, params

    def text(self, t) -> str:
        """In the viewer's language (a state named in the message is translated too)."""
        params = {k: t._(v) if k == "state" else v for k, v in self.params.items()}
        return t._(self.message, **params)


@dataclass
class Offer:
    """Which actions the ticket page offers for the ticket's present state."""

    reroute: bool
    retype: bool
    whistle: bool
    close: bool


def offers(ticket: Ticket, holder: Unit | None) -> Offer:
    state = State(ticket.state)
    return Offer(
        reroute=ticket.state in sources(Action.ROUTE),
        retype=state in OPEN,
        whistle=ticket.state in sources(Action.WHISTLE) and holder is not None
        and holder.kind in ("community", "street"),
        close=state in OPEN)


def _text(form, name: str, limit: int, required: bool = True) -> str:
    value = form.get(name)
    value = value.strip() if isinstance(value, str) else ""
    if required and not value:
        raise ActionError(N_("Please fill in every field."))
    if len(value) > limit:
        raise ActionError(N_("That text is too long (at most {limit} characters)."), limit=limit)
    return value


async def _unit(session: AsyncSession, code: str, kind: str) -> Unit:
    unit = await org.unit_by_code(session, code)
    if unit is None or unit.kind != kind:
        raise ActionError(N_("Choose one of the listed units."))
    return unit


async def reroute(session, core, actor, ticket, form, viewer) -> None:
    grid = await _unit(session, _text(form, "grid", 64), "grid")
    await tickets.reroute(session, core, actor, ticket, grid.id)


async def retype(session, core, actor, ticket, form, viewer) -> None:
    order_type = _text(form, "order_type", 16)
    if order_type not in ORDER_LABELS:
        raise ActionError(N_("Choose one of the listed order types."))
    if order_type == ticket.order_type:
        raise ActionError(N_("The ticket already has this order type."))
    await tickets.change_type(session, core, actor, ticket, order_type)


async def blow_whistle(session, core, actor, ticket, form, viewer) -> None:
    holder = await session.get(Unit, ticket.unit_id)
    if not offers(ticket, holder).whistle:
        raise TransitionError("not whistleable here")
    if not await org.has_role_at_or_above(session, actor.id, holder.id):
        raise ActionError(N_("Only staff of {unit} can whistle to departments."), status=403,
                          unit=holder.name)
    lead = await _unit(session, _text(form, "lead", 64), "department")
    coop = []
    for code in form.getall("coop", []) if hasattr(form, "getall") else []:
        if isinstance(code, str) and code and code != lead.code:
            coop.append((await _unit(session, code, "department")).id)
    await whistle.whistle(session, core, actor, ticket, holder, lead.id, coop)


async def close_duplicate(session, core, actor, ticket, form, viewer) -> None:
    number = _text(form, "original", 20).lstrip("#")
    original = await ticket_in_scope(session, viewer, number)
    if original is None:
        raise ActionError(N_("No ticket #{number} that you can see."), number=number)
    await tickets.close_duplicate(session, core, actor, ticket, original)


async def close_not_fixed(session, core, actor, ticket, form, viewer) -> None:
    reason = _text(form, "reason", 16)
    if reason not in CLOSE_LABELS:
        raise ActionError(N_("Choose one of the listed reasons."))
    note = _text(form, "note", core.config.intake.max_note)
    await tickets.close_not_fixed(session, core, actor, ticket, reason, note)


Handler = Callable[..., Awaitable[None]]
ACTIONS: dict[str, Handler] = {
    "reroute": reroute,
    "retype": retype,
    "whistle": blow_whistle,
    "duplicate": close_duplicate,
    "close": close_not_fixed,
}


async def perform(session: AsyncSession, core: Core, viewer: Viewer, ticket: Ticket,
                  name: str, form) -> None:
    """Run one action as the viewer's staff member; ActionError says why not."""
    if viewer.person_id is None:
        raise ActionError(N_("Your login is not linked to a staff member, so it can only look."),
                          status=403)
    actor = await session.get(Person, viewer.person_id)
    try:
        await ACTIONS[name](session, core, actor, ticket, form, viewer)
    except tickets.Denied as exc:
        raise ActionError(exc.message, status=403, **exc.params) from None
    except TransitionError:
        raise ActionError(N_("This is not possible in the ticket's present state."),
                          status=409) from None


async def departments(session: AsyncSession) -> list[Unit]:
    return await org.units_of_kind(session, "department")


async def grids(session: AsyncSession) -> list[Unit]:
    return list(await session.scalars(select(Unit).where(Unit.kind == "grid").order_by(Unit.code)))
