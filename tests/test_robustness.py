"""When things go wrong: Telegram's 429, 403 and chat migrations as the outbox sender
meets them, per-chat order, a briefly locked SQLite database, malformed or odd
updates, over-long and unusual texts, and stopping while messages are in flight."""
from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import timedelta

import asyncpg
from sqlalchemy import select

from flows import (
    G01_CHAT, ask_note, buttons, card_now, claim, events, file_report, has_button,
    identity, last_id, outbox, press, reply_note, ticket_row, wait_card,
)
from models.store.db import Database
from models.messages.outbox import OutMessage, Target, enqueue
from models.store.tables import ChatBinding, Dialogue, Identity, Outbox, Ticket


def errors(caplog) -> list[str]:
    """ERROR records from the service (an update handler or the sender failed)."""
    return [f"{r.name}: {r.getMessage()} {r.exc_info[1]!r}" if r.exc_info else f"{r.name}: {r.getMessage()}"
            for r in caplog.records if r.levelno >= logging.ERROR and not r.name.startswith("aiohttp")]


def sent_to(api, method: str, chat_id: int) -> list[dict]:
    return [p for name, p in api.requests if name == method and str(p.get("chat_id")) == str(chat_id)]


async def sender_settled(whistle) -> None:
    """The sender finished its pass (call after seeing that pass's request at the API)."""
    await asyncio.wait_for(whistle.sender.idle.wait(), 5)


# ---- 11. the sender ----------------------------------------------------------------------

async def test_429_is_retried_after_the_pause_and_order_is_kept(whistle, api, people, clock):
    people(9001, "Li Si", language="en")
    api.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    api.user_sends_text(9001, 9001, "/start")
    await api.wait_for(lambda: sent_to(api, "sendMessage", 9001))
    await sender_settled(whistle)

    rows = await outbox(whistle, 9001)
    assert len(rows) == 2  # the welcome and the category prompt
    first, second = rows
    assert first.state == "pending" and "rate limited" in (first.error or "")
    assert first.next_try_at == clock.now + timedelta(seconds=1)
    assert first.attempts == 0  # Telegram said when: not counted as a failed attempt
    assert second.state == "pending"
    assert api.bot_messages(9001) == []  # the second did not overtake the first

    clock.advance(seconds=2)
    whistle.sender.wake()
    prompt = await api.wait_message(9001, predicate=has_button("cat:"))
    welcome = await api.wait_message(9001, contains="Welcome")
    assert welcome["message_id"] < prompt["message_id"]
    await api.wait_for(lambda: len(sent_to(api, "sendMessage", 9001)) == 3)
    await sender_settled(whistle)
    assert [r.state for r in await outbox(whistle, 9001)] == ["sent", "sent"]


async def test_403_blocked_resident_is_marked_and_other_chats_still_flow(whistle, api, people):
    resident = people(9001, "Li Si", language="en")
    people(1001, "王建国")
    filed = await file_report(api, whistle, resident)
    rows_before = len(await outbox(whistle, 9001))
    api.block_user(9001)

    await claim(api, 1001, filed)
    await api.wait_for(lambda: len(sent_to(api, "sendMessage", 9001)) > rows_before)
    await sender_settled(whistle)
    rows = await outbox(whistle, 9001)
    assert rows[-1].state == "failed" and "blocked" in (rows[-1].error or ""), rows[-1].error
    assert (await identity(whistle, 9001)).blocked is True
    claimed = await api.wait_for(lambda: "claim:" not in str(buttons(card_now(api, G01_CHAT, filed)))
                                 and card_now(api, G01_CHAT, filed))
    assert f"progress:{filed.id}" in buttons(claimed)

    # later messages to other chats flow; nothing more is queued for the blocked resident
    prompt = await ask_note(api, 1001, G01_CHAT, filed.card["message_id"], f"progress:{filed.id}",
                            filed.number)
    await reply_note(api, 1001, G01_CHAT, prompt, "The truck is on its way")
    assert len(await outbox(whistle, 9001)) == len(rows)
    assert (await ticket_row(whistle, filed.id)).state == "in_progress"

    # writing to the bot again means they unblocked it
    api.unblock_user(9001)
    after = last_id(api, 9001)
    api.user_sends_text(9001, 9001, "/start")
    await api.wait_message(9001, after=after, contains="Welcome")
    assert (await identity(whistle, 9001)).blocked is False


