"""Report periods in local time: a month ("2026-11"), a quarter ("2026-Q4"), a half
year ("2026-H2"), a year ("2026") or any range of days ("2026-11-01..2026-11-15",
both days included). A period is [start, end) between local midnights."""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

KINDS = ("month", "quarter", "half", "year", "range")


@dataclass(frozen=True)
class Period:
    kind: str
    label: str
    start: datetime  # aware, local midnight
    end: datetime  # exclusive

    def months(self) -> list["Period"]:
        """The calendar months this period covers (for sums of monthly scores)."""
        tz = self.start.tzinfo
        first = self.start.date().replace(day=1)
        result = []
        while _midnight(first, tz) < self.end:
            result.append(month(first.year, first.month, tz))
            first = _next_month(first)
        return result


def _midnight(day: date, tz) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz)


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _span(kind: str, label: str, first: date, after: date, tz) -> Period:
    return Period(kind, label, _midnight(first, tz), _midnight(after, tz))


def month(year: int, number: int, tz) -> Period:
    first = date(year, number, 1)
    return _span("month", f"{year}-{number:02d}", first, _next_month(first), tz)


def month_of(moment: datetime, tz: ZoneInfo) -> Period:
    local = moment.astimezone(tz)
    return month(local.year, local.month, tz)


def previous_month(moment: datetime, tz: ZoneInfo) -> Period:
    start = month_of(moment, tz).start
    return month_of(start - timedelta(days=1), tz)


def parse(text: str, tz: ZoneInfo) -> Period:
    """A period from its label; ValueError (with a message fit for a person) otherwise."""
    text = (text or "").strip()
    try:
        if m := re.fullmatch(r"(\d{4})-(\d{1,2})", text):
            return month(int(m[1]), int(m[2]), tz)
        if m := re.fullmatch(r"(\d{4})-[Qq]([1-4])", text):
            year, q = int(m[1]), int(m[2])
            first = date(year, 3 * q - 2, 1)
            after = date(year + 1, 1, 1) if q == 4 else date(year, 3 * q + 1, 1)
            return _span("quarter", f"{year}-Q{q}", first, after, tz)
        if m := re.fullmatch(r"(\d{4})-[Hh]([12])", text):
            year, h = int(m[1]), int(m[2])
            first = date(year, 1 if h == 1 else 7, 1)
            after = date(year, 7, 1) if h == 1 else date(year + 1, 1, 1)
            return _span("half", f"{year}-H{h}", first, after, tz)
        if m := re.fullmatch(r"(\d{4})", text):
            year = int(m[1])
            return _span("year", str(year), date(year, 1, 1), date(year + 1, 1, 1), tz)
        if m := re.fullmatch(r"(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})", text):
            first, last = date.fromisoformat(m[1]), date.fromisoformat(m[2])
            if last < first:
                raise ValueError(f"the range {text} ends before it starts")
            return _span("range", text, first, last + timedelta(days=1), tz)
    except ValueError as exc:
        if "ends before" in str(exc):
            raise
        raise ValueError(f"not a valid period: {text!r}") from None
    raise ValueError(f"not a valid period: {text!r} (use 2026-11, 2026-Q4, 2026-H2, 2026 "
                     f"or 2026-11-01..2026-11-15)")
