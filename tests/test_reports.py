"""Every figure of the report against the hand-computed month in ``report_fixture``
(the arithmetic is in the comments), for each kind of scope, plus the periods and the
digest's use of the same definitions."""
from __future__ import annotations

from datetime import timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from models.deadlines import periods
from models.figures.digest import digest_text
from models.figures.rates import composite, percent, three_rates
from models.figures.stats import (Scope, build, department_scores, figures, percentile, weighted, worker_scores)
from models.store.tables import Ticket, Unit

from deadline_helpers import group_text, local, utc
from report_fixture import NOW, build as build_fixture

BJ = ZoneInfo("Asia/Shanghai")
H = 3600
NOV = periods.parse("2026-11", BJ)
DEC = periods.parse("2026-12", BJ)


@pytest.fixture
async def month(whistle, clock):
    return await build_fixture(whistle, clock)


async def unit_figures(whistle, code: str, period=NOV):
    async def read(session):
        unit = await session.scalar(select(Unit).where(Unit.code == code))
        return await figures(session, whistle.core, Scope(unit.kind, unit.code, unit.name,
                                                          unit_id=unit.id), period, utc(NOW))
    return await whistle.db.run(read)


async def scope_figures(whistle, kind: str, key: str, period=NOV, within: str | None = None):
    async def read(session):
        inside = None
        if within:
            inside = (await session.scalar(select(Unit).where(Unit.code == within))).id
        return await figures(session, whistle.core, Scope(kind, key, key, within=inside),
                             period, utc(NOW))
    return await whistle.db.run(read)


# ---- the district in November ---------------------------------------------------------------

async def test_district_november_every_figure(whistle, month):
    f = await unit_figures(whistle, "demo")
    # received: T1 T2 T3 T4 T5 T8 T9 = 7 (T6, the duplicate, is not counted)
    assert f.received == 7
    # claim deadlines that fell in November: all 7; claimed by them: T1 (10:30 ≤ 12:00),
    # T3 (09:30 ≤ 11:00), T4 (11:00 ≤ 12:00, by the community), T8 (11:30 ≤ 12:00, by the
    # department) = 4; T2 (15:00 > 14:00) and T5 (20:30 > 20:10) were late, T9 unclaimed.
    assert (f.rates.claims_due, f.rates.claims_met) == (7, 4)
    assert f.rates.response == pytest.approx(4 / 7)
    # votes in November: T1 solved+satisfied, T2 solved+basic, T3 solved+satisfied (changed
    # from "not solved"; one vote per resident) — T5 voted in December
    assert (f.rates.votes, f.rates.solved, f.rates.satisfied, f.rates.basic) == (3, 3, 2, 1)
    assert f.rates.resolution == pytest.approx(3 / 3)
    assert f.rates.satisfaction == pytest.approx((2 + 0.9 * 1) / 3)  # 0.9667
    # composite: 0.1 × 4/7 + 0.5 × 1 + 0.4 × 0.96667 = 0.05714 + 0.5 + 0.38667 = 0.94381
    assert f.composite == pytest.approx(0.1 * 4 / 7 + 0.5 * 1 + 0.4 * 2.9 / 3)
    # resolved in November and still resolved/closed: T1 T2 T3 (grid), T4 (community),
    # T8 (department) = 5; T5 was resolved in December
    assert f.resolved == 5
    assert f.levels == {"grid": 3, "community": 1, "department": 1}
    assert f.level_share("grid") == pytest.approx(3 / 5)
    assert f.level_share("community") == pytest.approx(1 / 5)
    assert f.level_share("street") == 0
    assert f.level_share("department") == pytest.approx(1 / 5)
    assert f.unrated == 1  # T4
    assert f.reopened == 1  # T3
    assert f.escalated == 2  # T4 (g01 → c1), T8 (g09 → c3)
    assert f.whistled == 1  # T8
    assert f.overdue_now == 1  # T9: claim due 11-30 11:00, still open at 12-02 12:00
    # closed in November: T1 (11-03), T2 (11-04), T3 (11-06), T4 (11-13); none after its
    # resolve deadline (T3's is the one renewed at the reopening: 11-12 10:00)
    assert (f.closed, f.overdue_at_closing) == (4, 0)
    # time to first claim, working hours: T1 0.5, T2 3 (11–12, 13–15), T3 0.5, T4 1,
    # T5 0 (Friday 20:00–20:30), T8 1.5 → sorted 0, 0.5, 0.5, 1, 1.5, 3
    # median (0.5 + 1) / 2 = 0.75; 90th percentile: rank ⌈0.9 × 6⌉ = 6 → 3
    assert f.to_claim.count == 6
    assert (f.to_claim.median_work, f.to_claim.p90_work) == (0.75 * H, 3 * H)
    # calendar hours: 0.5, 4, 0.5, 1, 0.5, 1.5 → sorted 0.5 0.5 0.5 1 1.5 4: median 0.75, p90 4
    assert (f.to_claim.median_calendar, f.to_claim.p90_calendar) == (0.75 * H, 4 * H)
    # time to resolve, working hours: T1 11-02 10:00 → 11-03 10:00 = 7 + 1 = 8;
    # T2 11-02 11:00 → 11-04 09:00 = 6 + 8 = 14; T3 (last resolution 11-06 09:00) 8;
    # T4 8; T8 8 → median 8, p90 rank ⌈4.5⌉ = 5 → 14
    assert (f.to_resolve.median_work, f.to_resolve.p90_work) == (8 * H, 14 * H)
    # calendar: 24, 46, 24, 24, 24 → median 24, p90 46
    assert (f.to_resolve.median_calendar, f.to_resolve.p90_calendar) == (24 * H, 46 * H)
    assert f.top_categories == [("garbage", 4), ("road", 2), ("water", 1)]
    assert [(code, n) for code, _, n in f.hot_spots] == [("g01", 3), ("g02", 2), ("g05", 1),
                                                         ("g09", 1)]


