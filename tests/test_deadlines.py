"""Deadlines ("两类三单限时办结") end to end: timers of every order type on the working
calendar, warnings to the assignee (batched), the overdue board edited in place,
escalation by timer at each level, the pause while waiting on the resident, changing
the order type, quiet hours, and concurrent sweeps.

The APScheduler is off in tests: each test moves the controlled clock and calls
``run_sweep`` itself, then waits for what the sender delivers after commit."""
from __future__ import annotations

import asyncio

import pytest

from bot.config import TimerOverride
from models.deadlines.calendar import Span
from models.store.tables import Timer
from scheduler.jobs import run_sweep

from deadline_helpers import (
    C1_CHAT, CENTRE_CHAT, CHIEF_G01, CHIEF_G02, G01_CHAT, STREET_CHAT, SECRETARY_C1, alert_text,
    body, board_ref, bot_texts, buttons, claim, count, event_kinds, events_of, file_report,
    group_text, has_button, last_id, local, note, open_timer, person_id, press, sent_requests,
    sweep_at, ticket_row, timers, unit_id, unit_name, wait_card, wait_sent,
)


RESIDENT = 9001


@pytest.fixture
def staff(people):
    """The resident (English) and the staff who press buttons or get private reminders."""
    people(RESIDENT, "Li Si", language="en")
    for uid, name in [(CHIEF_G01, "王建国"), (CHIEF_G02, "李秀英"), (SECRETARY_C1, "何淑珍"),
                      (3001, "罗志刚"), (5001, "韩东")]:
        people(uid, name)


def is_board(message: dict) -> bool:
    return body(message).startswith("📋")


def boards_posted(api, chat: int) -> list[dict]:
    """sendMessage calls that posted an overdue board in ``chat``."""
    return [p for p in sent_requests(api, "sendMessage", chat) if (p.get("text") or "").startswith("📋")]


def edits_of(api, chat: int, message_id: int) -> list[dict]:
    return [p for p in sent_requests(api, "editMessageText", chat)
            if int(p.get("message_id")) == int(message_id)]


def private_reminders(api, whistle, user: int) -> list[str]:
    head = group_text(whistle, "Deadlines:")  # staff speak zh_Hans, like group chats
    return [t for t in bot_texts(api, user) if t.startswith(head)]


# ---- routine orders: claim warning on the board, escalation at every level --------------

