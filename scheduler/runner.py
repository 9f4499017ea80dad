"""APScheduler (3.x) wiring: the sweep every ``sweep_seconds``, the digest daily at
``digest_time`` local time, the monthly report on ``[report] monthly_day`` at
``monthly_time``. Jobs read the core's clock, so tests can drive them; a job missed
while the process was down runs at start (each claims its period once)."""
from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from models.context import Core
from models.store.db import Database

from .jobs import monthly_missed, run_digest, run_monthly_report, run_retention, run_sweep

log = logging.getLogger(__name__)


def _tracked(job: Callable[["Scheduler"], Awaitable[None]]):
    """Remember the task running a job while it runs. A job cancelled because the process
    stops (``drain``) ends quietly: a stop is not an error, and the job claims its period
    only when it has done its work, so the next start runs it again."""
    @functools.wraps(job)
    async def run(self: "Scheduler") -> None:
        task = asyncio.current_task()
        self._jobs.add(task)
        try:
            await job(self)
        except asyncio.CancelledError:
            log.info("%s stopped with the process; it runs again at the next start",
                     job.__name__)
        finally:
            self._jobs.discard(task)
    return run


class Scheduler:
    def __init__(self, db: Database, core: Core,
                 on_sweep: Callable[[float], None] | None = None):
        """``on_sweep(seconds)`` hears how long each sweep took (the metrics histogram)."""
        self.db, self.core, self.on_sweep = db, core, on_sweep
        self._scheduler = AsyncIOScheduler(timezone=core.config.tz)
        self._jobs: set[asyncio.Task] = set()  # jobs running now, so stopping can wait for them

    def start(self) -> None:
        schedule = self.core.config.schedule
        self._scheduler.add_job(self.sweep, IntervalTrigger(seconds=schedule.sweep_seconds),
                                id="sweep", max_instances=1, coalesce=True)
        self._scheduler.add_job(self.digest, CronTrigger(hour=schedule.digest_time.hour,
                                                         minute=schedule.digest_time.minute,
                                                         timezone=self.core.config.tz),
                                id="digest", max_instances=1, coalesce=True,
                                misfire_grace_time=3600)
        self._scheduler.add_job(self.retention, CronTrigger(hour=3, minute=15,
                                                            timezone=self.core.config.tz),
                                id="retention", max_instances=1, coalesce=True,
                                misfire_grace_time=3600)
        report = self.core.config.report
        self._scheduler.add_job(self.monthly_report, CronTrigger(
            day=report.monthly_day, hour=report.monthly_time.hour,
            minute=report.monthly_time.minute, timezone=self.core.config.tz),
            id="monthly-report", max_instances=1, coalesce=True, misfire_grace_time=3600)
        self._scheduler.start()
        if self._digest_missed():  # down at digest time: send it now (claimed once per day)
            # however late a slow start makes it: APScheduler's default grace is 1 s
            self._scheduler.add_job(self.digest, id="digest-catch-up", misfire_grace_time=None)
        if monthly_missed(self.core, self.core.now()):  # claimed once per month
            self._scheduler.add_job(self.monthly_report, id="monthly-report-catch-up",
                                    misfire_grace_time=None)

    def _digest_missed(self) -> bool:
        local = self.core.local(self.core.now())
        return local.time() >= self.core.config.schedule.digest_time

    @_tracked
    async def sweep(self) -> None:
        await run_sweep(self.db, self.core, self.core.now(), observe=self.on_sweep)

    @_tracked
    async def digest(self) -> None:
        await run_digest(self.db, self.core, self.core.now())

    @_tracked
    async def monthly_report(self) -> None:
        await run_monthly_report(self.db, self.core, self.core.now())

    @_tracked
    async def retention(self) -> None:
        await run_retention(self.db, self.core, self.core.now())

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait for jobs still running (a report being rendered), then cancel the rest:
        none may outlive the database it uses."""
        running = [task for task in self._jobs if not task.done()]
        if not running:
            return
        _, late = await asyncio.wait(running, timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=5)