async def test_a_ticket_reported_in_november_counts_in_december_when_resolved(whistle, month):
    f = await unit_figures(whistle, "demo", DEC)
    assert f.received == 0
    assert (f.rates.claims_due, f.rates.claims_met) == (0, 0)  # T9's deadline fell in November
    assert f.rates.response is None
    # T5: resolved 12-01 10:00 at the grid, voted solved + basically satisfied
    assert (f.resolved, f.levels) == (1, {"grid": 1})
    assert (f.rates.votes, f.rates.solved, f.rates.basic) == (1, 1, 1)
    assert f.rates.satisfaction == pytest.approx(0.9)
    # closed 12-01 11:00 after its resolve deadline (11-21 20:00): overdue at closing
    assert (f.closed, f.overdue_at_closing) == (1, 1)
    # T5 11-20 (Fri) 20:00 → 12-01 (Tue) 10:00: working 5 × 8 (11-23…27) + 8 (11-30) + 1
    # = 49 h; calendar 10 days 14 hours = 254 h
    assert (f.to_resolve.median_work, f.to_resolve.p90_work) == (49 * H, 49 * H)
    assert f.to_resolve.median_calendar == 254 * H
    # composite without a response rate: (0.5 × 1 + 0.4 × 0.9) / (0.5 + 0.4) = 0.95556
    assert f.composite == pytest.approx((0.5 + 0.4 * 0.9) / 0.9)


# ---- other scopes ----------------------------------------------------------------------------