async def test_routine_claim_warns_on_the_board_then_escalates_grid_community_street(
        whistle, api, staff, clock):
    filed = await file_report(api, whistle, RESIDENT)
    claim_t = await open_timer(whistle, filed.id, "claim")
    resolve_t = await open_timer(whistle, filed.id, "resolve")
    # Reported Monday 10:00: claim within 2 working hours, warned at 80 % of the window.
    assert (claim_t.due_at, claim_t.warn_at, claim_t.working) == (
        local(2026, 11, 23, 12, 0), local(2026, 11, 23, 11, 36), True)
    # 5 working days of 8 hours: Mon 7h + Tue–Fri 32h + 1h on the next Monday.
    assert resolve_t.due_at == local(2026, 11, 30, 10, 0)
    assert resolve_t.warn_at == local(2026, 11, 27, 10, 0)
    ticket = await ticket_row(whistle, filed.id)
    assert ticket.claim_due_at == claim_t.due_at and ticket.resolve_due_at == resolve_t.due_at

    assert (await sweep_at(whistle, clock, local(2026, 11, 23, 11, 35))).timers == 0

    result = await sweep_at(whistle, clock, local(2026, 11, 23, 11, 36))
    assert (result.timers, result.warned, result.breached, result.escalated) == (1, 1, 0, 0)
    board = await api.wait_message(G01_CHAT, contains=filed.number, predicate=is_board)
    assert group_text(whistle, "claim") in board["text"]
    claim_t = await open_timer(whistle, filed.id, "claim")
    assert (claim_t.stage, claim_t.next_at) == ("warned", claim_t.due_at)
    # A claim warning has nobody to remind privately: the ticket is unclaimed.
    assert private_reminders(api, whistle, CHIEF_G01) == []

    # 12:00: the grid missed the claim deadline → the community gets the card.
    result = await sweep_at(whistle, clock, local(2026, 11, 23, 12, 0))
    assert (result.breached, result.escalated) == (1, 1)
    c1_card = await wait_card(api, C1_CHAT, filed.id, prefix="claim:")
    assert f"claim:{filed.id}" in buttons(c1_card)
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.level, ticket.unit_id, ticket.escalations, ticket.assignee_id) == (
        "escalated", "community", await unit_id(whistle, "c1"), 1, None)
    first = [t for t in await timers(whistle, filed.id, "claim")][0]
    assert (first.stage, first.met, first.next_at) == ("done", False, None)
    claim_t = await open_timer(whistle, filed.id, "claim")
    assert claim_t.unit_id == await unit_id(whistle, "c1")
    assert (claim_t.starts_at, claim_t.due_at, claim_t.warn_at) == (
        local(2026, 11, 23, 12, 0), local(2026, 11, 23, 15, 0), local(2026, 11, 23, 14, 36))
    assert (await open_timer(whistle, filed.id, "resolve")).unit_id == await unit_id(whistle, "c1")
    escalated = await events_of(whistle, filed.id, "escalated")
    assert len(escalated) == 1 and escalated[0].actor_id is None and escalated[0].data == {"to": "c1"}
    await api.wait_message(RESIDENT, contains="passed up to")

    # 14:36 the community is warned on its own board; 15:00 it missed the claim → the street.
    result = await sweep_at(whistle, clock, local(2026, 11, 23, 14, 36))
    assert result.warned == 1
    await api.wait_message(C1_CHAT, contains=filed.number, predicate=is_board)
    result = await sweep_at(whistle, clock, local(2026, 11, 23, 15, 0))
    assert (result.breached, result.escalated) == (1, 1)
    street_card = await wait_card(api, STREET_CHAT, filed.id, prefix="claim:")
    assert f"claim:{filed.id}" in buttons(street_card)
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.level, ticket.unit_id, ticket.escalations) == (
        "escalated", "street", await unit_id(whistle, "s1"), 2)
    claim_t = await open_timer(whistle, filed.id, "claim")
    assert (claim_t.unit_id, claim_t.due_at) == (await unit_id(whistle, "s1"),
                                                 local(2026, 11, 23, 17, 0))

    # 17:00 the street missed it too: there is no level to escalate to, the command centre hears.
    after_centre = last_id(api, CENTRE_CHAT)
    result = await sweep_at(whistle, clock, local(2026, 11, 23, 17, 0))
    assert (result.breached, result.escalated) == (1, 0)
    expected = await alert_text(whistle, "s1", filed.number, "garbage", "claim", "11-23 17:00")
    alert = await api.wait_message(CENTRE_CHAT, contains=filed.number, after=after_centre)
    assert expected in alert["text"].splitlines()
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.level, ticket.escalations) == ("escalated", "street", 2)
    assert [t.stage for t in await timers(whistle, filed.id, "claim")] == ["done"] * 3
    assert [t.met for t in await timers(whistle, filed.id, "claim")] == [False] * 3
    assert (await event_kinds(whistle, filed.id)).count("escalated") == 2
    await wait_sent(whistle, api)
    assert [m for m in api.bot_messages(STREET_CHAT) if filed.number in body(m)
            and "⚠️" in body(m)] == []  # the street is not alerted about itself


# ---- the overdue board: one message, edited in place, a fresh one after 24 hours ---------

async def test_board_is_edited_in_place_and_reposted_after_max_age(whistle, api, staff, clock):
    a = await file_report(api, whistle, RESIDENT)
    await sweep_at(whistle, clock, local(2026, 11, 23, 11, 36))  # a's claim warning
    first = await api.wait_message(G01_CHAT, contains=a.number, predicate=is_board)
    await wait_sent(whistle, api)
    ref = await board_ref(whistle, "g01", G01_CHAT)
    assert ref.message_id == str(first["message_id"])
    assert ref.created_at == local(2026, 11, 23, 11, 36)

    # 12:00: a escalates away from the grid; the grid's board is edited, not posted again.
    await sweep_at(whistle, clock, local(2026, 11, 23, 12, 0))
    await api.wait_for(lambda: edits_of(api, G01_CHAT, first["message_id"]),
                       description="an edit of the board")
    board = await api.wait_for(lambda: a.number not in body(api.message(G01_CHAT, first["message_id"]))
                               and api.message(G01_CHAT, first["message_id"]))
    assert group_text(whistle, "✅ Nothing due or overdue.") in board["text"]

    # 13:00 another report; its warning at 14:36 edits the same board again.
    clock.now = local(2026, 11, 23, 13, 0)
    b = await file_report(api, whistle, RESIDENT)
    await sweep_at(whistle, clock, local(2026, 11, 23, 14, 36))
    await api.wait_for(lambda: b.number in body(api.message(G01_CHAT, first["message_id"])),
                       description="b on the edited board")
    await wait_sent(whistle, api)
    assert len(edits_of(api, G01_CHAT, first["message_id"])) >= 2
    assert len(boards_posted(api, G01_CHAT)) == 1
    assert len([m for m in api.bot_messages(G01_CHAT) if is_board(m)]) == 1

    # Tuesday 11:36, 24 hours after the board was posted: b's breach posts a fresh board.
    edits_before = len(edits_of(api, G01_CHAT, first["message_id"]))
    await sweep_at(whistle, clock, local(2026, 11, 24, 11, 36))
    fresh = await api.wait_message(G01_CHAT, predicate=is_board, after=first["message_id"])
    await wait_sent(whistle, api)
    assert fresh["message_id"] != first["message_id"]
    assert len(boards_posted(api, G01_CHAT)) == 2
    assert len(edits_of(api, G01_CHAT, first["message_id"])) == edits_before
    ref = await board_ref(whistle, "g01", G01_CHAT)
    assert ref.message_id == str(fresh["message_id"])
    assert ref.created_at == local(2026, 11, 24, 11, 36)