async def test_group_migration_moves_the_binding_and_delivers_the_card(whistle, api, people):
    resident = people(9001, "Li Si", language="en")
    people(1001, "王建国")
    new_chat = -1000000100101
    api.group_migrates(G01_CHAT, new_chat)

    filed = await file_report(api, whistle, resident, card_chat=None)
    card = await wait_card(api, new_chat, filed.id, prefix="claim:")
    assert filed.number in card["text"]
    assert any("location" in m for m in api.bot_messages(new_chat))

    chats = set(await whistle.db.run(lambda s: s.scalars(select(ChatBinding.chat_id))))
    assert str(new_chat) in chats and str(G01_CHAT) not in chats
    assert await outbox(whistle, G01_CHAT) == []  # queued rows moved along with the chat

    # the chat works under its new id: claim there, the card is edited there
    answer = await press(api, 1001, new_chat, card["message_id"], f"claim:{filed.id}")
    assert filed.number in answer["text"]
    await api.wait_for(lambda: f"progress:{filed.id}" in buttons(api.message(new_chat, card["message_id"])))
    await sender_settled(whistle)
    assert {r.state for r in await outbox(whistle, new_chat)} == {"sent"}


async def test_an_unchanged_card_edit_is_not_a_failure(whistle, api, people):
    """A second progress note leaves the card as it was; Telegram answers "message is not
    modified", which the channel means to treat as done (bot.telegram.channel.NOT_MODIFIED)."""
    resident = people(9001, "Li Si", language="en")
    people(1001, "王建国")
    filed = await file_report(api, whistle, resident)
    await claim(api, 1001, filed)
    for note in ("Truck ordered", "Truck arrives at 3 pm"):
        prompt = await ask_note(api, 1001, G01_CHAT, filed.card["message_id"],
                                f"progress:{filed.id}", filed.number)
        await reply_note(api, 1001, G01_CHAT, prompt, note)
        await api.wait_message(resident.id, contains=note)
    await api.wait_idle()
    await sender_settled(whistle)
    failed = [(r.id, r.error) for r in await outbox(whistle, G01_CHAT) if r.state != "sent"]
    assert failed == []


async def test_a_deleted_card_is_posted_again_when_the_ticket_changes(whistle, api, people):
    """An admin deleted the card; when the ticket changes, the edit finds no message and the
    channel means to post the card anew (bot.telegram.channel.EDIT_GONE), buttons and all."""
    resident = people(9001, "Li Si", language="en")
    people(1001, "王建国")
    filed = await file_report(api, whistle, resident)
    await whistle.application.bot.delete_message(G01_CHAT, filed.card["message_id"])
    await claim(api, 1001, filed)  # pressed on the card as the client still shows it
    assert (await ticket_row(whistle, filed.id)).state == "claimed"
    card = await api.wait_message(G01_CHAT, after=filed.card["message_id"],
                                  predicate=has_button(f"progress:{filed.id}"))
    assert filed.number in card["text"]


def _kind(payload: dict) -> str:
    if payload.get("photos"):
        return "photo"
    if payload.get("location"):
        return "location"
    return "text"


async def test_per_chat_order_survives_a_held_message(whistle, api, people, clock):
    """The card's location is rate limited: the card waits behind it, while the
    resident's own chat goes on; afterwards the chat shows photo, location, card."""
    resident = people(9001, "Li Si", language="en")
    api.fail_next("sendLocation", 429, "Too Many Requests: retry after 5", retry_after=5)
    filed = await file_report(api, whistle, resident, photos=2, card_chat=None)  # confirmed meanwhile
    await api.wait_for(lambda: sent_to(api, "sendLocation", G01_CHAT))
    await sender_settled(whistle)
    assert all("location" not in m and not buttons(m) for m in api.bot_messages(G01_CHAT))

    clock.advance(seconds=6)
    whistle.sender.wake()
    await wait_card(api, G01_CHAT, filed.id)
    await sender_settled(whistle)
    rows = [r for r in await outbox(whistle, G01_CHAT) if not r.payload.get("edit")]
    assert {r.state for r in rows} == {"sent"}
    shown = []
    for message in api.bot_messages(G01_CHAT):  # message ids are in arrival order
        kind = "photo" if "photo" in message else "location" if "location" in message else "text"
        if kind == "photo" and shown and shown[-1] == "photo" and message.get("media_group_id"):
            continue  # one album is one outbox row
        shown.append(kind)
    assert shown == [_kind(r.payload) for r in rows] == ["photo", "location", "text"]