async def test_grid_community_and_street_scopes(whistle, month):
    g01 = await unit_figures(whistle, "g01")
    # T1 T2 T4 (T6 duplicate left out); on time T1, T4 of 3
    assert (g01.received, g01.rates.claims_due, g01.rates.claims_met) == (3, 3, 2)
    # votes T1 (satisfied) and T2 (basic): (1 + 0.9) / 2 = 0.95
    assert (g01.rates.votes, g01.rates.satisfaction) == (2, pytest.approx(0.95))
    # T4 was escalated to the community and resolved there: it stays in its grid's figures
    assert g01.levels == {"grid": 2, "community": 1}
    assert (g01.unrated, g01.escalated, g01.reopened) == (1, 1, 0)
    c1 = await unit_figures(whistle, "c1")
    # c1 = g01 + g02: T1 T2 T4 + T3 T9 = 5; on time T1 T3 T4 = 3 of 5
    assert (c1.received, c1.rates.claims_due, c1.rates.claims_met) == (5, 5, 3)
    assert (c1.rates.votes, c1.rates.satisfied, c1.rates.basic) == (3, 2, 1)
    assert (c1.overdue_now, c1.reopened) == (1, 1)  # T9, T3
    c3 = await unit_figures(whistle, "c3")
    assert (c3.received, c3.resolved, c3.levels, c3.whistled) == (1, 1, {"department": 1}, 1)
    street = await unit_figures(whistle, "s1")
    district = await unit_figures(whistle, "demo")
    assert (street.received, street.rates, street.resolved) == (
        district.received, district.rates, district.resolved)
    g12 = await unit_figures(whistle, "g12")
    assert (g12.received, g12.rates.response, g12.composite, g12.to_claim.median_work) == (
        0, None, None, None)


async def test_department_category_type_and_channel_scopes(whistle, month):
    cg = await unit_figures(whistle, "d-cg")  # the lead department of T8
    assert (cg.received, cg.resolved, cg.levels, cg.rates.claims_met) == (1, 1, {"department": 1}, 1)
    sj = await unit_figures(whistle, "d-sj")  # cooperating: whistled to it, too
    assert (sj.received, sj.whistled) == (1, 1)
    zj = await unit_figures(whistle, "d-zj")
    assert zj.received == 0
    garbage = await scope_figures(whistle, "category", "garbage")
    # T1 T2 T4 T8 (T6 duplicate out); on time T1 T4 T8 = 3 of 4
    assert (garbage.received, garbage.rates.claims_due, garbage.rates.claims_met) == (4, 4, 3)
    assert garbage.levels == {"grid": 2, "community": 1, "department": 1}
    road = await scope_figures(whistle, "category", "road")
    assert (road.received, road.rates.claims_met, road.reopened, road.overdue_now) == (2, 1, 1, 1)
    emergency = await scope_figures(whistle, "order_type", "emergency")
    assert (emergency.received, emergency.rates.claims_due, emergency.rates.claims_met) == (1, 1, 0)
    routine = await scope_figures(whistle, "order_type", "routine")
    assert routine.received == 6
    telegram = await scope_figures(whistle, "channel", "telegram")
    assert telegram.received == 7
    wecom = await scope_figures(whistle, "channel", "wecom")
    assert (wecom.received, wecom.rates.votes) == (0, 0)
    # a category within a unit: garbage in c1 = T1 T2 T4
    assert (await scope_figures(whistle, "category", "garbage", within="c1")).received == 3


# ---- departments and grid workers ------------------------------------------------------------

async def test_department_scores(whistle, month):
    async def read(session):
        return await department_scores(session, whistle.core, NOV, utc(NOW))
    scores = {d.unit.key: d for d in await whistle.db.run(read)}
    weights = whistle.config.report.department_weights  # rating 0.6, on time 0.4
    cg = scores["d-cg"]
    # one rating of 4 stars; its claim deadline (11:00 + 2 wh = 14:00) met at 11:30
    assert (cg.ratings, cg.stars, cg.deadlines, cg.on_time) == (1, 4.0, 1, 1)
    assert cg.score(weights) == pytest.approx(100 * (0.6 * 4 / 5 + 0.4 * 1))  # 88.0
    sj = scores["d-sj"]
    # never reported for duty (due 14:00; the duty ended unmet when T8 was resolved)
    assert (sj.ratings, sj.stars, sj.deadlines, sj.on_time) == (0, None, 1, 0)
    assert sj.score(weights) == 0  # only the on-time part exists: 100 × 0.4 × 0 / 0.4
    assert scores["d-zj"].score(weights) is None


