"""The jobs themselves, callable with any "now" (tests move a controlled clock)."""
from __future__ import annotations

import logging
import time
from datetime import datetime

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.db import Database
from models.digest import send_digests
from models.privacy import expired_photos
from models.sweep import SweepResult, sweep
from models.tables import JobRun

log = logging.getLogger(__name__)


async def claim_run(session: AsyncSession, job: str, period: str, now: datetime) -> bool:
    """Insert (job, period) once; False if this or another process already ran it."""
    insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    result = await session.execute(insert(JobRun).values(job=job, period=period, started_at=now)
                                   .on_conflict_do_nothing(index_elements=["job", "period"]))
    return result.rowcount == 1


async def run_sweep(db: Database, core: Core, now: datetime) -> SweepResult:
    """One sweep pass; the due timers are claimed row by row, so concurrent sweeps share
    the work instead of repeating it."""
    started = time.perf_counter()
    result = await db.run(lambda s: sweep(s, core, now))
    if result.timers:
        log.info("sweep at %s: %s (%.0f ms)", now.isoformat(), result,
                 (time.perf_counter() - started) * 1000)
    return result


def digest_period(core: Core, now: datetime) -> str:
    return core.local(now).strftime("%Y-%m-%d")


async def run_digest(db: Database, core: Core, now: datetime) -> int | None:
    """Send the day's digests, once per local day; None if already sent."""
    period = digest_period(core, now)

    async def action(session):
        if not await claim_run(session, "digest", period, now):
            return None
        return await send_digests(session, core, now)
    sent = await db.run(action)
    if sent is not None:
        log.info("digest %s sent to %d chats", period, sent)
    return sent


async def run_retention(db: Database, core: Core, now: datetime) -> int | None:
    """Delete photos of tickets closed longer ago than the retention period, once a day.
    Rows go in the transaction; files after it committed."""
    period = digest_period(core, now)

    async def action(session):
        if not await claim_run(session, "retention", period, now):
            return None
        return await expired_photos(session, core, now)
    paths = await db.run(action)
    if paths is None:
        return None
    for path in paths:
        core.media.path(path).unlink(missing_ok=True)
    if paths:
        log.info("retention: deleted %d photo files", len(paths))
    return len(paths)
