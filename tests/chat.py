"""A simulated resident in their private chat with the bot, shared by the intake and
resident-side tests: send something, then wait for the answers expected, in order."""
from __future__ import annotations


def body(message: dict | None) -> str:
    return (message or {}).get("text") or (message or {}).get("caption") or ""


def all_button_data(message: dict | None) -> list[str]:
    return [b.get("callback_data", "") for row in
            ((message or {}).get("reply_markup") or {}).get("inline_keyboard", []) for b in row]


def button_data(message: dict, prefix: str) -> str:
    """Callback data of the inline button whose data equals ``prefix`` or starts with it."""
    datas = all_button_data(message)
    for data in datas:
        if data == prefix:
            return data
    for data in datas:
        if data.startswith(prefix):
            return data
    raise AssertionError(f"no button {prefix!r} in {datas} (message {message.get('text')!r})")


class Resident:
    """Sends things to the bot and waits for the answers it expects, in order."""

    def __init__(self, api, user_id: int):
        self.api, self.id = api, user_id

    def last_id(self) -> int:
        msgs = self.api.messages(self.id)
        return msgs[-1]["message_id"] if msgs else 0

    async def expect(self, after: int, *texts: str) -> dict | None:
        """Wait for bot messages containing ``texts`` one after the other; the last one."""
        message = None
        for text in texts:
            message = await self.api.wait_message(self.id, contains=text, after=after)
            after = message["message_id"]
        return message

    async def expect_any(self, after: int, *texts: str) -> dict:
        """The first bot message after ``after`` that contains any of ``texts``."""
        return await self.api.wait_message(
            self.id, after=after, predicate=lambda m: any(t in body(m) for t in texts))

    async def do(self, action, *expect: str) -> dict | None:
        after = self.last_id()
        action()
        return await self.expect(after, *expect)

    async def text(self, text: str, *expect: str) -> dict | None:
        return await self.do(lambda: self.api.user_sends_text(self.id, self.id, text), *expect)

    async def photo(self, data: bytes, *expect: str) -> dict | None:
        return await self.do(lambda: self.api.user_sends_photo(self.id, self.id, data), *expect)

    async def document(self, data: bytes, name: str, mime: str, *expect: str) -> dict | None:
        return await self.do(
            lambda: self.api.user_sends_document(self.id, self.id, data, name, mime), *expect)

    async def contact(self, phone: str, *expect: str, owner: int | None | str = "self") -> dict | None:
        """Share a contact card: one's own (the default), someone else's (``owner``), or
        one from the address book (``owner=None``)."""
        owner = self.id if owner == "self" else owner
        return await self.do(lambda: self.api.user_sends_contact(
            self.id, self.id, phone, "Me", contact_user_id=owner), *expect)

    async def press(self, message: dict, prefix: str, *expect: str) -> dict | None:
        """Press the button found by callback-data prefix and wait for the answers."""
        data = button_data(message, prefix)
        return await self.do(lambda: self.api.user_presses(
            self.id, self.id, message["message_id"], data), *expect)

    async def alert(self, message_id: int, data: str) -> str | None:
        """Press ``data`` (forged or stale) on ``message_id``; the callback answer's text."""
        query = self.api.user_presses(self.id, self.id, message_id, data)
        answer = await self.api.wait_for(lambda: self.api.callback_answers.get(query),
                                         description=f"an answer to {data!r}")
        return answer["text"]

    def texts_after(self, after: int) -> list[str]:
        return [body(m) for m in self.api.bot_messages(self.id) if m["message_id"] > after]

    async def stays_silent(self, after: int) -> None:
        await self.api.wait_idle()
        assert self.texts_after(after) == [], f"unexpected messages: {self.texts_after(after)}"

    async def location(self, point: tuple[float, float], *expect: str) -> dict | None:
        return await self.do(lambda: self.api.user_sends_location(self.id, self.id, *point),
                             *expect)

    async def sticker(self, *expect: str) -> dict | None:
        return await self.do(lambda: self.api.user_sends_sticker(self.id, self.id), *expect)
