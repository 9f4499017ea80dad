"""The daily digest: once per local day (claimed through job_run, also against a
concurrent run), each bound chat for its own scope — a street sums its communities,
the district covers everything — and split into parts of at most 4,096 characters."""
from __future__ import annotations

import asyncio
from datetime import timezone

import pytest
from sqlalchemy import select

from models.tickets import actions as tickets
from models.deadlines.board import LIMIT, paginate
from models.figures.digest import digest_text
from models.figures.rates import percent
from models.store.tables import JobRun, Person, Unit
from scheduler.jobs import run_digest
from scheduler.runner import Scheduler

from deadline_helpers import (
    ALL_CHATS, C1_CHAT, C2_CHAT, C3_CHAT, CENTRE_CHAT, CHIEF_G01, D_CG_CHAT, G01_CHAT, G05,
    G05_CHAT, G09, G09_CHAT, STREET_CHAT, body, claim, count, file_report, group_text, local,
    sweep_at, unit_id, wait_sent,
)


RESIDENT = 9001


@pytest.fixture
def staff(people):
    people(RESIDENT, "Li Si", language="en")
    people(CHIEF_G01, "王建国")


def digests(api, chat: int) -> list[str]:
    return [body(m) for m in api.bot_messages(chat) if body(m).startswith("📰")]


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def last_24h(whistle, new=0, claimed=0, resolved=0, reopened=0, escalated=0) -> str:
    return group_text(whistle, "Last 24 hours: {new} new, {claimed} claimed, {resolved} resolved, "
                      "{reopened} reopened, {escalated} escalated.", new=new, claimed=claimed,
                      resolved=resolved, reopened=reopened, escalated=escalated)


def overdue_now(whistle, n: int) -> str:
    return group_text(whistle, "Overdue now: {n}", n=n)


async def digest_at(whistle, clock, moment):
    clock.now = moment
    return await run_digest(whistle.db, whistle.core, clock.now)


# ---- once per local day -------------------------------------------------------------------------

async def test_digest_runs_once_per_local_day(whistle, api, staff, clock):
    bound = len(ALL_CHATS)
    assert await digest_at(whistle, clock, local(2026, 11, 24, 8, 30)) == bound
    await api.wait_for(lambda: all(digests(api, chat) for chat in ALL_CHATS))
    # Later the same local day (another UTC date than 08:30 Beijing): nothing more.
    assert await digest_at(whistle, clock, local(2026, 11, 24, 23, 59)) is None
    await wait_sent(whistle, api)
    assert {chat: len(digests(api, chat)) for chat in ALL_CHATS} == {chat: 1 for chat in ALL_CHATS}
    # Ten past midnight in Beijing is still the 24th in UTC — but a new local day.
    assert await digest_at(whistle, clock, local(2026, 11, 25, 0, 10)) == bound
    await api.wait_for(lambda: all(len(digests(api, chat)) == 2 for chat in ALL_CHATS))
    periods = await whistle.db.run(lambda s: s.scalars(
        select(JobRun.period).where(JobRun.job == "digest").order_by(JobRun.period)))
    assert list(periods) == ["2026-11-24", "2026-11-25"]
    assert digests(api, CENTRE_CHAT)[1].splitlines()[0].endswith("2026-11-25")


async def test_two_concurrent_digests_send_once(whistle, api, staff, clock):
    clock.now = local(2026, 11, 24, 8, 30)
    results = await asyncio.gather(run_digest(whistle.db, whistle.core, clock.now),
                                   run_digest(whistle.db, whistle.core, clock.now))
    assert sorted(results, key=lambda r: r is None) == [len(ALL_CHATS), None]
    await api.wait_for(lambda: all(digests(api, chat) for chat in ALL_CHATS))
    await wait_sent(whistle, api)
    assert {chat: len(digests(api, chat)) for chat in ALL_CHATS} == {chat: 1 for chat in ALL_CHATS}
    assert await count(whistle, JobRun, JobRun.job == "digest") == 1


# ---- scopes: a street sums its communities, the district covers all ------------------------

