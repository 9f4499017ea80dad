"""Fuzzing the update handlers through the real Application and the fake Bot API.

A seeded generator (deterministic: the same run every time) plays residents and staff
for about two thousand updates: the right and the wrong kind of message at every
intake step, buttons from the bot's real keyboards and forged or stale callback data,
giant and odd Unicode texts (RTL, zero-width, NUL, lone surrogates, emoji), and raw
updates with missing or unexpected fields. Afterwards: no error was logged, every
ticket is consistent, every dialogue row parses, and everyone still gets answers."""
from __future__ import annotations

import asyncio
import logging
import random
import re
import time

from sqlalchemy import func, select

from flows import G01, G01_CHAT, buttons, photo_bytes
from models.intake.dialogue import STEPS
from models.lifecycle import FINAL, State
from models.store.tables import Dialogue, Outbox, Ticket, Timer, Unit

SEED = 20261122
ROUNDS = 92  # × 11 people × 2 ≈ 2,000 updates
RESIDENTS = [9101, 9102, 9103, 9104, 9105, 9106, 9107, 9108]
STAFF = [(1001, G01_CHAT), (2001, -100201), (3001, -100301)]

ODD = [
    "", " ", "\n\n\n", "x" * 5000, "长" * 4097, "👨\u200d👩\u200d👧\u200d👦" * 700,
    "\u200f\u200fمرحبا\u200f", "zero\u200bwidth\u2060\ufeff", "nul\x00byte", "\ud800 lone \udfff",
    "e\u0301\u0301\u0301", "\u202eoverride\u202c", "/", "/start@other_bot", "/ban", "/unban x",
    "/status", "/status 20261123-0001", "/status " + "9" * 40, "/lang", "/my", "/cancel",
    "/help", "/forget", "/bind", "/unknown_command", "📝 Report a problem", "📋 My reports",
    "🙈 Stay anonymous", "👤 Show my first name, no phone", "%s %d {name} {0}", "<b>bold</b>",
    "*markdown* _x_ [l](http://x)", "Rubbish has been piling up by the gate for days",
]
FORGED = [
    "", "x", ":", "claim:", "claim:0", "claim:-1", "claim:99999999999999999999", "claim:²",
    "cat:", "cat:nonexistent", "cat:\u202e", "ph:", "ph:done:extra", "lc:999", "lg:-5",
    "lb:abc", "cf:1", "ed:zz", "ef:description", "mt:", "mt:1e9", "rg:1.2.3", "rc:1.x",
    "ty:1.nuclear", "cr:1.whatever", "my:0", "ad:1", "uf:1", "fg:maybe", "lang:klingon",
    "bind:0", "bindg:1", "vote:1:2:3", "\x00", "💥" * 16, "a" * 64,
]


def _user(user_id: int) -> dict:
    return {"id": user_id, "is_bot": False, "first_name": "Fuzz", "language_code": "en"}


def _chat(chat_id: int) -> dict:
    if chat_id < 0:
        return {"id": chat_id, "type": "group", "title": "g"}
    return {"id": chat_id, "type": "private", "first_name": "Fuzz"}


def raw_update(rng: random.Random, user_id: int, chat_id: int) -> dict:
    """An update the fake would never build itself: fields missing, unknown or odd."""
    message = {"message_id": rng.randint(1, 10**6), "date": rng.choice([0, 1, 2**31 - 1]),
               "chat": _chat(chat_id), "from": _user(user_id)}
    variant = rng.randrange(12)
    if variant == 0:
        del message["from"]
        message["text"] = "/start"
    elif variant == 1:
        message["sender_chat"] = _chat(chat_id)
        message["text"] = rng.choice(ODD)
    elif variant == 2:
        message["location"] = {"latitude": rng.uniform(-90, 90), "longitude": rng.uniform(-180, 180)}
    elif variant == 3:
        message["contact"] = {"phone_number": rng.choice(["", "+1", "x" * 64, "+86 138 0013 8000"]),
                              "first_name": "", "user_id": rng.choice([user_id, 1, None])}
    elif variant == 4:
        message["photo"] = [{"file_id": "nope", "file_unique_id": "u", "width": 1, "height": 1,
                             "file_size": rng.choice([1, 10**9])}]
    elif variant == 5:
        message["document"] = {"file_id": "nope", "file_unique_id": "u",
                               "mime_type": "image/jpeg", "file_name": "x.jpg", "file_size": 3}
    elif variant == 6:
        message["text"] = rng.choice(ODD)
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": 9999}]
    elif variant == 7:
        message["dice"] = {"emoji": "🎲", "value": rng.randint(1, 6)}
    elif variant == 8:
        return {"edited_message": {**message, "text": "edited", "edit_date": 3}}
    elif variant == 9:
        return {"callback_query": {"id": f"raw{rng.random()}", "from": _user(user_id),
                                   "chat_instance": "ci", "data": rng.choice(FORGED)}}
    elif variant == 10:
        return {"callback_query": {"id": f"raw{rng.random()}", "from": _user(user_id),
                                   "chat_instance": "ci", "data": rng.choice(FORGED),
                                   "message": {"message_id": 1, "chat": _chat(chat_id), "date": 0}}}
    else:
        return {rng.choice(["something_new", "chat_join_request", "poll_answer"]): {"x": 1}}
    return {"message": message}


def last_keyboard(api, chat: int) -> dict | None:
    for message in reversed(api.bot_messages(chat)):
        if buttons(message):
            return message
    return None


