"""Deadlines on China's working calendar: spans, working-time arithmetic,
holidays and 调休, pauses, reminders and quiet hours."""
from __future__ import annotations

import random
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import chinese_calendar
import pytest
from pydantic import BaseModel, ValidationError

from models.deadlines.calendar import QuietHours, Span, WorkCalendar

SH = ZoneInfo("Asia/Shanghai")
CAL = WorkCalendar()


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH)


# --- Span -------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "working", "seconds"),
    [("10m", False, 600), ("24h", False, 86400), ("1d", False, 86400),
     ("2wh", True, 7200), ("5wd", True, 5 * 8 * 3600), ("1.5h", False, 5400), ("0m", False, 0)],
)
def test_span_parses(text, working, seconds):
    span = Span.parse(text)
    assert (span.working, span.seconds, str(span)) == (working, seconds, text)
    assert Span.parse(str(span)) == span


@pytest.mark.parametrize(("text", "canonical"), [(" 2 WH ", "2wh"), ("1.50h", "1.5h"), ("010m", "10m")])
def test_span_canonical_text(text, canonical):
    assert str(Span.parse(text)) == canonical


@pytest.mark.parametrize("text", ["5x", "", "wd", "-1h", "1e3m", "5 w d", "h5"])
def test_span_rejects_bad_text(text):
    with pytest.raises(ValueError, match="use a number followed by m, h, d, wh or wd"):
        Span.parse(text)


def test_span_rejects_fractions_of_a_second():
    with pytest.raises(ValueError, match="whole number of seconds"):
        Span.parse("0.001m")


def test_span_is_immutable_and_hashable():
    span = Span.parse("2wh")
    with pytest.raises(AttributeError):
        span.unit = "h"
    assert {span, Span.parse("2wh")} == {span}


class Deadlines(BaseModel):
    claim: Span
    resolve: Span = Span.parse("5wd")


def test_span_as_pydantic_field():
    model = Deadlines(claim="2wh")
    assert model.claim == Span.parse("2wh")
    assert model.model_dump() == {"claim": "2wh", "resolve": "5wd"}
    assert Deadlines.model_validate_json(model.model_dump_json()) == model
    assert Deadlines(claim=Span.parse("10m")).claim.seconds == 600
    assert Deadlines.model_json_schema()["properties"]["claim"]["type"] == "string"
    with pytest.raises(ValidationError, match="'5x': use a number followed by m, h, d, wh or wd"):
        Deadlines(claim="5x")


# --- calendar time ------------------------------------------------------------

def test_calendar_add_crosses_midnight_and_holidays():
    assert CAL.add(at(2026, 9, 30, 23, 50), Span.parse("24h")) == at(2026, 10, 1, 23, 50)
    assert CAL.add(at(2026, 9, 30, 23, 55), Span.parse("10m")) == at(2026, 10, 1, 0, 5)


def test_add_keeps_the_start_time_zone():
    start = datetime(2026, 3, 2, 1, 0, tzinfo=timezone.utc)  # 09:00 in Shanghai
    due = CAL.add(start, Span.parse("2wh"))
    assert due.tzinfo is timezone.utc
    assert due == datetime(2026, 3, 2, 3, 0, tzinfo=timezone.utc)
    assert CAL.add(start, Span.parse("30m")).tzinfo is timezone.utc


# --- working time -------------------------------------------------------------

def test_default_working_day_is_eight_hours():
    assert CAL.workday_seconds == 8 * 3600
    assert CAL.seconds_of(Span.parse("5wd")) == 40 * 3600


