"""Webhook mode over real HTTP: the fake Bot API posts updates to the bot's own web
server with the secret header, as Telegram does. Wrong or missing secrets are refused
before anything happens, junk gets 400, a redelivered update is handled once, and a
whole report goes through."""
from __future__ import annotations

import asyncio
import copy
import re
import socket

import aiohttp
import pytest
from sqlalchemy import func, select

from bot.config import ConfigError, load_config
from models.store.tables import Inbox, Outbox, Ticket
from tests.conftest import ROOT
from tests.flows import G01_CHAT, file_report

SECRET = "s3cret_Token-for-tests"
HEADER = "X-Telegram-Bot-Api-Secret-Token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def config(config):
    """The test config in webhook mode on a known port (the URL must be set before start)."""
    port = free_port()
    config.web.port = port
    config.telegram.mode = "webhook"
    config.telegram.webhook_url = f"http://127.0.0.1:{port}{config.telegram.webhook_path}"
    config.telegram.secret_token = SECRET
    return config


def start_update(api, user_id: int, text: str = "/start") -> dict:
    """A text-message update as Telegram would post it (stored in the fake's chat, not queued)."""
    message = api._store_message(api._chat(user_id), api._users[user_id], {
        "text": text, "entities": [{"type": "bot_command", "offset": 0, "length": len(text)}]})
    return {"update_id": 900_000 + message["message_id"] + user_id, "message": copy.deepcopy(message)}


async def post(whistle, body, headers=None, raw=None) -> tuple[int, str]:
    url = whistle.web.origin + whistle.config.telegram.webhook_path
    async with aiohttp.ClientSession() as session:
        kwargs = {"data": raw} if raw is not None else {"json": body}
        async with session.post(url, headers=headers or {}, **kwargs) as answer:
            return answer.status, await answer.text()


async def inbox_rows(whistle) -> int:
    return await whistle.db.run(lambda s: s.scalar(select(func.count()).select_from(Inbox)))


async def test_the_service_registers_its_webhook_and_never_polls(whistle, api):
    assert api.webhook["url"] == whistle.config.telegram.webhook_url
    assert api.webhook["secret_token"] == SECRET
    assert set(api.webhook["allowed_updates"]) == {"message", "callback_query"}
    assert not [name for name, _ in api.requests if name == "getUpdates"]
    info = await whistle.application.bot.get_webhook_info()
    assert info.url == whistle.config.telegram.webhook_url and info.pending_update_count == 0


async def test_a_full_report_arrives_through_the_webhook(whistle, api, people):
    resident = people(9101, "Alice", "en")
    filed = await file_report(api, whistle, resident)
    assert filed.card is not None and str(filed.id) in str(filed.card["reply_markup"])
    ticket = await whistle.db.run(lambda s: s.get(Ticket, filed.id))
    assert ticket.number == filed.number and ticket.state in ("routed", "new", "open")
    statuses = {status for _, status in api.webhook_deliveries}
    assert statuses == {200}, api.webhook_deliveries
    delivered = [update_id for update_id, _ in api.webhook_deliveries]
    assert len(delivered) == len(set(delivered)) >= 7  # each step once: start, category, …, confirm
    assert await inbox_rows(whistle) == len(delivered)
    assert api.message(G01_CHAT, filed.card["message_id"]) is not None


@pytest.mark.parametrize("headers", [{}, {HEADER: "wrong"}, {HEADER: SECRET + "x"},
                                     {HEADER: SECRET[:-1]}, {HEADER: ""}])
async def test_without_the_right_secret_nothing_happens(whistle, api, people, headers):
    people(9102, "Bob", "en")
    before = len(api.bot_messages(9102))
    status, _ = await post(whistle, start_update(api, 9102), headers)
    assert status == 403
    await api.wait_idle()
    assert len(api.bot_messages(9102)) == before
    assert await inbox_rows(whistle) == 0


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"{}", b'{"update_id": "7"}',
                                 b'{"update_id": true}', b'{"update_id": 7, "message": "x"}',
                                 b'{"update_id": 7, "message": {"text": 5}}',
                                 b'{"update_id": 7, "callback_query": {"id": 1}}', b"\xff\xfe"])
async def test_a_malformed_body_gets_400(whistle, api, raw):
    status, _ = await post(whistle, None, {HEADER: SECRET, "Content-Type": "application/json"}, raw)
    assert status == 400
    await api.wait_idle()
    assert await inbox_rows(whistle) == 0
    assert not [name for name, _ in api.requests if name.startswith("send")]


