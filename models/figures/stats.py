"""The figures of the monthly report and of /stats, for any period and any scope
(district, street, community, grid, department, category, order type, channel).

Every count is one aggregate query over indexed columns; only the percentiles read
the durations of the one scope they describe. The definitions, as formulas, are in
docs/reports.md; the three rates themselves are ``models/figures/rates.py`` (the digest uses
the same code)."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.deadlines.periods import Period
from models.deadlines.timers import WORK_KINDS
from models.lifecycle import OPEN
from models.org import tree as org
from models.org.scope import ticket_filter
from models.store.tables import (
    Assignment,
    DepartmentRating,
    Person,
    Role,
    Ticket,
    TicketEvent,
    Timer,
    Unit,
    Vote,
)

from .rates import Rates, composite, not_duplicate, three_rates

UNIT_KINDS = ("district", "street", "community", "grid", "department")
LEVELS = ("grid", "community", "street", "department")
TOP = 5
ORDER_TYPES = {"emergency": ("应急单", "emergency"), "routine": ("常规单", "routine"),
               "key": ("重点单", "key")}


@dataclass(frozen=True)
class Scope:
    """What a row of the report covers: a unit (by its id) or a category, order type or
    channel (by its code), optionally within a unit (``within``)."""

    kind: str
    key: str
    name: str
    unit_id: int | None = None
    within: int | None = None  # a unit id: category/type/channel rows of a sub-report
    name_en: str | None = None

    def label(self, locale: str | None) -> str:
        english = bool(locale) and locale.lower().startswith("en")
        return self.name_en if english and self.name_en else self.name


async def scope_filter(session: AsyncSession, scope: Scope) -> ColumnElement[bool]:
    if scope.kind in UNIT_KINDS:
        return await ticket_filter(session, await session.get(Unit, scope.unit_id))
    column = {"category": Ticket.category, "order_type": Ticket.order_type,
              "channel": Ticket.channel}[scope.kind]
    clause = column == scope.key
    if scope.within is not None:
        clause = and_(clause, await ticket_filter(session, await session.get(Unit, scope.within)))
    return clause


@dataclass
class Durations:
    """Median and 90th percentile in seconds; None without data."""

    count: int = 0
    median_work: float | None = None
    p90_work: float | None = None
    median_calendar: float | None = None
    p90_calendar: float | None = None


@dataclass
class Figures:
    scope: Scope
    received: int = 0
    rates: Rates = field(default_factory=lambda: Rates(0, 0, 0, 0, 0, 0))
    resolved: int = 0
    levels: dict[str, int] = field(default_factory=dict)  # resolved_level → tickets
    unrated: int = 0
    reopened: int = 0
    escalated: int = 0
    whistled: int = 0
    overdue_now: int = 0
    overdue_at_closing: int = 0
    closed: int = 0
    to_claim: Durations = field(default_factory=Durations)
    to_resolve: Durations = field(default_factory=Durations)
    top_categories: list[tuple[str, int]] = field(default_factory=list)
    hot_spots: list[tuple[str, str, int]] = field(default_factory=list)  # grid code, name, n
    composite: float | None = None

    def level_share(self, level: str) -> float | None:
        return self.levels.get(level, 0) / self.resolved if self.resolved else None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank: the ⌈q·n⌉-th smallest value (a value that really occurred)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def durations(core: Core, pairs: list[tuple[datetime, datetime]]) -> Durations:
    work = [core.calendar.working_seconds(a, b) for a, b in pairs]
    calendar = [max(0.0, (b - a).total_seconds()) for a, b in pairs]
    if not pairs:
        return Durations()
    return Durations(len(pairs), statistics.median(work), percentile(work, 0.9),
                     statistics.median(calendar), percentile(calendar, 0.9))


def _in(column, start: datetime, end: datetime) -> ColumnElement[bool]:
    return and_(column >= start, column < end)


def _distinct_tickets(kind: str):
    return func.count(func.distinct(TicketEvent.ticket_id)).filter(TicketEvent.kind == kind)


async def figures(session: AsyncSession, core: Core, scope: Scope, period: Period,
                  now: datetime, where: ColumnElement[bool] | None = None) -> Figures:
    """Every figure of one scope over ``period``, as of ``now`` (``where``: the scope's
    filter when the caller has it already)."""
    if where is None:
        where = await scope_filter(session, scope)
    where = and_(where, not_duplicate())
    start, end = period.start, period.end
    result = Figures(scope)
    late = select(Timer.id).where(Timer.ticket_id == Ticket.id, Timer.kind.in_(WORK_KINDS),
                                  Timer.stage != "done", Timer.due_at < now).exists()
    closed = and_(Ticket.state.in_(["closed", "closed_not_fixed"]),
                  _in(Ticket.closed_at, start, end))
    finished = func.coalesce(Ticket.resolved_at, Ticket.closed_at)
    (result.received, result.unrated, result.closed, result.overdue_at_closing,
     result.overdue_now) = (await session.execute(select(
        func.count().filter(_in(Ticket.created_at, start, end)),
        func.count().filter(Ticket.state == "closed", Ticket.unrated.is_(True),
                            _in(Ticket.closed_at, start, end)),
        func.count().filter(closed),
        func.count().filter(closed, finished > Ticket.resolve_due_at),
        func.count().filter(Ticket.state.in_([s.value for s in OPEN]), late),
    ).select_from(Ticket).where(where))).one()
    result.rates = await three_rates(session, where, start, min(end, now),
                                     core.config.report.basic_weight)
    resolved = and_(where, Ticket.state.in_(["resolved", "closed"]),
                    _in(Ticket.resolved_at, start, end))
    result.levels = {level or "": n for level, n in await session.execute(
        select(Ticket.resolved_level, func.count()).where(resolved)
        .group_by(Ticket.resolved_level))}
    result.resolved = sum(result.levels.values())
    result.reopened, result.escalated, result.whistled = (await session.execute(
        select(_distinct_tickets("reopened"), _distinct_tickets("escalated"),
               _distinct_tickets("whistled"))
        .select_from(TicketEvent).join(Ticket, Ticket.id == TicketEvent.ticket_id)
        .where(where, TicketEvent.kind.in_(["reopened", "escalated", "whistled"]),
               _in(TicketEvent.at, start, end)))).one()
    received = and_(where, _in(Ticket.created_at, start, end))
    if result.received:
        first_claim = (select(Ticket.created_at, func.min(TicketEvent.at))
                       .join(TicketEvent, TicketEvent.ticket_id == Ticket.id)
                       .where(received, TicketEvent.kind == "claimed")
                       .group_by(Ticket.id, Ticket.created_at))
        result.to_claim = durations(core, [tuple(r) for r in await session.execute(first_claim)])
        result.top_categories = [tuple(r) for r in await session.execute(
            select(Ticket.category, func.count()).where(received)
            .group_by(Ticket.category).order_by(func.count().desc(), Ticket.category).limit(TOP))]
        result.hot_spots = [tuple(r) for r in await session.execute(
            select(Unit.code, Unit.name, func.count()).select_from(Ticket)
            .join(Unit, Unit.id == Ticket.grid_id)
            .where(received).group_by(Unit.code, Unit.name)
            .order_by(func.count().desc(), Unit.code).limit(TOP))]
    if result.resolved:
        result.to_resolve = durations(core, [tuple(r) for r in await session.execute(
            select(Ticket.created_at, Ticket.resolved_at).where(resolved))])
    result.composite = composite(result.rates, core.config.report.weights)
    return result


# ---- departments (一哨一评 and their on-time record) ------------------------------------

@dataclass
class DepartmentScore:
    unit: Scope
    ratings: int
    stars: float | None  # average 1–5
    deadlines: int  # claim and duty deadlines of the department that fell in the period
    on_time: int

    def on_time_rate(self) -> float | None:
        return self.on_time / self.deadlines if self.deadlines else None

    def score(self, weights: dict[str, float]) -> float | None:
        parts = {"rating": None if self.stars is None else self.stars / 5,
                 "on_time": self.on_time_rate()}
        return weighted(parts, weights)


def weighted(parts: dict[str, float | None], weights: dict[str, float]) -> float | None:
    """100 × the weighted mean of the parts that exist (a part without a denominator is
    left out and the other weights are scaled up); None when no part exists."""
    present = {k: v for k, v in parts.items() if v is not None and weights.get(k, 0) > 0}
    total = sum(weights[k] for k in present)
    if not total:
        return None
    return 100 * sum(weights[k] * v for k, v in present.items()) / total


async def department_scores(session: AsyncSession, core: Core, period: Period,
                            now: datetime) -> list[DepartmentScore]:
    start, end = period.start, period.end
    ratings = {d: (n, avg) for d, n, avg in await session.execute(
        select(DepartmentRating.department_id, func.count(), func.avg(DepartmentRating.score))
        .where(_in(DepartmentRating.created_at, start, end))
        .group_by(DepartmentRating.department_id))}
    timers = {u: (n, met) for u, n, met in await session.execute(
        select(Timer.unit_id, func.count(), func.count().filter(Timer.met.is_(True)))
        .where(Timer.kind.in_(["claim", "duty"]), _in(Timer.due_at, start, min(end, now)))
        .group_by(Timer.unit_id))}
    rows = []
    for unit in await org.units_of_kind(session, "department"):
        n, avg = ratings.get(unit.id, (0, None))
        due, met = timers.get(unit.id, (0, 0))
        rows.append(DepartmentScore(unit_scope(unit), n, None if avg is None else float(avg),
                                    due, met))
    return rows


# ---- grid workers -------------------------------------------------------------------------

@dataclass
class WorkerMonth:
    claims: int = 0
    claims_on_time: int = 0
    resolved: int = 0
    votes: int = 0
    solved: int = 0
    satisfied: int = 0
    basic: int = 0

    def parts(self, basic_weight: float) -> dict[str, float | None]:
        return {"response": self.claims_on_time / self.claims if self.claims else None,
                "resolution": self.solved / self.votes if self.votes else None,
                "satisfaction": ((self.satisfied + basic_weight * self.basic) / self.votes
                                 if self.votes else None)}


@dataclass
class WorkerScore:
    person_id: int
    name: str
    grid: str
    months: dict[str, WorkerMonth]  # month label → what they did
    scores: dict[str, float | None]  # month label → monthly score

    @property
    def total(self) -> float | None:
        """The period's score: the sum of the monthly scores (quarterly sum, half-yearly
        and yearly totals); None when no month has a score."""
        present = [s for s in self.scores.values() if s is not None]
        return sum(present) if present else None


async def worker_month(session: AsyncSession, month: Period, people: list[int]
                       ) -> dict[int, WorkerMonth]:
    start, end = month.start, month.end
    months = {p: WorkerMonth() for p in people}
    claims = await session.execute(
        select(TicketEvent.actor_id, func.count(),
               func.count().filter(TicketEvent.at <= Ticket.claim_due_at))
        .join(Ticket, Ticket.id == TicketEvent.ticket_id)
        .where(TicketEvent.kind == "claimed", TicketEvent.actor_id.in_(people), not_duplicate(),
               _in(TicketEvent.at, start, end)).group_by(TicketEvent.actor_id))
    for person, n, on_time in claims:
        months[person].claims, months[person].claims_on_time = n, on_time
    resolved = await session.execute(
        select(TicketEvent.actor_id, func.count(func.distinct(TicketEvent.ticket_id)))
        .where(TicketEvent.kind == "resolved", TicketEvent.actor_id.in_(people),
               _in(TicketEvent.at, start, end)).group_by(TicketEvent.actor_id))
    for person, n in resolved:
        months[person].resolved = n
    votes = await session.execute(
        select(Ticket.assignee_id, func.count(), func.count().filter(Vote.solved.is_(True)),
               func.count().filter(Vote.satisfaction == "satisfied"),
               func.count().filter(Vote.satisfaction == "basic"))
        .join(Ticket, Ticket.id == Vote.ticket_id)
        .where(Ticket.assignee_id.in_(people), Vote.solved.is_not(None), not_duplicate(),
               _in(Vote.updated_at, start, end)).group_by(Ticket.assignee_id))
    for person, n, solved, satisfied, basic in votes:
        m = months[person]
        m.votes, m.solved, m.satisfied, m.basic = n, solved, satisfied, basic
    return months


async def worker_scores(session: AsyncSession, core: Core, period: Period,
                        grid_ids: list[int]) -> list[WorkerScore]:
    """Grid chiefs and grid workers of ``grid_ids``, scored month by month."""
    staff = (await session.execute(
        select(Person.id, Person.name, func.min(Unit.code))
        .join(Role, Role.person_id == Person.id).join(Unit, Unit.id == Role.unit_id)
        .where(Role.role.in_(["grid_chief", "grid_worker"]), Unit.id.in_(grid_ids))
        .group_by(Person.id, Person.name).order_by(func.min(Unit.code), Person.id))).all()
    people = [row[0] for row in staff]
    report = core.config.report
    per_month = {m.label: await worker_month(session, m, people) for m in period.months()}
    return [WorkerScore(pid, name, grid, {label: months[pid] for label, months in per_month.items()},
                        {label: weighted(months[pid].parts(report.basic_weight),
                                         report.worker_weights)
                         for label, months in per_month.items()})
            for pid, name, grid in staff]


# ---- the whole report ---------------------------------------------------------------------

def unit_scope(unit: Unit) -> Scope:
    return Scope(unit.kind, unit.code, unit.name, unit_id=unit.id, name_en=unit.name_en)


@dataclass
class Report:
    period: Period
    now: datetime
    top: Figures
    levels: dict[str, list[Figures]]  # sheet level → rows (district, street, …, channel)
    departments: list[DepartmentScore]
    workers: list[WorkerScore]


async def build(session: AsyncSession, core: Core, period: Period, now: datetime,
                unit: Unit | None = None) -> Report:
    """The report of ``unit`` (the district by default) and of every scope below it."""
    units = list(await session.scalars(select(Unit)))
    if unit is None:
        unit = next(u for u in units if u.kind == "district")
    children: dict[int | None, list[Unit]] = {}
    for u in units:
        children.setdefault(u.parent_id, []).append(u)

    def subtree(root: Unit) -> list[Unit]:
        found, frontier = [root], [root]
        while frontier:
            frontier = [c for u in frontier for c in children.get(u.id, [])
                        if c.kind != "department"]
            found += frontier
        return found

    def unit_where(u: Unit) -> ColumnElement[bool]:
        if u.kind == "department":
            whistled = select(Assignment.ticket_id).where(Assignment.unit_id == u.id)
            return or_(Ticket.unit_id == u.id, Ticket.id.in_(whistled))
        ids = [x.id for x in subtree(u)]
        return or_(Ticket.grid_id.in_(ids), Ticket.unit_id.in_(ids))

    async def row(u: Unit) -> Figures:
        return await figures(session, core, unit_scope(u), period, now, unit_where(u))

    top = await row(unit)
    levels: dict[str, list[Figures]] = {unit.kind: [top]}
    below = sorted(subtree(unit)[1:], key=lambda u: u.code)
    for kind in ("street", "community", "grid"):
        rows = [u for u in below if u.kind == kind]
        if rows:
            levels[kind] = [await row(u) for u in rows]
    whole = unit.kind == "district"
    departments = sorted([u for u in units if u.kind == "department"], key=lambda u: u.code)
    if whole:
        levels["department"] = [await row(d) for d in departments]
    inside = None if whole else unit_where(unit)
    within = None if whole else unit.id

    async def by(kind: str, key: str, name: str, name_en: str | None, column) -> Figures:
        where = column == key if inside is None else and_(column == key, inside)
        return await figures(session, core, Scope(kind, key, name, within=within,
                                                  name_en=name_en), period, now, where)
    levels["category"] = [await by("category", c.code, c.name, c.name_en, Ticket.category)
                          for c in core.config.categories]
    levels["order_type"] = [await by("order_type", o, zh, en, Ticket.order_type)
                            for o, (zh, en) in ORDER_TYPES.items()]
    channels = sorted(set(await session.scalars(select(Ticket.channel).distinct())) | {"telegram"})
    levels["channel"] = [await by("channel", c, c, None, Ticket.channel) for c in channels]
    scores = await department_scores(session, core, period, now) if whole else []
    grids = [u.id for u in subtree(unit) if u.kind == "grid"]
    workers = await worker_scores(session, core, period, grids)
    return Report(period, now, top, levels, scores, workers)


async def stats_for(session: AsyncSession, core: Core, unit: Unit, period: Period,
                    now: datetime) -> Figures:
    """One unit's figures (what /stats shows)."""
    return await figures(session, core, unit_scope(unit), period, now)


__all__ = ["Scope", "Figures", "Durations", "Report", "build", "figures", "stats_for",
           "department_scores", "worker_scores", "weighted", "percentile"]
