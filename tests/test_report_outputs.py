"""The report's outputs — PNG charts, the Excel workbook (its formulas recomputed here and
compared with the report's numbers), the chat summary — and how they reach people:
/stats and /report through the real bot and the fake Bot API, the monthly job (once,
and caught up after downtime) and the command line."""
from __future__ import annotations

import asyncio
import io
import logging
import re
import sys
import warnings
from datetime import timezone
from pathlib import Path

import pytest
from matplotlib import font_manager
from openpyxl import load_workbook
from openpyxl.utils import get_column_letter
from PIL import Image
from sqlalchemy import select

from models.org import tree as org
from models.deadlines import periods
from models.org.names import category_name
from models.figures.rates import percent
from models.store.tables import JobRun
from reports import bundle, charts
from reports.workbook import col
from scheduler.jobs import monthly_missed, run_monthly_report
from scheduler.runner import Scheduler

from deadline_helpers import (
    C1_CHAT, CENTRE_CHAT, CHIEF_G01, COMMANDER, G01_CHAT, G05_CHAT, body, group_text, local, unit_name,
    utc, wait_sent,
)
from report_fixture import NOW, build as build_fixture

ROOT = Path(__file__).resolve().parent.parent
NOV = "2026-11"


@pytest.fixture
async def month(whistle, clock):
    return await build_fixture(whistle, clock)


async def november(whistle, locale=None):
    period = periods.parse(NOV, whistle.config.tz)

    async def action(session):
        return await bundle.build_and_render(session, whistle.core, period, utc(NOW),
                                             locale=locale)
    return await whistle.db.run(action)


def evaluate(sheet, ref: str, seen=()):
    """A cell's value, computing the formulas this workbook uses: + − × ÷, brackets,
    numbers, cell references and SUM(a,b,…)."""
    value = sheet[ref].value
    if not (isinstance(value, str) and value.startswith("=")):
        return value
    assert ref not in seen, f"circular formula at {ref}"
    expression = re.sub(r"\b([A-Z]{1,3}\d+)\b",
                        lambda m: repr(evaluate(sheet, m[1], (*seen, ref))), value[1:])
    assert re.fullmatch(r"[0-9.+\-*/(), ]*|SUM\([0-9.+\-*/(), ]*\)", expression), expression
    return eval(expression, {"__builtins__": {}}, {"SUM": lambda *a: sum(a)})  # noqa: S307


def open_book(data: bytes):
    return load_workbook(io.BytesIO(data))


# ---- the workbook ----------------------------------------------------------------------------

