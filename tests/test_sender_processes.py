"""Two senders — two processes in one test, each with its own database engine and Bot
API client — share one database and a fake Telegram that enforces Telegram's limits
(429 when exceeded). Together they must send nothing too fast, keep each chat's order,
lose nothing through 5xx answers and timeouts, and never send a message twice."""
from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update
from telegram import Bot

from bot.config import SenderConfig
from bot.telegram.http import AiohttpRequest
from bot.delivery.sender import Sender
from bot.telegram.channel import TelegramChannel
from conftest import TOKEN
from models.store.db import Database
from models.media.store import MediaStore
from models.messages.outbox import OutMessage, Target, enqueue
from models.store.tables import Identity, MessageRef, Outbox, Person

PRIVATES = list(range(7100, 7130))
GROUPS = [-100101, -100102, -100103]


class FastClock:
    """The senders' domain clock, running 20× faster than real time, so backoffs of
    seconds and leases of a minute pass quickly (the rate budgets use real time)."""

    def __init__(self):
        self.start = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)
        self.t0 = time.monotonic()
        self.skip = timedelta()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self.t0) * 20) + self.skip


def limits(**overrides) -> SenderConfig:
    values = dict(per_second=30, private_per_second=1, private_burst=1, group_per_minute=20,
                  group_burst=20, max_attempts=8, margin=0.02, lease_seconds=600)
    return SenderConfig(**{**values, **overrides})


class Process:
    """What one bot process brings to sending: an engine, a Bot API client, a sender."""

    def __init__(self, api, url: str, tmp_path, clock, name: str, config: SenderConfig):
        self.db = Database(url)
        request = AiohttpRequest(connection_pool_size=64, read_timeout=0.4, write_timeout=2,
                                 connect_timeout=2, pool_timeout=5, verify=False)
        self.bot = Bot(TOKEN, base_url=api.base_url, base_file_url=api.base_file_url,
                       request=request)
        channel = TelegramChannel(self.bot, self.db, MediaStore(tmp_path / name), clock)
        self.sender = Sender(self.db, {"telegram": channel}, config, clock, owner=name)
        self.db.on_commit(self.sender.wake)

    async def __aenter__(self) -> "Process":
        await self.bot.initialize()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.sender.stop()
        await self.bot.shutdown()
        await self.db.dispose()


@pytest.fixture
def world(api):
    for user in PRIVATES:
        api.add_user(user, f"u{user}", language_code="en")
    return api


async def queue(db: Database, clock, items: list[tuple[int, OutMessage]]) -> None:
    async def fill(session):
        for chat, message in items:
            enqueue(session, Target("telegram", str(chat)), message, clock())
    await db.run(fill)


async def rows(db: Database) -> list[Outbox]:
    return list(await db.run(lambda s: s.scalars(select(Outbox).order_by(Outbox.id))))


async def settled(db: Database, timeout: float) -> list[Outbox]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = await rows(db)
        if all(r.state != "pending" for r in current):
            return current
        await asyncio.sleep(0.1)
    left = [(r.chat_id, r.attempts, r.error) for r in await rows(db) if r.state == "pending"]
    raise AssertionError(f"{len(left)} messages still pending: {left[:5]}")


def numbered(api, chat: int) -> list[int]:
    """The sequence numbers of the test's messages in a chat, in the order shown."""
    found = []
    for message in api.bot_messages(chat):
        match = re.fullmatch(r"m(\d+)", message.get("text", ""))
        if match:
            found.append(int(match.group(1)))
    return found


