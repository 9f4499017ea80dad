"""What the dashboard reads, always inside the viewer's scope: the ticket list with its
filters, sorting and pages (LIMIT/OFFSET, never all rows), one ticket with its
timeline, deadlines and votes, the load per grid for the map, and the overview."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from sqlalchemy import ColumnElement, and_, case, exists, false, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from models.figures import rates
from models.lifecycle import OPEN, State
from models.org import scope
from models.store.tables import (
    Assignment,
    DepartmentRating,
    Media,
    Person,
    Ticket,
    TicketEvent,
    Timer,
    Unit,
    Vote,
)

from .auth import Viewer

OPEN_STATES = [s.value for s in OPEN]
ORDER_TYPES = ("emergency", "routine", "key")
CLASSES = ("enforcement", "request")
STATUS_GROUPS = {"open": OPEN_STATES, "closed": [s.value for s in State if s not in OPEN]}
NUMBER = re.compile(r"^\d{8}-\d{4,}$")
SORTS = {
    "new": (Ticket.created_at.desc(), Ticket.id.desc()),
    "old": (Ticket.created_at.asc(), Ticket.id.asc()),
    "updated": (Ticket.updated_at.desc(), Ticket.id.desc()),
    "due": (Ticket.resolve_due_at.is_(None), Ticket.resolve_due_at.asc(), Ticket.id.asc()),
    "number": (Ticket.number.asc(),),
}
MAX_QUERY = 200


class BadFilter(ValueError):
    """A filter value the list does not understand (the page answers 400)."""


# ---- scope --------------------------------------------------------------------------------

async def scope_of(session: AsyncSession, viewer: Viewer) -> ColumnElement[bool]:
    """The tickets this viewer may see: all for an admin; else those of their unit's
    subtree (a department: what was whistled to it), as ``models.org.scope`` defines it."""
    if viewer.is_admin:
        return true()
    unit = await session.get(Unit, viewer.unit_id) if viewer.unit_id else None
    if unit is None:
        return false()
    return await scope.ticket_filter(session, unit)


async def ticket_in_scope(session: AsyncSession, viewer: Viewer, number: str) -> Ticket | None:
    """The ticket with this number if the viewer may see it; None either way otherwise,
    so a URL never tells whether someone else's ticket exists."""
    if not NUMBER.match(number):
        return None
    return await session.scalar(select(Ticket).where(Ticket.number == number,
                                                     await scope_of(session, viewer)))


def overdue_clause(now: datetime) -> ColumnElement[bool]:
    """An open ticket with a work deadline passed (a paused timer is late only if it was
    late when paused)."""
    late = exists().where(Timer.ticket_id == Ticket.id, Timer.stage != "done",
                          Timer.kind != "vote", Timer.due_at <= now,
                          or_(Timer.paused_at.is_(None), Timer.due_at <= Timer.paused_at))
    return and_(Ticket.state.in_(OPEN_STATES), late)


# ---- the list -----------------------------------------------------------------------------

@dataclass
class Filters:
    status: str = ""
    order_type: str = ""
    klass: str = ""
    category: str = ""
    unit: str = ""
    overdue: bool = False
    date_from: date | None = None
    date_to: date | None = None
    q: str = ""
    sort: str = "new"
    page: int = 1

    def query(self, **changes) -> dict[str, str]:
        """The filters as URL parameters (for sorting links and pages)."""
        values = {"status": self.status, "type": self.order_type, "class": self.klass,
                  "category": self.category, "unit": self.unit,
                  "overdue": "1" if self.overdue else "",
                  "from": self.date_from.isoformat() if self.date_from else "",
                  "to": self.date_to.isoformat() if self.date_to else "", "q": self.q,
                  "sort": self.sort, "page": str(self.page)}
        values.update({k: str(v) for k, v in changes.items()})
        return {k: v for k, v in values.items() if v and not (k == "page" and v == "1")
                and not (k == "sort" and v == "new")}


