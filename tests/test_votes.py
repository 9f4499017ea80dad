"""The resident's verdict after resolution: solved? (vs) and how satisfied (vq), an
optional comment; "not solved" or "not satisfied" reopens the ticket to its assignee,
the second reopen escalates; no answer gets a reminder after 24 hours and closes the
ticket as unrated after 72; a vote may be changed for 14 days.

The resident speaks English; the grid chat speaks zh_Hans."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from models.store.tables import Vote

from deadline_helpers import (
    C1_CHAT, CHIEF_G01, G01_CHAT, body, buttons, claim, count, event_kinds, events_of,
    file_report, group_text, has_button, last_id, local, note, open_timer, person_id, press,
    sent_requests, sweep_at, ticket_row, timers, unit_id, wait_card, wait_sent,
)


RESIDENT = 9001
OTHER_RESIDENT = 9002


@pytest.fixture
def staff(people):
    people(RESIDENT, "Li Si", language="en")
    people(OTHER_RESIDENT, "Zhao Liu", language="en")
    people(CHIEF_G01, "王建国")


async def claimed_report(api, whistle):
    filed = await file_report(api, whistle, RESIDENT)
    await claim(api, CHIEF_G01, G01_CHAT, filed)
    return filed


async def resolve(api, whistle, filed, text: str = "垃圾已清运完毕") -> dict:
    """The chief resolves from the card; returns the resident's "is it solved?" question."""
    after = last_id(api, RESIDENT)
    await api.wait_for(lambda: f"resolve:{filed.id}" in buttons(
        api.message(G01_CHAT, filed.card["message_id"])), description="the resolve button")
    await note(api, whistle, CHIEF_G01, G01_CHAT, filed.card["message_id"], f"resolve:{filed.id}",
               filed.number, text)
    return await api.wait_message(RESIDENT, predicate=has_button(f"vs:{filed.id}."), after=after)


async def vote_solved(api, question: dict, filed, choice: str) -> dict:
    """Press vs:<id>.<choice>; returns the satisfaction question that follows."""
    after = last_id(api, RESIDENT)
    answer = await press(api, RESIDENT, RESIDENT, question["message_id"], f"vs:{filed.id}.{choice}")
    assert not answer.get("show_alert"), answer
    return await api.wait_message(RESIDENT, predicate=has_button(f"vq:{filed.id}."), after=after)


async def vote_row(whistle, filed) -> Vote | None:
    return await whistle.db.run(lambda s: s.scalar(select(Vote).where(Vote.ticket_id == filed.id)))


# ---- satisfied: closed, with a comment ------------------------------------------------------

async def test_satisfied_vote_closes_the_ticket_and_a_comment_is_stored(whistle, api, staff, clock):
    filed = await claimed_report(api, whistle)
    clock.now = local(2026, 11, 23, 10, 30)
    question = await resolve(api, whistle, filed)
    assert filed.number in question["text"]
    assert buttons(question) == [f"vs:{filed.id}.1", f"vs:{filed.id}.0"]
    vote_timer = await open_timer(whistle, filed.id, "vote")
    assert (vote_timer.starts_at, vote_timer.next_at, vote_timer.due_at) == (
        local(2026, 11, 23, 10, 30), local(2026, 11, 24, 10, 30), local(2026, 11, 26, 10, 30))

    # Only the reporter may vote.
    stranger = await press(api, OTHER_RESIDENT, OTHER_RESIDENT, question["message_id"],
                           f"vs:{filed.id}.1")
    assert stranger.get("text") == "This button is no longer active."
    assert await vote_row(whistle, filed) is None

    clock.now = local(2026, 11, 23, 10, 31)
    satisfaction = await vote_solved(api, question, filed, "1")
    assert buttons(satisfaction) == [f"vq:{filed.id}.s", f"vq:{filed.id}.b", f"vq:{filed.id}.u"]
    vote = await vote_row(whistle, filed)
    assert (vote.solved, vote.satisfaction) == (True, None)
    assert (await ticket_row(whistle, filed.id)).state == "resolved"

    after = last_id(api, RESIDENT)
    answer = await press(api, RESIDENT, RESIDENT, satisfaction["message_id"], f"vq:{filed.id}.s")
    assert answer.get("text") == "Thank you!"
    prompt = await api.wait_message(RESIDENT, contains="comment", after=after)
    forced = [p for p in sent_requests(api, "sendMessage", RESIDENT) if p.get("text") == prompt["text"]]
    assert forced[-1]["reply_markup"].get("force_reply") is True
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.closed_at, ticket.unrated) == (
        "closed", local(2026, 11, 23, 10, 31), False)
    closed = await events_of(whistle, filed.id, "closed")
    assert len(closed) == 1 and closed[0].actor_id == await person_id(whistle, RESIDENT)
    vote = await vote_row(whistle, filed)
    assert (vote.solved, vote.satisfaction, vote.comment) == (True, "satisfied", None)
    assert [t.stage for t in await timers(whistle, filed.id, "vote")] == ["done"]

    after = last_id(api, RESIDENT)
    api.user_sends_text(RESIDENT, RESIDENT, "Very quick, thank you")
    await api.wait_message(RESIDENT, contains="Comment recorded", after=after)
    assert (await vote_row(whistle, filed)).comment == "Very quick, thank you"

    # No reminder for a ticket that has its verdict.
    assert (await sweep_at(whistle, clock, local(2026, 11, 24, 10, 30))).timers == 0
    assert (await sweep_at(whistle, clock, local(2026, 11, 26, 10, 30))).closed_unrated == 0