async def test_two_senders_share_the_limits_keep_order_and_lose_nothing(world, database_url,
                                                                        tmp_path):
    api, clock = world, FastClock()
    api.enforce_limits(per_second=30, group_per_minute=20, private_per_second=1, private_burst=1)
    plan = [(chat, n) for n in range(3) for chat in PRIVATES] + \
           [(chat, n) for n in range(12) for chat in GROUPS]
    async with Process(api, database_url, tmp_path, clock, "A", limits()) as a, \
            Process(api, database_url, tmp_path, clock, "B", limits()) as b:
        await queue(a.db, clock, [(chat, OutMessage(text=f"m{n}")) for chat, n in plan])
        api.fail_next("sendMessage", 502, "Bad Gateway", count=4)
        api.fail_next("sendMessage", 500, "Internal Server Error: restart", count=2)
        api.delay_next("sendMessage", 1.0, count=3)  # answered after the clients gave up
        started = time.monotonic()
        a.sender.start()
        b.sender.start()
        done = await settled(a.db, timeout=60)
        elapsed = time.monotonic() - started

    states = [r.state for r in done]
    assert api.rate_limited == 0
    assert states.count("uncertain") == 3  # timed out after the request went out …
    assert states.count("sent") == len(plan) - 3 and "failed" not in states
    for chat in PRIVATES + GROUPS:
        shown = numbered(api, chat)
        assert shown == sorted(set(shown)), f"chat {chat}: out of order or twice: {shown}"
        expected = 3 if chat > 0 else 12
        assert len(shown) == expected, f"chat {chat}: {shown}"  # … yet shown once, never again
    both = {r.error for r in done if r.state == "uncertain"}
    assert all("timed out" in (e or "") for e in both)
    assert sum(r.attempts for r in done) >= 6  # the 5xx answers were retried
    # 3 messages per private chat at 1/s and 126 messages at 30/s overall take a while:
    assert elapsed > 2.0


async def test_the_bot_wide_budget_is_shared(world, database_url, tmp_path):
    """Many chats at once: the two senders together never exceed 30 a second; each alone
    would be allowed 30, so without sharing the fake would answer 429."""
    api, clock = world, FastClock()
    api.enforce_limits(per_second=30, group_per_minute=20, private_per_second=1, private_burst=1)
    extra = list(range(7200, 7290))
    for user in extra:
        api.add_user(user, f"u{user}", language_code="en")
    async with Process(api, database_url, tmp_path, clock, "A", limits()) as a, \
            Process(api, database_url, tmp_path, clock, "B", limits()) as b:
        await queue(a.db, clock, [(chat, OutMessage(text="m0")) for chat in extra])
        started = time.monotonic()
        a.sender.start()
        b.sender.start()
        await settled(a.db, timeout=30)
        elapsed = time.monotonic() - started
    assert api.rate_limited == 0
    assert all(numbered(api, chat) == [0] for chat in extra)
    assert elapsed > 2.0  # 90 messages at 30 a second: three windows at least


async def test_a_leased_chat_is_left_to_its_process(world, database_url, tmp_path):
    """While one process delivers a chat's head, the other sends nothing to that chat
    (it would overtake or duplicate) but serves the other chats."""
    api, clock = world, FastClock()
    roomy = limits(private_burst=5)
    async with Process(api, database_url, tmp_path, clock, "A", roomy) as a, \
            Process(api, database_url, tmp_path, clock, "B", roomy) as b:
        await queue(a.db, clock, [(7100, OutMessage(text="m0")), (7100, OutMessage(text="m1")),
                                  (7101, OutMessage(text="m0"))])
        [first, second] = await a.sender.due_rows()  # A leased both chats and is "sending"
        assert [len(first), len(second)] == [2, 1]  # 7100's two rows in one run
        await a.db.run(lambda s: s.execute(update(Outbox).where(  # as if A had sent m0 only
            Outbox.id == first[1].row.id).values(lease_owner=None, lease_until=None)))
        first.pop()
        assert await b.sender.flush() == 0  # m1 waits behind m0, still A's
        assert api.bot_messages(7100) == []
        await asyncio.gather(*(a.sender._send(run) for run in (first, second)))
        assert await b.sender.flush() == 1  # now B may take 7100's next one
        assert numbered(api, 7100) == [0, 1] and numbered(api, 7101) == [0]
        owners = {r.lease_owner for r in await rows(a.db)}
        assert owners == {None}