# ---- 12. a briefly locked database -----------------------------------------------------------

async def test_briefly_locked_database_loses_nothing(whistle, api, people, database_url):
    """Another connection holds a write lock for a bounded second — SQLite's database lock
    (BEGIN IMMEDIATE), or on PostgreSQL an exclusive lock on the identity table every
    update touches: the updates wait, then are all handled, in order."""
    people(9001, "Li Si", language="en")
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1]
        blocker = sqlite3.connect(path, isolation_level=None, timeout=5, check_same_thread=False)
        lock, unlock = "BEGIN IMMEDIATE", "COMMIT"
        run = blocker.execute
    else:
        blocker = await asyncpg.connect(database_url.replace("+asyncpg", ""))
        lock, unlock = "BEGIN; LOCK TABLE identity IN ACCESS EXCLUSIVE MODE", "COMMIT"
        run = None
    try:
        if run:
            await asyncio.to_thread(run, lock)
        else:
            await blocker.execute(lock)
        api.user_sends_text(9001, 9001, "/start")
        api.user_sends_text(9001, 9001, "/help")
        await asyncio.sleep(1.0)  # hold the write lock for a bounded second
        assert api.bot_messages(9001) == []
    finally:
        if run:
            await asyncio.to_thread(run, unlock)
        else:
            await blocker.execute(unlock)
        await asyncio.to_thread(blocker.close) if run else await blocker.close()
    welcome = await api.wait_message(9001, contains="Welcome")
    prompt = await api.wait_message(9001, predicate=has_button("cat:"))
    helptext = await api.wait_message(9001, contains="/my")
    assert welcome["message_id"] < prompt["message_id"] < helptext["message_id"]
    step = await whistle.db.run(lambda s: s.scalar(select(Dialogue.step).join(
        Identity, Identity.person_id == Dialogue.person_id).where(Identity.external_id == "9001")))
    assert step == "category"


# ---- 13. malformed and unusual updates --------------------------------------------------------

def _user(user_id: int) -> dict:
    return {"id": user_id, "is_bot": False, "first_name": "Li", "language_code": "en"}


def _private(user_id: int) -> dict:
    return {"id": user_id, "type": "private", "first_name": "Li"}


async def _still_answers(api, user_id: int) -> None:
    after = last_id(api, user_id)
    api.user_sends_text(user_id, user_id, "/start")
    await api.wait_message(user_id, after=after, contains="Welcome")


async def test_an_update_ptb_cannot_parse_does_not_stop_the_bot(whistle, api, people, caplog):
    """PTB parses a getUpdates batch at once; one update of a shape it does not know
    (here a message whose date is not a number, and a poll missing required fields)
    must not fail every later getUpdates: it is skipped, the rest are handled."""
    people(9001, "Li Si", language="en")
    user = _user(9001)
    api.enqueue_update({"message": {"message_id": 90101, "date": "yesterday",
                                    "chat": _private(9001), "from": user, "text": "x"}})
    api.enqueue_update({"poll": {"id": "p1", "question": "?"}})
    api.enqueue_update({"update_id": "not-a-number", "message": {}})
    await _still_answers(api, 9001)
    await _still_answers(api, 9001)  # and it goes on answering
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("could not be parsed" in r.getMessage() for r in caplog.records)