def parse_filters(params, categories: set[str]) -> Filters:
    """Filters from the query string; a value outside the allowed ones is BadFilter."""
    def one(name: str, allowed=None) -> str:
        value = params.get(name, "").strip()
        if value and allowed is not None and value not in allowed:
            raise BadFilter(name)
        return value

    def day(name: str) -> date | None:
        value = one(name)
        try:
            return date.fromisoformat(value) if value else None
        except ValueError:
            raise BadFilter(name) from None

    page = one("page") or "1"
    if not page.isdigit() or not 1 <= int(page) <= 100000:
        raise BadFilter("page")
    q = one("q")
    if len(q) > MAX_QUERY:
        raise BadFilter("q")
    unit = one("unit")
    if len(unit) > 64:
        raise BadFilter("unit")
    return Filters(
        status=one("status", {*(s.value for s in State), *STATUS_GROUPS}),
        order_type=one("type", ORDER_TYPES), klass=one("class", CLASSES),
        category=one("category", categories), unit=unit,
        overdue=one("overdue", {"1", "on", "true"}) != "", date_from=day("from"),
        date_to=day("to"), q=q, sort=one("sort", SORTS) or "new", page=int(page))


async def _where(session: AsyncSession, viewer: Viewer, filters: Filters, now: datetime,
                 tz) -> list[ColumnElement[bool]]:
    where = [await scope_of(session, viewer)]
    if filters.status:
        where.append(Ticket.state.in_(STATUS_GROUPS.get(filters.status, [filters.status])))
    if filters.order_type:
        where.append(Ticket.order_type == filters.order_type)
    if filters.klass:
        where.append(Ticket.klass == filters.klass)
    if filters.category:
        where.append(Ticket.category == filters.category)
    if filters.unit:
        unit = await session.scalar(select(Unit).where(Unit.code == filters.unit))
        where.append(await scope.ticket_filter(session, unit) if unit is not None else false())
    if filters.overdue:
        where.append(overdue_clause(now))
    if filters.date_from:
        where.append(Ticket.created_at >= datetime.combine(filters.date_from, time(), tz))
    if filters.date_to:
        where.append(Ticket.created_at < datetime.combine(filters.date_to + timedelta(days=1),
                                                          time(), tz))
    if filters.q:
        where.append(or_(Ticket.description.icontains(filters.q, autoescape=True),
                         Ticket.number.contains(filters.q, autoescape=True),
                         Ticket.address.icontains(filters.q, autoescape=True)))
    return where


@dataclass
class Row:
    ticket: Ticket
    overdue: bool
    unit: Unit | None
    grid: Unit | None


@dataclass
class Page:
    rows: list[Row]
    total: int
    page: int
    pages: int