async def test_a_process_dying_mid_send(world, database_url, tmp_path):
    """A lease that runs out unsettled: its process died between asking Telegram and
    recording the answer. The message is sent again rather than lost: a new one marked
    with its doubt (it may show twice), an edit in place simply done again. The chat goes
    on after, in order."""
    api, clock = world, FastClock()
    async with Process(api, database_url, tmp_path, clock, "B", limits(private_burst=2)) as b:
        first = await api_message(b, -100101, "card v1")
        await b.db.run(lambda s: _ref(s, first))
        await queue(b.db, clock, [(7100, OutMessage(text="m0")), (7100, OutMessage(text="m1")),
                                  (-100101, OutMessage(text="card v2", ref="card:1", edit=True))])
        dead_until = clock() + timedelta(seconds=60)
        heads = [r.id for r in await rows(b.db) if r.payload["text"] in ("m0", "card v2")]
        await b.db.run(lambda s: s.execute(update(Outbox).where(Outbox.id.in_(heads)).values(
            lease_owner="dead:1", lease_until=dead_until)))
        assert await b.sender.flush() == 0  # leases still running: hands off
        clock.skip = timedelta(seconds=61)
        await b.sender.flush()
        await b.sender.flush()
        done = {(r.chat_id, r.payload["text"]): r for r in await rows(b.db)}
    assert done[("7100", "m0")].state == "sent"
    assert "dead:1" in done[("7100", "m0")].doubt  # counted with the uncertain ones
    assert done[("7100", "m1")].state == "sent" and done[("7100", "m1")].doubt is None
    assert numbered(api, 7100) == [0, 1]  # m0 again, then m1, in order
    assert done[("-100101", "card v2")].doubt is None  # an edit may be done twice
    assert done[("-100101", "card v2")].state == "sent"
    assert api.message(-100101, first)["text"] == "card v2"
    assert b.sender.stats["uncertain"] >= 1


async def test_a_stopped_run_gives_back_what_it_did_not_try(world, database_url, tmp_path):
    """A run cancelled by a stop: the message being sent stays leased (Telegram may have
    it: an orphan, sent again with its doubt), the ones behind it go back to the queue at
    once — not when the lease runs out, and without a doubt they have not earned — and
    the chat keeps its order."""
    api, clock = world, FastClock()
    async with Process(api, database_url, tmp_path, clock, "A", limits(private_burst=3)) as a:
        await queue(a.db, clock, [(7100, OutMessage(text=f"m{n}")) for n in range(3)])
        api.delay_next("sendMessage", 0.35)  # carried out, answered late (the client waits 0.4 s)
        run = asyncio.create_task(a.sender.flush())
        await api.wait_for(lambda: numbered(api, 7100) == [0], description="m0 received")
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        leases = {r.payload["text"]: (r.state, r.lease_owner, r.doubt) for r in await rows(a.db)}
        assert leases == {"m0": ("pending", "A", None), "m1": ("pending", None, None),
                          "m2": ("pending", None, None)}
        # its own orphan a process sends again at once (another waits for the lease)
        assert await a.sender.flush() == 3
        done = {r.payload["text"]: r for r in await rows(a.db)}
    assert all(r.state == "sent" for r in done.values())
    assert done["m0"].doubt is not None and "A" in done["m0"].doubt
    assert done["m1"].doubt is None and done["m2"].doubt is None
    assert numbered(api, 7100) == [0, 0, 1, 2]  # m0 again (it may show twice), then in order


async def api_message(process: Process, chat: int, text: str) -> int:
    sent = await process.bot.send_message(chat, text)
    return sent.message_id


async def _ref(session, message_id: int) -> None:
    session.add(MessageRef(ref="card:1", channel="telegram", chat_id="-100101",
                           message_id=str(message_id),
                           created_at=datetime(2026, 11, 23, tzinfo=timezone.utc)))


async def test_timed_out_edits_are_retried_and_new_messages_are_not(world, database_url,
                                                                    tmp_path):
    api, clock = world, FastClock()
    async with Process(api, database_url, tmp_path, clock, "A", limits()) as a:
        first = await api_message(a, -100102, "board v1")
        await a.db.run(lambda s: _board(s, first))
        await queue(a.db, clock, [(-100102, OutMessage(text="board v2", ref="board", edit=True)),
                                  (7101, OutMessage(text="m0"))])
        api.delay_next("editMessageText", 1.0)
        api.delay_next("sendMessage", 1.0)
        a.sender.start()
        done = {r.chat_id: r for r in await settled(a.db, timeout=20)}
    assert done["-100102"].state == "sent" and done["-100102"].attempts == 1
    assert api.message(-100102, first)["text"] == "board v2"
    assert done["7101"].state == "uncertain"
    assert numbered(api, 7101) == [0]  # shown once: the timeout came after Telegram had it
    edits = [p for name, p in api.requests if name == "editMessageText"]
    assert len(edits) == 2


