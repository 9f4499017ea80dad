"""Abuse limits and the ban list: a resident over ``messages_per_minute`` is told once
per minute and otherwise ignored, ``reports_per_hour`` refuses new reports politely,
staff are never limited; ``/ban`` and ``/unban`` by staff above the ticket's unit act on
its reporter, are audited on the ticket, and a banned resident's reports are refused.
A flood from one chat does not hold up another."""
from __future__ import annotations

import asyncio

from sqlalchemy import select

from chat import Resident, body
from flows import C1_CHAT, G01_CHAT, file_report, has_button, last_id, photo_bytes
from models.store.tables import Ban, Identity, RateCounter, TicketEvent

TOO_FAST = "too fast"
BANNED = "can no longer file reports"


async def bot_texts_after(api, chat: int, after: int) -> list[str]:
    await api.wait_idle()
    return [body(m) for m in api.bot_messages(chat) if m["message_id"] > after]


# ---- messages per minute ---------------------------------------------------------------------

async def test_over_the_message_limit_one_polite_answer_per_minute(whistle, api, people, clock):
    whistle.config.limits.messages_per_minute = 5
    people(9001, "Li Si", language="en")
    me = Resident(api, 9001)
    for _ in range(5):
        await me.text("/help", "/my")
    after = me.last_id()
    for _ in range(4):
        api.user_sends_text(9001, 9001, "/help")
    await api.wait_message(9001, after=after, contains=TOO_FAST)
    for _ in range(100):  # all four handled (each one counted)
        if await counts(whistle) == [9]:
            break
        await asyncio.sleep(0.05)
    texts = await bot_texts_after(api, 9001, after)
    assert len(texts) == 1 and TOO_FAST in texts[0]  # told once; the rest is ignored

    clock.advance(minutes=1)  # a new minute: answered again
    await me.text("/help", "/my")
    assert await counts(whistle) == [1, 9]


def downloads(api) -> int:
    """Files the bot asked the fake Bot API for (each download starts with getFile)."""
    return sum(1 for method, _ in api.requests if method.lower() == "getfile")


async def at_the_photos_step(api, user_id: int) -> Resident:
    me = Resident(api, user_id)
    prompt = await me.text("/start", "Welcome", "Choose a category")
    await me.press(prompt, "cat:garbage", "Describe the problem")
    await me.text("The bins at the gate overflow again.", "Send up to 3 photos")
    return me


async def test_over_the_message_limit_photos_are_not_downloaded(whistle, api, people):
    """Photos are costly (a download, a decode): over the limit they are dropped unseen."""
    whistle.config.limits.messages_per_minute = 5
    people(9001, "Li Si", language="en")
    me = await at_the_photos_step(api, 9001)  # three inputs of the minute
    await me.photo(photo_bytes(1), "Photo 1 of 3 received.")  # the fourth
    assert downloads(api) == 1
    await me.text("/help", "/my")  # the fifth
    after = me.last_id()
    for i in range(4):
        api.user_sends_photo(9001, 9001, photo_bytes(2 + i))
    await api.wait_message(9001, after=after, contains=TOO_FAST)
    for _ in range(100):  # all four handled (each one counted)
        if await counts(whistle) == [9]:
            break
        await asyncio.sleep(0.05)
    assert await counts(whistle) == [9]
    assert await bot_texts_after(api, 9001, after) == [
        "You are sending messages too fast. Please wait a minute, then try again."]
    assert downloads(api) == 1


async def counts(whistle) -> list[int]:
    counter = await whistle.db.run(lambda s: s.scalars(select(RateCounter).where(
        RateCounter.key.like("limit:msg:%"))))
    return sorted(c.count for c in counter)


async def _press(api, user_id: int, message_id: int, data: str) -> str | None:
    query = api.user_presses(user_id, user_id, message_id, data)
    answer = await api.wait_for(lambda: api.callback_answers.get(query))
    return answer.get("text")


