"""What the sender does when messages cannot be delivered: bounded retries, failed rows,
the admins told once per chat per incident (not per message), blocked residents left
alone, and timeouts recorded as uncertain rather than sent twice."""
from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from sqlalchemy import select

from flows import outbox
from models.residents import privacy
from models.messages.outbox import OutMessage, Target, enqueue
from models.store.tables import Identity, Outbox, Person

CENTRE_CHAT = -100500  # the district's chat: the command centre of the sample district
G03_CHAT = -100103


async def queue(whistle, chat: int | str, *texts: str) -> None:
    async def fill(session):
        for text in texts:
            enqueue(session, Target("telegram", str(chat)), OutMessage(text=text), whistle.core.now())
    await whistle.db.run(fill)


async def all_settled(whistle, chat: int | str) -> list:
    async def check():
        rows = await outbox(whistle, chat)
        return rows if rows and all(r.state != "pending" for r in rows) else None
    for _ in range(100):
        if rows := await check():
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"still pending: {[(r.state, r.error) for r in await outbox(whistle, chat)]}")


def alerts(api, chat: int) -> list[str]:
    return [m["text"] for m in api.bot_messages(chat) if "⚠️" in m.get("text", "")]


async def test_a_refusing_chat_is_reported_once_per_incident(whistle, api, clock):
    gone = -100999  # a chat Telegram does not know (deleted, or the bot was never added)
    await queue(whistle, gone, "one", "two", "three")
    rows = await all_settled(whistle, gone)
    assert [r.state for r in rows] == ["failed"] * 3
    assert all("chat not found" in r.error.lower() for r in rows)
    await api.wait_for(lambda: alerts(api, CENTRE_CHAT))
    await api.wait_idle()
    [alert] = alerts(api, CENTRE_CHAT)  # one alert for three failures
    assert str(gone) in alert and "chat not found" in alert.lower()
    assert whistle.sender.stats["alerts"] == 1

    clock.advance(minutes=61)  # a new incident an hour later: told again, with the count
    await queue(whistle, gone, "four")
    await all_settled(whistle, gone)
    await api.wait_for(lambda: len(alerts(api, CENTRE_CHAT)) == 2)
    t = whistle.core.i18n.get(None)  # group chats speak the deployment's language
    counted = t._("⚠️ Messages to {where} could not be delivered ({count} in the last {minutes} "
                  "minutes). Last error: {error}\nFurther failures there are reported at most "
                  "once every {minutes} minutes.", where=t._("chat {chat}", chat=gone), count=1,
                  minutes=60, error="ERROR")
    assert alerts(api, CENTRE_CHAT)[-1].startswith(counted.split("ERROR")[0])


async def test_5xx_is_retried_with_backoff_then_failed_and_reported(whistle, api, clock):
    whistle.config.sender.max_attempts = 3
    api.fail_next("sendMessage", 502, "Bad Gateway", count=3)
    await queue(whistle, G03_CHAT, "hello")
    for attempt in (1, 2):
        await api.wait_for(lambda: sum(1 for name, p in api.requests if name == "sendMessage"
                                       and p.get("chat_id") == G03_CHAT) == attempt)
        await api.wait_idle()
        [row] = await outbox(whistle, G03_CHAT)
        assert (row.state, row.attempts) == ("pending", attempt)
        assert row.next_try_at == clock.now + timedelta(seconds=2 ** attempt)  # backoff
        clock.advance(seconds=2 ** attempt)
        whistle.sender.wake()
    [row] = await all_settled(whistle, G03_CHAT)
    assert (row.state, row.attempts) == ("failed", 3)
    await api.wait_for(lambda: alerts(api, CENTRE_CHAT))
    [alert] = alerts(api, CENTRE_CHAT)
    assert "Bad Gateway" in alert and "g03" not in alert  # named by its unit, not its id
    assert str(G03_CHAT) not in alert


async def test_failures_in_the_command_centre_chat_go_to_the_admins(whistle, api, people):
    people(5001, "Admin", language="en")  # telegram.admins in the example config
    api.fail_next("sendMessage", 400, "Bad Request: chat not found")
    await queue(whistle, CENTRE_CHAT, "digest")
    await all_settled(whistle, CENTRE_CHAT)
    await api.wait_for(lambda: alerts(api, 5001))
    assert "chat not found" in alerts(api, 5001)[0].lower()


async def test_a_resident_who_blocked_the_bot_is_not_an_incident(whistle, api, people):
    people(9001, "Li Si", language="en")
    api.block_user(9001)
    await queue(whistle, 9001, "one", "two", "three")
    rows = await all_settled(whistle, 9001)
    assert [r.state for r in rows] == ["failed"] * 3
    sends = [p for name, p in api.requests if name == "sendMessage" and p.get("chat_id") == 9001]
    assert len(sends) == 1  # the first 403 dropped the rest without asking Telegram again
    await api.wait_idle()
    assert alerts(api, CENTRE_CHAT) == [] and whistle.sender.stats["alerts"] == 0