# ---- warnings go privately to the assignee, one message per person and sweep -------------

async def test_resolve_warning_and_breach_are_batched_per_assignee_then_escalate_after_grace(
        whistle, api, staff, clock):
    a = await file_report(api, whistle, RESIDENT)
    b = await file_report(api, whistle, RESIDENT)
    await claim(api, CHIEF_G01, G01_CHAT, a)
    await claim(api, CHIEF_G01, G01_CHAT, b)
    await wait_sent(whistle, api)
    assert private_reminders(api, whistle, CHIEF_G01) == []

    result = await sweep_at(whistle, clock, local(2026, 11, 27, 10, 0))  # Friday: 80 % of 5wd
    assert (result.timers, result.warned) == (2, 2)
    await api.wait_for(lambda: private_reminders(api, whistle, CHIEF_G01))
    await wait_sent(whistle, api)
    reminders = private_reminders(api, whistle, CHIEF_G01)
    assert len(reminders) == 1, reminders  # one message for both tickets
    lines = reminders[0].splitlines()
    assert len(lines) == 3 and a.number in lines[1] + lines[2] and b.number in lines[1] + lines[2]
    assert all("11-30 10:00" in line for line in lines[1:])
    board = await api.wait_message(G01_CHAT, predicate=is_board)
    assert a.number in board["text"] and b.number in board["text"]

    # Monday 10:00: both overdue → one private message, and the community is alerted.
    after_c1 = last_id(api, C1_CHAT)
    result = await sweep_at(whistle, clock, local(2026, 11, 30, 10, 0))
    assert (result.timers, result.breached, result.escalated) == (2, 2, 0)
    await api.wait_for(lambda: len(private_reminders(api, whistle, CHIEF_G01)) == 2)
    for filed in (a, b):
        expected = await alert_text(whistle, "g01", filed.number, "garbage", "resolve",
                                    "11-30 10:00")
        alert = await api.wait_message(C1_CHAT, contains=filed.number, after=after_c1)
        assert expected in alert["text"].splitlines()
    await wait_sent(whistle, api)
    reminders = private_reminders(api, whistle, CHIEF_G01)
    assert len(reminders) == 2 and a.number in reminders[1] and b.number in reminders[1]
    for filed in (a, b):
        resolve = await open_timer(whistle, filed.id, "resolve")
        # resolve_grace = 4 working hours: 10–12 and 13–15.
        assert (resolve.stage, resolve.met, resolve.next_at) == (
            "breached", False, local(2026, 11, 30, 15, 0))
        ticket = await ticket_row(whistle, filed.id)
        assert (ticket.state, ticket.level) == ("claimed", "grid")

    assert (await sweep_at(whistle, clock, local(2026, 11, 30, 14, 59))).timers == 0
    result = await sweep_at(whistle, clock, local(2026, 11, 30, 15, 0))
    assert result.escalated == 2
    for filed in (a, b):
        await wait_card(api, C1_CHAT, filed.id, prefix="claim:")
        ticket = await ticket_row(whistle, filed.id)
        assert (ticket.state, ticket.level, ticket.escalations, ticket.assignee_id) == (
            "escalated", "community", 1, None)
        assert (await events_of(whistle, filed.id, "escalated"))[0].actor_id is None
        # the grid chief who had it is told privately, in his language
        told = await api.wait_message(CHIEF_G01, contains=f"#{filed.number}",
                                      predicate=lambda m: "⬆️" in (m.get("text") or ""))
        assert await unit_name(whistle, "c1") in told["text"]
    # The grace escalation happens once: nothing left to do for the breached resolve timers.
    assert (await sweep_at(whistle, clock, local(2026, 11, 30, 15, 1))).escalated == 0


# ---- emergency orders run on calendar time --------------------------------------------------