def act(api, rng: random.Random, user_id: int, chat: int, photo: bytes) -> None:
    """One thing a person does, chosen at random with a bias to what moves things on."""
    roll = rng.random()
    keyboard = last_keyboard(api, chat)
    if roll < 0.30 and keyboard is not None:
        data = [d for d in buttons(keyboard) if d]
        api.user_presses(user_id, chat, keyboard["message_id"], rng.choice(data))
    elif roll < 0.38:
        message_id = rng.choice([1, 10**9, keyboard["message_id"] if keyboard else 1])
        api.user_presses(user_id, chat, message_id, rng.choice(FORGED),
                         inaccessible=rng.random() < 0.2)
    elif roll < 0.62:
        text = rng.choice(ODD)
        if text and chat < 0 and keyboard is not None and rng.random() < 0.5:
            api.user_sends_text(user_id, chat, text, reply_to_message_id=keyboard["message_id"])
        elif text:
            api.user_sends_text(user_id, chat, text)
    elif roll < 0.68:
        lat, lon = G01 if rng.random() < 0.6 else (rng.uniform(-90, 90), rng.uniform(-180, 180))
        api.user_sends_location(user_id, chat, lat, lon)
    elif roll < 0.72:
        api.user_sends_photo(user_id, chat, photo, caption=rng.choice([None, *ODD[:8]]))
    elif roll < 0.75:
        api.user_sends_document(user_id, chat, b"%PDF-1.4 not an image", "x.pdf", "application/pdf")
    elif roll < 0.79:
        api.user_sends_contact(user_id, chat, rng.choice(["+8613800138000", "1", ""]), "Me",
                               contact_user_id=rng.choice([user_id, None, 42]))
    elif roll < 0.83:
        api.user_sends_sticker(user_id, chat)
    elif roll < 0.85:
        api.user_sends_voice(user_id, chat)
    else:
        api.enqueue_update(raw_update(rng, user_id, chat))


async def test_thousands_of_random_updates(whistle, api, people, caplog):
    caplog.set_level(logging.WARNING)
    rng = random.Random(SEED)
    for user in RESIDENTS:
        people(user, f"r{user}", language=rng.choice(["en", "zh-hans"]))
    for user, _chat_id in STAFF:
        people(user, f"s{user}", language="en")
    photo = photo_bytes(1)
    actors = [(user, user) for user in RESIDENTS] + STAFF
    for user in RESIDENTS:
        api.user_sends_text(user, user, "/start")
    before = api._last_update_id
    for round_ in range(ROUNDS):
        for user, chat in actors:
            for _ in range(2):
                act(api, rng, user, chat, photo)
        if round_ % 6 == 5:
            await drained(whistle, api)
        elif round_ % 2 == 1:
            await api.wait_idle(quiet=0.05, timeout=30)
    await drained(whistle, api)
    sent = api._last_update_id - before
    assert sent > 2000, sent

    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records
              if r.levelno >= logging.ERROR and not r.name.startswith("aiohttp")]
    assert errors == []

    await check_invariants(whistle)

    # everyone still gets answers
    for user in RESIDENTS:
        after = max([m["message_id"] for m in api.messages(user)] or [0])
        api.user_sends_text(user, user, "/help")
        await api.wait_message(user, after=after, predicate=lambda m: "/my" in m.get("text", ""))
    for user, chat in STAFF:
        after = max([m["message_id"] for m in api.messages(chat)] or [0])
        api.user_sends_text(user, chat, "/help")
        await api.wait_message(chat, after=after)


async def drained(whistle, api) -> None:
    """The bot took every update and the outbox is empty: a round is over. (Rounds keep
    the bot's keyboards current for the next round's button presses.)"""
    await api.wait_idle(quiet=0.05, timeout=30)
    deadline = time.monotonic() + 30
    while await whistle.db.run(lambda s: s.scalar(select(func.count(Outbox.id)).where(
            Outbox.state == "pending"))):
        assert time.monotonic() < deadline, "the outbox did not drain"
        await asyncio.sleep(0.1)


async def check_invariants(whistle) -> None:
    async def read(session):
        return (list(await session.scalars(select(Ticket))),
                list(await session.scalars(select(Timer))),
                list(await session.scalars(select(Dialogue))),
                {u.id for u in await session.scalars(select(Unit))})
    tickets, timers, dialogues, units = await whistle.db.run(read)
    states = {s.value for s in State}
    final = {s.value for s in FINAL}
    active = {}
    for timer in timers:
        if timer.next_at is not None and timer.kind != "vote":
            active.setdefault(timer.ticket_id, []).append(timer.kind)
    for ticket in tickets:
        where = f"ticket #{ticket.number} ({ticket.state})"
        assert ticket.state in states, where
        assert re.fullmatch(r"\d{8}-\d{4}", ticket.number), where
        assert ticket.unit_id in units and (ticket.grid_id is None or ticket.grid_id in units), where
        assert ticket.description.strip(), where
        if ticket.state in ("claimed", "in_progress"):
            assert ticket.assignee_id is not None, where
        if ticket.state in final or ticket.state == "resolved":
            assert ticket.id not in active, f"{where} has running timers {active[ticket.id]}"
            assert ticket.waiting_since is None, where
        if ticket.state in final:
            assert ticket.closed_at is not None, where
    for row in dialogues:
        assert row.step is None or row.step in STEPS, row.step
        assert isinstance(row.draft, dict)
        assert row.pending is None or isinstance(row.pending.get("action"), str), row.pending
