"""The core's dependencies in one object, handed to every core action.

It imports nothing of the core at run time (the types below are annotations only), so
every capability package can depend on it without a circle."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.deadlines.calendar import QuietHours, WorkCalendar
    from models.figures.commands import ReportOutputs
    from models.media.store import MediaStore
    from models.messages.i18n import I18n
    from models.org.routing import Router


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Core:
    """``config`` is the service's settings (``bot.config.Config``, built by the wiring);
    ``calendar`` and ``quiet`` come from it (``calendar.working_calendar``,
    ``calendar.quiet_hours``); ``reports`` renders /stats and /report (the ``reports``
    package, handed in so that the core imports nothing above it)."""
    config: Any
    i18n: I18n
    router: Router
    media: MediaStore
    calendar: WorkCalendar
    quiet: QuietHours
    reports: ReportOutputs | None = None
    clock: Callable[[], datetime] = field(default=utcnow)
    channels: frozenset[str] = frozenset({"telegram"})  # the channels this process runs

    def now(self) -> datetime:
        return self.clock()

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.config.tz)