async def test_street_digest_sums_its_communities_and_the_district_covers_all(
        whistle, api, staff, clock):
    t1 = await file_report(api, whistle, RESIDENT)  # g01, community c1
    t2 = await file_report(api, whistle, RESIDENT, point=G05, card_chat=G05_CHAT)  # c2
    t3 = await file_report(api, whistle, RESIDENT, category="water", point=G09,
                           card_chat=G09_CHAT)  # c3, an emergency
    await claim(api, CHIEF_G01, G01_CHAT, t1)
    # 10:30: t3 missed its claim (→ community c3) and its on-site deadline (overdue).
    result = await sweep_at(whistle, clock, local(2026, 11, 23, 10, 30))
    assert (result.escalated, result.breached) == (1, 2)

    assert await digest_at(whistle, clock, local(2026, 11, 23, 10, 30)) == len(ALL_CHATS)
    await api.wait_for(lambda: all(digests(api, chat) for chat in ALL_CHATS))
    text = {chat: digests(api, chat)[0] for chat in ALL_CHATS}
    for chat in ALL_CHATS:
        assert len(digests(api, chat)) == 1
    unclaimed = group_text(whistle, "unclaimed")
    t3_line = f"❗ #{t3.number} — {unclaimed} — 11-23 10:30"

    expected = {
        C1_CHAT: (last_24h(whistle, new=1, claimed=1), 0),
        C2_CHAT: (last_24h(whistle, new=1), 0),
        C3_CHAT: (last_24h(whistle, new=1, escalated=1), 1),
        STREET_CHAT: (last_24h(whistle, new=3, claimed=1, escalated=1), 1),
        CENTRE_CHAT: (last_24h(whistle, new=3, claimed=1, escalated=1), 1),
        G01_CHAT: (last_24h(whistle, new=1, claimed=1), 0),
        G05_CHAT: (last_24h(whistle, new=1), 0),
        G09_CHAT: (last_24h(whistle, new=1, escalated=1), 1),
        -100102: (last_24h(whistle), 0),
        D_CG_CHAT: (last_24h(whistle), 0),
    }
    for chat, (line, overdue) in expected.items():
        lines = text[chat].splitlines()
        assert line in lines, (chat, lines)
        assert overdue_now(whistle, overdue) in lines, (chat, lines)
        assert (t3_line in lines) == bool(overdue), (chat, lines)
        assert t1.number not in text[chat] and t2.number not in text[chat]

    # The month's response rate: t3's missed grid claim is the only claim deadline that fell.
    rates = group_text(whistle, "This month: response rate {response}, resolution rate "
                       "{resolution}, satisfaction rate {satisfaction} ({votes} votes).",
                       response=percent(0.0), resolution=percent(None),
                       satisfaction=percent(None), votes=0)
    assert rates in text[STREET_CHAT].splitlines()
    assert rates in text[C3_CHAT].splitlines()


# ---- long digests are split ----------------------------------------------------------------

async def _overdue_emergencies(whistle, clock, n: int) -> list[str]:
    """``n`` emergency reports in g09 (by the core, as the intake files them), then a sweep
    half an hour later: each missed its claim (→ c3) and its on-site deadline (overdue)."""
    g09 = await unit_id(whistle, "g09")

    async def create(session):
        reporter = Person(name="Bulk", created_at=clock.now)
        session.add(reporter)
        await session.flush()
        numbers = []
        for i in range(n):
            ticket = await tickets.create(session, whistle.core, reporter, {
                "category": "water", "description": f"Water leaking from the main, report {i}",
                "grid_id": g09, "anonymous": True}, "telegram")
            numbers.append(ticket.number)
        return numbers
    numbers = await whistle.db.run(create)
    result = await sweep_at(whistle, clock, local(2026, 11, 23, 10, 30))
    assert (result.escalated, result.breached) == (n, 2 * n)
    return numbers


async def test_a_long_digest_is_split_into_parts_of_at_most_4096_characters(whistle, api, staff,
                                                                            clock):
    numbers = await _overdue_emergencies(whistle, clock, 130)
    assert await digest_at(whistle, clock, local(2026, 11, 23, 10, 31)) == len(ALL_CHATS)
    for chat in (CENTRE_CHAT, STREET_CHAT, C3_CHAT, G09_CHAT):
        await api.wait_for(lambda chat=chat: len(digests(api, chat)) >= 1
                           and numbers[-1] in "\n".join(m["text"] for m in api.bot_messages(chat)
                                                        if m.get("text")),
                           timeout=60, description=f"the digest's last part in {chat}")
    await wait_sent(whistle, api, timeout=60)
    for chat in (CENTRE_CHAT, STREET_CHAT, C3_CHAT, G09_CHAT):
        parts = [m["text"] for m in api.bot_messages(chat) if m.get("text")]
        first = next(i for i, p in enumerate(parts) if p.startswith("📰"))
        parts = parts[first:]
        parts = parts[:next((i for i, p in enumerate(parts) if i and not p.startswith("❗")),
                            len(parts))]
        assert len(parts) >= 2, (chat, [len(p) for p in parts])
        assert all(len(p) <= LIMIT and utf16(p) <= LIMIT for p in parts), [len(p) for p in parts]
        assert overdue_now(whistle, 130) in parts[0].splitlines()
        listed = [line for p in parts for line in p.splitlines() if line.startswith("❗ #")]
        assert sorted(line.split()[1][1:] for line in listed) == sorted(numbers)
    # The chats outside that scope are not flooded.
    assert len(digests(api, C1_CHAT)) == 1
    assert overdue_now(whistle, 0) in digests(api, C1_CHAT)[0].splitlines()


