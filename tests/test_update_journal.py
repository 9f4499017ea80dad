"""Long polling's journal (bot/telegram/journal.py): an update python-telegram-bot had already
confirmed to Telegram when the process was killed is handled at the next start, an
update handled before the kill is not handled twice, a batch is in the journal while
it is being handled and leaves it afterwards, and a batch the journal cannot take is
not confirmed (it comes again)."""
from __future__ import annotations

import asyncio

from sqlalchemy import func, insert, select
from telegram import Update

from bot.app import Whistle
from bot.telegram.updates import PerChatUpdateProcessor
from conftest import TOKEN
from models.store.tables import ReceivedUpdate

BOT_ID = int(TOKEN.split(":")[0])


def start_update(update_id: int, user_id: int, message_id: int = 1) -> dict:
    """A resident's /start as Telegram delivers it."""
    user = {"id": user_id, "is_bot": False, "first_name": "Li", "language_code": "en"}
    return {"update_id": update_id, "message": {
        "message_id": message_id, "date": 1_790_000_000, "from": user,
        "chat": {"id": user_id, "type": "private", "first_name": "Li"}, "text": "/start",
        "entities": [{"type": "bot_command", "offset": 0, "length": 6}]}}


async def journalled(service: Whistle) -> list[int]:
    return list(await service.db.run(lambda s: s.scalars(
        select(ReceivedUpdate.update_id).order_by(ReceivedUpdate.update_id))))


async def until(predicate, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


async def test_an_update_a_killed_process_fetched_is_handled_at_the_next_start(
        config, clock, api, people):
    """The killed process had fetched the update (so Telegram will not send it again)
    and written it to the journal, but never handled it."""
    people(9001, "Li Si", language="en")
    service = Whistle(config, clock=clock)
    await service.prepare()
    await service.db.run(lambda s: s.execute(insert(ReceivedUpdate).values(
        bot_id=BOT_ID, update_id=500, payload=start_update(500, 9001), received_at=clock())))
    await service.start()
    try:
        await api.wait_message(9001, contains="Welcome")
        # handled, so it leaves the journal with the next batch
        api.user_sends_text(9001, 9001, "/help")
        await api.wait_message(9001, contains="/my")
        await until(lambda: _empty(service))
    finally:
        await service.stop()
    assert len([m for m in api.bot_messages(9001) if "Welcome" in m.get("text", "")]) == 1


async def _empty(service: Whistle) -> bool:
    return await journalled(service) == []


async def test_a_journalled_update_that_was_handled_is_not_handled_again(
        config, clock, api, people):
    """Killed after the handler committed, before the update left the journal: the
    replay finds its key in the inbox and does nothing."""
    people(9001, "Li Si", language="en")
    first = Whistle(config, clock=clock)
    await first.start()
    try:
        raw = start_update(0, 9001)
        del raw["update_id"]
        raw = {**raw, "update_id": api.enqueue_update(raw)}  # numbered as Telegram does
        await api.wait_message(9001, contains="Welcome")
        await api.wait_message(9001, contains="What kind of problem")
    finally:
        await first.stop()
    shown = len(api.bot_messages(9001))
    second = Whistle(config, clock=clock)
    await second.prepare()
    await second.db.run(lambda s: s.execute(insert(ReceivedUpdate).values(
        bot_id=BOT_ID, update_id=raw["update_id"], payload=raw, received_at=clock())))
    await second.start()
    try:
        await until(lambda: _empty(second))  # replayed, found in the inbox, deleted
        api.user_sends_text(9001, 9001, "/help")  # and what comes next is answered
        await api.wait_message(9001, contains="/my")
    finally:
        await second.stop()
    texts = [m.get("text", "") for m in api.bot_messages(9001)]
    assert len(texts) == shown + 1, texts[shown:]  # only the help text
    assert sum("Welcome" in t for t in texts) == 1


async def test_a_batch_is_journalled_while_it_is_handled_and_leaves_afterwards(
        whistle, api, people, monkeypatch):
    people(9001, "Li Si", language="en")
    release = asyncio.Event()
    handle = whistle.handle

    async def slow_handle(inp):
        await release.wait()
        return await handle(inp)
    monkeypatch.setattr(whistle, "handle", slow_handle)
    api.user_sends_text(9001, 9001, "/start")
    await until(lambda: _has_rows(whistle))  # fetched, so confirmed by the next poll …
    first = await journalled(whistle)
    assert len(first) == 1
    release.set()  # … and handled only now
    await api.wait_message(9001, contains="Welcome")
    api.user_sends_text(9001, 9001, "/help")  # the next batch deletes the handled one
    await api.wait_message(9001, contains="/my")
    await until(lambda: _without(whistle, first[0]))


async def _has_rows(service: Whistle) -> bool:
    return bool(await journalled(service))


async def _without(service: Whistle, update_id: int) -> bool:
    return update_id not in await journalled(service)


async def test_a_batch_the_journal_cannot_take_is_not_confirmed(whistle, api, people, monkeypatch):
    """The database refuses the batch: python-telegram-bot treats it as a network error,
    asks again with the same offset, and the update is handled once."""
    people(9001, "Li Si", language="en")
    record = whistle.journal.record
    refused = []

    async def flaky_record(updates):
        if updates and not refused:
            refused.append([u["update_id"] for u in updates])
            raise ConnectionError("database restarting")
        return await record(updates)
    monkeypatch.setattr(whistle.journal, "record", flaky_record)
    api.user_sends_text(9001, 9001, "/start")
    await api.wait_message(9001, contains="Welcome")
    assert refused, "the journal was never asked"
    texts = [m.get("text", "") for m in api.bot_messages(9001)]
    assert sum("Welcome" in t for t in texts) == 1
    rows = await whistle.db.run(lambda s: s.scalar(select(func.count()).select_from(ReceivedUpdate)))
    assert rows <= 1  # the handled update leaves with the next batch


async def test_an_update_cancelled_by_a_stop_stays_in_the_journal():
    """Only an update whose handlers ran leaves the journal: one cancelled mid-way (a
    stop that did not wait) is replayed at the next start."""
    done: list[int] = []
    processor = PerChatUpdateProcessor(on_done=done.append)
    update = Update.de_json(start_update(41, 9001), None)
    await processor.process_update(update, asyncio.sleep(0))
    assert done == [41]
    started = asyncio.Event()

    async def handler():
        started.set()
        await asyncio.sleep(3600)
    task = asyncio.create_task(processor.process_update(Update.de_json(start_update(42, 9001), None),
                                                        handler()))
    await started.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert done == [41]


async def test_a_clean_stop_leaves_nothing_to_replay(config, clock, api, people):
    """Updates handled since the last batch leave the journal by the end of the stop (with
    the updater's last getUpdates, or ``flush``): the next start replays nothing."""
    people(9001, "Li Si", language="en")
    service = Whistle(config, clock=clock)
    await service.start()
    try:
        api.user_sends_text(9001, 9001, "/start")
        await api.wait_message(9001, contains="Welcome")
        api.user_sends_text(9001, 9001, "/help")
        await api.wait_message(9001, contains="/my")
    finally:
        await service.stop()
    assert await service.db.run(lambda s: s.scalar(
        select(func.count()).select_from(ReceivedUpdate))) == 0