async def test_emergency_claim_onsite_and_resolve_in_calendar_time(whistle, api, staff, clock):
    filed = await file_report(api, whistle, RESIDENT, category="water")
    ticket = await ticket_row(whistle, filed.id)
    assert ticket.order_type == "emergency"
    claim_t = await open_timer(whistle, filed.id, "claim")
    onsite = await open_timer(whistle, filed.id, "onsite")
    resolve = await open_timer(whistle, filed.id, "resolve")
    assert (claim_t.working, claim_t.due_at, claim_t.warn_at) == (
        False, local(2026, 11, 23, 10, 10), local(2026, 11, 23, 10, 5))
    assert (onsite.due_at, onsite.warn_at) == (local(2026, 11, 23, 10, 30), local(2026, 11, 23, 10, 15))
    # 24 calendar hours; the warning 20 % (4.8 h) ahead, in the small hours.
    assert (resolve.due_at, resolve.warn_at) == (local(2026, 11, 24, 10, 0), local(2026, 11, 24, 5, 12))

    clock.now = local(2026, 11, 23, 10, 3)
    await claim(api, CHIEF_G01, G01_CHAT, filed)
    claim_t = (await timers(whistle, filed.id, "claim"))[0]
    assert (claim_t.stage, claim_t.met) == ("done", True)

    result = await sweep_at(whistle, clock, local(2026, 11, 23, 10, 15))
    assert (result.timers, result.warned) == (1, 1)
    warn = await api.wait_for(lambda: private_reminders(api, whistle, CHIEF_G01))
    assert filed.number in warn[0] and "11-23 10:30" in warn[0]

    after_c1 = last_id(api, C1_CHAT)
    result = await sweep_at(whistle, clock, local(2026, 11, 23, 10, 30))
    assert (result.breached, result.escalated) == (1, 0)
    await api.wait_for(lambda: len(private_reminders(api, whistle, CHIEF_G01)) == 2)
    alert = await api.wait_message(C1_CHAT, contains=filed.number, after=after_c1)
    assert await alert_text(whistle, "g01", filed.number, "water", "onsite",
                            "11-23 10:30") in alert["text"].splitlines()
    onsite = await open_timer(whistle, filed.id, "onsite")
    assert (onsite.stage, onsite.met, onsite.next_at) == ("breached", False, None)

    clock.now = local(2026, 11, 23, 10, 35)
    # The claim's card edit goes through the sender: wait for it, don't read it at once.
    await api.wait_message(G01_CHAT, contains=filed.number, predicate=has_button(f"onsite:{filed.id}"))
    answer = await press(api, CHIEF_G01, G01_CHAT, filed.card["message_id"], f"onsite:{filed.id}")
    assert not answer.get("show_alert"), answer
    assert "onsite" in await event_kinds(whistle, filed.id)
    onsite = (await timers(whistle, filed.id, "onsite"))[0]
    assert (onsite.stage, onsite.met) == ("done", False)

    # The resolve warning comes at 05:12 — quiet hours hold nothing for an emergency.
    result = await sweep_at(whistle, clock, local(2026, 11, 24, 5, 12))
    assert (result.timers, result.warned, result.held_quiet) == (1, 1, 0)
    await api.wait_for(lambda: len(private_reminders(api, whistle, CHIEF_G01)) == 3)
    assert "11-24 10:00" in private_reminders(api, whistle, CHIEF_G01)[-1]


async def test_emergency_reported_at_night_is_nagged_routine_waits_for_working_hours(
        whistle, api, staff, clock):
    clock.now = local(2026, 11, 23, 23, 0)
    emergency = await file_report(api, whistle, RESIDENT, category="water")
    routine = await file_report(api, whistle, RESIDENT)
    r_claim = await open_timer(whistle, routine.id, "claim")
    # Working time starts at 09:00 on Tuesday: due 11:00, warned 10:36.
    assert (r_claim.due_at, r_claim.warn_at, r_claim.next_at) == (
        local(2026, 11, 24, 11, 0), local(2026, 11, 24, 10, 36), local(2026, 11, 24, 10, 36))

    result = await sweep_at(whistle, clock, local(2026, 11, 23, 23, 5))
    assert (result.timers, result.warned, result.held_quiet) == (1, 1, 0)
    board = await api.wait_message(G01_CHAT, predicate=is_board)
    assert emergency.number in board["text"] and routine.number not in board["text"]

    result = await sweep_at(whistle, clock, local(2026, 11, 23, 23, 10))
    assert (result.breached, result.escalated, result.held_quiet) == (1, 1, 0)
    await wait_card(api, C1_CHAT, emergency.id, prefix="claim:")
    c1_claim = await open_timer(whistle, emergency.id, "claim")
    assert c1_claim.due_at == local(2026, 11, 23, 23, 20)

    # Nothing of the routine order moved during the night.
    assert (await open_timer(whistle, routine.id, "claim")).stage == "running"
    assert (await ticket_row(whistle, routine.id)).state == "routed"
    # 03:00: the emergency's on-site deadline (23:30) and the community's claim (23:20) are
    # acted on in the night; the routine order is not even looked at.
    result = await sweep_at(whistle, clock, local(2026, 11, 24, 3, 0))
    assert (result.timers, result.breached, result.escalated, result.held_quiet) == (2, 2, 1, 0)
    await wait_card(api, STREET_CHAT, emergency.id, prefix="claim:")
    r_claim = await open_timer(whistle, routine.id, "claim")
    assert (r_claim.stage, r_claim.next_at) == ("running", local(2026, 11, 24, 10, 36))