async def test_a_refusal_for_a_resident_forgotten_meanwhile_is_not_an_incident(whistle, api,
                                                                              people):
    """A send that Telegram refuses while the resident uses /forget: the chat it names no
    longer exists in Whistle, so there is nobody to report it about. No admin alert, and
    the row keeps only the pseudonym."""
    await people(9001, "Li Si", language="en").say("/start")
    await api.wait_idle()  # the rest of the welcome is out
    refusal = asyncio.Event()  # the refusal is answered only once /forget has committed
    api.fail_next("sendMessage", 400, "Bad Request: chat not found", hold=refusal)
    await queue(whistle, 9001, "on its way")
    await api.wait_for(lambda: any(name == "sendMessage" and p.get("text") == "on its way"
                                   for name, p in api.requests), description="send asked")

    async def forget(session):
        person = await session.scalar(select(Person).join(Identity).where(
            Identity.channel == "telegram", Identity.external_id == "9001"))
        pseudonym = (await privacy.forget(session, whistle.core, person))["telegram"]
        # the refusal is still on its way: the sender has not recorded an outcome
        row = await session.scalar(select(Outbox).where(
            Outbox.chat_id == pseudonym, Outbox.payload["text"].as_string() == "on its way"))
        return pseudonym, row.state, row.lease_owner is not None
    pseudonym, state, leased = await whistle.db.run(forget)
    assert (state, leased) == ("pending", True)
    refusal.set()

    rows = await all_settled(whistle, pseudonym)
    [row] = [r for r in rows if r.payload.get("text") == "on its way"]
    assert (row.state, "chat not found" in row.error.lower()) == ("failed", True)
    assert await outbox(whistle, 9001) == []
    await api.wait_idle()
    assert alerts(api, CENTRE_CHAT) == [] and whistle.sender.stats["alerts"] == 0


async def test_a_chat_spelt_like_a_pseudonym_is_still_an_incident(whistle, api):
    """Only the chat of a resident who used /forget is let go quietly (the database says
    whose it is); one whose id merely looks like a pseudonym (a WeCom userid can) is
    reported as usual."""
    await queue(whistle, "forgotten-7", "hello")
    [row] = await all_settled(whistle, "forgotten-7")
    assert row.state == "failed" and "chat not found" in row.error.lower()
    await api.wait_for(lambda: alerts(api, CENTRE_CHAT), description="an alert")
    assert "forgotten-7" in alerts(api, CENTRE_CHAT)[0]


async def test_a_message_from_a_newer_version_is_left_to_it(whistle, api, caplog):
    """In a rolling deploy an older process meets a row with a field it does not know: it
    neither sends it without the field nor gives it up, but leaves it for the newer
    process that queued it (and says so once). Other chats go on."""
    async def fill(session):
        enqueue(session, Target("telegram", str(G03_CHAT)), OutMessage(text="newer"),
                whistle.core.now())
        await session.flush()
        row = await session.scalar(select(Outbox).where(Outbox.chat_id == str(G03_CHAT)))
        row.payload = {**row.payload, "sparkle": True}
        enqueue(session, Target("telegram", str(CENTRE_CHAT)), OutMessage(text="older"),
                whistle.core.now())
    with caplog.at_level("WARNING", logger="bot.delivery.sender"):
        await whistle.db.run(fill)
        await all_settled(whistle, CENTRE_CHAT)
        for _ in range(3):  # later passes meet it again
            await whistle.sender.flush()
    [row] = await outbox(whistle, G03_CHAT)
    assert (row.state, row.lease_owner, row.error) == ("pending", None, None)
    assert api.bot_messages(G03_CHAT) == []
    assert [m["text"] for m in api.bot_messages(CENTRE_CHAT)] == ["older"]
    assert caplog.text.count("queued by a newer version (fields this version does not know: "
                             "sparkle)") == 1


async def test_a_timeout_after_sending_is_uncertain_and_not_repeated(whistle, api, people):
    people(9001, "Li Si", language="en")
    whistle.application.bot.request.timeouts["read"] = 0.3  # gives up soon
    api.delay_next("sendMessage", 1.0)
    await queue(whistle, 9001, "only once", "after it")
    rows = await all_settled(whistle, 9001)
    assert [r.state for r in rows] == ["uncertain", "sent"]
    texts = [m["text"] for m in api.bot_messages(9001)]
    assert texts == ["only once", "after it"]  # shown once, in order
    assert whistle.sender.stats["uncertain"] == 1


@pytest.mark.parametrize("code", [500, 502, 503])
async def test_a_server_error_is_a_plain_retry(whistle, api, people, clock, code):
    """Telegram answered with an error page: it did not take the message, so sending it
    again cannot duplicate it."""
    people(9001, "Li Si", language="en")
    api.fail_next("sendMessage", code, "Internal Server Error")
    await queue(whistle, 9001, "hello")
    await api.wait_for(lambda: any(name == "sendMessage" for name, _ in api.requests))
    await api.wait_idle()
    [row] = await outbox(whistle, 9001)
    assert (row.state, row.attempts) == ("pending", 1)
    clock.advance(seconds=3)
    whistle.sender.wake()
    [row] = await all_settled(whistle, 9001)
    assert row.state == "sent"
    assert [m["text"] for m in api.bot_messages(9001)] == ["hello"]


async def test_a_long_text_failing_halfway_goes_on_from_where_it_stopped(whistle, api, clock):
    """A text longer than one Telegram message goes out in parts; when a later part
    fails, the retry sends only the parts not shown yet — none twice, in order."""
    api.add_user(7301, "Long", language_code="en")
    lines = [f"line {n:03d} " + "x" * 990 for n in range(12)]  # about 12,000 characters: 3 parts
    api.fail_next("sendMessage", 502, "Bad Gateway", after=1)  # the second part fails
    await queue(whistle, 7301, "\n".join(lines))
    for _ in range(100):  # then the row waits for its retry, due in 2 s (business time)
        [row] = await outbox(whistle, 7301)
        if row.attempts == 1:
            break
        await asyncio.sleep(0.05)
    assert [m["text"] for m in api.bot_messages(7301)] == ["\n".join(lines[:4])]
    assert row.state == "pending" and row.payload["text"] == "\n".join(lines[4:])
    clock.advance(seconds=3)
    whistle.sender.wake()
    [row] = await all_settled(whistle, 7301)
    assert row.state == "sent"
    shown = [m["text"] for m in api.bot_messages(7301)]
    assert "\n".join(shown) == "\n".join(lines) and len(shown) == 3