# ---- not solved / not satisfied: reopened to the assignee --------------------------------------

async def test_not_solved_reopens_the_ticket_to_its_assignee(whistle, api, staff, clock):
    filed = await claimed_report(api, whistle)
    clock.now = local(2026, 11, 23, 10, 30)
    question = await resolve(api, whistle, filed)
    clock.now = local(2026, 11, 23, 11, 0)
    after_grid = last_id(api, G01_CHAT)
    satisfaction = await vote_solved(api, question, filed, "0")
    await press(api, RESIDENT, RESIDENT, satisfaction["message_id"], f"vq:{filed.id}.b")

    ticket = await ticket_row(whistle, filed.id)
    chief = await person_id(whistle, CHIEF_G01)
    assert (ticket.state, ticket.assignee_id, ticket.reopens, ticket.level) == (
        "reopened", chief, 1, "grid")
    assert ticket.resolved_at is None
    told = group_text(whistle, "🔁 #{number} was reopened: the resident says it is not solved.",
                      number=filed.number)
    await api.wait_message(G01_CHAT, contains=told, after=after_grid)
    # A new resolve deadline of 5 working days from the reopening.
    resolve_timer = await open_timer(whistle, filed.id, "resolve")
    assert (resolve_timer.stage, resolve_timer.starts_at, resolve_timer.due_at) == (
        "running", local(2026, 11, 23, 11, 0), local(2026, 11, 30, 11, 0))
    assert ticket.resolve_due_at == resolve_timer.due_at
    assert [t.stage for t in await timers(whistle, filed.id, "vote")] == ["done"]
    vote = await vote_row(whistle, filed)
    assert (vote.solved, vote.satisfaction) == (False, "basic")
    # The card is the assignee's working card again.
    card = await api.wait_for(lambda: f"resolve:{filed.id}" in buttons(
        api.message(G01_CHAT, filed.card["message_id"])) and api.message(G01_CHAT, filed.card["message_id"]))
    assert f"progress:{filed.id}" in buttons(card)


async def test_not_solved_alone_is_never_closed_as_unrated(whistle, api, staff, clock):
    """The resident presses "❌ Not solved" and leaves the satisfaction question unanswered:
    the verdict "not solved" must reopen the ticket (votes.py: '"Not solved" or "not
    satisfied" reopens the ticket'), not leave it resolved to be closed as unrated."""
    filed = await claimed_report(api, whistle)
    clock.now = local(2026, 11, 23, 10, 30)
    question = await resolve(api, whistle, filed)
    await vote_solved(api, question, filed, "0")
    assert (await vote_row(whistle, filed)).solved is False

    await sweep_at(whistle, clock, local(2026, 11, 24, 10, 30))
    await sweep_at(whistle, clock, local(2026, 11, 26, 10, 30))
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.unrated) == ("reopened", False), (
        f"resident said 'not solved', yet the ticket is {ticket.state} (unrated={ticket.unrated})")