@pytest.fixture
def garbage_on_calendar_time(config):
    """A routine category whose claim deadline is in calendar minutes (a local override),
    so a routine timer falls due in the middle of the night."""
    config.category("garbage").deadlines = TimerOverride(claim=Span.parse("10m"))
    return config


async def test_quiet_hours_hold_routine_timers_until_seven(garbage_on_calendar_time, whistle,
                                                           api, staff, clock):
    clock.now = local(2026, 11, 23, 23, 0)
    routine = await file_report(api, whistle, RESIDENT)
    emergency = await file_report(api, whistle, RESIDENT, category="water")
    r_claim = await open_timer(whistle, routine.id, "claim")
    assert (r_claim.working, r_claim.warn_at, r_claim.due_at) == (
        False, local(2026, 11, 23, 23, 5), local(2026, 11, 23, 23, 10))

    result = await sweep_at(whistle, clock, local(2026, 11, 23, 23, 5))
    assert (result.timers, result.warned, result.held_quiet) == (2, 1, 1)
    r_claim = await open_timer(whistle, routine.id, "claim")
    assert (r_claim.stage, r_claim.next_at) == ("running", local(2026, 11, 24, 7, 0))
    board = await api.wait_message(G01_CHAT, predicate=is_board)
    assert emergency.number in board["text"] and routine.number not in board["text"]

    result = await sweep_at(whistle, clock, local(2026, 11, 23, 23, 10))
    assert (result.escalated, result.held_quiet) == (1, 0)  # only the emergency
    assert (await ticket_row(whistle, routine.id)).state == "routed"
    assert (await sweep_at(whistle, clock, local(2026, 11, 24, 6, 59))).held_quiet == 0
    assert (await ticket_row(whistle, routine.id)).state == "routed"

    result = await sweep_at(whistle, clock, local(2026, 11, 24, 7, 0))
    assert (result.held_quiet, result.breached, result.escalated) == (0, 1, 1)
    await wait_card(api, C1_CHAT, routine.id, prefix="claim:")
    ticket = await ticket_row(whistle, routine.id)
    assert (ticket.state, ticket.level) == ("escalated", "community")


# ---- key orders: progress every working day -------------------------------------------------

async def test_key_order_progress_timer_restarts_with_each_progress_note(whistle, api, staff, clock):
    filed = await file_report(api, whistle, RESIDENT, category="safety")
    assert (await ticket_row(whistle, filed.id)).order_type == "key"
    claim_t = await open_timer(whistle, filed.id, "claim")
    assert (claim_t.due_at, claim_t.warn_at) == (local(2026, 11, 23, 11, 0), local(2026, 11, 23, 10, 45))
    resolve = await open_timer(whistle, filed.id, "resolve")
    assert resolve.due_at == local(2026, 12, 14, 10, 0)  # 15 working days
    assert await timers(whistle, filed.id, "progress") == []

    clock.now = local(2026, 11, 23, 10, 30)
    await claim(api, CHIEF_G01, G01_CHAT, filed)
    progress = await open_timer(whistle, filed.id, "progress")
    # One working day (8 h) from 10:30: Monday 6.5 h, Tuesday 1.5 h.
    assert (progress.starts_at, progress.due_at, progress.warn_at) == (
        local(2026, 11, 23, 10, 30), local(2026, 11, 24, 10, 30), local(2026, 11, 23, 17, 54))

    result = await sweep_at(whistle, clock, local(2026, 11, 23, 17, 54))
    assert result.warned == 1
    warn = await api.wait_for(lambda: private_reminders(api, whistle, CHIEF_G01))
    assert filed.number in warn[0] and "11-24 10:30" in warn[0]

    clock.now = local(2026, 11, 24, 9, 0)
    card = api.message(G01_CHAT, filed.card["message_id"])
    await note(api, whistle, CHIEF_G01, G01_CHAT, card["message_id"], f"progress:{filed.id}",
               filed.number, "已设置警示围栏，等待维修")
    first, second = await timers(whistle, filed.id, "progress")
    assert (first.stage, first.met) == ("done", True)
    assert (second.stage, second.starts_at, second.due_at, second.warn_at) == (
        "running", local(2026, 11, 24, 9, 0), local(2026, 11, 24, 18, 0), local(2026, 11, 24, 16, 24))

    # The old deadline passes unnoticed: the note restarted the timer.
    assert (await sweep_at(whistle, clock, local(2026, 11, 24, 10, 30))).timers == 0
    assert (await sweep_at(whistle, clock, local(2026, 11, 24, 16, 24))).warned == 1
    result = await sweep_at(whistle, clock, local(2026, 11, 24, 18, 0))
    assert (result.breached, result.escalated) == (1, 0)
    await api.wait_for(lambda: len(private_reminders(api, whistle, CHIEF_G01)) == 3)
    assert filed.number in private_reminders(api, whistle, CHIEF_G01)[-1]
    progress = await open_timer(whistle, filed.id, "progress")
    assert (progress.stage, progress.met, progress.next_at) == ("breached", False, None)
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.level) == ("in_progress", "grid")

    # A late note still restarts it: the breached timer ends (missed), a new one runs.
    clock.now = local(2026, 11, 25, 9, 0)
    await note(api, whistle, CHIEF_G01, G01_CHAT, card["message_id"], f"progress:{filed.id}",
               filed.number, "维修队已进场")
    stages = [(t.stage, t.met) for t in await timers(whistle, filed.id, "progress")]
    assert stages == [("done", True), ("done", False), ("running", None)]


