"""The daily digest: once per local day (claimed through job_run, also against a
concurrent run), each bound chat for its own scope — a street sums its communities,
the district covers everything — and split into parts of at most 4,096 characters."""
from __future__ import annotations

import asyncio
from datetime import timedelta, timezone

import pytest
from sqlalchemy import select

from models.tickets import actions as tickets
from models.deadlines.board import LIMIT, paginate
from models.figures.digest import OLDEST, digest_text
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


async def _bulk_overdue(whistle, clock, n: int) -> list[str]:
    """``n`` overdue emergencies in g09, quickly: one filed by the core and swept (so its rows
    are what the core writes), then ``n - 1`` copies of its ticket and breached timers
    written straight to the database, each due a minute later than the one before.
    Returns the numbers, oldest first."""
    from sqlalchemy import insert
    from models.store.tables import Ticket, Timer
    [first] = await _overdue_emergencies(whistle, clock, 1)

    async def copy(session):
        ticket = await session.scalar(select(Ticket).where(Ticket.number == first))
        timers = list(await session.scalars(select(Timer).where(Timer.ticket_id == ticket.id,
                                                                Timer.stage == "breached")))
        oldest = min(t.due_at for t in timers)
        columns = [c.key for c in Ticket.__table__.columns if c.key != "id"]
        base = {c: getattr(ticket, c) for c in columns}
        numbers = [f"{first[:-5]}9{i:04d}" for i in range(1, n)]
        await session.execute(insert(Ticket), [{**base, "number": number} for number in numbers])
        ids = dict((await session.execute(select(Ticket.number, Ticket.id).where(
            Ticket.number.in_(numbers)))).all())
        tcols = [c.key for c in Timer.__table__.columns if c.key not in ("id", "ticket_id")]
        rows = []
        for i, number in enumerate(numbers, start=1):
            for timer in timers:
                shift = timedelta(minutes=i)
                rows.append({**{c: getattr(timer, c) for c in tcols}, "ticket_id": ids[number],
                             "due_at": timer.due_at + shift, "warn_at": timer.warn_at + shift})
        await session.execute(insert(Timer), rows)
        assert oldest == min(t.due_at for t in timers)
        return [first, *numbers]
    return await whistle.db.run(copy)


def oldest_line(whistle, number: str, due) -> str:
    return f"❗ #{number} — {group_text(whistle, 'unclaimed')} — {due}"


async def test_a_digest_with_thousands_overdue_is_one_message_per_chat(whistle, api, staff, clock):
    """The district's chat once got 48 messages listing every overdue ticket: now each chat
    gets one message with the count, the oldest few and a link to the dashboard's overdue
    list (its scope as a filter)."""
    whistle.config.web.public_url = "https://whistle.example.gov.cn/"
    numbers = await _bulk_overdue(whistle, clock, 3000)
    assert await digest_at(whistle, clock, local(2026, 11, 23, 10, 31)) == len(ALL_CHATS)
    await api.wait_for(lambda: all(digests(api, chat) for chat in ALL_CHATS), timeout=60)
    await wait_sent(whistle, api, timeout=60)
    more = group_text(whistle, "… and {more} more: {link}", more=3000 - OLDEST,
                      link="https://whistle.example.gov.cn/dashboard/tickets?overdue=1&unit={unit}")
    for chat, unit in ((CENTRE_CHAT, "demo"), (STREET_CHAT, "s1"), (C3_CHAT, "c3"),
                       (G09_CHAT, "g09")):
        texts = [m["text"] for m in api.bot_messages(chat) if m.get("text")]
        parts = texts[next(i for i, p in enumerate(texts) if p.startswith("📰")):]
        assert len(parts) == 1, (chat, [p[:40] for p in parts])
        lines = parts[0].splitlines()
        assert utf16(parts[0]) <= LIMIT
        assert overdue_now(whistle, 3000) in lines
        listed = [line for line in lines if line.startswith("❗ #")]
        assert listed == [oldest_line(whistle, numbers[0], "11-23 10:30")] + [
            oldest_line(whistle, numbers[i], f"11-23 10:{30 + i}") for i in range(1, OLDEST)]
        assert lines[-1] == more.format(unit=unit), (chat, lines[-1])
    # A chat with nothing overdue gets no list and no link.
    [c1] = digests(api, C1_CHAT)
    assert overdue_now(whistle, 0) in c1.splitlines()
    assert "❗" not in c1 and "dashboard" not in c1


async def test_without_a_public_url_the_digest_says_where_to_look(whistle, api, staff, clock):
    assert whistle.config.web.public_url == ""
    numbers = await _bulk_overdue(whistle, clock, 40)

    async def text(session):
        unit = await session.scalar(select(Unit).where(Unit.code == "demo"))
        return await digest_text(session, whistle.core, unit, clock.now)
    parts = await whistle.db.run(text)
    assert len(parts) == 1
    lines = parts[0].splitlines()
    assert overdue_now(whistle, 40) in lines
    assert [line.split()[1][1:] for line in lines if line.startswith("❗ #")] == numbers[:OLDEST]
    assert lines[-1] == group_text(
        whistle, "… and {more} more: on the dashboard, Tickets, “overdue only”.", more=40 - OLDEST)
    assert "http" not in parts[0]


async def test_a_few_overdue_are_all_listed_without_a_link(whistle, api, staff, clock):
    whistle.config.web.public_url = "https://whistle.example.gov.cn"
    numbers = await _overdue_emergencies(whistle, clock, 3)

    async def text(session):
        unit = await session.scalar(select(Unit).where(Unit.code == "demo"))
        return await digest_text(session, whistle.core, unit, clock.now)
    [page] = await whistle.db.run(text)
    lines = page.splitlines()
    assert overdue_now(whistle, 3) in lines
    assert sorted(line.split()[1][1:] for line in lines if line.startswith("❗ #")) == sorted(numbers)
    assert lines[-1].startswith("❗ #") and "http" not in page


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


async def test_the_digests_are_built_in_short_transactions_and_queued_in_the_claiming_one(
        whistle, api, staff, clock):
    """On SQLite transactions take turns: one transaction building all 21 digests held up
    every chat meanwhile (issue #24). Each unit's digest is built in its own transaction,
    then all are queued in the one that claims the day (so a crash queues all or none)."""
    from sqlalchemy import event
    from models.store.tables import Outbox
    seen: list[int] = []  # the outbox rows each committed transaction had queued

    def on_commit(connection):
        seen.append(connection.exec_driver_sql("SELECT count(*) FROM outbox").scalar())
    event.listen(whistle.db.engine.sync_engine, "commit", on_commit)
    try:
        before = await count(whistle, Outbox)
        assert await digest_at(whistle, clock, local(2026, 11, 24, 8, 30)) == len(ALL_CHATS)
    finally:
        event.remove(whistle.db.engine.sync_engine, "commit", on_commit)
    units = len(set(ALL_CHATS))  # one chat per unit in the sample district
    # nothing was queued until the claiming transaction, which queued them all at once …
    queued = [n - before for n in seen]
    claiming = next(i for i, n in enumerate(queued) if n)
    assert queued[claiming] == len(ALL_CHATS), queued
    # … after a transaction per unit's digest
    assert claiming >= units, queued
    await api.wait_for(lambda: all(digests(api, chat) for chat in ALL_CHATS))
