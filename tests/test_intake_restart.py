"""A restart in the middle of the intake dialogue: the step and the draft live in the
database, so a new process on the same database continues where the resident was.

Also two sender bugs found while writing it (see the last two tests): an idle
sender must not spin, and ``Sender.stop()`` must return even when a wake-up races it."""
from __future__ import annotations

import asyncio

from images import jpeg
from sqlalchemy import select

from bot.app import Whistle
from models.media.photos import clean as clean_photo
from models.store.tables import Dialogue, Media, Ticket

G05 = (39.93072, 116.40087)
G05_CHAT = -100105
JPEG = jpeg(5)
DESCRIPTION = "The street light at the corner has been dark for a week."

ASK_CATEGORY = "What kind of problem is it? Choose a category:"
ASK_DESCRIPTION = "Describe the problem in a few sentences"
ASK_PHOTOS = "Send up to 3 photos of the problem, or press Skip."
ASK_LOCATION = "Where is it?"
ASK_CONTACT = "Can the grid contact you?"
SUMMARY = "Category: "
RECEIVED = "✅ Report received. Your ticket number is "


def button_data(message: dict, prefix: str) -> str:
    datas = [b.get("callback_data", "") for row in
             (message.get("reply_markup") or {}).get("inline_keyboard", []) for b in row]
    found = [d for d in datas if d == prefix] or [d for d in datas if d.startswith(prefix)]
    assert found, f"no button {prefix!r} in {datas}"
    return found[0]


async def stop_sender(service: Whistle) -> None:
    """Cancel the sender until it has ended: the watchdog's way out if stop() hangs."""
    task = service.sender._task if service.sender else None
    while task is not None and not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)


class Chat:
    """One resident's private chat: send something, wait for the answers in order."""

    def __init__(self, api, user_id: int):
        self.api, self.id = api, user_id

    async def do(self, action, *expect: str) -> dict:
        msgs = self.api.messages(self.id)
        after = msgs[-1]["message_id"] if msgs else 0
        action()
        message = None
        for text in expect:
            message = await self.api.wait_message(self.id, contains=text, after=after)
            after = message["message_id"]
        return message

    async def text(self, text: str, *expect: str) -> dict:
        return await self.do(lambda: self.api.user_sends_text(self.id, self.id, text), *expect)

    async def press(self, message: dict, prefix: str, *expect: str) -> dict:
        data = button_data(message, prefix)
        return await self.do(lambda: self.api.user_presses(
            self.id, self.id, message["message_id"], data), *expect)


async def test_dialogue_survives_a_restart(whistle, api, people, config, clock):
    people(9001, "Li Si", language="en")
    chat = Chat(api, 9001)
    categories = await chat.text("/start", ASK_CATEGORY)
    await chat.press(categories, "cat:streetlight", ASK_DESCRIPTION)
    photos_prompt = await chat.text(DESCRIPTION, ASK_PHOTOS)

    await whistle.stop()
    second = Whistle(config, clock=clock)
    await second.start()
    try:
        row = await second.db.run(lambda s: s.scalar(select(Dialogue)))
        assert row.step == "photos"
        assert row.draft["description"] == DESCRIPTION and row.draft["category"] == "streetlight"

        received = await chat.do(lambda: api.user_sends_photo(9001, 9001, JPEG),
                                 "Photo 1 of 3 received.")
        assert received["message_id"] > photos_prompt["message_id"]
        communities = await chat.press(received, "ph:done", ASK_LOCATION, "Communities:")
        assert button_data(communities, "lc:")
        await chat.do(lambda: api.user_sends_location(9001, 9001, *G05), ASK_CONTACT)
        summary = await chat.text("🙈 Stay anonymous", SUMMARY)
        assert f"Description: {DESCRIPTION}" in summary["text"]
        assert "Category: Broken street light" in summary["text"] and "Photos: 1" in summary["text"]
        done = await chat.press(summary, "cf", RECEIVED)
        number = done["text"].split(RECEIVED)[1].split(".")[0]
        assert number == "20261123-0001"

        async def stored(session):
            ticket = await session.scalar(select(Ticket).where(Ticket.number == number))
            media = list(await session.scalars(select(Media)))
            return ticket, media
        ticket, media = await second.db.run(stored)
        assert ticket.description == DESCRIPTION and ticket.category == "streetlight"
        assert ticket.route_reason == "point" and ticket.state == "routed"
        assert [(m.ticket_id, m.kind) for m in media] == [(ticket.id, "report")]
        assert (config.media_dir / media[0].path).read_bytes() == clean_photo(JPEG)[0]
        card = await api.wait_message(G05_CHAT, contains=f"#{number}",
                                      predicate=lambda m: m.get("reply_markup"))
        assert DESCRIPTION in card["text"]
        assert any(b["callback_data"] == f"claim:{ticket.id}"
                   for row in card["reply_markup"]["inline_keyboard"] for b in row)
    finally:
        await second.stop()


# ---- stopping the service ---------------------------------------------------------------

async def test_idle_sender_does_not_spin(whistle, api):
    """Between inputs the sender sleeps until a commit wakes it (or its 1 s timer). Its
    own transactions must not wake it again: here every ``db.run`` calls the on-commit
    callbacks, including the sender's read-only outbox poll, so it polled in a busy loop."""
    sender = whistle.sender
    passes = 0
    poll = sender.due_rows

    async def counting_poll():
        nonlocal passes
        passes += 1
        return await poll()

    sender.due_rows = counting_poll
    await api.wait_idle(quiet=0.5)   # at least half a second with nothing to do
    assert passes <= 3, f"the idle sender polled the outbox {passes} times"


async def test_stop_returns_when_the_sender_was_just_woken(whistle):
    """A transaction commits (waking the sender) right as the service stops: stop() must
    still return. On Python 3.11 ``asyncio.wait_for`` in ``Sender._loop`` swallows the
    cancellation when the awaited event is set in the same loop iteration, the loop runs
    on, and ``Sender.stop()`` waits for it forever."""
    sender = whistle.sender
    task = sender._task
    hung = False

    async def watchdog():
        nonlocal hung
        await asyncio.wait({task}, timeout=3)
        if not task.done():
            hung = True
            await stop_sender(whistle)   # lets the stop() below return

    await asyncio.wait_for(sender.idle.wait(), 5)   # the sender sleeps in its wait_for
    guard = asyncio.create_task(watchdog())
    sender.wake()                                   # what every commit does …
    await sender.stop()                             # … and the service stops right then
    await guard
    assert not hung, "Sender.stop() was still waiting for the sender loop after 3 s"
