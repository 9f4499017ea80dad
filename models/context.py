"""The core's dependencies in one object, handed to every core action."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from .calendar import QuietHours, WorkCalendar
from .i18n import I18n
from .media import MediaStore
from .routing import Router

if TYPE_CHECKING:
    from bot.config import Config


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Core:
    config: "Config"
    i18n: I18n
    router: Router
    media: MediaStore
    clock: Callable[[], datetime] = field(default=utcnow)
    channels: frozenset[str] = frozenset({"telegram"})  # the channels this process runs
    calendar: WorkCalendar = field(init=False)
    quiet: QuietHours = field(init=False)

    def __post_init__(self) -> None:
        cal, deadlines = self.config.calendar, self.config.deadlines
        self.calendar = WorkCalendar(
            self.config.tz, hours={day: list(cal.hours) for day in range(5)},
            extra_holidays=cal.extra_holidays, extra_workdays=cal.extra_workdays,
            use_chinese_calendar=cal.use_chinese_calendar)
        self.quiet = QuietHours(deadlines.quiet_start, deadlines.quiet_end, self.config.tz)

    def now(self) -> datetime:
        return self.clock()

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.config.tz)