@pytest.mark.parametrize(
    ("start", "span", "due"),
    [
        (at(2026, 3, 2, 9, 30), "2wh", at(2026, 3, 2, 11, 30)),  # within the morning
        (at(2026, 3, 2, 11, 0), "2wh", at(2026, 3, 2, 14, 0)),  # across lunch
        (at(2026, 3, 2, 12, 20), "1wh", at(2026, 3, 2, 14, 0)),  # reported at lunch
        (at(2026, 3, 2, 17, 0), "1wh", at(2026, 3, 2, 18, 0)),  # ends exactly at closing
        (at(2026, 3, 2, 17, 0), "2wh", at(2026, 3, 3, 10, 0)),  # across a night
        (at(2026, 3, 2, 22, 0), "2wh", at(2026, 3, 3, 11, 0)),  # reported at night
        (at(2026, 3, 3, 6, 0), "1wh", at(2026, 3, 3, 10, 0)),  # reported before opening
        (at(2026, 3, 6, 17, 0), "2wh", at(2026, 3, 9, 10, 0)),  # across a weekend
        (at(2026, 3, 7, 10, 0), "1wh", at(2026, 3, 9, 10, 0)),  # reported on Saturday
        (at(2026, 3, 2, 10, 0), "5wd", at(2026, 3, 9, 10, 0)),  # five working days, over a weekend
        (at(2026, 3, 2, 10, 0), "15wd", at(2026, 3, 23, 10, 0)),
    ],
)
def test_working_add(start, span, due):
    assert CAL.add(start, Span.parse(span)) == due


def test_is_working():
    assert CAL.is_working(at(2026, 3, 2, 9, 0))
    assert not CAL.is_working(at(2026, 3, 2, 12, 0))
    assert CAL.is_working(at(2026, 3, 2, 17, 59))
    assert not CAL.is_working(at(2026, 3, 2, 18, 0))
    assert not CAL.is_working(at(2026, 3, 7, 10, 0))  # Saturday
    assert CAL.is_working(datetime(2026, 3, 2, 2, 0, tzinfo=timezone.utc))  # 10:00 Shanghai


def test_working_seconds():
    assert CAL.working_seconds(at(2026, 3, 2, 11, 0), at(2026, 3, 2, 14, 0)) == 2 * 3600
    assert CAL.working_seconds(at(2026, 3, 6, 17, 0), at(2026, 3, 9, 10, 0)) == 2 * 3600
    assert CAL.working_seconds(at(2026, 3, 2, 14, 0), at(2026, 3, 2, 11, 0)) == 0
    assert CAL.elapsed(at(2026, 3, 6, 17, 0), at(2026, 3, 9, 10, 0), working=False) == 65 * 3600
    assert CAL.elapsed(at(2026, 3, 6, 17, 0), at(2026, 3, 9, 10, 0), working=True) == 2 * 3600
    assert CAL.elapsed(at(2026, 3, 9), at(2026, 3, 6), working=False) == 0


def test_custom_hours_set_the_working_day_length():
    short = WorkCalendar(hours={d: [(time(9, 0), time(12, 0)), (time(13, 30), time(17, 30))] for d in range(5)})
    assert short.workday_seconds == 7 * 3600
    start = at(2026, 3, 2, 9, 0)
    assert short.add(start, Span.parse("1wd")) == at(2026, 3, 2, 17, 30)
    assert short.working_seconds(start, short.add(start, Span.parse("5wd"))) == 35 * 3600


@pytest.mark.parametrize(
    "hours",
    [
        {5: [(time(9), time(12))]},  # Saturday: never applies
        {0: []},  # no Monday: no working-day length
        {0: [(time(12), time(9))]},
        {0: [(time(9), time(12)), (time(11), time(14))]},
    ],
)
def test_bad_hours_rejected(hours):
    with pytest.raises(ValueError):
        WorkCalendar(hours=hours)


# --- China's 2026 calendar -------------------------------------------------------