async def test_workbook_sheets_formulas_and_their_results(whistle, month):
    report, rendered = await november(whistle, "en")
    book = open_book(rendered.workbook)
    assert book.sheetnames == ["District", "Streets", "Communities", "Grids", "Departments",
                               "Categories", "Order types", "Channels", "Department scores",
                               "Grid workers", "Definitions"]
    district = book["District"]
    assert [c.value for c in district[1]][:6] == [
        "code", "name", "received", "claim deadlines due", "claimed on time", "response rate"]
    # readable formulas (columns as documented in docs/reports.md)
    assert (col("=response"), col("=resolution"), col("=satisfaction"), col("=composite")) == (
        "F", "K", "L", "M")
    assert district["F2"].value == "=E2/D2"
    assert district["K2"].value == "=H2/G2"
    assert district["L2"].value == "=(I2+0.9*J2)/G2"
    assert district["M2"].value == "=(0.1*F2+0.5*K2+0.4*L2)/(0.1+0.5+0.4)"
    assert district[f"{col('=share:grid')}2"].value == f"={col('level:grid')}2/{col('resolved')}2"
    top = report.top
    assert district["A2"].value == "demo" and district["C2"].value == 7
    assert evaluate(district, "F2") == pytest.approx(4 / 7)
    assert evaluate(district, "K2") == pytest.approx(top.rates.resolution)
    assert evaluate(district, "L2") == pytest.approx(top.rates.satisfaction)
    assert evaluate(district, "M2") == pytest.approx(top.composite)
    assert evaluate(district, f"{col('=share:community')}2") == pytest.approx(1 / 5)
    assert district[f"{col('to_claim.median_work')}2"].value == 0.75  # hours
    assert district[f"{col('to_resolve.p90_calendar')}2"].value == 46

    # every scope row of every level sheet recomputes to the report's figures
    sheets = {"street": "Streets", "community": "Communities", "grid": "Grids",
              "department": "Departments", "category": "Categories",
              "order_type": "Order types", "channel": "Channels"}
    for level, name in sheets.items():
        sheet = book[name]
        rows = report.levels[level]
        assert [sheet[f"A{i}"].value for i in range(2, len(rows) + 2)] == [r.scope.key for r in rows]
        for i, f in enumerate(rows, start=2):
            assert sheet[f"{col('received')}{i}"].value == f.received
            for key, value in (("=response", f.rates.response),
                               ("=resolution", f.rates.resolution),
                               ("=satisfaction", f.rates.satisfaction),
                               ("=composite", f.composite)):
                got = evaluate(sheet, f"{col(key)}{i}")
                assert got == (None if value is None else pytest.approx(value)), (name, i, key)
    grids = book["Grids"]
    g12 = [r for r in range(2, 14) if grids[f"A{r}"].value == "g12"][0]
    assert grids[f"F{g12}"].value is None  # no claim deadline: an empty cell, not #DIV/0!

    scores = book["Department scores"]
    cg = [r for r in range(2, 6) if scores[f"A{r}"].value == "d-cg"][0]
    assert scores[f"G{cg}"].value == f"=F{cg}/E{cg}"
    assert scores[f"H{cg}"].value == f"=100*(0.6*D{cg}/5+0.4*G{cg})/(0.6+0.4)"
    assert evaluate(scores, f"H{cg}") == pytest.approx(88.0)

    workers = book["Grid workers"]
    assert [c.value for c in workers[1]][:4] == ["name", "grid", "2026-11 claims", "2026-11 on time"]
    wang = [r for r in range(2, workers.max_row + 1) if workers[f"A{r}"].value == "王建国"][0]
    assert evaluate(workers, f"J{wang}") == pytest.approx(88.0)  # the month's score
    assert workers[f"K{wang}"].value == f"=SUM(J{wang})"
    assert evaluate(workers, f"K{wang}") == pytest.approx(88.0)

    definitions = book["Definitions"]
    texts = {definitions[f"A{r}"].value: definitions[f"B{r}"].value
             for r in range(2, definitions.max_row + 1)}
    assert "0.9 × basically satisfied" in texts["satisfaction rate"]
    assert "response 0.1, resolution 0.5, satisfaction 0.4" in texts["composite"]


async def test_quarterly_workbook_sums_the_monthly_worker_scores(whistle, month):
    period = periods.parse("2026-Q4", whistle.config.tz)

    async def action(session):
        return await bundle.build_and_render(session, whistle.core, period, utc(NOW), locale="en")
    report, rendered = await whistle.db.run(action)
    sheet = open_book(rendered.workbook)["Grid workers"]
    header = [c.value for c in sheet[1]]
    assert header[-1] == "total" and "2026-12 score" in header
    chen = [r for r in range(2, sheet.max_row + 1) if sheet[f"A{r}"].value == "陈志强"][0]
    total = f"{get_column_letter(len(header))}{chen}"
    assert evaluate(sheet, total) == pytest.approx(95.0)  # 0 (November) + 95 (December)
    assert next(w for w in report.workers if w.name == "陈志强").total == pytest.approx(95.0)


# ---- charts and the summary ------------------------------------------------------------------

async def test_charts_are_pngs_of_the_documented_size(whistle, month):
    report, rendered = await november(whistle)
    assert [name for name, _ in rendered.charts] == ["rates-2026-11.png", "levels-2026-11.png"]
    for _, png in rendered.charts:
        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG"
        assert image.size == (charts.SIZE[0] * charts.DPI, charts.SIZE[1] * charts.DPI)
    # the rates chart compares the district's communities
    assert [f.scope.key for f in charts.breakdown(report)] == ["c1", "c2", "c3"]