async def ticket_page(session: AsyncSession, viewer: Viewer, filters: Filters, now: datetime,
                      tz, size: int) -> Page:
    where = await _where(session, viewer, filters, now, tz)
    total = await session.scalar(select(func.count()).select_from(Ticket).where(*where))
    pages = max(1, -(-total // size))
    late = case((overdue_clause(now), True), else_=False).label("late")
    result = await session.execute(select(Ticket, late).where(*where)
                                   .order_by(*SORTS[filters.sort])
                                   .limit(size).offset((filters.page - 1) * size))
    found = list(result)
    units = await units_by_id(session, {t.unit_id for t, _ in found} |
                              {t.grid_id for t, _ in found if t.grid_id})
    rows = [Row(t, bool(is_late), units.get(t.unit_id), units.get(t.grid_id))
            for t, is_late in found]
    return Page(rows, total, filters.page, pages)


async def units_by_id(session: AsyncSession, ids) -> dict[int, Unit]:
    ids = [i for i in ids if i is not None]
    if not ids:
        return {}
    return {u.id: u for u in await session.scalars(select(Unit).where(Unit.id.in_(ids)))}


async def visible_units(session: AsyncSession, viewer: Viewer) -> list[Unit]:
    """The units the filter menu offers: the viewer's subtree (all for an admin)."""
    query = select(Unit).where(Unit.kind != "district").order_by(Unit.kind, Unit.code)
    if not viewer.is_admin:
        ids = await scope.subtree(session, viewer.unit_id) if viewer.unit_id else []
        query = query.where(Unit.id.in_(ids))
    return list(await session.scalars(query))


# ---- one ticket ---------------------------------------------------------------------------

@dataclass
class Detail:
    ticket: Ticket
    unit: Unit | None
    grid: Unit | None
    events: list[tuple[TicketEvent, Person | None]]
    timers: list[tuple[Timer, Unit | None]]
    photos: list[Media]
    votes: list[Vote]
    ratings: list[tuple[DepartmentRating, Unit | None]]
    assignments: list[tuple[Assignment, Unit | None]]
    reporter: Person | None
    assignee: Person | None
    duplicate_of: Ticket | None
    overdue: bool
    staff: set[int] = field(default_factory=set)  # actors who hold a staff role


async def detail(session: AsyncSession, ticket: Ticket, now: datetime) -> Detail:
    from models.store.tables import Role
    events = list(await session.execute(
        select(TicketEvent, Person).outerjoin(Person, Person.id == TicketEvent.actor_id)
        .where(TicketEvent.ticket_id == ticket.id).order_by(TicketEvent.at, TicketEvent.id)))
    actor_ids = {e.actor_id for e, _ in events if e.actor_id}
    staff = set(await session.scalars(select(Role.person_id).where(
        Role.person_id.in_(actor_ids)))) if actor_ids else set()
    timers = list(await session.execute(
        select(Timer, Unit).outerjoin(Unit, Unit.id == Timer.unit_id)
        .where(Timer.ticket_id == ticket.id).order_by(Timer.starts_at, Timer.id)))
    photos = list(await session.scalars(select(Media).where(Media.ticket_id == ticket.id)
                                        .order_by(Media.id)))
    votes = list(await session.scalars(select(Vote).where(Vote.ticket_id == ticket.id)
                                       .order_by(Vote.id)))
    ratings = list(await session.execute(
        select(DepartmentRating, Unit).outerjoin(Unit, Unit.id == DepartmentRating.department_id)
        .where(DepartmentRating.ticket_id == ticket.id).order_by(DepartmentRating.id)))
    assignments = list(await session.execute(
        select(Assignment, Unit).outerjoin(Unit, Unit.id == Assignment.unit_id)
        .where(Assignment.ticket_id == ticket.id).order_by(Assignment.id)))
    units = await units_by_id(session, {ticket.unit_id, ticket.grid_id})
    late = await session.scalar(select(overdue_clause(now)).select_from(Ticket)
                                .where(Ticket.id == ticket.id))
    return Detail(
        ticket, units.get(ticket.unit_id), units.get(ticket.grid_id),
        [tuple(e) for e in events], [tuple(t) for t in timers], photos, votes,
        [tuple(r) for r in ratings], [tuple(a) for a in assignments],
        await session.get(Person, ticket.reporter_id),
        await session.get(Person, ticket.assignee_id) if ticket.assignee_id else None,
        await session.get(Ticket, ticket.duplicate_of_id) if ticket.duplicate_of_id else None,
        bool(late), staff)


async def media_in_scope(session: AsyncSession, viewer: Viewer, media_id: int) -> Media | None:
    return await session.scalar(select(Media).join(Ticket, Ticket.id == Media.ticket_id)
                                .where(Media.id == media_id, await scope_of(session, viewer)))


# ---- the map ------------------------------------------------------------------------------

@dataclass
class GridLoad:
    open: int = 0
    overdue: int = 0


async def grid_loads(session: AsyncSession, viewer: Viewer, now: datetime) -> dict[int, GridLoad]:
    late = overdue_clause(now)
    rows = await session.execute(
        select(Ticket.grid_id, func.count(), func.count().filter(late))
        .where(await scope_of(session, viewer), Ticket.state.in_(OPEN_STATES),
               Ticket.grid_id.is_not(None)).group_by(Ticket.grid_id))
    return {grid_id: GridLoad(n, late_n) for grid_id, n, late_n in rows}


async def grids_in_scope(session: AsyncSession, viewer: Viewer) -> set[int] | None:
    """The grids whose load the viewer may see (None: all of them); a department's scope
    is tickets, not an area, so it has none."""
    if viewer.is_admin:
        return None
    return set(await scope.subtree(session, viewer.unit_id)) if viewer.unit_id else set()


async def open_points(session: AsyncSession, viewer: Viewer, now: datetime,
                      limit: int = 500) -> list[tuple[Ticket, bool]]:
    """Open tickets with a location (the newest ``limit``), for the map's pins."""
    late = case((overdue_clause(now), True), else_=False)
    rows = await session.execute(
        select(Ticket, late).where(await scope_of(session, viewer),
                                   Ticket.state.in_(OPEN_STATES), Ticket.lat.is_not(None))
        .order_by(Ticket.created_at.desc()).limit(limit))
    return [(t, bool(is_late)) for t, is_late in rows]


async def grid_tickets(session: AsyncSession, viewer: Viewer, grid: Unit, now: datetime,
                       limit: int = 50) -> list[tuple[Ticket, bool]]:
    """The open tickets of one grid that the viewer may see, newest first."""
    late = case((overdue_clause(now), True), else_=False)
    rows = await session.execute(
        select(Ticket, late).where(await scope_of(session, viewer), Ticket.grid_id == grid.id,
                                   Ticket.state.in_(OPEN_STATES))
        .order_by(Ticket.created_at.desc()).limit(limit))
    return [(t, bool(is_late)) for t, is_late in rows]


# ---- the overview -------------------------------------------------------------------------

@dataclass
class Overview:
    created_today: int
    resolved_today: int
    closed_today: int
    created_month: int
    resolved_month: int
    open_now: int
    overdue_now: int
    rates: rates.Rates
    overdue: list[tuple[Ticket, Unit | None, datetime | None]]


async def overview(session: AsyncSession, viewer: Viewer, now: datetime, tz,
                   basic_weight: float = rates.BASIC_WEIGHT) -> Overview:
    where = await scope_of(session, viewer)
    local = now.astimezone(tz)
    day = datetime.combine(local.date(), time(), tz)
    month = datetime.combine(local.date().replace(day=1), time(), tz)

    def since(column, start):
        return func.count().filter(column >= start, column <= now)
    late = overdue_clause(now)
    counts = (await session.execute(select(
        since(Ticket.created_at, day), since(Ticket.resolved_at, day),
        since(Ticket.closed_at, day), since(Ticket.created_at, month),
        since(Ticket.resolved_at, month),
        func.count().filter(Ticket.state.in_(OPEN_STATES)), func.count().filter(late),
    ).select_from(Ticket).where(where))).one()
    month_rates = await rates.three_rates(session, where, month, now, basic_weight=basic_weight)
    due = (select(Timer.ticket_id, func.min(Timer.due_at).label("due"))
           .where(Timer.stage != "done", Timer.kind != "vote", Timer.due_at <= now)
           .group_by(Timer.ticket_id).subquery())
    overdue = list(await session.execute(
        select(Ticket, Unit, due.c.due).join(due, due.c.ticket_id == Ticket.id)
        .outerjoin(Unit, Unit.id == Ticket.unit_id).where(where, late)
        .order_by(due.c.due, Ticket.id).limit(20)))
    return Overview(*counts, month_rates, [tuple(row) for row in overdue])