def test_package_2026_data_matches_what_these_tests_assume():
    """If the package's data changes, fail here rather than somewhere obscure."""
    year = [date(2026, 1, 1) + timedelta(n) for n in range(365)]
    holidays = {d for d in year if d.weekday() < 5 and not chinese_calendar.is_workday(d)}
    adjusted = {d for d in year if d.weekday() >= 5 and chinese_calendar.is_workday(d)}
    assert {date(2026, 2, d) for d in (16, 17, 18, 19, 20, 23)} <= holidays
    assert {date(2026, 10, d) for d in (1, 2, 5, 6, 7)} <= holidays
    assert {date(2026, 9, 25)} <= holidays  # Mid-Autumn, separate from National Day in 2026
    assert adjusted == {date(2026, 1, 4), date(2026, 2, 14), date(2026, 2, 28),
                        date(2026, 5, 9), date(2026, 9, 20), date(2026, 10, 10)}


def test_2026_spring_festival():
    assert CAL.is_workday(date(2026, 2, 13))
    assert CAL.is_workday(date(2026, 2, 14))  # Saturday, adjusted working day
    assert not any(CAL.is_workday(date(2026, 2, d)) for d in range(15, 24))
    assert CAL.is_workday(date(2026, 2, 28))  # Saturday, adjusted working day
    assert CAL.is_working(at(2026, 2, 14, 9, 0))  # adjusted day keeps Monday's hours
    assert not CAL.is_working(at(2026, 2, 14, 12, 30))
    # claim within 2 working hours, reported Friday 17:30: half an hour Friday, 1.5 h on the working Saturday
    assert CAL.add(at(2026, 2, 13, 17, 30), Span.parse("2wh")) == at(2026, 2, 14, 10, 30)
    # reported Saturday evening: nothing until Tuesday 24 February
    assert CAL.add(at(2026, 2, 14, 19, 0), Span.parse("2wh")) == at(2026, 2, 24, 11, 0)
    # 5wd from Friday evening: 14, 24, 25, 26, 27 February
    assert CAL.add(at(2026, 2, 13, 19, 0), Span.parse("5wd")) == at(2026, 2, 27, 18, 0)


def test_2026_national_day_routine_order_reported_the_evening_before():
    start = at(2026, 9, 30, 20, 0)
    assert not CAL.is_workday(date(2026, 10, 1)) and not CAL.is_workday(date(2026, 10, 7))
    assert CAL.is_workday(date(2026, 9, 20))  # Sunday, adjusted working day
    assert CAL.is_workday(date(2026, 10, 10))  # Saturday, adjusted working day
    assert CAL.add(start, Span.parse("1wh")) == at(2026, 10, 8, 10, 0)
    # 8, 9, 10 (working Saturday), 12, 13 October
    assert CAL.add(start, Span.parse("5wd")) == at(2026, 10, 13, 18, 0)
    # an emergency order ignores the holiday
    assert CAL.add(start, Span.parse("24h")) == at(2026, 10, 1, 20, 0)


def test_config_overrides_the_package():
    cal = WorkCalendar(extra_holidays=[date(2026, 3, 3)], extra_workdays=[date(2026, 10, 1), date(2026, 3, 7)])
    assert not cal.is_workday(date(2026, 3, 3))
    assert cal.is_workday(date(2026, 10, 1))
    assert cal.is_workday(date(2026, 3, 7))
    assert cal.add(at(2026, 3, 2, 17, 0), Span.parse("2wh")) == at(2026, 3, 4, 10, 0)
    assert cal.add(at(2026, 9, 30, 20, 0), Span.parse("1wh")) == at(2026, 10, 1, 10, 0)
    with pytest.raises(ValueError, match="both"):
        WorkCalendar(extra_holidays=[date(2026, 3, 3)], extra_workdays=[date(2026, 3, 3)])


@pytest.mark.parametrize("year", [2099, 2003])
def test_years_the_package_does_not_cover_fall_back_to_monday_to_friday(year):
    with pytest.raises(NotImplementedError):
        chinese_calendar.is_workday(date(year, 6, 1))
    days = [date(year, 6, 1) + timedelta(n) for n in range(7)]
    assert [CAL.is_workday(d) for d in days] == [d.weekday() < 5 for d in days]
    assert CAL.is_workday(date(year, 10, 1)) == (date(year, 10, 1).weekday() < 5)


