"""The jobs themselves, callable with any "now" (tests move a controlled clock)."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.deadlines import periods
from models.figures.digest import digest_targets, queue_digests, unit_digest
from models.logs import log_context
from models.messages.outbox import Target
from models.org import tree as org
from models.residents.privacy import expired_photos
from models.store import inbox
from models.store.db import Database, upsert_insert
from models.store.tables import JobRun
from models.tickets.sweep import SweepResult, sweep

log = logging.getLogger(__name__)


async def claim_run(session: AsyncSession, job: str, period: str, now: datetime) -> bool:
    """Insert (job, period) once; False if this or another process already ran it."""
    insert = upsert_insert(session.bind.dialect.name)
    result = await session.execute(insert(JobRun).values(job=job, period=period, started_at=now)
                                   .on_conflict_do_nothing(index_elements=["job", "period"]))
    return result.rowcount == 1


async def run_sweep(db: Database, core: Core, now: datetime,
                    observe: Callable[[float], None] | None = None) -> SweepResult:
    """One sweep pass; the due timers are claimed row by row, so concurrent sweeps share
    the work instead of repeating it. ``observe(seconds)`` is told how long it took."""
    started = time.perf_counter()
    with log_context(job="sweep"):
        result = await db.run(lambda s: sweep(s, core, now))
    if observe is not None:
        observe(time.perf_counter() - started)
    if result.timers:
        log.info("sweep at %s: %s (%.0f ms)", now.isoformat(), result,
                 (time.perf_counter() - started) * 1000)
    return result


def local_day(core: Core, now: datetime) -> str:
    return core.local(now).strftime("%Y-%m-%d")


async def once_a_day(db: Database, core: Core, job: str, now: datetime, work):
    """Run ``work(session)`` in the transaction that claims (job, local day); None if this
    or another process already ran it today."""
    async def action(session):
        if not await claim_run(session, job, local_day(core, now), now):
            return None
        return await work(session)
    return await db.run(action)


async def run_digest(db: Database, core: Core, now: datetime) -> int | None:
    """Send the day's digests, once per local day; None if already sent.

    Each unit's digest is built in a short transaction of its own (on SQLite transactions
    take turns: one building all of them held up every chat meanwhile), then all are
    queued in the transaction that claims the day, so they go all or none; a process
    that loses the claim has only wasted the building."""
    day = local_day(core, now)
    if await db.run(lambda s: s.scalar(select(JobRun.job).where(JobRun.job == "digest",
                                                                JobRun.period == day))):
        return None  # sent already: nothing to build
    targets = await db.run(lambda s: digest_targets(s, core))
    pages: dict[int, list[str]] = {}
    for unit_id in dict.fromkeys(unit_id for unit_id, _ in targets):
        pages[unit_id] = await db.run(lambda s, u=unit_id: unit_digest(s, core, u, now))
    built = [(target, pages[unit_id]) for unit_id, target in targets]
    sent = await once_a_day(db, core, "digest", now, lambda s: queue_digests(s, core, built))
    if sent is not None:
        log.info("digest %s sent to %d chats", local_day(core, now), sent)
    return sent


async def run_retention(db: Database, core: Core, now: datetime) -> int | None:
    """Delete photos of tickets closed longer ago than the retention period, once a day.
    Rows go in the transaction; files after it committed."""
    async def retain(session):
        await inbox.prune(session, now)
        return await expired_photos(session, core, now)
    paths = await once_a_day(db, core, "retention", now, retain)
    if paths is None:
        return None
    for path in paths:
        core.media.path(path).unlink(missing_ok=True)
    if paths:
        log.info("retention: deleted %d photo files", len(paths))
    return len(paths)


MONTHLY = "monthly_report"


async def run_monthly_report(db: Database, core: Core, now: datetime) -> str | None:
    """Post the previous month's report to the command centre's chat, once per month
    (claimed as (monthly_report, "2026-11")); returns the month, or None if already sent.

    The figures are computed in one transaction and rendered after it (charts and the
    workbook in worker threads, holding no database lock), so the claiming transaction
    is short; a process that loses the claim has only wasted the rendering."""
    from models.figures.stats import build
    from reports import bundle

    period = periods.previous_month(now, core.config.tz)

    async def already(session):
        return await session.get(JobRun, (MONTHLY, period.label)) is not None
    if await db.run(already):
        return None

    async def prepare(session):
        centre = await org.command_centre(session, core)
        chats = await org.chats_of_unit(session, centre.id, channels=core.channels)
        return chats, await build(session, core, period, now, centre)
    chats, report = await db.run(prepare)
    rendered = await bundle.render(core, report)

    async def post(session):
        if not await claim_run(session, MONTHLY, period.label, now):
            return None
        for chat in chats:
            bundle.queue(session, core, Target(chat.channel, chat.chat_id), rendered)
        return period.label
    sent = await db.run(post)
    if sent is not None:
        log.info("monthly report %s posted to %d chats", sent, len(chats))
    return sent


def monthly_missed(core: Core, now: datetime) -> bool:
    """Past this month's report time (the day and time in ``[report]``), so the previous
    month's report is due; the claim in job_run decides whether it was already sent."""
    local = core.local(now)
    report = core.config.report
    return (local.day, local.time()) >= (report.monthly_day, report.monthly_time)