async def test_a_body_over_the_update_limit_gets_413(whistle, api):
    """An update is read up to 1 MB (bot.web.UPDATE_BODY_BYTES): a longer body is cut off
    there, even one sent without a length (chunked), and nothing is handled."""
    from bot.web import UPDATE_BODY_BYTES

    async def chunks():
        yield b'{"update_id": 7, "message": {"text": "'
        for _ in range(UPDATE_BODY_BYTES // 65536 + 1):
            yield b"a" * 65536
        yield b'"}}'
    status, _ = await post(whistle, None, {HEADER: SECRET, "Content-Type": "application/json"},
                           chunks())
    assert status == 413
    status, _ = await post(whistle, None, {HEADER: SECRET, "Content-Type": "application/json"},
                           b"x" * (UPDATE_BODY_BYTES + 1))
    assert status == 413
    await api.wait_idle()
    assert await inbox_rows(whistle) == 0


async def test_the_right_secret_is_handled(whistle, api, people):
    people(9103, "Carol", "en")
    status, body = await post(whistle, start_update(api, 9103), {HEADER: SECRET})
    assert (status, body) == (200, "ok")
    reply = await api.wait_message(9103)
    assert reply["text"]
    assert await inbox_rows(whistle) == 1


async def test_the_same_update_posted_twice_is_handled_once(whistle, api, people):
    people(9104, "Dan", "en")
    people(9106, "Fay", "en")  # the same update once, for comparison
    assert (await post(whistle, start_update(api, 9106), {HEADER: SECRET}))[0] == 200
    update = start_update(api, 9104)
    first, second = await asyncio.gather(post(whistle, update, {HEADER: SECRET}),
                                         post(whistle, update, {HEADER: SECRET}))
    assert first[0] == second[0] == 200
    third = await post(whistle, update, {HEADER: SECRET})  # a late retry
    assert third[0] == 200
    assert await inbox_rows(whistle) == 2
    rows = [await whistle.db.run(lambda s, chat=chat: s.scalar(
        select(func.count()).select_from(Outbox).where(Outbox.chat_id == chat)))
        for chat in ("9104", "9106")]
    assert rows[0] == rows[1] >= 1  # answered as often as the update posted once
    await api.wait_for(lambda: len(api.bot_messages(9104)) == len(api.bot_messages(9106)) == rows[0],
                       description="both answers delivered")
    await api.wait_idle()
    assert len(api.bot_messages(9104)) == rows[0]
    assert whistle.metrics.updates.labels(channel="telegram", outcome="duplicate")._value.get() == 2


async def test_the_fake_telegram_retries_until_the_bot_accepts(whistle, api, people):
    """A refused delivery (here: a stale secret) is retried, in order, until answered 2xx."""
    people(9105, "Eve", "en")
    api.webhook["secret_token"] = "stale"
    api.user_sends_text(9105, 9105, "/start")
    await api.wait_for(lambda: sum(1 for _, status in api.webhook_deliveries if status == 403) >= 2,
                       description="two refused deliveries")
    assert not api.bot_messages(9105)
    info = await whistle.application.bot.get_webhook_info()
    assert info.pending_update_count == 1 and "403" in info.last_error_message
    api.webhook["secret_token"] = SECRET
    await api.wait_message(9105)
    assert api.webhook_deliveries[-1][1] == 200
    assert await inbox_rows(whistle) == 1


async def test_polling_is_refused_while_a_webhook_is_set(whistle, api):
    with pytest.raises(Exception, match="webhook is active"):
        await whistle.application.bot.get_updates(timeout=0)


EXAMPLE = (ROOT / "config.example.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize("telegram, web, problem", [
    ('mode = "webhook"\nwebhook_url = "https://x.example/tg"', "", "secret_token"),
    ('mode = "webhook"\nsecret_token = "abc"', "", "webhook_url"),
    ('mode = "webhook"\nwebhook_url = "x.example/tg"\nsecret_token = "abc"', "", "webhook_url"),
    ('mode = "webhook"\nwebhook_url = "https://x.example/tg"\nsecret_token = "abc"\n'
     'webhook_path = "tg"', "", "webhook_path"),
    ('mode = "webhook"\nwebhook_url = "https://x.example/tg"\nsecret_token = "a b"', "", "pattern"),
    ('mode = "webhook"\nwebhook_url = "https://x.example/tg"\nsecret_token = "abc"',
     "enabled = false", "web server"),
])
def test_webhook_mode_needs_url_secret_and_web_server(tmp_path, telegram, web, problem):
    text = EXAMPLE.replace('mode = "polling"', telegram)
    if web:
        text = re.sub(r"(\[web\][^\[]*?)enabled = true", lambda m: m.group(1) + web, text)
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=problem):
        load_config(path, env={})


def test_the_secret_may_come_from_the_environment(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(EXAMPLE.replace('mode = "polling"',
                                    'mode = "webhook"\nwebhook_url = "https://x.example/tg"'),
                    encoding="utf-8")
    config = load_config(path, env={"WHISTLE_TELEGRAM_SECRET_TOKEN": "from_env"})
    assert config.telegram.mode == "webhook" and config.telegram.secret_token == "from_env"
