"""Deadlines on China's working calendar (两类三单限时办结).

Emergency orders run on calendar time; routine and key orders run on working
time: working hours per weekday, public holidays and adjusted working days
(调休) as published by the State Council, via the ``chinesecalendar`` package.
Everything here is pure: no clock, no database, so the scheduler and the
ticket rules can compute due, reminder and resume times deterministically.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import chinese_calendar
from pydantic_core import core_schema

DEFAULT_TZ = "Asia/Shanghai"
STANDARD_WORKDAY_SECONDS = 8 * 3600
UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "wh": 3600, "wd": STANDARD_WORKDAY_SECONDS}
WORKING_UNITS = frozenset({"wh", "wd"})
_SPAN_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(m|h|d|wh|wd)\s*", re.IGNORECASE)
_SECOND = timedelta(seconds=1)

Period = tuple[time, time]
DEFAULT_HOURS: dict[int, tuple[Period, ...]] = {
    weekday: ((time(9, 0), time(12, 0)), (time(13, 0), time(18, 0))) for weekday in range(5)
}


@dataclass(frozen=True)
class Span:
    """A duration in one measure, as written in config: ``10m``, ``24h``, ``1d``
    (calendar time) or ``2wh``, ``5wd`` (working time). Kept as amount + unit
    rather than bare seconds so ``5wd`` can follow the calendar's working-day
    length and round-trips to the text the operator wrote."""

    amount: Decimal
    unit: str

    def __post_init__(self) -> None:
        if self.unit not in UNIT_SECONDS:
            raise ValueError(f"{self.unit!r}: the unit must be one of m, h, d, wh or wd")
        try:
            amount = Decimal(str(self.amount))
        except InvalidOperation:
            raise ValueError(f"{self.amount!r}: the amount must be a number") from None
        if not amount.is_finite() or amount < 0:
            raise ValueError(f"{self.amount!r}: the amount must be a number >= 0")
        if amount * UNIT_SECONDS[self.unit] % 1:
            raise ValueError(f"'{_plain(amount)}{self.unit}': not a whole number of seconds")
        object.__setattr__(self, "amount", amount.normalize())

    @classmethod
    def parse(cls, text: str) -> Span:
        match = _SPAN_RE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(f"{text!r}: use a number followed by m, h, d, wh or wd")
        return cls(Decimal(match[1]), match[2].lower())

    @property
    def working(self) -> bool:
        return self.unit in WORKING_UNITS

    @property
    def seconds(self) -> int:
        """Calendar seconds, or working seconds for working spans; ``wd`` counts
        the standard 8-hour day here (``WorkCalendar.seconds_of`` uses the
        calendar's own day length)."""
        return int(self.amount * UNIT_SECONDS[self.unit])

    def __str__(self) -> str:
        return f"{_plain(self.amount)}{self.unit}"

    def __repr__(self) -> str:
        return f"Span({str(self)!r})"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        """Lets config models declare ``claim: Span``: text in, text out."""
        from_text = core_schema.chain_schema(
            [core_schema.str_schema(), core_schema.no_info_plain_validator_function(cls.parse)]
        )
        return core_schema.json_or_python_schema(
            json_schema=from_text,
            python_schema=core_schema.no_info_plain_validator_function(
                lambda value: value if isinstance(value, cls) else cls.parse(value)
            ),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )


def _plain(amount: Decimal) -> str:
    return format(amount, "f")


def _aware(moment: datetime) -> datetime:
    """Deadlines are instants; a naive datetime has no defined instant."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment!r} is naive: pass a timezone-aware datetime")
    return moment


def _utc(moment: datetime) -> datetime:
    # Arithmetic in UTC: aware datetimes sharing a tzinfo subtract wall-clock time.
    return _aware(moment).astimezone(timezone.utc)


def _zone(tz: ZoneInfo | str) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)


@lru_cache(maxsize=8192)
def _china_workday(day: date) -> bool | None:
    """The package's verdict, or None for years it has no data for. Cached
    because the package rescans its tables on every call."""
    try:
        return chinese_calendar.is_workday(day)
    except NotImplementedError:
        return None


class WorkCalendar:
    """Working days and hours in one time zone. A date works if listed in
    ``extra_workdays``, rests if in ``extra_holidays``, else follows China's
    published calendar (Mon–Fri for years the package does not cover). A
    weekend day that works (调休) keeps Monday's hours."""

    def __init__(
        self,
        tz: ZoneInfo | str = DEFAULT_TZ,
        hours: dict[int, list[Period]] | None = None,
        extra_holidays: Iterable[date] = (),
        extra_workdays: Iterable[date] = (),
        use_chinese_calendar: bool = True,
    ):
        self.tz = _zone(tz)
        self.hours = DEFAULT_HOURS if hours is None else _checked_hours(hours)
        self.extra_holidays = frozenset(extra_holidays)
        self.extra_workdays = frozenset(extra_workdays)
        both = self.extra_holidays & self.extra_workdays
        if both:
            raise ValueError(f"dates both extra holidays and extra workdays: {sorted(both)}")
        self.use_chinese_calendar = use_chinese_calendar
        self.workday_seconds = sum(_length(period) for period in self.hours.get(0, ()))
        if not self.workday_seconds:
            # Also guarantees add() finds working time: every year has working Mondays.
            raise ValueError("Monday needs working hours: they define the length of a working day")

    def is_workday(self, day: date) -> bool:
        if day in self.extra_workdays:
            return True
        if day in self.extra_holidays:
            return False
        if self.use_chinese_calendar:
            verdict = _china_workday(day)
            if verdict is not None:
                return verdict
        return day.weekday() < 5

    def is_working(self, moment: datetime) -> bool:
        at = _utc(moment)
        return any(begin <= at < end for begin, end in self._periods(at.astimezone(self.tz).date()))

    def seconds_of(self, span: Span) -> int:
        """The span in its own measure, ``wd`` at this calendar's working-day length."""
        if span.unit == "wd":
            return int(span.amount * self.workday_seconds)
        return span.seconds

    def add(self, start: datetime, span: Span) -> datetime:
        """When ``span`` has run from ``start``, in ``start``'s time zone."""
        if span.working:
            return self._add_working(start, self.seconds_of(span))
        return (_utc(start) + timedelta(seconds=span.seconds)).astimezone(start.tzinfo)

    def working_seconds(self, start: datetime, end: datetime) -> int:
        begin, finish = _utc(start), _utc(end)
        total = timedelta()
        day, last = begin.astimezone(self.tz).date(), finish.astimezone(self.tz).date()
        while day <= last:
            for low, high in self._periods(day):
                overlap = min(high, finish) - max(low, begin)
                if overlap > timedelta():
                    total += overlap
            day += timedelta(days=1)
        return total // _SECOND

    def elapsed(self, start: datetime, end: datetime, working: bool) -> int:
        if working:
            return self.working_seconds(start, end)
        return max(timedelta(), _utc(end) - _utc(start)) // _SECOND

    def resume(self, due: datetime, paused_at: datetime, resumed_at: datetime, working: bool) -> datetime:
        """The due time after the timer stood still from ``paused_at`` to
        ``resumed_at`` (waiting on the resident): the time left at the pause
        runs again from the resume. On working time an already missed
        deadline leaves nothing, so the ticket is due at the resume."""
        if _utc(resumed_at) < _utc(paused_at):
            raise ValueError("resumed_at is before paused_at")
        if working:
            return self._add_working(resumed_at, self.working_seconds(paused_at, due)).astimezone(due.tzinfo)
        return (_utc(due) + (_utc(resumed_at) - _utc(paused_at))).astimezone(due.tzinfo)

    def warn_at(self, start: datetime, due: datetime, working: bool) -> datetime:
        """When to remind that the deadline approaches: 20 % of the window ahead,
        but at least 15 minutes (at most half the window) so short timers
        still get a usable warning."""
        window = self.elapsed(start, due, working)
        lead = max(window // 5, min(15 * 60, window // 2))
        if working:
            return self._add_working(start, window - lead).astimezone(due.tzinfo)
        return (_utc(due) - timedelta(seconds=lead)).astimezone(due.tzinfo)

    def _add_working(self, start: datetime, seconds: int) -> datetime:
        """Consumes working time period by period; outside hours the clock
        starts with the next period."""
        at = _utc(start)
        left = timedelta(seconds=seconds)
        if not left:
            return start
        day = at.astimezone(self.tz).date()
        while True:
            for low, high in self._periods(day):
                if high <= at:
                    continue
                begin = max(low, at)
                if begin + left <= high:
                    return (begin + left).astimezone(start.tzinfo)
                left -= high - begin
            day += timedelta(days=1)

    def _periods(self, day: date) -> list[tuple[datetime, datetime]]:
        if not self.is_workday(day):
            return []
        weekday = day.weekday() if day.weekday() < 5 else 0
        return [
            (
                datetime.combine(day, low, self.tz).astimezone(timezone.utc),
                datetime.combine(day, high, self.tz).astimezone(timezone.utc),
            )
            for low, high in self.hours.get(weekday, ())
        ]


def _length(period: Period) -> int:
    low, high = period
    return (datetime.combine(date.min, high) - datetime.combine(date.min, low)) // _SECOND


def _checked_hours(hours: dict[int, list[Period]]) -> dict[int, tuple[Period, ...]]:
    """Rejects hours that would silently never apply or overlap."""
    checked = {}
    for weekday, periods in hours.items():
        if weekday not in range(5):
            raise ValueError(
                f"hours for weekday {weekday}: give 0 (Monday) to 4 (Friday); "
                "weekend days work only as adjusted working days, on Monday's hours"
            )
        ordered = tuple(sorted((low, high) for low, high in periods))
        for low, high in ordered:
            if not low < high:
                raise ValueError(f"weekday {weekday}: period {low}-{high} must end after it starts, same day")
        for (_, earlier_end), (later_start, _) in zip(ordered, ordered[1:]):
            if later_start < earlier_end:
                raise ValueError(f"weekday {weekday}: periods overlap at {later_start}")
        checked[weekday] = ordered
    return checked


class QuietHours:
    """The nightly window in which non-urgent messages are held back; may
    cross midnight (22:00–07:00). Equal start and end means no quiet hours."""

    def __init__(self, start: time = time(22, 0), end: time = time(7, 0), tz: ZoneInfo | str = DEFAULT_TZ):
        self.start, self.end, self.tz = start, end, _zone(tz)

    def contains(self, moment: datetime) -> bool:
        now = _aware(moment).astimezone(self.tz).time()
        if self.start <= self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end

    def end_after(self, moment: datetime) -> datetime:
        """When the current quiet period ends, in ``moment``'s time zone;
        ``moment`` itself when it is not quiet, so callers can send at once."""
        if not self.contains(moment):
            return moment
        local = moment.astimezone(self.tz)
        day = local.date()
        if self.start > self.end and local.time() >= self.start:
            day += timedelta(days=1)
        return datetime.combine(day, self.end, self.tz).astimezone(moment.tzinfo)


def working_calendar(config) -> WorkCalendar:
    """The district's working calendar from the settings (``[calendar]``)."""
    cal = config.calendar
    return WorkCalendar(config.tz, hours={day: list(cal.hours) for day in range(5)},
                        extra_holidays=cal.extra_holidays, extra_workdays=cal.extra_workdays,
                        use_chinese_calendar=cal.use_chinese_calendar)


def quiet_hours(config) -> QuietHours:
    """The night in which residents are not disturbed (``[deadlines] quiet_start/end``)."""
    return QuietHours(config.deadlines.quiet_start, config.deadlines.quiet_end, config.tz)
