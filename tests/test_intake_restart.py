"""A restart in the middle of the intake dialogue: the step and the draft live in the
database, so a new process on the same database continues where the resident was."""
from __future__ import annotations

from sqlalchemy import select

from bot.app import Whistle
from models.tables import Dialogue, Media, Ticket

G05 = (39.93072, 116.40087)
G05_CHAT = -100105
JPEG = b"\xff\xd8\xff\xe0" + b"after-restart" * 40
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
        assert (config.media_dir / media[0].path).read_bytes() == JPEG
        card = await api.wait_message(G05_CHAT, contains=f"#{number}",
                                      predicate=lambda m: m.get("reply_markup"))
        assert DESCRIPTION in card["text"]
        assert any(b["callback_data"] == f"claim:{ticket.id}"
                   for row in card["reply_markup"]["inline_keyboard"] for b in row)
    finally:
        await second.stop()