async def test_buttons_count_too_and_are_answered_by_an_alert(whistle, api, people):
    whistle.config.limits.messages_per_minute = 2
    people(9001, "Li Si", language="en")
    me = Resident(api, 9001)
    await me.text("/start", "Welcome")  # the first input of the minute
    prompt = await api.wait_message(9001, predicate=has_button("cat:"))
    after = me.last_id()
    assert await _press(api, 9001, prompt["message_id"], "lang:en") is None  # the second
    await api.wait_message(9001, after=after, contains="Language set")
    assert TOO_FAST in await _press(api, 9001, prompt["message_id"], "lang:en")  # over: told
    assert await _press(api, 9001, prompt["message_id"], "lang:en") is None  # then silence
    assert await bot_texts_after(api, 9001, after) == ["Language set to English."]


async def test_staff_are_never_limited(whistle, api, people):
    whistle.config.limits.messages_per_minute = 2
    people(1001, "王建国", language="en")
    chief = Resident(api, 1001)
    for _ in range(6):
        answer = await chief.text("/help", "/my")
        assert TOO_FAST not in body(answer)


# ---- reports per hour ------------------------------------------------------------------------

async def test_reports_per_hour(whistle, api, people, clock):
    whistle.config.limits.reports_per_hour = 2
    resident = people(9001, "Li Si", language="en")
    people(1001, "王建国")
    for _ in range(2):
        await file_report(api, whistle, resident, card_chat=None)
    me = Resident(api, 9001)
    refused = await me.text("/start", "Welcome", "last hour")
    assert "2 reports" in body(refused)
    await api.wait_idle()
    assert not has_button("cat:")(api.bot_messages(9001)[-1])  # no intake started
    after = me.last_id()
    api.user_sends_text(9001, 9001, "📝 Report a problem")
    await api.wait_message(9001, after=after, contains="last hour")

    clock.advance(minutes=61)
    await file_report(api, whistle, resident, card_chat=None)  # an hour later: fine again


# ---- the ban list ----------------------------------------------------------------------------

async def _group_answer(api, user_id: int, chat: int, text: str) -> str:
    after = last_id(api, chat)
    api.user_sends_text(user_id, chat, text)
    return body(await api.wait_message(chat, after=after))


async def _banned(whistle) -> list[Ban]:
    return list(await whistle.db.run(lambda s: s.scalars(select(Ban))))


async def test_ban_and_unban_by_staff_above_the_unit(whistle, api, people):
    resident = people(9001, "Li Si", language="en")
    for staff in (1001, 2001, 4001):
        people(staff, f"staff {staff}")
    filed = await file_report(api, whistle, resident)

    # the grid's own chief and a department officer are not above g01: refused
    for staff, chat in ((1001, G01_CHAT), (4001, G01_CHAT)):
        answer = await _group_answer(api, staff, chat, f"/ban {filed.number} spam")
        assert filed.number in answer
        assert await _banned(whistle) == []

    # the community secretary (c1 is above g01) bans the reporter from the community's chat
    answer = await _group_answer(api, 2001, C1_CHAT, f"/ban {filed.number} forty fake reports")
    assert filed.number in answer and "何淑珍" in answer or "staff 2001" in answer
    [ban] = await _banned(whistle)
    reporter = await whistle.db.run(lambda s: s.scalar(select(Identity.person_id).where(
        Identity.external_id == "9001")))
    assert ban.person_id == reporter and ban.reason == "forty fake reports"
    assert "9001" not in answer  # staff never see the resident's id

    again = await _group_answer(api, 2001, C1_CHAT, f"/ban {filed.number}")
    assert filed.number in again and len(await _banned(whistle)) == 1

    # the banned resident is refused politely, and sees no trace of who did it
    me = Resident(api, 9001)
    refused = await me.text("/start", "Welcome", BANNED)
    assert "何淑珍" not in body(refused)
    timeline = await me.text("/my", "Your reports")
    shown = await me.press(timeline, "my:", f"#{filed.number}")
    assert "何淑珍" not in body(shown) and "ban" not in body(shown).lower()

    # the telegram admin lifts the ban privately
    people(5001, "Admin", language="en")
    admin = Resident(api, 5001)
    lifted = await admin.text(f"/unban {filed.number}", filed.number)
    assert "may file reports again" in body(lifted)
    assert await _banned(whistle) == []
    await file_report(api, whistle, resident, card_chat=None)

    audit = await whistle.db.run(lambda s: s.execute(select(
        TicketEvent.kind, TicketEvent.actor_id, TicketEvent.note).where(
        TicketEvent.ticket_id == filed.id, TicketEvent.kind.in_(("ban", "unban")))
        .order_by(TicketEvent.id)))
    rows = list(audit)
    assert [r.kind for r in rows] == ["ban", "unban"]
    assert rows[0].note == "forty fake reports" and rows[0].actor_id != rows[1].actor_id