async def test_summary_text_in_both_languages(whistle, month):
    _, en = await november(whistle, "en")
    lines = en.text.splitlines()
    district = await whistle.db.run(lambda s: org.unit_by_code(s, "demo"))
    assert lines[0] == f"📑 monthly report — {org.display_name(district, 'en')} — 2026-11"
    assert ("Received 7; claimed on time 4 of 7 due — response rate "
            f"{percent(4 / 7)}") in lines
    assert (f"Resolved 5; resolution rate 100.0%, satisfaction rate {percent(2.9 / 3)} "
            f"(3 votes); composite {percent(0.1 * 4 / 7 + 0.5 + 0.4 * 2.9 / 3)}") in lines
    assert "Resolved at: grid 60.0%, community 20.0%, department 20.0%" in lines
    assert "Unrated 1, reopened 1, escalated 2, whistled to departments 1" in lines
    t = whistle.i18n.get("en")
    names = [category_name(whistle.core, c, t) for c in ("garbage", "road", "water")]
    assert f"Top categories: {names[0]} 4, {names[1]} 2, {names[2]} 1" in lines
    assert ("Time to claim: median 0.8 working h (0.8 h), 90% within 3.0 working h (4.0 h)"
            in lines)
    _, zh = await november(whistle, "zh_Hans")
    assert zh.text.splitlines()[1] == whistle.i18n.get("zh_Hans")._(
        "Received {received}; claimed on time {met} of {due} due — response rate {rate}",
        received=7, met=4, due=7, rate=percent(4 / 7))


# ---- /stats and /report through the bot ------------------------------------------------------

def texts(api, chat):
    return [body(m) for m in api.bot_messages(chat)]


async def test_stats_in_a_units_chat_shows_its_month_so_far(whistle, api, people, month):
    people(1005, "陈志强")  # g05's chief; now is 12-02 12:00: December so far
    people(COMMANDER, "指挥长")
    await wait_sent(whistle, api)
    before = len(api.bot_messages(G05_CHAT))
    api.user_sends_text(1005, G05_CHAT, "/stats")
    message = await api.wait_message(G05_CHAT, predicate=lambda m: body(m).startswith("📊"))
    lines = body(message).splitlines()
    assert lines[0] == group_text(whistle, "📊 {unit} — {period} so far",
                                  unit=await unit_name(whistle, "g05"), period="2026-12")
    # g05 in December: T5 (reported in November) resolved 12-01, voted solved + basic
    assert group_text(whistle, "Received {received}; claimed on time {met} of {due} due — "
                      "response rate {rate}", received=0, met=0, due=0,
                      rate=percent(None)) in lines
    assert group_text(whistle, "Resolved {resolved}; resolution rate {resolution}, "
                      "satisfaction rate {satisfaction} ({votes} votes); composite {composite}",
                      resolved=1, resolution=percent(1.0), satisfaction=percent(0.9), votes=1,
                      composite=percent((0.5 + 0.4 * 0.9) / 0.9)) in lines
    assert group_text(whistle, "Overdue now {now}; closed {closed}, of which overdue at "
                      "closing {late}", now=0, closed=1, late=1) in lines
    await wait_sent(whistle, api)
    assert len(api.bot_messages(G05_CHAT)) == before + 1
    # the district's chat (the command centre) sees the whole district
    api.user_sends_text(COMMANDER, CENTRE_CHAT, "/stats")
    message = await api.wait_message(CENTRE_CHAT, predicate=lambda m: body(m).startswith("📊"))
    assert group_text(whistle, "Overdue now {now}; closed {closed}, of which overdue at "
                      "closing {late}", now=1, closed=1, late=1) in body(message).splitlines()


async def test_report_in_the_command_centre_sends_text_charts_and_workbook(
        whistle, api, people, month):
    people(COMMANDER, "指挥长")
    await wait_sent(whistle, api)
    api.user_sends_text(COMMANDER, CENTRE_CHAT, "/report 2026-11")
    await api.wait_for(lambda: any(m.get("document") for m in api.bot_messages(CENTRE_CHAT)),
                       timeout=30, description="the workbook")
    messages = api.bot_messages(CENTRE_CHAT)
    summary = next(i for i, m in enumerate(messages) if body(m).startswith("📑"))
    photos = [m for m in messages[summary:] if m.get("photo")]
    document = next(m for m in messages[summary:] if m.get("document"))
    assert len(photos) == 2 and photos[0].get("media_group_id")
    assert document["document"]["file_name"] == "whistle-report-demo-2026-11.xlsx"
    assert messages.index(document) > messages.index(photos[-1]) > summary
    data = api.file_bytes(document["document"]["file_id"])
    assert open_book(data).worksheets[0]["C2"].value == 7  # the district sheet comes first
    image = Image.open(io.BytesIO(api.file_bytes(photos[0]["photo"][-1]["file_id"])))
    assert image.size == (1000, 600)
    assert group_text(whistle, "Received {received}; claimed on time {met} of {due} due — "
                      "response rate {rate}", received=7, met=4, due=7,
                      rate=percent(4 / 7)) in body(messages[summary]).splitlines()


