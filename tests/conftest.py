"""Shared fixtures: a fresh database per test (SQLite, or PostgreSQL when
WHISTLE_TEST_DATABASE_URL names one), the fake Bot API server on 127.0.0.1, a
controlled clock, and the real Whistle service with its python-telegram-bot
Application talking to that server over HTTP."""
from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bot.app import Whistle
from bot.config import load_config
from sandbox.botapi import FakeBotApi

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "123456:TEST-TOKEN"
PG_ENV = "WHISTLE_TEST_DATABASE_URL"


class Clock:
    """Time under the test's control: ``clock.advance(minutes=10)``."""

    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> Clock:
    # 2026-11-23 is a Monday; 10:00 in Beijing.
    return Clock(datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc))


def _pg_url(base: str, name: str) -> str:
    return base.rsplit("/", 1)[0] + "/" + name


async def _pg_admin(base: str, *statements: str) -> None:
    admin = create_async_engine(base, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        for statement in statements:
            await conn.execute(text(statement))
    await admin.dispose()


async def _prepare_template(url: str) -> None:
    """Migrate and import the sample org once; every test starts from a copy."""
    cfg = load_config(ROOT / "config.example.toml", env={})
    cfg.database.url = url
    service = Whistle(cfg)
    await service.prepare()
    await service.db.dispose()


@pytest.fixture(scope="session")
def template_database(tmp_path_factory):
    """A migrated database with the sample district: a SQLite file, or a PostgreSQL
    database used as a template (CREATE DATABASE … TEMPLATE)."""
    base = os.environ.get(PG_ENV)
    if not base:
        path = tmp_path_factory.mktemp("template") / "whistle.db"
        asyncio.run(_prepare_template(f"sqlite+aiosqlite:///{path}"))
        yield path
        return
    name = f"whistle_tmpl_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(base, f'CREATE DATABASE "{name}"'))
    asyncio.run(_prepare_template(_pg_url(base, name)))
    yield name
    asyncio.run(_pg_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database_url(tmp_path, template_database):
    base = os.environ.get(PG_ENV)
    if not base:
        path = tmp_path / "whistle.db"
        shutil.copyfile(template_database, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    name = f"whistle_t_{uuid.uuid4().hex[:12]}"
    await _pg_admin(base, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield _pg_url(base, name)
    await _pg_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def api():
    server = FakeBotApi(TOKEN)
    await server.start()
    for group in [*range(-100112, -100100), -100201, -100202, -100203, -100301,
                  -100401, -100402, -100403, -100404, -100500]:
        server.add_group(group, f"group {group}")
    yield server
    await server.stop()


@pytest.fixture
def config(tmp_path, api, database_url):
    cfg = load_config(ROOT / "config.example.toml", env={})
    cfg.telegram.token = TOKEN
    cfg.telegram.base_url = api.base_url
    cfg.telegram.base_file_url = api.base_file_url
    cfg.telegram.poll_timeout = 1
    cfg.database.url = database_url
    cfg.media_dir = tmp_path / "media"
    cfg.sender.private_burst = 1000  # tests send bursts; the limiter has its own tests
    cfg.sender.group_burst = 1000
    cfg.sender.per_second = 1000
    cfg.limits.messages_per_minute = 10_000  # the clock stands still: a test is one minute
    cfg.limits.reports_per_hour = 1000  # (tests/test_limits.py sets its own)
    cfg.schedule.enabled = False  # tests call the sweep and digest with a controlled clock
    cfg.web.port = 0  # the bot's web server on a free port (whistle.web.origin)
    cfg.dashboard.secure_cookies = False  # plain http on 127.0.0.1
    return cfg


@pytest.fixture
async def whistle(config, clock):
    service = Whistle(config, clock=clock)
    await service.start()
    yield service
    await service.stop()


@dataclass
class Person:
    """A simulated Telegram user driving the bot through the fake server."""

    api: FakeBotApi
    id: int

    @property
    def chat(self) -> int:
        return self.id

    def last_id(self, chat: int | None = None) -> int:
        msgs = self.api.messages(chat or self.id)
        return msgs[-1]["message_id"] if msgs else 0

    async def say(self, text: str, chat: int | None = None, contains: str | None = None,
                  **kwargs) -> dict:
        """Send text and wait for the bot's next message in that chat."""
        chat = chat or self.id
        after = self.last_id(chat)
        self.api.user_sends_text(self.id, chat, text, **kwargs)
        return await self.api.wait_message(chat, contains=contains, after=after)

    async def press(self, message: dict, label_part: str, chat: int | None = None) -> str:
        """Press the inline button whose label contains ``label_part``; returns the query id."""
        chat = chat or message["chat"]["id"]
        data = button_data(message, label_part)
        return self.api.user_presses(self.id, chat, message["message_id"], data)

    async def press_and_wait(self, message: dict, label_part: str, contains: str | None = None,
                             chat: int | None = None) -> dict:
        chat = chat or message["chat"]["id"]
        after = self.last_id(chat)
        await self.press(message, label_part, chat)
        return await self.api.wait_message(chat, contains=contains, after=after)


def button_data(message: dict, label_part: str) -> str:
    markup = message.get("reply_markup") or {}
    for row in markup.get("inline_keyboard", []):
        for button in row:
            if label_part in button["text"]:
                return button["callback_data"]
    labels = [b["text"] for row in markup.get("inline_keyboard", []) for b in row]
    raise AssertionError(f"no button with {label_part!r} in {labels}")


@pytest.fixture
def people(api):
    """Residents 9001…, and the sample district's staff (ids in samples/district/README.md)."""
    def make(user_id: int, name: str = "张三", language: str = "zh-hans") -> Person:
        api.add_user(user_id, name, language_code=language)
        return Person(api, user_id)
    return make