async def test_digest_text_pages_cover_every_overdue_ticket(whistle, api, staff, clock):
    numbers = await _overdue_emergencies(whistle, clock, 120)

    async def pages(session):
        unit = await session.scalar(select(Unit).where(Unit.code == "demo"))
        return await digest_text(session, whistle.core, unit, clock.now)
    parts = await whistle.db.run(pages)
    assert len(parts) >= 2 and all(len(p) <= LIMIT for p in parts)
    listed = [line for p in parts for line in p.splitlines() if line.startswith("❗ #")]
    assert sorted(line.split()[1][1:] for line in listed) == sorted(numbers)
    assert "\n".join(parts).count("📰") == 1


# ---- paginate -------------------------------------------------------------------------------

def test_paginate_keeps_whole_lines_in_order_within_the_limit():
    header = "📰 header"
    lines = [f"❗ #20261123-{i:04d} — 王建国 — 11-23 10:30" for i in range(400)]
    pages = paginate(header, lines)
    assert len(pages) > 2
    assert all(len(p) <= LIMIT for p in pages)
    assert pages[0].startswith(header + "\n")
    assert [line for p in pages for line in p.splitlines()] == [header, *lines]
    # Exactly at the limit fits; one more character starts a new page.
    assert paginate("", ["x" * LIMIT]) == ["x" * (LIMIT - 1)]
    assert paginate("h", ["x" * (LIMIT - 2)]) == ["h\n" + "x" * (LIMIT - 2)]
    assert paginate("h", ["x" * (LIMIT - 1)]) == ["h", "x" * (LIMIT - 1)]
    assert paginate("h", []) == ["h"]


def test_paginate_respects_telegrams_limit_with_emoji_in_names():
    """Telegram counts a message's length in UTF-16 code units (the fake Bot API rejects
    more than 4,096 the same way); an assignee or unit name with an emoji takes two."""
    lines = [f"❗ #20261123-{i:04d} — 小王🌟 — 11-23 10:30" for i in range(300)]
    pages = paginate("📋 board", lines)
    assert [utf16(p) for p in pages if utf16(p) > LIMIT] == []


async def test_a_digest_missed_while_down_is_sent_at_start_once(whistle, api, clock):
    """The service was down at 08:30: when the scheduler starts at 09:00 it sends the day's
    digest at once; started again the same day, it sends nothing more (claimed per day).
    (The monthly report's day is moved after the 24th, so its own catch-up stays out of
    this test: tests/test_report_outputs.py covers it.)"""
    whistle.config.report.monthly_day = 28
    clock.now = local(2026, 11, 24, 9, 0).astimezone(timezone.utc)
    scheduler = Scheduler(whistle.db, whistle.core)
    scheduler.start()
    try:
        await api.wait_for(lambda: len(digests(api, CENTRE_CHAT)) == 1)
        runs = await whistle.db.run(lambda s: s.scalars(select(JobRun.period).where(
            JobRun.job == "digest")))
        assert list(runs) == ["2026-11-24"]
    finally:
        scheduler.stop()
    # started again the same day: it would catch up again, and the claim stops it
    again = Scheduler(whistle.db, whistle.core)
    assert again._digest_missed() is True
    await again.digest()  # what the catch-up job runs
    await api.wait_idle()
    assert len(digests(api, CENTRE_CHAT)) == 1

    early = Scheduler(whistle.db, whistle.core)
    clock.now = local(2026, 11, 25, 8, 0).astimezone(timezone.utc)
    assert early._digest_missed() is False  # before 08:30 nothing is missed yet