async def test_malformed_updates_are_ignored(whistle, api, people, caplog):
    resident = people(9001, "Li Si", language="en")
    people(1001, "王建国")
    filed = await file_report(api, whistle, resident)
    user = _user(9001)
    bot = {"id": 1087968824, "is_bot": True, "first_name": "Group", "username": "GroupAnonymousBot"}
    group = {"id": G01_CHAT, "type": "group", "title": "g01"}
    card_msg = api.message(G01_CHAT, filed.card["message_id"])
    updates = [
        {"message": {"message_id": 90001, "date": 1, "chat": _private(9001), "text": "/start"}},  # no from
        {"message": {"message_id": 90002, "date": 1, "chat": group, "sender_chat": group,
                     "from": bot, "text": "anonymous admin", "reply_to_message": card_msg}},
        {"callback_query": {"id": "q-no-message", "from": user, "chat_instance": "ci",
                            "data": f"claim:{filed.id}"}},  # an inline-mode query: no message
        {"callback_query": {"id": "q-no-data", "from": user, "chat_instance": "ci",
                            "message": card_msg, "game_short_name": "x"}},  # no data
        {"edited_message": {"message_id": 90003, "date": 1, "edit_date": 2, "chat": _private(9001),
                            "from": user, "text": "edited"}},
        {"channel_post": {"message_id": 90004, "date": 1, "text": "post",
                          "chat": {"id": -100777, "type": "channel", "title": "c"}}},
        {"my_chat_member": {"chat": group, "from": user, "date": 1,
                            "old_chat_member": {"status": "member", "user": user},
                            "new_chat_member": {"status": "left", "user": user}}},
        {"something_new": {"x": 1}},
        {},  # an update of no known kind at all
        {"message": {"message_id": 90005, "date": 1, "chat": _private(9001), "from": user,
                     "dice": {"emoji": "🎲", "value": 3}}},
        {"message": {"message_id": 90006, "date": 1, "chat": group, "from": user,
                     "new_chat_members": [user]}},
    ]
    for update in updates:
        api.enqueue_update(update)
    await api.wait_idle()
    await _still_answers(api, 9001)
    assert errors(caplog) == []
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.assignee_id) == ("routed", None)
    assert await events(whistle, filed.id) == ["created"]


LONG = "x" * 4096
ODD = [
    "\u200f\u200fمرحبا عالم\u200f — RTL marks around Arabic",
    "Family 👨\u200d👩\u200d👧\u200d👦, flag 🇨🇳, skin tone 👍🏽, keycap 1️⃣",
    "zero\u200dwidth\u200bjoiners\u2060and\ufeffBOM",
    "e\u0301\u0301\u0301 combining marks, \u202eoverride\u202c",
    "/ spaced",
]


async def test_long_and_odd_texts_at_every_intake_step(whistle, api, people, caplog):
    """Every step of the dialogue gets a 4096-character text and unusual Unicode; each is
    answered, the dialogue stays where it was, and the report still goes through."""
    people(9001, "Li Si", language="en")
    me = 9001

    async def poke(text: str) -> None:
        after = last_id(api, me)
        api.user_sends_text(me, me, text)
        await api.wait_message(me, after=after)
        await api.wait_idle()  # an answer in two messages: the second one too

    async def step() -> str | None:
        return await whistle.db.run(lambda s: s.scalar(select(Dialogue.step).join(
            Identity, Identity.person_id == Dialogue.person_id).where(Identity.external_id == str(me))))

    async def batter(expected_step: str | None) -> None:
        for text in [LONG, *ODD]:
            await poke(text)
            assert await step() == expected_step, (text[:20], expected_step)

    await batter(None)
    after = last_id(api, me)
    api.user_sends_text(me, me, "/start")
    msg = await api.wait_message(me, after=after, predicate=has_button("cat:"))
    await batter("category")
    after = last_id(api, me)
    api.user_presses(me, me, msg["message_id"], "cat:road")
    await api.wait_message(me, after=after)
    await poke(LONG)  # description step: too long, refused
    assert await step() == "description"
    description = ODD[1] + " " + ODD[0]
    after = last_id(api, me)
    api.user_sends_text(me, me, description)
    msg = await api.wait_message(me, after=after, predicate=has_button("ph:"))
    await batter("photos")
    after = last_id(api, me)
    api.user_presses(me, me, msg["message_id"], "ph:done")
    await api.wait_message(me, after=after, predicate=has_button("lc:"))
    await poke(LONG)  # location step: an address of 4096 characters is refused
    assert await step() == "location"
    after = last_id(api, me)
    api.user_sends_location(me, me, 39.93524, 116.40107)
    await api.wait_message(me, after=after, contains="contact you")
    await batter("contact")
    after = last_id(api, me)
    api.user_sends_text(me, me, "🙈 Stay anonymous")
    msg = await api.wait_message(me, after=after, predicate=has_button("cf"))
    await batter("confirm")
    msg = [m for m in api.bot_messages(me) if "cf" in buttons(m)][-1]
    after = last_id(api, me)
    api.user_presses(me, me, msg["message_id"], "cf")
    done = await api.wait_message(me, after=after, contains="ticket number is")
    number = done["text"].split("ticket number is ")[1].split(".")[0]
    ticket = await whistle.db.run(lambda s: s.scalar(select(Ticket).where(Ticket.number == number)))
    assert ticket.description == description.strip()
    card = await wait_card(api, G01_CHAT, ticket.id)
    assert ODD[1] in card["text"]
    assert errors(caplog) == []