async def test_report_refusals(whistle, api, people, month, clock):
    people(COMMANDER, "指挥长")
    people(CHIEF_G01, "王建国")
    await wait_sent(whistle, api)

    async def ask(user, chat, text):
        before = len(api.bot_messages(chat))
        api.user_sends_text(user, chat, text)
        await api.wait_for(lambda: len(api.bot_messages(chat)) > before)
        return body(api.bot_messages(chat)[-1])
    assert await ask(CHIEF_G01, G01_CHAT, "/report 2026-11") == group_text(
        whistle, "/report works in the command centre's chat; use /stats here for this unit's "
        "figures.")
    for bad in ("2026-13", "november", "2026-11-30..2026-11-01"):
        assert await ask(COMMANDER, CENTRE_CHAT, f"/report {bad}") == group_text(
            whistle, "I don't know the period “{period}”. Use /report 2026-11 (a month), "
            "2026-Q4, 2026-H2, 2026 or 2026-11-01..2026-11-15.", period=bad)
    assert await ask(COMMANDER, CENTRE_CHAT, "/report 2027-01") == group_text(
        whistle, "{period} has not begun yet.", period="2027-01")
    api.add_group(-100999, "not bound")
    assert await ask(CHIEF_G01, -100999, "/stats") == group_text(
        whistle, "This chat is not bound to a unit yet; an administrator binds it with /bind.")
    await wait_sent(whistle, api)
    assert not any(m.get("document") for m in api.bot_messages(CENTRE_CHAT))


async def test_report_without_a_period_is_last_months(whistle, api, people, month, clock):
    people(COMMANDER, "指挥长")
    await wait_sent(whistle, api)
    api.user_sends_text(COMMANDER, CENTRE_CHAT, "/report")  # now is 12-02: November
    await api.wait_for(lambda: any(m.get("document") for m in api.bot_messages(CENTRE_CHAT)),
                       timeout=30)
    document = next(m for m in api.bot_messages(CENTRE_CHAT) if m.get("document"))
    assert document["document"]["file_name"].endswith("-2026-11.xlsx")


# ---- the monthly job -------------------------------------------------------------------------

def documents(api, chat):
    return [m for m in api.bot_messages(chat) if m.get("document")]


async def test_monthly_report_is_posted_once_per_month(whistle, api, month, clock):
    clock.now = utc(NOW)  # 12-02 12:00 (the fixture's last events are on the 1st)
    results = await asyncio.gather(run_monthly_report(whistle.db, whistle.core, clock.now),
                                   run_monthly_report(whistle.db, whistle.core, clock.now))
    assert sorted(results, key=str) == ["2026-11", None]
    assert await run_monthly_report(whistle.db, whistle.core, utc(local(2026, 12, 5))) is None
    await api.wait_for(lambda: documents(api, CENTRE_CHAT), timeout=30)
    await wait_sent(whistle, api, timeout=30)
    assert len(documents(api, CENTRE_CHAT)) == 1
    assert [body(m) for m in api.bot_messages(CENTRE_CHAT)].count(
        next(body(m) for m in api.bot_messages(CENTRE_CHAT) if body(m).startswith("📑"))) == 1
    assert not documents(api, C1_CHAT)  # only the command centre
    runs = await whistle.db.run(lambda s: s.scalars(select(JobRun.period).where(
        JobRun.job == "monthly_report")))
    assert list(runs) == ["2026-11"]


async def test_a_monthly_report_missed_while_down_is_sent_at_start_once(whistle, api, month,
                                                                      clock):
    clock.now = local(2026, 12, 3, 15, 0).astimezone(timezone.utc)  # down on the 1st at 09:00
    assert monthly_missed(whistle.core, clock.now)
    scheduler = Scheduler(whistle.db, whistle.core)
    scheduler.start()
    try:
        await api.wait_for(lambda: documents(api, CENTRE_CHAT), timeout=30)
    finally:
        scheduler.stop()
    again = Scheduler(whistle.db, whistle.core)
    await again.monthly_report()  # what the catch-up runs on the next start
    await wait_sent(whistle, api, timeout=30)
    assert len(documents(api, CENTRE_CHAT)) == 1
    assert documents(api, CENTRE_CHAT)[0]["document"]["file_name"].endswith("2026-11.xlsx")
    # before the day and time of the month's report nothing is missed yet
    assert not monthly_missed(whistle.core, utc(local(2027, 1, 1, 8, 59)))
    assert monthly_missed(whistle.core, utc(local(2027, 1, 1, 9, 0)))