def test_package_can_be_switched_off():
    cal = WorkCalendar(use_chinese_calendar=False)
    assert cal.is_workday(date(2026, 10, 1))  # Thursday
    assert not cal.is_workday(date(2026, 10, 10))  # Saturday


# --- consistency and speed ----------------------------------------------------------

ODD_HOURS = WorkCalendar(hours={d: [(time(8, 30), time(11, 45)), (time(14, 0), time(17, 15))] for d in range(5)})


@pytest.mark.parametrize("calendar", [CAL, ODD_HOURS], ids=["default", "odd-hours"])
def test_working_seconds_measures_what_add_consumed(calendar):
    rng = random.Random(20260101)
    origin = datetime(2025, 12, 1, tzinfo=timezone.utc)
    for _ in range(400):
        start = origin + timedelta(seconds=rng.randrange(400 * 86400))  # into 2027, past the package's data
        span = Span.parse(rng.choice([f"{rng.randint(0, 40)}wh", f"{rng.randint(1, 30)}wd", "0.25wh"]))
        due = calendar.add(start, span)
        assert due >= start
        assert calendar.working_seconds(start, due) == calendar.seconds_of(span), (start, span)
        if calendar.seconds_of(span):
            assert calendar.is_working(due - timedelta(seconds=1))


def test_long_spans_are_fast():
    start = at(2026, 1, 5, 10, 0)
    due = CAL.add(start, Span.parse("800wd"))
    assert CAL.working_seconds(start, due) == 800 * 8 * 3600
    assert due.year in (2029, 2030)


# --- pauses -----------------------------------------------------------------------

def test_resume_on_calendar_time():
    due = at(2026, 3, 2, 10, 30)
    assert CAL.resume(due, at(2026, 3, 2, 10, 10), at(2026, 3, 2, 22, 10), working=False) == at(2026, 3, 2, 22, 30)


def test_resume_paused_inside_working_hours():
    # 3 working hours left at Monday 15:00; resident answers Tuesday 11:00 → 1 h before lunch + 2 h after
    due = at(2026, 3, 2, 18, 0)
    assert CAL.resume(due, at(2026, 3, 2, 15, 0), at(2026, 3, 3, 11, 0), working=True) == at(2026, 3, 3, 15, 0)


def test_resume_outside_working_hours():
    # paused Friday 17:00 with 2 working hours left; resident answers Saturday night
    due = at(2026, 3, 9, 10, 0)
    assert CAL.resume(due, at(2026, 3, 6, 17, 0), at(2026, 3, 7, 22, 0), working=True) == at(2026, 3, 9, 11, 0)
    # paused at night: the evening did not count, all 2 hours remain
    due = at(2026, 3, 3, 11, 0)
    assert CAL.resume(due, at(2026, 3, 2, 20, 0), at(2026, 3, 3, 14, 0), working=True) == at(2026, 3, 3, 16, 0)


def test_resume_after_the_deadline_had_passed():
    due = at(2026, 3, 2, 10, 0)
    resumed = at(2026, 3, 3, 20, 0)
    assert CAL.resume(due, at(2026, 3, 2, 15, 0), resumed, working=True) == resumed
    # on calendar time the overrun is kept: still 5 hours overdue
    assert CAL.resume(due, at(2026, 3, 2, 15, 0), resumed, working=False) == resumed - timedelta(hours=5)


def test_resume_rejects_time_running_backwards():
    with pytest.raises(ValueError):
        CAL.resume(at(2026, 3, 2, 12), at(2026, 3, 2, 11), at(2026, 3, 2, 10), working=True)


# --- reminders --------------------------------------------------------------------