async def _board(session, message_id: int) -> None:
    session.add(MessageRef(ref="board", channel="telegram", chat_id="-100102",
                           message_id=str(message_id),
                           created_at=datetime(2026, 11, 23, tzinfo=timezone.utc)))


async def test_a_refused_connection_is_retried_not_uncertain(world, database_url, tmp_path):
    """Nothing reached Telegram (the connection was refused): sending again cannot make a
    duplicate, so it is a plain retry."""
    api, clock = world, FastClock()
    async with Process(api, database_url, tmp_path, clock, "A", limits(private_burst=5)) as a:
        await queue(a.db, clock, [(7100, OutMessage(text="m0"))])
        a.bot._base_url = "http://127.0.0.1:9/bot" + TOKEN  # nothing listens on port 9
        assert await a.sender.flush() == 1
        row = (await rows(a.db))[0]
        assert (row.state, row.attempts) == ("pending", 1)
        assert "network" in row.error or "timed out" in row.error
        a.bot._base_url = api.base_url + TOKEN
        clock.skip = timedelta(seconds=5)
        assert await a.sender.flush() == 1
    assert (await rows_state(database_url)) == ["sent"]
    assert numbered(api, 7100) == [0]


async def rows_state(url: str) -> list[str]:
    db = Database(url)
    try:
        return [r.state for r in await rows(db)]
    finally:
        await db.dispose()


async def test_the_fake_enforces_the_limits(world, tmp_path, database_url):
    """The checks above mean something: sending without budgets gets 429s."""
    api = world
    api.enforce_limits(per_second=30, group_per_minute=20, private_per_second=1, private_burst=1)
    async with Process(api, database_url, tmp_path, FastClock(), "A", limits()) as a:
        assert [await _try(a.bot, 7100) for _ in range(2)] == [True, False]  # 1 a second
        group = [await _try(a.bot, -100101) for _ in range(21)]
        assert group == [True] * 20 + [False]  # 20 a minute in a group
        api.enforce_limits(per_second=3, group_per_minute=20, private_per_second=1)
        burst = [await _try(a.bot, chat) for chat in PRIVATES[1:5]]
        assert burst == [True, True, True, False]  # the bot's own limit
    assert api.rate_limited == 3


async def _try(bot, chat: int) -> bool:
    try:
        await bot.send_message(chat, "x")
        return True
    except Exception:
        return False


async def test_chats_waiting_for_their_budget_do_not_hold_up_one_that_may_go(
        world, database_url, tmp_path):
    """Twenty chats have spent their own budget (one message a minute here) with more
    queued; a chat queued after them may send at once and must not wait behind them for
    a free sending slot (16 chats at a time per process)."""
    api, clock = world, FastClock()
    slow = limits(private_per_second=1 / 60, concurrency=16)
    crowd, late = PRIVATES[:20], PRIVATES[20]
    async with Process(api, database_url, tmp_path, clock, "A", slow) as a:
        await queue(a.db, clock, [(chat, OutMessage(text=f"m{n}")) for n in range(2) for chat in crowd]
                    + [(late, OutMessage(text="m0"))])
        a.sender.start()
        await api.wait_for(lambda: numbered(api, late) == [0], timeout=10,
                           description="the late chat's message")
        await api.wait_for(lambda: all(numbered(api, chat) for chat in crowd), timeout=10,
                           description="every chat's first message")
        assert [numbered(api, chat) for chat in crowd] == [[0]] * 20  # their second must wait


