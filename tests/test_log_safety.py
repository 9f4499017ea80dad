"""Secrets and residents' phone numbers never reach the log.

An error is driven through each entry point over real HTTP — a Telegram update (a
button press whose answer Telegram refuses), the webhook, a WeCom callback, an Open311
POST, a dashboard action and a failed send — with every secret configured, and the log
captured as the service writes it (JSON lines, and the console format). The error is
logged with its traceback (code and exception); no configured secret, request secret
(API key, password, session cookie, CSRF token) and no phone number appears in it."""
from __future__ import annotations

import asyncio
import io
import json
import logging

import aiohttp
import pytest
from sqlalchemy import text

from bot.config import LoggingConfig, WecomConfig
from bot.observability import configure_logging
from bot.open311 import keys
from bot.wecom.crypto import MsgCrypt
from models.messages.outbox import OutMessage, Target, enqueue
from tests.fake_wecom import CORP_ID, FakeWecom
from tests.flows import G01_CHAT, file_report
from tests.test_dashboard import client, make_ticket, make_user, quick_hashes  # noqa: F401
from tests.test_webhook import free_port
from tests.test_wecom import AES_KEY, AGENT_ID, Member

PHONE = "13812345678"  # a resident's mobile, as residents write it …
PHONE_SPACED = "138 1234 5678"  # … and with spaces
WECOM_SECRET = "Wecom-App-Secret_0123456789abcdefghijklmnop"
WECOM_TOKEN = "WecomCallbackToken42"
METRICS_TOKEN = "scraper-Bearer-Token-0987654321"
WEBHOOK_SECRET = "Webhook_Secret-token-5551234"
PASSWORD = "correct horse battery"


@pytest.fixture
async def wecom_api():
    fake = FakeWecom(secret=WECOM_SECRET)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def webhook_mode() -> bool:
    return False  # a test turns it on with parametrize


@pytest.fixture
def config(config, wecom_api, webhook_mode):
    """Every secret the service can hold, set; Telegram's webhook with ``webhook_mode``."""
    config.wecom = WecomConfig(
        enabled=True, corp_id=CORP_ID, agent_id=AGENT_ID, secret=WECOM_SECRET,
        token=WECOM_TOKEN, encoding_aes_key=AES_KEY, api_base_url=wecom_api.base_url)
    config.web.metrics_token = METRICS_TOKEN
    config.telegram.secret_token = WEBHOOK_SECRET
    if webhook_mode:
        port = free_port()
        config.web.port = port
        config.telegram.mode = "webhook"
        config.telegram.webhook_url = f"http://127.0.0.1:{port}{config.telegram.webhook_path}"
    return config


def configured_secrets(whistle) -> list[str]:
    cfg = whistle.config
    found = [cfg.telegram.token, cfg.telegram.secret_token, cfg.wecom.secret, cfg.wecom.token,
             cfg.wecom.encoding_aes_key, cfg.web.metrics_token]
    assert all(found)
    return found


class Captured:
    """The service's log as written: JSON lines or console text."""

    def __init__(self, fmt: str):
        self.stream = io.StringIO()
        self.root = logging.getLogger()
        self.level = self.root.level
        self.handler = configure_logging(LoggingConfig(format=fmt, level="DEBUG"),
                                         stream=self.stream)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def close(self) -> None:
        self.root.removeHandler(self.handler)
        self.root.setLevel(self.level)

    async def wait_for(self, needle: str) -> str:
        for _ in range(200):
            if needle in self.text:
                return self.text
            await asyncio.sleep(0.025)
        raise AssertionError(f"{needle!r} never logged:\n{self.text[-3000:]}")


@pytest.fixture(params=["json", "console"])
def log(request):
    captured = Captured(request.param)
    captured.format = request.param
    yield captured
    captured.close()


def assert_clean(log: Captured, secrets: list[str], event: str, exception: str) -> None:
    """The failure is in the log with its traceback, and nothing secret or personal is."""
    text = log.text
    assert event in text and exception in text, text[-3000:]
    if log.format == "json":
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        failed = [line for line in lines if event in line["event"] and "exception" in line]
        assert failed, f"no traceback logged with {event!r}"
        for stack in failed[0]["exception"]:
            assert stack["frames"] and all("locals" not in frame for frame in stack["frames"])
    else:
        assert "Traceback (most recent call last)" in text
    for secret in secrets:
        assert secret not in text, f"{secret!r} in the log"
    for phone in (PHONE, PHONE_SPACED):
        assert phone not in text, f"{phone!r} in the log"