async def test_ban_usage_and_unknown_numbers(whistle, api, people):
    people(5001, "Admin", language="en")
    admin = Resident(api, 5001)
    for command in ("/ban", "/ban 19990101-0001", "/unban nonsense", "/ban #"):
        answer = await admin.text(command, "Usage")
        assert "/ban NUMBER" in body(answer)
    assert await _banned(whistle) == []


async def test_staff_cannot_be_banned(whistle, api, people):
    people(1001, "王建国", language="en")
    people(5001, "Admin", language="en")
    filed = await file_report(api, whistle, 1001)  # a chief reports something himself
    answer = await Resident(api, 5001).text(f"/ban {filed.number}", filed.number)
    assert "staff" in body(answer) and await _banned(whistle) == []


async def test_a_ban_stops_a_report_at_the_confirm_button(whistle, api, people):
    """Banned while a draft was open: confirming it is refused (an alert), nothing filed."""
    resident = people(9001, "Li Si", language="en")
    people(5001, "Admin", language="en")
    filed = await file_report(api, whistle, resident, card_chat=None)
    me = Resident(api, 9001)
    await me.text("/start", "Welcome")
    prompt = await api.wait_message(9001, predicate=has_button("cat:"))
    await Resident(api, 5001).text(f"/ban {filed.number}", filed.number)
    refusal = await _press(api, 9001, prompt["message_id"], "cf")
    assert BANNED in (refusal or "")
    filed_now = await whistle.db.run(lambda s: s.scalars(select(TicketEvent.ticket_id).where(
        TicketEvent.kind == "created")))
    assert list(filed_now) == [filed.id]  # only the report from before the ban


async def test_a_banned_residents_photo_is_not_downloaded(whistle, api, people):
    """Banned while a draft waits for its photos: a photo is refused unseen, a text still
    reaches the dialogue (and the report is refused at Confirm, as above)."""
    resident = people(9001, "Li Si", language="en")
    people(5001, "Admin", language="en")
    filed = await file_report(api, whistle, resident, card_chat=None)
    me = await at_the_photos_step(api, 9001)
    before = downloads(api)
    await Resident(api, 5001).text(f"/ban {filed.number}", filed.number)
    await me.photo(photo_bytes(1), BANNED)
    await me.document(photo_bytes(2), "bins.jpg", "image/jpeg", BANNED)
    assert downloads(api) == before
    await me.text("and the lid is broken", "Please send a photo, or press Skip.")


# ---- a flood in one chat ------------------------------------------------------------------------

async def test_a_flood_in_one_chat_does_not_hold_up_another(whistle, api, people):
    """150 updates from one resident are queued before a single one from another; the
    other is answered while the flood is still being worked through (chats run side by
    side; one chat's updates in order)."""
    people(9001, "Flood", language="en")
    people(9002, "Calm", language="en")
    for i in range(150):
        api.user_sends_text(9001, 9001, f"/status 2026{i:04d}-0001")
    api.user_sends_text(9002, 9002, "/help")
    await api.wait_message(9002, contains="/my", timeout=20)
    answered_flood = len(api.bot_messages(9001))
    # queued behind 150 updates that each take a transaction; waiting for a free slot
    # behind the flood (64 slots) it would come after about 86 of them
    assert answered_flood < 60, f"the other chat waited for {answered_flood} of the flood"
    await api.wait_for(lambda: len(api.bot_messages(9001)) == 150, timeout=60)
    assert all("No report with that number" in body(m) for m in api.bot_messages(9001))
