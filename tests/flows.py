"""Shared helpers for the staff and robustness tests: walk the intake dialogue by
callback data, find buttons by callback-data prefix, press staff buttons and read
the database. Group chats speak zh_Hans, so tests look at callback data, ticket
numbers, names and rows rather than at (still changing) Chinese wording."""
from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image
from sqlalchemy import func, select

from models.store.tables import Identity, Media, Outbox, Ticket, TicketEvent

# Sample district (samples/district/README.md).
G01 = (39.93524, 116.40107)
G02 = (39.93530, 116.40705)
LAKE = (39.93125, 116.40765)  # the hole in g06: routes to no grid
G01_CHAT = -100101
G02_CHAT = -100102
C1_CHAT = -100201
DUTY_CHAT = -100301


def photo_bytes(seed: int = 0) -> bytes:
    """A small real JPEG, different for each seed (the bot re-encodes photos it stores)."""
    image = Image.new("RGB", (64, 48), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    out = io.BytesIO()
    image.save(out, "JPEG")
    return out.getvalue()


DESCRIPTION = "Rubbish has been piling up by the gate for three days"


# ---- buttons ----------------------------------------------------------------------------

def buttons(message: dict | None) -> list[str]:
    """Every inline button's callback data, in order."""
    markup = (message or {}).get("reply_markup") or {}
    return [b.get("callback_data") for row in markup.get("inline_keyboard", []) for b in row]


def button(message: dict, prefix: str) -> str:
    """The callback data of the first button whose data starts with ``prefix``."""
    found = [data for data in buttons(message) if data and data.startswith(prefix)]
    if not found:
        raise AssertionError(f"no button starting with {prefix!r} in {buttons(message)}")
    return found[0]


def has_button(prefix: str):
    """A ``wait_message`` predicate: the message has a button whose data starts with ``prefix``."""
    return lambda message: any(d and d.startswith(prefix) for d in buttons(message))


def body(message: dict | None) -> str:
    return (message or {}).get("text") or (message or {}).get("caption") or ""


# ---- the resident's side ------------------------------------------------------------------

@dataclass
class Filed:
    number: str
    id: int
    card: dict | None  # the card with buttons in the chat that holds the ticket (if waited for)


async def file_report(api, whistle, resident, *, point=G01, category: str = "garbage",
                      description: str = DESCRIPTION, photos: int = 0, contact: str = "anonymous",
                      phone: str = "+8613800138000", card_chat: int | None = G01_CHAT) -> Filed:
    """Walk ``resident`` (a ``people`` Person or a user id; an English speaker) through the
    intake by callback data and confirm.

    ``contact`` is "anonymous", "first_name" or "phone" (shares ``phone`` as their own contact).
    Returns the ticket's number and id and, unless ``card_chat`` is None, its card in that chat."""
    me = getattr(resident, "id", resident)
    after = last_id(api, me)
    api.user_sends_text(me, me, "/start")
    msg = await api.wait_message(me, after=after, predicate=has_button("cat:"))
    after = last_id(api, me)
    api.user_presses(me, me, msg["message_id"], f"cat:{category}")
    await api.wait_message(me, after=after)  # the description prompt
    after = last_id(api, me)
    api.user_sends_text(me, me, description)
    msg = await api.wait_message(me, after=after, predicate=has_button("ph:"))
    for i in range(photos):
        after = last_id(api, me)
        api.user_sends_photo(me, me, photo_bytes(i))
        msg = await api.wait_message(me, after=after)
    after = last_id(api, me)
    if photos < whistle.config.intake.max_photos:
        api.user_presses(me, me, msg["message_id"], "ph:done")
    await api.wait_message(me, after=after, predicate=has_button("lc:"))
    after = last_id(api, me)
    if point is not None:
        api.user_sends_location(me, me, *point)
    else:
        api.user_sends_text(me, me, "12 Nowhere Lane, next to the lake")
    msg = await api.wait_message(me, after=after, predicate=lambda m: "contact you" in body(m)
                                 or "mn" in buttons(m) or "lo" in buttons(m))
    if "lo" in buttons(msg):  # a point in no grid: send it to the dispatch centre as it is
        after = last_id(api, me)
        api.user_presses(me, me, msg["message_id"], "lo")
        msg = await api.wait_message(me, after=after, predicate=lambda m: "contact you" in body(m)
                                     or "mn" in buttons(m))
    if "mn" in buttons(msg):  # "me too?": open reports of this category nearby; file anew
        after = last_id(api, me)
        api.user_presses(me, me, msg["message_id"], "mn")
        await api.wait_message(me, after=after, contains="contact you")  # the contact step
    after = last_id(api, me)
    if contact == "phone":
        api.user_sends_contact(me, me, phone, "Me", contact_user_id=me)
    else:
        label = "🙈 Stay anonymous" if contact == "anonymous" else "👤 Show my first name, no phone"
        api.user_sends_text(me, me, label)
    msg = await api.wait_message(me, after=after, predicate=has_button("cf"))
    after = last_id(api, me)
    api.user_presses(me, me, msg["message_id"], "cf")
    done = await api.wait_message(me, after=after, contains="ticket number is")
    number = done["text"].split("ticket number is ")[1].split(".")[0]
    ticket_id = await whistle.db.run(lambda s: s.scalar(select(Ticket.id).where(Ticket.number == number)))
    card = None
    if card_chat is not None:
        card = await wait_card(api, card_chat, ticket_id)
    return Filed(number, ticket_id, card)


async def wait_card(api, chat: int, ticket_id: int, prefix: str | None = None) -> dict:
    """The ticket's card in ``chat`` (a message with a button for this ticket)."""
    def matches(message: dict) -> bool:
        return any(d and d.split(":", 1)[-1].split(".")[0] == str(ticket_id) and
                   (prefix is None or d.startswith(prefix)) for d in buttons(message))
    return await api.wait_message(chat, predicate=matches)


# ---- the staff's side ---------------------------------------------------------------------

async def press(api, user_id: int, chat: int, message_id: int, data: str) -> dict:
    """Press a button (by callback data) and wait for the bot's answer to the query."""
    query = api.user_presses(user_id, chat, message_id, data)
    await api.wait_for(lambda: query in api.callback_answers, description=f"answer to {data}")
    return api.callback_answers[query]


def last_id(api, chat: int) -> int:
    messages = api.messages(chat)
    return messages[-1]["message_id"] if messages else 0


async def ask_note(api, user_id: int, chat: int, card_id: int, data: str, number: str) -> dict:
    """Press a note button (progress/resolve/return/escalate); returns the prompt in ``chat``."""
    after = last_id(api, chat)
    answer = await press(api, user_id, chat, card_id, data)
    prompt = await api.wait_message(chat, after=after, contains=number)
    prompt["answer"] = answer
    return prompt


async def reply_note(api, user_id: int, chat: int, prompt: dict, text: str) -> dict:
    """Reply to a note prompt with text; returns the bot's confirmation in that chat."""
    after = last_id(api, chat)
    api.user_sends_text(user_id, chat, text, reply_to_message_id=prompt["message_id"])
    return await api.wait_message(chat, after=after)


def send_photo_reply(api, user_id: int, chat: int, reply_to: int, data: bytes,
                     caption: str | None = None) -> dict:
    """A photo that replies to a bot message (user_sends_photo has no reply parameter)."""
    fields = {"photo": api._store_photo(data, 800, 600)}
    if caption:
        fields["caption"] = caption
    return api.user_sends(user_id, chat, reply_to_message_id=reply_to, **fields)


async def claim(api, user_id: int, filed: Filed, chat: int = G01_CHAT) -> dict:
    return await press(api, user_id, chat, filed.card["message_id"], f"claim:{filed.id}")


def card_now(api, chat: int, filed: Filed) -> dict:
    return api.message(chat, filed.card["message_id"])


# ---- the database -------------------------------------------------------------------------

async def ticket_row(whistle, ticket_id: int) -> Ticket:
    return await whistle.db.run(lambda s: s.get(Ticket, ticket_id))


WORKFLOW = ("created", "routed", "claimed", "progress", "resolved", "returned", "escalated",
            "reopened", "closed")


async def events(whistle, ticket_id: int, kinds=WORKFLOW) -> list[str]:
    """The ticket's audit events of the workflow kinds, oldest first (other kinds, such as
    deadline bookkeeping, are left out so these tests do not depend on them)."""
    async def read(session):
        return list(await session.scalars(select(TicketEvent.kind).where(
            TicketEvent.ticket_id == ticket_id, TicketEvent.kind.in_(kinds)).order_by(TicketEvent.id)))
    return await whistle.db.run(read)


async def outbox(whistle, chat_id: int | str) -> list[Outbox]:
    async def read(session):
        return list(await session.scalars(select(Outbox).where(
            Outbox.chat_id == str(chat_id)).order_by(Outbox.id)))
    return await whistle.db.run(read)


async def identity(whistle, external_id: int) -> Identity:
    return await whistle.db.run(lambda s: s.scalar(select(Identity).where(
        Identity.channel == "telegram", Identity.external_id == str(external_id))))


async def media_kinds(whistle, ticket_id: int) -> list[str]:
    async def read(session):
        return sorted(await session.scalars(select(Media.kind).where(Media.ticket_id == ticket_id)))
    return await whistle.db.run(read)


async def count(whistle, model, *where) -> int:
    return await whistle.db.run(lambda s: s.scalar(select(func.count()).select_from(model).where(*where)))


def group_text(whistle, message: str, **params) -> str:
    """A text as group chats show it now (the zh_Hans catalog is still being translated)."""
    return whistle.i18n.get(None)._(message, **params)