# ---- working time across a weekend and a public holiday -----------------------------------

async def test_working_time_skips_national_day_and_weekends(whistle, api, staff, clock):
    # Wednesday 2026-09-30, 20:00: National Day holidays run 10-01 … 10-07, Saturday 10-10
    # is an adjusted working day (调休), Sunday 10-11 rests.
    clock.now = local(2026, 9, 30, 20, 0)
    filed = await file_report(api, whistle, RESIDENT)
    assert filed.number.startswith("20260930-")
    claim_t = await open_timer(whistle, filed.id, "claim")
    resolve = await open_timer(whistle, filed.id, "resolve")
    assert (claim_t.due_at, claim_t.warn_at) == (local(2026, 10, 8, 11, 0), local(2026, 10, 8, 10, 36))
    assert resolve.due_at == local(2026, 10, 13, 18, 0)  # Thu, Fri, Sat (调休), Mon, Tue

    assert (await sweep_at(whistle, clock, local(2026, 10, 5, 12, 0))).timers == 0
    assert (await sweep_at(whistle, clock, local(2026, 10, 8, 10, 35))).timers == 0
    assert (await sweep_at(whistle, clock, local(2026, 10, 8, 10, 36))).warned == 1

    # A weekend: Friday 17:00 → 1 h on Friday, the rest from Monday 09:00.
    clock.now = local(2026, 11, 27, 17, 0)
    friday = await file_report(api, whistle, RESIDENT)
    assert (await open_timer(whistle, friday.id, "claim")).due_at == local(2026, 11, 30, 10, 0)
    assert (await open_timer(whistle, friday.id, "resolve")).due_at == local(2026, 12, 4, 17, 0)


# ---- the pause while waiting on the resident ---------------------------------------------------

async def _ask(api, whistle, filed, question: str) -> None:
    """The assignee presses "ask" on the card and replies to the ForceReply prompt."""
    await api.wait_for(lambda: f"ask:{filed.id}" in buttons(
        api.message(G01_CHAT, filed.card["message_id"])), description="the ask button")
    await note(api, whistle, CHIEF_G01, G01_CHAT, filed.card["message_id"], f"ask:{filed.id}",
               filed.number, question)


async def test_asking_the_resident_pauses_timers_and_the_answer_moves_deadlines(
        whistle, api, staff, clock):
    filed = await file_report(api, whistle, RESIDENT)
    await claim(api, CHIEF_G01, G01_CHAT, filed)
    resolve = await open_timer(whistle, filed.id, "resolve")
    assert (resolve.due_at, resolve.warn_at) == (local(2026, 11, 30, 10, 0), local(2026, 11, 27, 10, 0))

    clock.now = local(2026, 11, 23, 11, 0)
    after_resident = last_id(api, RESIDENT)
    await _ask(api, whistle, filed, "Which gate exactly, north or south?")
    question = await api.wait_message(RESIDENT, contains="north or south", after=after_resident)
    assert filed.number in question["text"]
    ticket = await ticket_row(whistle, filed.id)
    assert ticket.waiting_since == local(2026, 11, 23, 11, 0)
    resolve = await open_timer(whistle, filed.id, "resolve")
    assert resolve.paused_at == local(2026, 11, 23, 11, 0)  # the sweep skips paused timers
    assert "asked" in await event_kinds(whistle, filed.id)
    card = await api.wait_for(lambda: f"ask:{filed.id}" not in buttons(
        api.message(G01_CHAT, filed.card["message_id"])) and api.message(G01_CHAT, filed.card["message_id"]))
    assert f"resolve:{filed.id}" in buttons(card)

    assert (await sweep_at(whistle, clock, local(2026, 11, 24, 9, 59))).timers == 0

    # Tuesday 10:00 the resident answers: 7 working hours passed (Mon 11–12, 13–18, Tue 9–10).
    clock.now = local(2026, 11, 24, 10, 0)
    after_chief = last_id(api, CHIEF_G01)
    after = last_id(api, RESIDENT)
    api.user_sends_text(RESIDENT, RESIDENT, "The north gate, next to the bins")
    await api.wait_message(RESIDENT, after=after)
    told = await api.wait_message(CHIEF_G01, contains="The north gate", after=after_chief)
    assert filed.number in told["text"]
    resolve = await open_timer(whistle, filed.id, "resolve")
    assert resolve.paused_at is None
    assert resolve.due_at == local(2026, 11, 30, 18, 0)
    assert resolve.warn_at == local(2026, 11, 27, 18, 0)
    assert resolve.next_at == resolve.warn_at
    ticket = await ticket_row(whistle, filed.id)
    assert ticket.waiting_since is None and ticket.resolve_due_at == resolve.due_at
    assert (await event_kinds(whistle, filed.id))[-1] == "answered"
    await api.wait_for(lambda: f"ask:{filed.id}" in buttons(api.message(G01_CHAT, filed.card["message_id"])))

    assert (await sweep_at(whistle, clock, local(2026, 11, 27, 10, 0))).timers == 0
    assert (await sweep_at(whistle, clock, local(2026, 11, 27, 18, 0))).warned == 1
    warn = await api.wait_for(lambda: private_reminders(api, whistle, CHIEF_G01))
    assert "11-30 18:00" in warn[0]