async def test_long_and_odd_staff_notes(whistle, api, people, caplog):
    resident = people(9001, "Li Si", language="en")
    people(1001, "王建国")
    filed = await file_report(api, whistle, resident)
    await claim(api, 1001, filed)
    prompt = await ask_note(api, 1001, G01_CHAT, filed.card["message_id"], f"progress:{filed.id}",
                            filed.number)
    for text in [LONG, *ODD[:4]]:
        await reply_note(api, 1001, G01_CHAT, prompt, text)
        if text is not LONG:
            await api.wait_message(resident.id, contains=text)
        prompt = await ask_note(api, 1001, G01_CHAT, filed.card["message_id"], f"progress:{filed.id}",
                                filed.number)
    assert (await events(whistle, filed.id)).count("progress") == 4  # the 4096 one was refused
    assert errors(caplog) == []


async def test_a_lone_slash_is_answered(whistle, api, people, caplog):
    """"/" alone (or "/ ") is a text Telegram delivers; it must not crash the handler."""
    people(9001, "Li Si", language="en")
    for text in ("/", "/ "):
        after = last_id(api, 9001)
        api.user_sends_text(9001, 9001, text)
        await api.wait_message(9001, after=after)
    assert errors(caplog) == []


async def test_a_long_history_still_reaches_the_resident(whistle, api, people):
    """/my → a report's timeline lists every progress note in full; with a few long notes
    (each within max_note) the timeline must still be delivered, not refused by Telegram."""
    resident = people(9001, "Li Si", language="en")
    people(1001, "王建国")
    filed = await file_report(api, whistle, resident)
    await claim(api, 1001, filed)
    for i in range(5):
        prompt = await ask_note(api, 1001, G01_CHAT, filed.card["message_id"], f"progress:{filed.id}",
                                filed.number)
        await reply_note(api, 1001, G01_CHAT, prompt, f"Update {i}: " + "details " * 110)
    after = last_id(api, 9001)
    api.user_sends_text(9001, 9001, "/my")
    listing = await api.wait_message(9001, after=after, predicate=has_button("my:"))
    after = last_id(api, 9001)
    api.user_presses(9001, 9001, listing["message_id"], f"my:{filed.id}")
    await api.wait_idle()
    await sender_settled(whistle)
    failed = [r.error for r in await outbox(whistle, 9001) if r.state != "sent"]
    assert failed == [], failed
    await api.wait_message(9001, after=after, contains=filed.number)
    await api.wait_message(9001, after=after, contains="Update 4")  # the parts come one by one
    parts = [m["text"] for m in api.bot_messages(9001) if m["message_id"] > after]
    assert len(parts) > 1  # too long for one message: delivered in parts, in order
    assert all(f"Update {i}" in "\n".join(parts) for i in range(5))
    assert "\n".join(parts).index("Update 0") < "\n".join(parts).index("Update 4")


async def test_card_fits_with_long_emoji_description_and_resolution(whistle, api, people):
    """Limits are counted in characters, Telegram counts UTF-16 units: a description and a
    resolution at their limits in emoji must still give a card Telegram accepts."""
    resident = people(9001, "Li Si", language="en")
    people(1001, "王建国")
    limits = whistle.config.intake
    filed = await file_report(api, whistle, resident, description="😀" * limits.max_description)
    await claim(api, 1001, filed)
    prompt = await ask_note(api, 1001, G01_CHAT, filed.card["message_id"], f"resolve:{filed.id}",
                            filed.number)
    await reply_note(api, 1001, G01_CHAT, prompt, "🧹" * limits.max_note)
    assert (await ticket_row(whistle, filed.id)).state == "resolved"
    await api.wait_idle()
    await sender_settled(whistle)
    failed = [r.error for r in await outbox(whistle, G01_CHAT) if r.state != "sent"]
    assert failed == [], failed
    assert buttons(card_now(api, G01_CHAT, filed)) == []