async def test_not_satisfied_reopens_and_a_second_reopen_escalates(whistle, api, staff, clock):
    filed = await claimed_report(api, whistle)
    clock.now = local(2026, 11, 23, 10, 30)
    question = await resolve(api, whistle, filed)
    satisfaction = await vote_solved(api, question, filed, "1")
    after_grid = last_id(api, G01_CHAT)
    await press(api, RESIDENT, RESIDENT, satisfaction["message_id"], f"vq:{filed.id}.u")
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.reopens, ticket.escalations) == ("reopened", 1, 0)
    await api.wait_message(G01_CHAT, contains=group_text(
        whistle, "🔁 #{number} was reopened: the resident says it is not solved.",
        number=filed.number), after=after_grid)

    # The chief resolves again; the resident is asked again and is still not satisfied.
    clock.now = local(2026, 11, 24, 10, 0)
    question = await resolve(api, whistle, filed, "已再次清运并加派保洁")
    satisfaction = await vote_solved(api, question, filed, "1")
    await press(api, RESIDENT, RESIDENT, satisfaction["message_id"], f"vq:{filed.id}.u")

    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.reopens, ticket.escalations, ticket.level, ticket.unit_id,
            ticket.assignee_id) == ("escalated", 2, 1, "community", await unit_id(whistle, "c1"), None)
    await wait_card(api, C1_CHAT, filed.id, prefix="claim:")
    assert await event_kinds(whistle, filed.id) == [
        "created", "claimed", "resolved", "reopened", "resolved", "reopened", "escalated"]
    assert (await events_of(whistle, filed.id, "escalated"))[0].actor_id is None
    claim_t = await open_timer(whistle, filed.id, "claim")
    assert claim_t.unit_id == await unit_id(whistle, "c1")
    assert (await open_timer(whistle, filed.id, "resolve")).unit_id == claim_t.unit_id


# ---- no answer: a reminder, then closed as unrated -----------------------------------------------

async def test_no_vote_gets_a_reminder_after_24h_and_closes_unrated_after_72h(whistle, api, staff, clock):
    filed = await claimed_report(api, whistle)
    clock.now = local(2026, 11, 23, 10, 30)
    await resolve(api, whistle, filed)

    assert (await sweep_at(whistle, clock, local(2026, 11, 24, 10, 29))).timers == 0
    after = last_id(api, RESIDENT)
    result = await sweep_at(whistle, clock, local(2026, 11, 24, 10, 30))
    assert (result.timers, result.closed_unrated) == (1, 0)
    reminder = await api.wait_message(RESIDENT, contains="Reminder", after=after)
    assert filed.number in reminder["text"]
    assert buttons(reminder) == [f"vs:{filed.id}.1", f"vs:{filed.id}.0"]
    vote_timer = await open_timer(whistle, filed.id, "vote")
    assert (vote_timer.stage, vote_timer.next_at) == ("warned", local(2026, 11, 26, 10, 30))
    assert (await ticket_row(whistle, filed.id)).state == "resolved"

    assert (await sweep_at(whistle, clock, local(2026, 11, 26, 10, 29))).timers == 0
    result = await sweep_at(whistle, clock, local(2026, 11, 26, 10, 30))
    assert result.closed_unrated == 1
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.unrated, ticket.closed_at) == (
        "closed", True, local(2026, 11, 26, 10, 30))
    closed = await events_of(whistle, filed.id, "closed")
    assert len(closed) == 1 and closed[0].actor_id is None and closed[0].data == {"unrated": True}
    assert await vote_row(whistle, filed) is None  # unrated is never counted as a vote
    await wait_sent(whistle, api)
    assert len([m for m in api.bot_messages(RESIDENT) if "Reminder" in body(m)]) == 1
    assert (await sweep_at(whistle, clock, local(2026, 11, 27, 10, 30))).timers == 0


async def test_vote_reminder_due_at_night_waits_for_the_morning(whistle, api, staff, clock):
    clock.now = local(2026, 11, 23, 22, 30)
    filed = await claimed_report(api, whistle)
    await resolve(api, whistle, filed)
    after = last_id(api, RESIDENT)
    result = await sweep_at(whistle, clock, local(2026, 11, 24, 22, 30))
    assert (result.timers, result.held_quiet) == (1, 1)
    vote_timer = await open_timer(whistle, filed.id, "vote")
    assert (vote_timer.stage, vote_timer.next_at) == ("running", local(2026, 11, 25, 7, 0))
    result = await sweep_at(whistle, clock, local(2026, 11, 25, 7, 0))
    assert result.held_quiet == 0
    reminder = await api.wait_message(RESIDENT, contains="Reminder", after=after)
    assert filed.number in reminder["text"]


# ---- changing a vote ----------------------------------------------------------------------------