async def test_a_failed_button_press_logs_no_token_and_no_phone(whistle, api, people, log):
    """Telegram refuses to answer a button: the update's error reaches python-telegram-bot's
    error handler, whose traceback passes the bot (its token) and the card (the phone)."""
    resident = people(9301, "Lin", "en")
    people(1001, "王建国")
    filed = await file_report(api, whistle, resident,
                              description=f"Rubbish by the gate, call me on {PHONE} or {PHONE_SPACED}")
    api.fail_next("answerCallbackQuery", 500, "Internal Server Error")
    api.user_presses(1001, G01_CHAT, filed.card["message_id"], f"claim:{filed.id}")
    await log.wait_for("Internal Server Error")
    assert_clean(log, configured_secrets(whistle), "failed", "Internal Server Error")


@pytest.mark.parametrize("webhook_mode", [True])
async def test_a_failed_webhook_update_logs_no_secret(whistle, api, people, log, monkeypatch,
                                                      webhook_mode):
    """An update posted to the webhook fails inside the web handler: the request's
    traceback passes the handler, which holds the webhook secret and the whole config."""
    resident = people(9302, "Ma", "en")

    async def broken(update, coroutine):
        coroutine.close()
        raise RuntimeError("the update processor broke")
    monkeypatch.setattr(whistle.application.update_processor, "process_update", broken)
    api.user_sends_text(resident.id, resident.id, f"My number is {PHONE}")
    await log.wait_for("the update processor broke")
    assert_clean(log, configured_secrets(whistle), "Error handling request",
                 "the update processor broke")


async def test_a_failed_wecom_callback_logs_no_secret_and_no_phone(whistle, wecom_api, clock,
                                                                    log, monkeypatch):
    member = Member(whistle, wecom_api, clock, "liming",
                    crypt=MsgCrypt(WECOM_TOKEN, AES_KEY, CORP_ID))  # signed with our token

    async def broken(inp):
        raise RuntimeError("the core broke")
    monkeypatch.setattr(whistle, "handle", broken)
    status, _ = await member.post(*member.request(member.plaintext(
        "text", Content=f"Broken lamp, call {PHONE}")))
    assert status == 200
    await log.wait_for("the core broke")
    assert_clean(log, configured_secrets(whistle), "WeCom message", "the core broke")


async def test_a_failed_open311_post_logs_no_key_and_no_phone(whistle, log, monkeypatch):
    from models.tickets import external
    key = await whistle.db.run(lambda s: keys.add(s, "city-app", whistle.core.now()))

    async def broken(*args, **kwargs):
        raise RuntimeError("filing broke")
    monkeypatch.setattr(external, "file_report", broken)
    url = f"{whistle.web.origin}{whistle.config.open311.path}/requests.json"
    form = {"api_key": key, "service_code": "garbage", "lat": "39.93524", "long": "116.40107",
            "description": f"Rubbish at the gate, call {PHONE}", "phone": PHONE,
            "first_name": "Zhang"}
    async with aiohttp.ClientSession() as http, http.post(url, data=form) as answer:
        assert answer.status == 400  # the spec's general service error
    await log.wait_for("filing broke")
    assert_clean(log, [*configured_secrets(whistle), key], "Open311 POST", "filing broke")


async def test_a_failed_dashboard_action_logs_no_password_session_or_phone(
        whistle, client, log, monkeypatch):  # noqa: F811 - the fixture imported above
    from dashboard import actions
    await make_user(whistle, "admin", admin=True, password=PASSWORD)
    ticket = await make_ticket(whistle, description=f"Water leaking, call {PHONE}", phone=PHONE)
    browser = client()
    status, _, _ = await browser.login("admin", PASSWORD)
    assert status == 303
    session = next(c.value for c in browser.http.cookie_jar if c.key == "whistle_session")

    async def broken(*args, **kwargs):
        raise RuntimeError("the action broke")
    monkeypatch.setattr(actions, "perform", broken)
    status, _, _ = await browser.post(f"/tickets/{ticket.number}/close", {
        "reason": "duplicate", "note": f"Called the resident on {PHONE}"})
    assert status == 500
    await log.wait_for("the action broke")
    assert_clean(log, [*configured_secrets(whistle), PASSWORD, session, browser.csrf],
                 "Error handling request", "the action broke")