def test_warn_at_short_calendar_timer():
    start = at(2026, 3, 2, 23, 55)
    due = CAL.add(start, Span.parse("10m"))
    assert CAL.warn_at(start, due, working=False) == at(2026, 3, 3, 0, 0)  # half of 10 minutes


def test_warn_at_two_working_hours():
    start = at(2026, 3, 2, 17, 0)
    due = CAL.add(start, Span.parse("2wh"))  # Tuesday 10:00
    warn = CAL.warn_at(start, due, working=True)
    assert warn == at(2026, 3, 3, 9, 36)  # 20 % = 24 working minutes ahead
    assert CAL.working_seconds(warn, due) == 24 * 60


def test_warn_at_five_working_days():
    start = at(2026, 9, 30, 20, 0)
    due = CAL.add(start, Span.parse("5wd"))  # Tuesday 13 October 18:00
    warn = CAL.warn_at(start, due, working=True)
    assert warn == at(2026, 10, 12, 18, 0)  # one working day (20 % of five) ahead
    assert CAL.working_seconds(warn, due) == 8 * 3600


def test_warn_at_uses_fifteen_minutes_for_mid_sized_windows():
    start = at(2026, 3, 2, 9, 0)
    assert CAL.warn_at(start, at(2026, 3, 2, 10, 0), working=False) == at(2026, 3, 2, 9, 45)


# --- quiet hours --------------------------------------------------------------------

def test_quiet_hours_across_midnight():
    quiet = QuietHours()
    assert quiet.contains(at(2026, 3, 2, 22, 0))
    assert quiet.contains(at(2026, 3, 3, 3, 0))
    assert not quiet.contains(at(2026, 3, 3, 7, 0))
    assert not quiet.contains(at(2026, 3, 2, 21, 59))
    assert quiet.end_after(at(2026, 3, 2, 23, 30)) == at(2026, 3, 3, 7, 0)
    assert quiet.end_after(at(2026, 3, 3, 5, 0)) == at(2026, 3, 3, 7, 0)
    assert quiet.end_after(at(2026, 3, 3, 12, 0)) == at(2026, 3, 3, 12, 0)
    utc_night = datetime(2026, 3, 2, 15, 0, tzinfo=timezone.utc)  # 23:00 Shanghai
    assert quiet.contains(utc_night)
    assert quiet.end_after(utc_night) == datetime(2026, 3, 2, 23, 0, tzinfo=timezone.utc)


def test_quiet_hours_within_one_day():
    quiet = QuietHours(time(12, 0), time(13, 0))
    assert quiet.contains(at(2026, 3, 2, 12, 30))
    assert not quiet.contains(at(2026, 3, 2, 23, 0))
    assert quiet.end_after(at(2026, 3, 2, 12, 30)) == at(2026, 3, 2, 13, 0)
    assert not QuietHours(time(7), time(7)).contains(at(2026, 3, 2, 7, 0))


# --- naive datetimes ------------------------------------------------------------------

NAIVE = datetime(2026, 3, 2, 10, 0)


@pytest.mark.parametrize(
    "call",
    [
        lambda: CAL.add(NAIVE, Span.parse("2wh")),
        lambda: CAL.add(NAIVE, Span.parse("10m")),
        lambda: CAL.add(NAIVE, Span.parse("0wh")),
        lambda: CAL.is_working(NAIVE),
        lambda: CAL.working_seconds(NAIVE, at(2026, 3, 3)),
        lambda: CAL.elapsed(at(2026, 3, 1), NAIVE, working=False),
        lambda: CAL.resume(NAIVE, at(2026, 3, 2), at(2026, 3, 3), working=False),
        lambda: CAL.warn_at(at(2026, 3, 2), NAIVE, working=True),
        lambda: QuietHours().contains(NAIVE),
        lambda: QuietHours().end_after(NAIVE),
    ],
)
def test_naive_datetimes_rejected(call):
    with pytest.raises(ValueError, match="naive"):
        call()