async def _satisfied(api, whistle, clock):
    filed = await claimed_report(api, whistle)
    clock.now = local(2026, 11, 23, 10, 30)
    question = await resolve(api, whistle, filed)
    clock.now = local(2026, 11, 23, 10, 31)
    satisfaction = await vote_solved(api, question, filed, "1")
    await press(api, RESIDENT, RESIDENT, satisfaction["message_id"], f"vq:{filed.id}.s")
    assert (await ticket_row(whistle, filed.id)).state == "closed"
    return filed, satisfaction


async def test_vote_can_be_changed_within_14_days(whistle, api, staff, clock):
    filed, satisfaction = await _satisfied(api, whistle, clock)
    clock.now = local(2026, 12, 7, 10, 30)  # 13 days 23 hours 59 minutes later
    answer = await press(api, RESIDENT, RESIDENT, satisfaction["message_id"], f"vq:{filed.id}.u")
    assert not answer.get("show_alert"), answer
    vote = await vote_row(whistle, filed)
    assert (vote.solved, vote.satisfaction, vote.updated_at) == (
        True, "unsatisfied", local(2026, 12, 7, 10, 30))
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.reopens, ticket.closed_at) == ("reopened", 1, None)
    assert await count(whistle, Vote, Vote.ticket_id == filed.id) == 1


async def test_vote_change_is_refused_after_14_days(whistle, api, staff, clock):
    filed, satisfaction = await _satisfied(api, whistle, clock)
    clock.now = local(2026, 12, 7, 10, 32)  # 14 days and a minute after the vote
    answer = await press(api, RESIDENT, RESIDENT, satisfaction["message_id"], f"vq:{filed.id}.u")
    assert answer.get("show_alert") is True
    assert answer.get("text") == "The time to change this vote has passed."
    vote = await vote_row(whistle, filed)
    assert (vote.satisfaction, vote.updated_at) == ("satisfied", local(2026, 11, 23, 10, 31))
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.reopens) == ("closed", 0)


# ---- a second resolution after a reopen ----------------------------------------------------------

async def test_silence_after_a_second_resolution_lets_the_standing_vote_count(whistle, api, staff, clock):
    """The resident said "not solved", the grid resolved again, and the resident is asked
    again but stays silent: the ticket closes on the vote that stands, not as "unrated"
    (which means: no vote at all)."""
    filed = await claimed_report(api, whistle)
    clock.now = local(2026, 11, 23, 10, 30)
    question = await resolve(api, whistle, filed)
    await vote_solved(api, question, filed, "0")
    assert (await ticket_row(whistle, filed.id)).state == "reopened"

    clock.now = local(2026, 11, 24, 10, 0)
    again = await resolve(api, whistle, filed, "已再次清运并加派保洁")  # asked again
    assert buttons(again) == [f"vs:{filed.id}.1", f"vs:{filed.id}.0"]
    assert (await sweep_at(whistle, clock, local(2026, 11, 25, 10, 0))).closed_unrated == 0
    result = await sweep_at(whistle, clock, local(2026, 11, 27, 10, 0))
    assert result.closed_unrated == 0
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.unrated) == ("closed", False)
    closed = await events_of(whistle, filed.id, "closed")
    assert len(closed) == 1 and closed[0].data != {"unrated": True}
    vote = await vote_row(whistle, filed)
    assert (vote.solved, vote.satisfaction) == (False, None)  # it stands, and counts


async def test_a_second_resolution_opens_the_vote_again_after_the_change_window(whistle, api, staff, clock):
    """The question after a second resolution can be answered even when the first vote is
    older than the window for changing it: it is a new question."""
    filed = await claimed_report(api, whistle)
    clock.now = local(2026, 11, 23, 10, 30)
    question = await resolve(api, whistle, filed)
    satisfaction = await vote_solved(api, question, filed, "1")
    await press(api, RESIDENT, RESIDENT, satisfaction["message_id"], f"vq:{filed.id}.u")
    assert (await ticket_row(whistle, filed.id)).state == "reopened"

    clock.now = local(2026, 12, 14, 10, 0)  # three weeks later
    again = await resolve(api, whistle, filed, "已彻底清理")
    satisfaction = await vote_solved(api, again, filed, "1")  # not "the time has passed"
    answer = await press(api, RESIDENT, RESIDENT, satisfaction["message_id"], f"vq:{filed.id}.s")
    assert not answer.get("show_alert"), answer
    vote = await vote_row(whistle, filed)
    assert (vote.solved, vote.satisfaction) == (True, "satisfied")
    assert (await ticket_row(whistle, filed.id)).state == "closed"
    assert await count(whistle, Vote, Vote.ticket_id == filed.id) == 1