async def test_a_failed_send_logs_no_token_and_no_phone(whistle, api, log):
    """A message the sender cannot build (its picture is missing) is logged with its
    traceback, which passes the message (a phone number) and the bot (the token)."""
    async def queued(session):
        enqueue(session, Target("telegram", str(G01_CHAT)), OutMessage(
            text=f"Call the resident on {PHONE}", pictures=["charts/missing.png"]),
            whistle.core.now())
    await whistle.db.run(queued)
    whistle.sender.wake()
    await log.wait_for("raised")
    assert_clean(log, configured_secrets(whistle), "raised", "missing.png")


async def test_secrets_in_an_exception_message_a_url_and_fields_are_masked(whistle, log):
    """Where no frame is involved: an exception's message (a Bot API URL with the token, a
    WeCom URL with the secret), the message's arguments and extra fields. Ids, ticket
    numbers and times stay readable."""
    token, secret = whistle.config.telegram.token, WECOM_SECRET
    other_token = "7012345678:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"  # a token of another bot
    key = "w311_" + "k" * 43  # an Open311 key, configured nowhere
    logger = logging.getLogger("whistle.test")
    try:
        raise ConnectionError(f"cannot reach https://api.telegram.org/bot{token}/sendMessage; "
                              f"gettoken?corpid={CORP_ID}&corpsecret={secret}")
    except ConnectionError:
        logger.exception("send to chat %s failed, ticket %s", -100101, "20261123-0001")
    logger.warning("resident wrote %r", f"call +86 {PHONE} or {PHONE_SPACED}",
                   extra={"url": f"http://x/?api_key={key}", "other": other_token,
                          "auth": f"Bearer {METRICS_TOKEN}"})
    text = log.text
    assert "cannot reach https://api.telegram.org/bot" in text and "ConnectionError" in text
    assert "-100101" in text and "20261123-0001" in text and CORP_ID in text
    for leaked in (token, secret, other_token, key, METRICS_TOKEN, PHONE, PHONE_SPACED):
        assert leaked not in text, f"{leaked!r} in the log"
    assert text.count("[redacted]") >= 6


async def test_a_database_error_logs_no_resident_text(whistle, api, people, log):
    """The database refuses the step that stores a resident's description (a trigger,
    standing in for any database error): the error is logged, but not the statement's
    parameters, which hold what the resident wrote."""
    resident = people(9303, "Qin", "en")
    words = "Broken water pipe by the old willow tree"
    if whistle.db.engine.dialect.name == "postgresql":
        ddl = [("CREATE FUNCTION whistle_refuse() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql"),
               ("CREATE TRIGGER refuse BEFORE UPDATE ON dialogue FOR EACH ROW WHEN "
                "(NEW.draft::text LIKE '%willow%') EXECUTE FUNCTION whistle_refuse()")]
    else:
        ddl = [("CREATE TRIGGER refuse BEFORE UPDATE ON dialogue WHEN NEW.draft LIKE '%willow%' "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")]

    async def refuse(session):
        for statement in ddl:
            await session.execute(text(statement))
    await whistle.db.run(refuse)
    api.user_sends_text(resident.id, resident.id, "/start")
    prompt = await api.wait_message(resident.id, predicate=lambda m: "cat:" in str(m))
    api.user_presses(resident.id, resident.id, prompt["message_id"], "cat:garbage")
    await api.wait_message(resident.id, after=prompt["message_id"])
    api.user_sends_text(resident.id, resident.id, words)
    await log.wait_for("refused by the test")
    assert_clean(log, configured_secrets(whistle), "failed", "refused by the test")
    assert "willow" not in log.text, [l for l in log.text.splitlines() if "willow" in l]