async def test_grid_worker_scores_monthly_and_summed_per_quarter(whistle, month):
    async def read(period):
        async def action(session):
            grids = list(await session.scalars(select(Unit.id).where(Unit.kind == "grid")))
            workers = await worker_scores(session, whistle.core, period, grids)
            return {w.name: w for w in workers}
        return await whistle.db.run(action)
    nov = await read(NOV)
    async def whole(session):
        return {w.name: w for w in (await build(session, whistle.core, NOV, utc(NOW))).workers}
    assert {n: w.scores for n, w in (await whistle.db.run(whole)).items()} == {
        n: w.scores for n, w in nov.items()}  # the report holds the same scores
    wang = nov["王建国"]
    m = wang.months["2026-11"]
    # claims T1 (on time) and T2 (late); resolved T1 T2; votes on his tickets T1, T2
    assert (m.claims, m.claims_on_time, m.resolved, m.votes, m.solved, m.satisfied, m.basic) == (
        2, 1, 2, 2, 2, 1, 1)
    # 100 × (0.2 × 1/2 + 0.4 × 2/2 + 0.4 × (1 + 0.9)/2) = 100 × (0.1 + 0.4 + 0.38) = 88
    assert wang.scores["2026-11"] == pytest.approx(88.0)
    assert wang.total == pytest.approx(88.0)
    # 李秀英: T3 claimed on time, resolved twice (one ticket), one vote solved + satisfied
    assert nov["李秀英"].months["2026-11"].resolved == 1
    assert nov["李秀英"].scores["2026-11"] == pytest.approx(100.0)
    # 陈志强: T5 claimed late, no vote yet: 100 × 0.2 × 0 / 0.2 = 0
    assert nov["陈志强"].scores["2026-11"] == 0
    assert nov["马超"].scores["2026-11"] is None and nov["马超"].total is None
    q4 = await read(periods.parse("2026-Q4", BJ))
    chen = q4["陈志强"]
    # December: T5's vote (solved, basic) on his ticket: 100 × (0.4 × 1 + 0.4 × 0.9) / 0.8 = 95
    assert chen.scores == {"2026-10": None, "2026-11": 0, "2026-12": pytest.approx(95.0)}
    assert chen.total == pytest.approx(0 + 95.0)  # the quarterly sum
    assert q4["王建国"].total == pytest.approx(88.0)
    year = await read(periods.parse("2026", BJ))
    assert len(year["王建国"].scores) == 12 and year["王建国"].total == pytest.approx(88.0)
    half = await read(periods.parse("2026-H2", BJ))
    assert list(half["陈志强"].scores) == [f"2026-{m:02d}" for m in range(7, 13)]


# ---- the digest uses the same definitions ----------------------------------------------------

async def test_the_digest_shows_the_reports_rates(whistle, month, clock):
    clock.now = utc(local(2026, 11, 30, 12, 0))

    async def both(session):
        district = await session.scalar(select(Unit).where(Unit.code == "demo"))
        text = "\n".join(await digest_text(session, whistle.core, district, clock.now))
        f = await figures(session, whistle.core, Scope("district", "demo", "", unit_id=district.id),
                          NOV, clock.now)
        return text, f
    text, f = await whistle.db.run(both)
    # at 11-30 12:00 T9's deadline (11:00) has fallen too: 4 of 7, as in the report
    assert (f.rates.claims_due, f.rates.claims_met) == (7, 4)
    line = group_text(whistle, "This month: response rate {response}, resolution rate "
                      "{resolution}, satisfaction rate {satisfaction} ({votes} votes).",
                      response=percent(4 / 7), resolution=percent(1.0),
                      satisfaction=percent(2.9 / 3), votes=3)
    assert line in text.splitlines()


