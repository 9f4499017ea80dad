"""Shared helpers for the deadline, vote, whistle and digest tests: file a report by
callback data, press staff buttons, write notes, run the sweep at the controlled
clock's "now" and read the database.

Group chats speak zh_Hans (some texts may still be English until translated), so the
tests look at callback data, ticket numbers, rows and at texts rendered through the
service's own translator (``group_text``) rather than at hard-coded Chinese."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from models.org import tree as org
from models.deadlines.board import KIND_WORDS
from models.org.names import category_name
from models.store.tables import Identity, MessageRef, Outbox, Person, Ticket, TicketEvent, Timer
from scheduler.jobs import run_sweep

BJ = ZoneInfo("Asia/Shanghai")

# Sample district (samples/district/README.md).
G01 = (39.93524, 116.40107)  # grid g01, community c1
G02 = (39.93530, 116.40705)  # grid g02, community c1
G05 = (39.93072, 116.40087)  # grid g05, community c2
G09 = (39.92618, 116.40107)  # grid g09, community c3
G01_CHAT, G02_CHAT, G05_CHAT, G09_CHAT = -100101, -100102, -100105, -100109
C1_CHAT, C2_CHAT, C3_CHAT = -100201, -100202, -100203
STREET_CHAT = -100301
D_CG_CHAT, D_SJ_CHAT, D_ZJ_CHAT, D_HW_CHAT = -100401, -100402, -100403, -100404
CENTRE_CHAT = -100500
ALL_CHATS = [*range(-100112, -100100), C1_CHAT, C2_CHAT, C3_CHAT, STREET_CHAT,
             D_CG_CHAT, D_SJ_CHAT, D_ZJ_CHAT, D_HW_CHAT, CENTRE_CHAT]

CHIEF_G01, CHIEF_G02 = 1001, 1002
SECRETARY_C1 = 2001
DISPATCHER = 3001
OFFICER_CG, OFFICER_SJ = 4001, 4002
COMMANDER = 5001

DESCRIPTION = "Rubbish has been piling up by the gate for three days"


def local(year, month, day, hour=0, minute=0) -> datetime:
    """A wall-clock time in Beijing (compares equal to the same instant in UTC)."""
    return datetime(year, month, day, hour, minute, tzinfo=BJ)


def utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)


# ---- buttons and messages -----------------------------------------------------------------

def buttons(message: dict | None) -> list[str]:
    markup = (message or {}).get("reply_markup") or {}
    return [b.get("callback_data") for row in markup.get("inline_keyboard", []) for b in row]


def has_button(prefix: str):
    return lambda message: any(d and d.startswith(prefix) for d in buttons(message))


def body(message: dict | None) -> str:
    return (message or {}).get("text") or (message or {}).get("caption") or ""


def last_id(api, chat: int) -> int:
    messages = api.messages(chat)
    return messages[-1]["message_id"] if messages else 0


def group_text(whistle, message: str, **params) -> str:
    """A text as group chats show it (the deployment's default language)."""
    return whistle.i18n.get(None)._(message, **params)


def bot_texts(api, chat: int) -> list[str]:
    return [body(m) for m in api.bot_messages(chat)]


def sent_requests(api, method: str, chat: int) -> list[dict]:
    """Bot API calls of ``method`` addressed to ``chat`` (in order)."""
    return [params for name, params in api.requests
            if name == method and str(params.get("chat_id")) == str(chat)]


# ---- the resident's side ------------------------------------------------------------------

@dataclass
class Filed:
    number: str
    id: int
    card: dict | None


async def file_report(api, whistle, resident: int, *, category: str = "garbage", point=G01,
                      card_chat: int | None = G01_CHAT,
                      description: str = DESCRIPTION) -> Filed:
    """Walk an English-speaking resident through the intake by callback data and confirm.
    Returns the ticket's number, id and (unless ``card_chat`` is None) its card there."""
    me = resident
    after = last_id(api, me)
    api.user_sends_text(me, me, "/start")
    msg = await api.wait_message(me, after=after, predicate=has_button("cat:"))
    after = last_id(api, me)
    api.user_presses(me, me, msg["message_id"], f"cat:{category}")
    await api.wait_message(me, after=after)  # the description prompt
    after = last_id(api, me)
    api.user_sends_text(me, me, description)
    msg = await api.wait_message(me, after=after, predicate=has_button("ph:"))
    after = last_id(api, me)
    api.user_presses(me, me, msg["message_id"], "ph:done")
    await api.wait_message(me, after=after, predicate=has_button("lc:"))
    after = last_id(api, me)
    api.user_sends_location(me, me, *point)
    msg = await api.wait_message(me, after=after, predicate=lambda m: "contact you" in body(m)
                                 or "mn" in buttons(m))
    if "mn" in buttons(msg):  # "me too?" — open reports nearby; this one is a new problem
        after = last_id(api, me)
        api.user_presses(me, me, msg["message_id"], "mn")
        await api.wait_message(me, after=after, contains="contact you")
    after = last_id(api, me)
    api.user_sends_text(me, me, "🙈 Stay anonymous")
    msg = await api.wait_message(me, after=after, predicate=has_button("cf"))
    after = last_id(api, me)
    api.user_presses(me, me, msg["message_id"], "cf")
    done = await api.wait_message(me, after=after, contains="ticket number is")
    number = done["text"].split("ticket number is ")[1].split(".")[0]
    ticket_id = await whistle.db.run(
        lambda s: s.scalar(select(Ticket.id).where(Ticket.number == number)))
    card = await wait_card(api, card_chat, ticket_id) if card_chat is not None else None
    return Filed(number, ticket_id, card)


async def wait_card(api, chat: int, ticket_id: int, prefix: str | None = None,
                    after: int | None = None) -> dict:
    """The ticket's card in ``chat``: a bot message with a button for this ticket."""
    def matches(message: dict) -> bool:
        return any(d and ":" in d and d.split(":", 1)[1].split(".")[0] == str(ticket_id)
                   and (prefix is None or d.startswith(prefix)) for d in buttons(message))
    return await api.wait_message(chat, predicate=matches, after=after)


# ---- the staff's side ---------------------------------------------------------------------

async def press(api, user_id: int, chat: int, message_id: int, data: str) -> dict:
    """Press a button by callback data and wait for the bot's answer to the query."""
    query = api.user_presses(user_id, chat, message_id, data)
    await api.wait_for(lambda: query in api.callback_answers, description=f"answer to {data}")
    return api.callback_answers[query]


async def note(api, whistle, user_id: int, chat: int, message_id: int, data: str, number: str,
               text: str) -> dict:
    """Press a note button (progress/resolve/escalate/ask), reply to the ForceReply prompt
    with ``text``; returns the bot's confirmation in ``chat``."""
    await wait_sent(whistle, api)  # nothing else arrives in the chat meanwhile
    after = last_id(api, chat)
    answer = await press(api, user_id, chat, message_id, data)
    assert not answer.get("show_alert"), answer
    prompt = await api.wait_message(chat, after=after, contains=number)
    forced = [p for p in sent_requests(api, "sendMessage", chat) if p.get("text") == prompt["text"]]
    assert forced and (forced[-1].get("reply_markup") or {}).get("force_reply") is True
    after = last_id(api, chat)
    api.user_sends_text(user_id, chat, text, reply_to_message_id=prompt["message_id"])
    return await api.wait_message(chat, after=after, contains=group_text(
        whistle, "Recorded for #{number}.", number=number))


async def claim(api, user_id: int, chat: int, filed: Filed, card: dict | None = None) -> dict:
    card = card or filed.card
    answer = await press(api, user_id, chat, card["message_id"], f"claim:{filed.id}")
    assert not answer.get("show_alert"), answer
    return answer


# ---- the clock and the sweep --------------------------------------------------------------

async def sweep_at(whistle, clock, moment: datetime | None = None):
    """Move the controlled clock to ``moment`` (if given) and run one sweep there."""
    if moment is not None:
        clock.now = utc(moment)
    return await run_sweep(whistle.db, whistle.core, clock.now)


# ---- the database -------------------------------------------------------------------------

async def ticket_row(whistle, ticket_id: int) -> Ticket:
    return await whistle.db.run(lambda s: s.get(Ticket, ticket_id))


async def timers(whistle, ticket_id: int, kind: str | None = None) -> list[Timer]:
    async def read(session):
        query = select(Timer).where(Timer.ticket_id == ticket_id)
        if kind:
            query = query.where(Timer.kind == kind)
        return list(await session.scalars(query.order_by(Timer.id)))
    return await whistle.db.run(read)


async def open_timer(whistle, ticket_id: int, kind: str) -> Timer:
    """The one timer of ``kind`` that is not done."""
    rows = [t for t in await timers(whistle, ticket_id, kind) if t.stage != "done"]
    assert len(rows) == 1, [(t.kind, t.stage, t.due_at) for t in rows]
    return rows[0]


async def event_kinds(whistle, ticket_id: int) -> list[str]:
    async def read(session):
        return list(await session.scalars(select(TicketEvent.kind).where(
            TicketEvent.ticket_id == ticket_id).order_by(TicketEvent.id)))
    return await whistle.db.run(read)


async def events_of(whistle, ticket_id: int, kind: str) -> list[TicketEvent]:
    async def read(session):
        return list(await session.scalars(select(TicketEvent).where(
            TicketEvent.ticket_id == ticket_id, TicketEvent.kind == kind).order_by(TicketEvent.id)))
    return await whistle.db.run(read)


async def unit_id(whistle, code: str) -> int:
    return (await whistle.db.run(lambda s: org.unit_by_code(s, code))).id


async def person_id(whistle, telegram_id: int) -> int:
    return await whistle.db.run(lambda s: s.scalar(
        select(Person.id).join(Identity, Identity.person_id == Person.id)
        .where(Identity.channel == "telegram", Identity.external_id == str(telegram_id))))


async def count(whistle, model, *where) -> int:
    return await whistle.db.run(
        lambda s: s.scalar(select(func.count()).select_from(model).where(*where)))


async def board_ref(whistle, unit_code: str, chat: int, page: int = 0) -> MessageRef | None:
    uid = await unit_id(whistle, unit_code)
    return await whistle.db.run(lambda s: s.scalar(select(MessageRef).where(
        MessageRef.ref == f"board:{uid}:{page}", MessageRef.chat_id == str(chat))))


async def wait_sent(whistle, api, timeout: float = 15) -> None:
    """Wait until the sender has settled every queued Telegram outbox row (none left
    pending). Rows for WeCom identities (王建国 and 韩东 have WeCom userids) wait for a
    WeCom channel that this process does not run, so they are left out."""
    async def pending() -> int:
        return await count(whistle, Outbox, Outbox.state == "pending",
                           Outbox.channel == "telegram")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await pending():
        if loop.time() > deadline:
            rows = await whistle.db.run(lambda s: s.execute(select(
                Outbox.id, Outbox.chat_id, Outbox.attempts, Outbox.error, Outbox.next_try_at,
                Outbox.payload).where(Outbox.state == "pending", Outbox.channel == "telegram")))
            raise AssertionError(f"outbox rows still pending: {rows.all()}")
        try:
            await api.wait_idle(quiet=0.05, timeout=2)
        except AssertionError:
            pass  # still busy: look again


async def failed_rows(whistle) -> list[tuple[str, str]]:
    """(chat, error) of every Telegram outbox row the sender gave up on."""
    async def read(session):
        return [tuple(r) for r in await session.execute(select(Outbox.chat_id, Outbox.error).where(
            Outbox.state.in_(["failed", "uncertain"]), Outbox.channel == "telegram"))]
    return await whistle.db.run(read)


async def alert_text(whistle, holder_code: str, number: str, category: str, kind: str,
                     due: str) -> str:
    """The "missed its deadline" alert as the level above sees it (default language)."""
    t = whistle.i18n.get(None)
    unit = await whistle.db.run(lambda s: org.unit_by_code(s, holder_code))
    return t._("⚠️ {unit}: #{number} ({category}) missed its {kind} deadline ({due}).",
               unit=org.display_name(unit, t.locale), number=number,
               category=category_name(whistle.core, category, t), kind=t._(KIND_WORDS[kind]),
               due=due)


async def unit_name(whistle, code: str) -> str:
    t = whistle.i18n.get(None)
    unit = await whistle.db.run(lambda s: org.unit_by_code(s, code))
    return org.display_name(unit, t.locale)