# ---- stopping ---------------------------------------------------------------------------------

async def test_idle_sender_does_not_spin(whistle, api):
    """With nothing to send, the sender looks for work about once a second (its wake-up
    timeout), not in a busy loop (it used to wake itself: every Database.run, its own
    read-only due_rows() included, called the on-commit callbacks)."""
    await api.wait_idle()
    passes = 0
    due_rows = whistle.sender.due_rows

    async def counting():
        nonlocal passes
        passes += 1
        return await due_rows()
    whistle.sender.due_rows = counting
    loop = asyncio.get_running_loop()
    started = loop.time()
    await api.wait_idle(quiet=0.5)  # nothing happens for half a second
    elapsed = loop.time() - started
    assert passes <= elapsed + 2, f"{passes} passes over the outbox in {elapsed:.1f} s while idle"


async def test_stop_while_sending(whistle, api, people):
    """Whistle.stop() must not return while the sender is still delivering, and a message
    Telegram accepted must not stay "pending" (it would be sent again after a restart)."""
    users = list(range(7000, 7100))
    for user_id in users:
        api.add_user(user_id, f"u{user_id}", language_code="en")

    async def fill(session):
        for user_id in users:
            enqueue(session, Target("telegram", str(user_id)), OutMessage(text=f"hello {user_id}"),
                    whistle.core.now())
    before = len(api.requests)
    await whistle.db.run(fill)
    await api.wait_for(lambda: any(name == "sendMessage" for name, _ in api.requests[before:]))
    stopping = asyncio.create_task(whistle.stop())
    done, _ = await asyncio.wait([stopping], timeout=15)
    hung = not done
    if hung:
        stopping.cancel()
        await asyncio.wait([stopping])
    in_flight = [t for t in asyncio.all_tasks()
                 if not t.done() and getattr(t.get_coro(), "__qualname__", "") == "Sender._send"]
    if in_flight:  # let them end on their own: cancelling them now can hang the loop's close
        await asyncio.wait(in_flight, timeout=5)

    db = Database(whistle.config.database.url)
    try:
        rows = list(await db.run(lambda s: s.scalars(select(Outbox).where(
            Outbox.chat_id.in_([str(u) for u in users])))))
    finally:
        await db.dispose()
    delivered_but_pending = [(r.chat_id, r.attempts, r.error) for r in rows
                             if r.state == "pending" and api.bot_messages(int(r.chat_id))]
    assert (hung, len(in_flight), len(delivered_but_pending)) == (False, 0, 0), (
        f"Whistle.stop() {'hung' if hung else 'returned'}; {len(in_flight)} sends were still running, and "
        f"{len(delivered_but_pending)} messages Telegram accepted were left pending "
        f"(they would be sent again after a restart): {delivered_but_pending[:3]}")


async def test_a_redelivered_update_is_handled_once(whistle, api, people):
    """The same update twice (a webhook retried, a second process): the inbox row written
    with the first one's effects makes the second do nothing."""
    from models.inputs import Input, Sender
    people(9001, "Li")  # the private chat exists on the fake server
    start = Input(sender=Sender("telegram", "9001", "Li"), chat=Target("telegram", "9001"),
                  private=True, kind="command", command="start", text="/start",
                  dedupe_key="123456:777")
    first = await whistle.handle(start)
    await api.wait_message(9001)
    await api.wait_idle()
    answered = len(api.bot_messages(9001))
    again = await whistle.handle(start)
    assert (first.duplicate, again.duplicate) == (False, True)
    await api.wait_idle()
    assert len(api.bot_messages(9001)) == answered
    other = Input(sender=start.sender, chat=start.chat, private=True, kind="command",
                  command="start", text="/start", dedupe_key="123456:778")
    assert (await whistle.handle(other)).duplicate is False