async def test_duplicates_are_left_out_of_the_rates(whistle, month):
    async def rates(session):
        t6 = await session.get(Ticket, month.ids["T6"])
        return t6.state, await three_rates(session, Ticket.id == t6.id, NOV.start, utc(NOW))
    state, r = await whistle.db.run(rates)
    assert state == "closed_duplicate"
    assert (r.claims_due, r.votes, r.response) == (0, 0, None)


# ---- pure rules ------------------------------------------------------------------------------

def test_percentile_is_the_nearest_rank():
    assert percentile([], 0.9) is None
    assert percentile([5], 0.9) == 5
    assert percentile(list(range(1, 11)), 0.9) == 9  # ⌈9⌉ = 9th
    assert percentile(list(range(1, 12)), 0.9) == 10  # ⌈9.9⌉ = 10th
    assert percentile([3, 1, 2], 0.5) == 2


def test_weighted_leaves_out_missing_parts():
    assert weighted({"a": None, "b": None}, {"a": 1, "b": 1}) is None
    assert weighted({"a": 0.5, "b": None}, {"a": 0.2, "b": 0.8}) == pytest.approx(50)
    assert weighted({"a": 0.5, "b": 1.0}, {"a": 0.25, "b": 0.75}) == pytest.approx(87.5)
    assert weighted({"a": 1.0}, {"a": 0}) is None  # a zero weight counts for nothing


def test_composite_with_configured_weights():
    from models.figures.rates import Rates
    r = Rates(claims_due=4, claims_met=3, votes=2, solved=1, satisfied=1, basic=1,
              basic_weight=0.5)
    # response 0.75, resolution 0.5, satisfaction (1 + 0.5) / 2 = 0.75
    assert (r.response, r.resolution, r.satisfaction) == (0.75, 0.5, 0.75)
    assert composite(r, {"response": 1, "resolution": 1, "satisfaction": 2}) == pytest.approx(
        (0.75 + 0.5 + 2 * 0.75) / 4)
    assert composite(Rates(0, 0, 0, 0, 0, 0), {"response": 1}) is None


@pytest.mark.parametrize("label,start,end,kind", [
    ("2026-11", (2026, 11, 1), (2026, 12, 1), "month"),
    ("2026-12", (2026, 12, 1), (2027, 1, 1), "month"),
    ("2026-q4", (2026, 10, 1), (2027, 1, 1), "quarter"),
    ("2026-Q1", (2026, 1, 1), (2026, 4, 1), "quarter"),
    ("2026-H1", (2026, 1, 1), (2026, 7, 1), "half"),
    ("2026-H2", (2026, 7, 1), (2027, 1, 1), "half"),
    ("2026", (2026, 1, 1), (2027, 1, 1), "year"),
    ("2026-11-01..2026-11-15", (2026, 11, 1), (2026, 11, 16), "range"),
])
def test_periods(label, start, end, kind):
    p = periods.parse(label, BJ)
    assert (p.kind, p.start, p.end) == (kind, local(*start), local(*end))


@pytest.mark.parametrize("bad", ["", "2026-13", "2026-Q5", "2026-H3", "26", "November",
                                 "2026-11-15..2026-11-01", "2026-02-30..2026-03-01"])
def test_bad_periods_are_refused(bad):
    with pytest.raises(ValueError):
        periods.parse(bad, BJ)


def test_previous_month_in_local_time():
    # 2026-12-01 00:30 in Beijing is still November 30 in UTC: the previous month is November
    moment = local(2026, 12, 1, 0, 30).astimezone(timezone.utc)
    assert periods.previous_month(moment, BJ).label == "2026-11"
    assert periods.previous_month(local(2026, 1, 15), BJ).label == "2025-12"
    assert [m.label for m in periods.parse("2026-Q4", BJ).months()] == [
        "2026-10", "2026-11", "2026-12"]