async def test_pause_on_an_emergency_moves_calendar_deadlines_by_the_pause(whistle, api, staff, clock):
    filed = await file_report(api, whistle, RESIDENT, category="water")
    clock.now = local(2026, 11, 23, 10, 2)
    await claim(api, CHIEF_G01, G01_CHAT, filed)
    clock.now = local(2026, 11, 23, 10, 5)
    await _ask(api, whistle, filed, "Is the water still running?")
    for kind in ("onsite", "resolve"):
        timer = await open_timer(whistle, filed.id, kind)
        assert timer.paused_at == local(2026, 11, 23, 10, 5)
    assert (await sweep_at(whistle, clock, local(2026, 11, 23, 12, 0))).timers == 0

    clock.now = local(2026, 11, 23, 12, 5)  # two hours later
    after = last_id(api, RESIDENT)
    api.user_sends_text(RESIDENT, RESIDENT, "Yes, it is still running")
    await api.wait_message(RESIDENT, after=after)
    await api.wait_message(CHIEF_G01, contains="still running")
    onsite = await open_timer(whistle, filed.id, "onsite")
    resolve = await open_timer(whistle, filed.id, "resolve")
    assert (onsite.due_at, onsite.warn_at, onsite.next_at) == (
        local(2026, 11, 23, 12, 30), local(2026, 11, 23, 12, 15), local(2026, 11, 23, 12, 15))
    assert (resolve.due_at, resolve.warn_at) == (local(2026, 11, 24, 12, 0), local(2026, 11, 24, 7, 12))
    assert (await sweep_at(whistle, clock, local(2026, 11, 23, 12, 15))).warned == 1


async def test_a_question_during_the_resolve_grace_pauses_the_grace_too(whistle, api, staff, clock):
    """The resolve deadline was missed (Monday 10:00), the escalation is due after the 4 working
    hours of grace (15:00). The assignee asks the resident at 11:00, who answers at 12:00: the
    pause stops every timer, so the escalation moves by the pause (one working hour, to 16:00)
    — it must not fire at the first sweep after the answer."""
    filed = await file_report(api, whistle, RESIDENT)
    await claim(api, CHIEF_G01, G01_CHAT, filed)
    await sweep_at(whistle, clock, local(2026, 11, 30, 10, 0))
    resolve = await open_timer(whistle, filed.id, "resolve")
    assert (resolve.stage, resolve.next_at) == ("breached", local(2026, 11, 30, 15, 0))

    clock.now = local(2026, 11, 30, 11, 0)
    await _ask(api, whistle, filed, "Is the rubbish still there?")
    assert (await open_timer(whistle, filed.id, "resolve")).paused_at == local(2026, 11, 30, 11, 0)
    assert (await sweep_at(whistle, clock, local(2026, 11, 30, 15, 30))).timers == 0

    clock.now = local(2026, 11, 30, 12, 0)
    after = last_id(api, RESIDENT)
    api.user_sends_text(RESIDENT, RESIDENT, "Yes, half of it is still there")
    await api.wait_message(RESIDENT, after=after)
    await api.wait_message(CHIEF_G01, contains="half of it")
    result = await sweep_at(whistle, clock, local(2026, 11, 30, 12, 0))
    ticket = await ticket_row(whistle, filed.id)
    assert (result.escalated, ticket.level) == (0, "grid"), (
        f"escalated at the first sweep after the answer; resolve timer next_at="
        f"{(await open_timer(whistle, filed.id, 'resolve')).next_at}")
    assert (await sweep_at(whistle, clock, local(2026, 11, 30, 15, 59))).escalated == 0
    assert (await sweep_at(whistle, clock, local(2026, 11, 30, 16, 0))).escalated == 1


