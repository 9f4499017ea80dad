"""The daily digest: each bound chat gets, for its own scope, what happened in the
last day (new, claimed, resolved, reopened, escalated, votes), what is overdue now
(the count, the oldest few by number and assignee, and a link to the dashboard's
overdue list for the rest), and the month's running three rates, in one message.
A street's digest sums its communities; the command centre's covers the district."""
from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlencode

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.deadlines.board import KIND_WORDS, paginate
from models.deadlines.periods import month_of
from models.lifecycle import OPEN
from models.messages.outbox import OutMessage, Target, enqueue
from models.org import tree as org
from models.org.scope import ticket_filter
from models.store.tables import ChatBinding, Person, Ticket, TicketEvent, Timer, Unit, Vote

from .rates import percent, three_rates

OLDEST = 5  # overdue tickets listed by number; the rest are counted and linked
TIMER_KINDS = len(KIND_WORDS)  # the work timers a ticket can have (vote timers aside)
EVENT_KINDS = ("created", "claimed", "resolved", "reopened", "escalated", "whistled")


def month_start(core: Core, now: datetime) -> datetime:
    """The running month's first local midnight (the digest's rates cover the month so far,
    with the report's definitions: ``models/figures/rates.py``)."""
    return month_of(now, core.config.tz).start


async def digest_text(session: AsyncSession, core: Core, unit: Unit, now: datetime) -> list[str]:
    t = core.i18n.get(None)
    scope = await ticket_filter(session, unit)
    since = now - timedelta(days=1)
    counts = dict((await session.execute(
        select(TicketEvent.kind, func.count()).join(Ticket, Ticket.id == TicketEvent.ticket_id)
        .where(scope, TicketEvent.at > since, TicketEvent.at <= now,
               TicketEvent.kind.in_(EVENT_KINDS)).group_by(TicketEvent.kind))).all())
    votes = dict((await session.execute(
        select(Vote.satisfaction, func.count()).join(Ticket, Ticket.id == Vote.ticket_id)
        .where(scope, Vote.updated_at > since, Vote.updated_at <= now,
               Vote.satisfaction.is_not(None)).group_by(Vote.satisfaction))).all())
    # Counted in the database and the oldest few fetched with a LIMIT: building a digest
    # costs the same with five overdue tickets or five thousand (issue #24).
    open_states = [s.value for s in OPEN]
    breached = and_(Timer.stage == "breached", Timer.kind != "vote")
    overdue_count = await session.scalar(
        select(func.count(func.distinct(Ticket.id))).join(Timer, Timer.ticket_id == Ticket.id)
        .where(scope, Ticket.state.in_(open_states), breached))
    # a ticket has at most one breached timer of each kind: this many rows hold its oldest few
    oldest_rows = (await session.execute(
        select(Ticket.number, Ticket.assignee_id, Timer.due_at)
        .join(Timer, Timer.ticket_id == Ticket.id)
        .where(scope, Ticket.state.in_(open_states), breached)
        .order_by(Timer.due_at, Ticket.id).limit(OLDEST * TIMER_KINDS))).all()
    oldest: dict[str, tuple] = {}
    for number, assignee_id, due in oldest_rows:
        if number not in oldest and len(oldest) < OLDEST:
            oldest[number] = (assignee_id, due)
    rates = await three_rates(session, scope, month_start(core, now), now,
                              core.config.report.basic_weight)
    header = "\n".join([
        t._("📰 Daily digest — {unit} — {day}", unit=org.display_name(unit, t.locale),
            day=core.local(now).strftime("%Y-%m-%d")),
        t._("Last 24 hours: {new} new, {claimed} claimed, {resolved} resolved, {reopened} "
            "reopened, {escalated} escalated.", new=counts.get("created", 0),
            claimed=counts.get("claimed", 0), resolved=counts.get("resolved", 0),
            reopened=counts.get("reopened", 0),
            escalated=counts.get("escalated", 0) + counts.get("whistled", 0)),
        t._("Votes: {satisfied} satisfied, {basic} basically satisfied, {unsatisfied} not "
            "satisfied.", satisfied=votes.get("satisfied", 0), basic=votes.get("basic", 0),
            unsatisfied=votes.get("unsatisfied", 0)),
        t._("This month: response rate {response}, resolution rate {resolution}, "
            "satisfaction rate {satisfaction} ({votes} votes).",
            response=percent(rates.response), resolution=percent(rates.resolution),
            satisfaction=percent(rates.satisfaction), votes=rates.votes),
        t._("Overdue now: {n}", n=overdue_count),
    ])
    lines = []
    for number, (assignee_id, due) in oldest.items():
        who = (await session.get(Person, assignee_id)).name if assignee_id else t._("unclaimed")
        lines.append(f"❗ #{number} — {who} — {core.local(due).strftime('%m-%d %H:%M')}")
    more = overdue_count - len(oldest)
    if more > 0:
        link = overdue_link(core, unit)
        lines.append(t._("… and {more} more: {link}", more=more, link=link) if link else
                     t._("… and {more} more: on the dashboard, Tickets, “overdue only”.",
                         more=more))
    return paginate(header, lines)


def overdue_link(core: Core, unit: Unit) -> str | None:
    """The dashboard's overdue list in ``unit``'s scope, when the service has a public
    address (``[web] public_url``) and a dashboard; None otherwise."""
    config = core.config
    base = (config.web.public_url or "").rstrip("/")
    if not base or not (config.web.enabled and config.dashboard.enabled):
        return None
    return f"{base}{config.dashboard.path}/tickets?{urlencode({'overdue': '1', 'unit': unit.code})}"


async def digest_targets(session: AsyncSession, core: Core) -> list[tuple[int, Target]]:
    """(unit id, where its digest goes) for every bound chat and group robot."""
    # WeCom "chats" are a unit's members one by one (bot/wecom/channel.py): a group's
    # digest goes to the unit's WeCom group robot instead, when one is configured
    bindings = list(await session.scalars(select(ChatBinding).where(
        ChatBinding.channel != "wecom").order_by(ChatBinding.id)))
    targets = [(b.unit_id, Target(b.channel, b.chat_id)) for b in bindings]
    if "wecom" in core.channels:
        for code in core.config.wecom.digest_webhooks:
            unit = await org.unit_by_code(session, code)
            if unit is not None:
                targets.append((unit.id, Target("wecom_robot", code)))
    return targets


async def unit_digest(session: AsyncSession, core: Core, unit_id: int, now: datetime) -> list[str]:
    return await digest_text(session, core, await session.get(Unit, unit_id), now)


async def queue_digests(session: AsyncSession, core: Core,
                        built: list[tuple[Target, list[str]]]) -> int:
    """Queue digests built before (``digest_targets``, ``unit_digest``); the number of chats."""
    for target, pages in built:
        for page in pages:
            enqueue(session, target, OutMessage(text=page), core.now())
    return len(built)


async def send_digests(session: AsyncSession, core: Core, now: datetime) -> int:
    """Build and queue every bound chat's digest in this one transaction; returns the
    number of chats. (The daily job builds each unit's in a transaction of its own:
    ``scheduler/jobs.py`` ``run_digest``.)"""
    pages: dict[int, list[str]] = {}
    built = []
    for unit_id, target in await digest_targets(session, core):
        if unit_id not in pages:
            pages[unit_id] = await unit_digest(session, core, unit_id, now)
        built.append((target, pages[unit_id]))
    return await queue_digests(session, core, built)