async def test_a_budget_freeing_in_a_moment_is_used_the_moment_it_frees(world, database_url, tmp_path):
    """At the bot-wide limit, messages are leased a little ahead of their budget and
    sent when it frees: the fake, counting arrivals, never sees one too many."""
    api, clock = world, FastClock()
    api.enforce_limits(per_second=5, group_per_minute=20, private_per_second=1, private_burst=1)
    async with Process(api, database_url, tmp_path, clock, "A", limits(per_second=5)) as a:
        await queue(a.db, clock, [(chat, OutMessage(text="m0")) for chat in PRIVATES[:15]])
        a.sender.start()
        done = await settled(a.db, timeout=30)
        led = a.sender.stats["led"]
    assert [r.state for r in done] == ["sent"] * 15
    assert api.rate_limited == 0
    assert all(numbered(api, chat) == [0] for chat in PRIVATES[:15])
    assert led > 0  # some went out the moment their budget freed, leased before it did


async def test_a_card_posted_while_the_resident_is_forgotten_keeps_no_chat_id(
        world, database_url, tmp_path):
    """``/forget`` commits while a message with a ref is on its way to the resident: the
    outcome must not bring their chat id back as the ref's message (every later edit
    would go to them again). The rows of the chat name the pseudonym, as
    ``models.residents.privacy.forget`` leaves them, and the ref is simply not remembered."""
    api, clock = world, FastClock()
    async with Process(api, database_url, tmp_path, clock, "A", limits()) as a:
        await queue(a.db, clock, [(7100, OutMessage(text="your report", ref="mine:1"))])
        api.delay_next("sendMessage", 0.35)  # carried out at once, answered late
        run = asyncio.create_task(a.sender.flush())
        await api.wait_for(lambda: [body for body in map(lambda m: m.get("text"),
                                                          api.bot_messages(7100))
                                    if body == "your report"], description="sent")
        await a.db.run(forget_chat(7100))
        assert not run.done()  # the answer is still on its way
        assert await run == 1
        refs = list(await a.db.run(lambda s: s.scalars(select(MessageRef))))
        done = await rows(a.db)
    assert [(r.chat_id, r.state) for r in done] == [("forgotten-1", "sent")]
    assert [(r.ref, r.chat_id) for r in refs if r.chat_id == "7100"] == []


def forget_chat(chat: int):
    """What ``models.residents.privacy.forget`` does to a chat: its identity and its rows take the
    pseudonym, and the person is marked forgotten."""
    async def rename(session):
        now = datetime.now(timezone.utc)
        person = Person(name="resident-1", created_at=now, forgotten_at=now)
        session.add(person)
        await session.flush()
        session.add(Identity(person_id=person.id, channel="telegram", external_id="forgotten-1",
                             blocked=True))
        for table in (Outbox, MessageRef):
            await session.execute(update(table).where(
                table.channel == "telegram", table.chat_id == str(chat))
                .values(chat_id="forgotten-1"))
    return rename


async def test_a_retry_for_a_resident_forgotten_meanwhile_is_dropped_quietly(
        world, database_url, tmp_path):
    """An edit whose answer is lost is to be tried again; if the resident used /forget
    while it was on its way, there is no chat to try: the row is dropped as failed,
    with the reason, instead of being tried against the pseudonym."""
    api, clock = world, FastClock()
    async with Process(api, database_url, tmp_path, clock, "A", limits()) as a:
        shown = await api_message(a, 7100, "your report, v1")

        async def ref(session):
            session.add(MessageRef(ref="mine:1", channel="telegram", chat_id="7100",
                                   message_id=str(shown), created_at=clock()))
        await a.db.run(ref)
        await queue(a.db, clock, [(7100, OutMessage(text="your report, v2", ref="mine:1",
                                                    edit=True))])
        api.delay_next("editMessageText", 0.8)  # the client gives up after 0.4 s
        run = asyncio.create_task(a.sender.flush())
        await api.wait_for(lambda: any(name == "editMessageText" for name, _ in api.requests),
                           description="edit asked")
        await a.db.run(forget_chat(7100))
        assert not run.done()
        await run
        done = await rows(a.db)
        assert await a.sender.flush() == 0  # nothing left to try
    assert [(r.chat_id, r.state, r.error) for r in done] == [
        ("forgotten-1", "failed", "dropped: the resident erased their data (/forget)")]