# ---- changing the order type --------------------------------------------------------------

async def test_triage_changes_the_order_type_and_recomputes_deadlines(whistle, api, staff, clock):
    filed = await file_report(api, whistle, RESIDENT)
    assert (await open_timer(whistle, filed.id, "claim")).due_at == local(2026, 11, 23, 12, 0)
    clock.now = local(2026, 11, 23, 10, 2)

    # A stranger (the chief of g02) can neither open the menu nor change the type.
    for data in (f"type:{filed.id}", f"ty:{filed.id}.emergency"):
        answer = await press(api, CHIEF_G02, G01_CHAT, filed.card["message_id"], data)
        assert answer.get("show_alert") and answer.get("text"), answer
    assert (await ticket_row(whistle, filed.id)).order_type == "routine"
    assert await events_of(whistle, filed.id, "retyped") == []

    after = last_id(api, G01_CHAT)
    await press(api, CHIEF_G01, G01_CHAT, filed.card["message_id"], f"type:{filed.id}")
    menu = await api.wait_message(G01_CHAT, predicate=has_button("ty:"), after=after)
    assert sorted(buttons(menu)) == sorted(f"ty:{filed.id}.{k}" for k in ("emergency", "routine", "key"))
    answer = await press(api, CHIEF_G01, G01_CHAT, menu["message_id"], f"ty:{filed.id}.emergency")
    assert not answer.get("show_alert"), answer

    ticket = await ticket_row(whistle, filed.id)
    assert ticket.order_type == "emergency"
    retyped = await events_of(whistle, filed.id, "retyped")
    assert len(retyped) == 1 and retyped[0].data == {"from": "routine", "to": "emergency"}
    assert retyped[0].actor_id == await person_id(whistle, CHIEF_G01)
    claim_t = await open_timer(whistle, filed.id, "claim")
    resolve = await open_timer(whistle, filed.id, "resolve")
    onsite = await open_timer(whistle, filed.id, "onsite")
    assert (claim_t.working, claim_t.due_at, claim_t.warn_at, claim_t.next_at) == (
        False, local(2026, 11, 23, 10, 10), local(2026, 11, 23, 10, 5), local(2026, 11, 23, 10, 5))
    assert (resolve.working, resolve.due_at) == (False, local(2026, 11, 24, 10, 0))
    assert ticket.resolve_due_at == resolve.due_at
    assert (onsite.starts_at, onsite.due_at) == (local(2026, 11, 23, 10, 0), local(2026, 11, 23, 10, 30))
    await api.wait_for(lambda: group_text(whistle, "emergency order") in body(
        api.message(G01_CHAT, filed.card["message_id"])))

    # The sweep now follows the emergency deadlines.
    assert (await sweep_at(whistle, clock, local(2026, 11, 23, 10, 5))).warned == 1
    assert (await sweep_at(whistle, clock, local(2026, 11, 23, 10, 10))).escalated == 1
    await wait_card(api, C1_CHAT, filed.id, prefix="claim:")
    # The ticket's record of its first claim deadline (Ticket.claim_due_at, "the first claim
    # deadline (response rate)") follows the new order type too.
    assert (await ticket_row(whistle, filed.id)).claim_due_at == local(2026, 11, 23, 10, 10)


# ---- two sweeps at once ---------------------------------------------------------------------

async def test_concurrent_sweeps_act_on_each_due_timer_once(whistle, api, staff, clock):
    a = await file_report(api, whistle, RESIDENT)
    await claim(api, CHIEF_G01, G01_CHAT, a)
    clock.now = local(2026, 11, 27, 9, 45)
    b = await file_report(api, whistle, RESIDENT, category="water")
    await wait_sent(whistle, api)

    # Friday 10:00: a's resolve warning (private), b's missed claim (escalation), b's on-site warning.
    now = local(2026, 11, 27, 10, 0)
    clock.now = now
    results = await asyncio.gather(run_sweep(whistle.db, whistle.core, clock.now),
                                   run_sweep(whistle.db, whistle.core, clock.now))
    assert sum(r.timers for r in results) == 3, results
    assert sum(r.escalated for r in results) == 1, results
    assert sum(r.warned for r in results) == 2, results
    await wait_card(api, C1_CHAT, b.id, prefix="claim:")
    await api.wait_for(lambda: private_reminders(api, whistle, CHIEF_G01))
    await wait_sent(whistle, api)
    assert len(private_reminders(api, whistle, CHIEF_G01)) == 1
    assert (await ticket_row(whistle, b.id)).escalations == 1
    assert (await event_kinds(whistle, b.id)).count("escalated") == 1
    assert len([m for m in api.bot_messages(C1_CHAT) if f"claim:{b.id}" in buttons(m)]) == 1
    assert await count(whistle, Timer, Timer.ticket_id == b.id, Timer.kind == "claim") == 2