async def test_stopping_during_the_monthly_catch_up_is_not_an_error(whistle, api, month, clock,
                                                                    monkeypatch, caplog):
    """A stop while the catch-up renders the report cancels it quietly: no error in the log,
    nothing claimed, so the next start sends the report."""
    from reports import bundle
    clock.now = local(2026, 12, 3, 15, 0).astimezone(timezone.utc)
    rendering = asyncio.Event()

    async def render_for_ever(core, report, locale=None):
        rendering.set()
        await asyncio.Event().wait()  # a large month: still rendering when the stop comes
    monkeypatch.setattr(bundle, "render", render_for_ever)
    scheduler = Scheduler(whistle.db, whistle.core)
    with caplog.at_level("INFO"):
        scheduler.start()
        await asyncio.wait_for(rendering.wait(), timeout=30)
        scheduler.stop()
        await scheduler.drain(timeout=0.1)
        await asyncio.sleep(0)  # the executor's done-callback runs
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    assert any("monthly_report stopped" in r.getMessage() for r in caplog.records)
    runs = await whistle.db.run(lambda s: s.scalars(select(JobRun.period).where(
        JobRun.job == "monthly_report")))
    assert list(runs) == []  # not claimed: the next start catches up again


# ---- the command line ------------------------------------------------------------------------

async def test_cli_writes_the_workbook_charts_and_summary(whistle, month, tmp_path, database_url):
    config = tmp_path / "config.toml"
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    text = re.sub(r'(?m)^org_file = .*$', f'org_file = "{ROOT / "samples/district/district.toml"}"',
                  text)
    text = re.sub(r'(?m)^url = "sqlite.*$', f'url = "{database_url}"', text)
    config.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--config", str(config), "report", "--month",
        "2026-11-01..2026-11-15", "--scope", "c1", "--out", str(out), "--lang", "en", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    written = sorted(Path(line) for line in stdout.decode().split())
    label = "2026-11-01..2026-11-15"  # the command line runs on the real clock: days past
    assert [p.name for p in written] == sorted([
        f"whistle-report-c1-{label}.xlsx", f"whistle-report-c1-{label}.txt",
        f"rates-{label}.png", f"levels-{label}.png"])
    assert all(p.parent == out and p.stat().st_size > 0 for p in written)
    book = load_workbook(out / f"whistle-report-c1-{label}.xlsx")
    assert book.sheetnames[:2] == ["Communities", "Grids"]
    assert book["Communities"]["C2"].value == 4  # c1 in 11-01…15: T1 T2 T3 T4
    assert "Department scores" not in book.sheetnames
    summary = (out / f"whistle-report-c1-{label}.txt").read_text(encoding="utf-8")
    assert "Received 4; claimed on time 3 of 4 due" in summary  # T2 was late

    bad = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--config", str(config), "report", "--month", "2026-13",
        "--out", str(out), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    _, stderr = await bad.communicate()
    assert bad.returncode == 2 and "not a valid period" in stderr.decode()
    unknown = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--config", str(config), "report", "--scope", "nowhere",
        "--out", str(out), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    _, stderr = await unknown.communicate()
    assert unknown.returncode == 2 and "unknown scope" in stderr.decode()


async def test_chinese_labels_are_drawn_with_the_cjk_font(whistle, month, monkeypatch):
    """Every glyph of the zh-Hans charts is in a font: matplotlib warns of a missing one
    (drawn as an empty box), which fails this test — here with matplotlib's font list
    as its cache has it when it was built before fonts-noto-cjk was installed."""
    report, _ = await november(whistle, "zh_Hans")
    t = whistle.i18n.get("zh_Hans")
    monkeypatch.setattr(font_manager.fontManager, "ttflist", [
        f for f in font_manager.fontManager.ttflist if "CJK" not in f.name])
    charts._find_cjk_font.cache_clear()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Glyph .* missing from font")
        rendered = charts.render(report, lambda code: category_name(whistle.core, code, t), t)
    assert [name for name, _ in rendered] == ["rates-2026-11.png", "levels-2026-11.png"]
    assert any(f.name == "Noto Sans CJK SC" for f in font_manager.fontManager.ttflist)
