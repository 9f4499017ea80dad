"""The browser sandbox (sandbox/server.py) over real HTTP on 127.0.0.1: the page, its JSON
API and its event stream, with a real Whistle polling the sandbox's fake Telegram.

Group chats speak zh_Hans, whose wording is still changing, so buttons are found by their
callback data; the resident who files the report speaks English."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from bot.config import load_config
from sandbox.server import SANDBOX_TOKEN, Sandbox, sandbox_paths

ROOT = Path(__file__).resolve().parent.parent
G01 = (39.93524, 116.40107)
G01_CHAT = -100101
ALICE = 9003  # "Resident Alice", language en
CHIEF_G01 = 1001  # 王建国
PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x02\x00\x00\x00\x01"
       b"\x08\x02\x00\x00\x00" + b"\x00" * 40)


@pytest.fixture
def sandbox_config(tmp_path):
    config = load_config(ROOT / "config.example.toml", env={})
    config.database.url = f"sqlite+aiosqlite:///{tmp_path / 'whistle.db'}"
    config.media_dir = tmp_path / "media"
    config.telegram.poll_timeout = 1
    config.sender.private_burst = 1000  # the limiter has its own tests
    config.sender.group_burst = 1000
    config.sender.per_second = 1000
    return config


@pytest.fixture
async def sandbox(sandbox_config):
    server = Sandbox(sandbox_config, port=0)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


class Client:
    """The page's side: JSON calls as one person."""

    def __init__(self, http: aiohttp.ClientSession, sandbox: Sandbox, person: int):
        self.http, self.sandbox, self.person = http, sandbox, person

    def url(self, path: str) -> str:
        return f"{self.sandbox.origin}/sandbox/api/people/{self.person}{path}"

    async def get(self, path: str) -> dict:
        async with self.http.get(self.url(path)) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def post(self, chat: int, action: str, body: dict) -> dict:
        async with self.http.post(self.url(f"/chats/{chat}/{action}"), json=body) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def messages(self, chat: int) -> dict:
        return await self.get(f"/chats/{chat}/messages")


def data_of(view: dict) -> list[str]:
    """Callback data of a message as the page sees it."""
    return [b["data"] for row in view.get("buttons", []) for b in row if b.get("data")]


def with_button(prefix: str):
    return lambda m: any((b.get("callback_data") or "").startswith(prefix)
                         for row in (m.get("reply_markup") or {}).get("inline_keyboard", []) for b in row)


def last_id(sandbox: Sandbox, chat: int) -> int:
    messages = sandbox.api.messages(chat)
    return messages[-1]["message_id"] if messages else 0


def keyboard_requests(sandbox: Sandbox, chat: int) -> set:
    keyboard = sandbox.api.reply_keyboard(chat) or {}
    return {key for row in keyboard.get("keyboard", []) for b in row if isinstance(b, dict)
            for key in ("request_location", "request_contact") if b.get(key)}


async def test_page_lists_people_and_map(sandbox, http, tmp_path):
    assert sandbox.database == tmp_path / "sandbox.db" and sandbox.database.exists()
    assert sandbox.whistle.config.database.url.endswith(str(tmp_path / "sandbox.db"))
    assert sandbox.whistle.config.telegram.token == SANDBOX_TOKEN
    async with http.get(sandbox.url) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    for text in ("沙盒", "Sandbox", "选择身份", "Choose who you are", "居民 张三", "Resident Alice",
                 "王建国", "罗志刚", "韩东", "网格长 Grid chief", "<svg", "槐树社区第一网格",
                 "/sandbox/static/sandbox.js"):
        assert text in page, text
    for asset in ("sandbox.js", "sandbox.css"):
        async with http.get(f"{sandbox.origin}/sandbox/static/{asset}") as response:
            assert response.status == 200

    async with http.get(f"{sandbox.origin}/sandbox/api/people") as response:
        people = {p["id"]: p for p in (await response.json())["people"]}
    assert {9001, 9002, 9003, 1001, 1012, 2001, 3001, 4001, 5001} <= people.keys()
    assert people[9003]["language"] == "en" and people[9001]["role"] == "resident"
    assert people[CHIEF_G01]["role"] == "grid_chief"
    assert [u["code"] for u in people[CHIEF_G01]["units"]] == ["g01"]

    chats = (await Client(http, sandbox, CHIEF_G01).get("/chats"))["chats"]
    assert [(c["id"], c["type"]) for c in chats] == [(CHIEF_G01, "private"), (G01_CHAT, "group")]
    assert chats[1]["title"] == "槐树社区第一网格"
    assert [c["id"] for c in (await Client(http, sandbox, 5001).get("/chats"))["chats"]] == [5001, -100500]
    assert [c["id"] for c in (await Client(http, sandbox, 9001).get("/chats"))["chats"]] == [9001]


async def test_resident_reports_and_grid_chief_claims(sandbox, http):
    api = sandbox.api
    alice = Client(http, sandbox, ALICE)
    chief = Client(http, sandbox, CHIEF_G01)

    after = last_id(sandbox, ALICE)
    await alice.post(ALICE, "text", {"text": "/start"})
    categories = await api.wait_message(ALICE, after=after, predicate=with_button("cat:"))

    after = last_id(sandbox, ALICE)
    await alice.post(ALICE, "press", {"message_id": categories["message_id"], "data": "cat:garbage"})
    await api.wait_message(ALICE, after=after)  # the description prompt

    after = last_id(sandbox, ALICE)
    await alice.post(ALICE, "text", {"text": "Rubbish has been piling up by the gate for three days"})
    photos = await api.wait_message(ALICE, after=after, predicate=with_button("ph:"))

    await alice.post(ALICE, "press", {"message_id": photos["message_id"], "data": "ph:done"})
    await api.wait_for(lambda: "request_location" in keyboard_requests(sandbox, ALICE),
                       description="the location keyboard")
    view = await alice.messages(ALICE)
    assert any(b["request"] == "location" for row in view["keyboard"] for b in row)

    # What the map picker sends after a click on g01.
    sent = await alice.post(ALICE, "location", {"latitude": G01[0], "longitude": G01[1]})
    assert sent["message"]["location"] == {"latitude": G01[0], "longitude": G01[1]}
    await api.wait_for(lambda: "request_contact" in keyboard_requests(sandbox, ALICE),
                       description="the contact keyboard")

    after = last_id(sandbox, ALICE)
    keyboard = (await alice.messages(ALICE))["keyboard"]
    anonymous = keyboard[-1][0]  # rows: share phone, first name only, stay anonymous
    assert anonymous["request"] is None and "anonymous" in anonymous["text"]
    await alice.post(ALICE, "text", {"text": anonymous["text"]})
    summary = await api.wait_message(ALICE, after=after, predicate=with_button("cf"))

    after = last_id(sandbox, ALICE)
    await alice.post(ALICE, "press", {"message_id": summary["message_id"], "data": "cf"})
    done = await api.wait_message(ALICE, after=after, contains="ticket number is")
    number = done["text"].split("ticket number is ")[1].split(".")[0]

    # The grid chief sees the card in his group chat, as the page shows it …
    card = await api.wait_message(G01_CHAT, contains=number, predicate=with_button("claim:"))
    history = await chief.messages(G01_CHAT)
    shown = next(m for m in history["messages"] if m["id"] == card["message_id"])
    claim = next(d for d in data_of(shown) if d.startswith("claim:"))
    assert any("photo_url" in m or "location" in m for m in history["messages"])

    # … and claims it with the button.
    pressed = await chief.post(G01_CHAT, "press", {"message_id": card["message_id"], "data": claim})
    await api.wait_for(lambda: pressed["query_id"] in api.callback_answers, description="the claim answer")
    await api.wait_for(lambda: with_button("progress:")(api.message(G01_CHAT, card["message_id"])),
                       description="the card to show the claimed state")
    shown = next(m for m in (await chief.messages(G01_CHAT))["messages"] if m["id"] == card["message_id"])
    assert shown["edited"] and "王建国" in shown["text"]
    await api.wait_message(ALICE, contains="王建国")


async def test_events_stream_delivers_bot_messages(sandbox, http):
    async with http.get(f"{sandbox.origin}/sandbox/api/people/9002/events") as stream:
        assert stream.status == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert (await stream.content.readline()).startswith(b"retry:")
        await Client(http, sandbox, 9002).post(9002, "text", {"text": "/start"})
        await sandbox.api.wait_message(9002)
        seen = []
        async with asyncio.timeout(10):
            while not any(e["type"] == "message" and e["message"]["from"]["is_bot"] for e in seen):
                line = await stream.content.readline()
                if line.startswith(b"data: "):
                    seen.append(json.loads(line[6:]))
    assert seen[0]["type"] == "message" and seen[0]["message"]["text"] == "/start"
    assert all(e.get("chat_id") == 9002 for e in seen if e["type"] != "callback_answer")
    bot = next(e for e in seen if e["type"] == "message" and e["message"]["from"]["is_bot"])
    assert bot["chat_id"] == 9002


async def test_photo_upload_and_reply_in_a_group(sandbox, http):
    api = sandbox.api
    form = aiohttp.FormData()
    form.add_field("photo", PNG, filename="p.png", content_type="image/png")
    url = f"{sandbox.origin}/sandbox/api/people/9001/chats/9001/photo"
    async with http.post(url, data=form) as response:
        assert response.status == 200, await response.text()
        message = (await response.json())["message"]
    assert message["photo_url"].startswith("/file/bot")
    async with http.get(sandbox.origin + message["photo_url"]) as response:
        assert response.status == 200 and await response.read() == PNG
    assert api.messages(9001)[-1]["photo"][-1]["width"] == 2

    # A group member answers a bot message with a photo (the ForceReply way).
    bot_api = f"{sandbox.origin}/bot{SANDBOX_TOKEN}/sendMessage"
    async with http.post(bot_api, json={"chat_id": G01_CHAT, "text": "回复 Reply with a photo"}) as response:
        prompt = (await response.json())["result"]
    form = aiohttp.FormData()
    form.add_field("photo", PNG, filename="p.png", content_type="image/png")
    form.add_field("caption", "done")
    form.add_field("reply_to", str(prompt["message_id"]))
    url = f"{sandbox.origin}/sandbox/api/people/{CHIEF_G01}/chats/{G01_CHAT}/photo"
    async with http.post(url, data=form) as response:
        assert response.status == 200, await response.text()
        message = (await response.json())["message"]
    assert message["reply_to"]["id"] == prompt["message_id"] and message["caption"] == "done"

    sent = await Client(http, sandbox, CHIEF_G01).post(G01_CHAT, "text",
                                                       {"text": "ok", "reply_to": prompt["message_id"]})
    assert sent["message"]["reply_to"]["id"] == prompt["message_id"]
    contact = await Client(http, sandbox, 9001).post(9001, "contact", {})
    assert contact["message"]["contact"]["phone_number"] == "+86 138 0000 9001"
    assert api.messages(9001)[-1]["contact"]["user_id"] == 9001


JSON = {"Content-Type": "application/json"}
BAD_INPUTS = [
    ("GET", "/people/424242/chats", {}, 404),
    ("GET", "/people/abc/chats", {}, 404),
    ("GET", "/people/424242/events", {}, 404),
    ("GET", "/people/9001/chats/-100101/messages", {}, 404),  # not a chat of this resident
    ("GET", "/people/9001/chats/9002/messages", {}, 404),  # someone else's private chat
    ("GET", "/nothing/here", {}, 404),
    ("POST", "/people/424242/chats/9001/text", {"json": {"text": "hi"}}, 404),
    ("POST", "/people/9001/chats/9001/text", {"data": b"{not json", "headers": JSON}, 400),
    ("POST", "/people/9001/chats/9001/text", {"json": ["hi"]}, 400),
    ("POST", "/people/9001/chats/9001/text", {"json": {"text": "   "}}, 400),
    ("POST", "/people/9001/chats/9001/text", {"json": {"text": 5}}, 400),
    ("POST", "/people/9001/chats/9001/text", {"json": {"text": "x" * 4097}}, 400),
    ("POST", "/people/9001/chats/9001/text", {"json": {"text": "hi", "reply_to": 999}}, 404),
    ("POST", "/people/9001/chats/9001/text", {"json": {"text": "hi", "reply_to": "1"}}, 400),
    ("POST", "/people/9001/chats/9001/location", {"json": {"latitude": 95, "longitude": 116.4}}, 400),
    ("POST", "/people/9001/chats/9001/location", {"json": {"latitude": "39.9", "longitude": 116}}, 400),
    ("POST", "/people/9001/chats/9001/location", {"json": {"latitude": True, "longitude": 116}}, 400),
    ("POST", "/people/9001/chats/9001/location", {"json": {"latitude": 39.9}}, 400),
    ("POST", "/people/9001/chats/9001/press", {"json": {"message_id": 1, "data": "cf"}}, 404),
    ("POST", "/people/9001/chats/9001/press", {"json": {"message_id": "1", "data": "cf"}}, 400),
    ("POST", "/people/9001/chats/9001/press", {"json": {"message_id": 1}}, 400),
    ("POST", "/people/9001/chats/9001/photo", {"json": {"photo": "x"}}, 400),
    ("POST", "/people/9001/chats/9001/photo", {"data": {"photo": "not a file"}}, 400),
    ("POST", "/people/9001/chats/9001/contact", {"data": b"[", "headers": JSON}, 400),
    ("POST", "/people/1001/chats/-100102/press", {"json": {"message_id": 1, "data": "claim:1"}}, 404),
]


async def test_bad_input_is_refused(sandbox, http):
    before = {chat: len(sandbox.api.messages(chat)) for chat in (9001, G01_CHAT)}
    for method, path, kwargs, status in BAD_INPUTS:
        async with http.request(method, f"{sandbox.origin}/sandbox/api{path}", **kwargs) as response:
            assert response.status == status, (method, path, kwargs, await response.text())
            assert "error" in await response.json(), (method, path)
    assert before == {chat: len(sandbox.api.messages(chat)) for chat in (9001, G01_CHAT)}


async def test_press_needs_a_real_button_and_photos_real_images(sandbox, http):
    api = sandbox.api
    alice = Client(http, sandbox, ALICE)
    after = last_id(sandbox, ALICE)
    await alice.post(ALICE, "text", {"text": "/start"})
    categories = await api.wait_message(ALICE, after=after, predicate=with_button("cat:"))
    url = alice.url(f"/chats/{ALICE}/press")
    async with http.post(url, json={"message_id": categories["message_id"], "data": "claim:1"}) as response:
        assert response.status == 404  # no such button on that message
    form = aiohttp.FormData()
    form.add_field("photo", b"MZ\x90\x00 not an image", filename="x.exe")
    async with http.post(alice.url(f"/chats/{ALICE}/photo"), data=form) as response:
        assert response.status == 400


def test_sandbox_paths_never_name_the_real_database(tmp_path):
    config = load_config(ROOT / "config.example.toml", env={})
    assert sandbox_paths(config) == (ROOT / "var" / "sandbox.db", ROOT / "var" / "sandbox-media")
    config.database.url = f"sqlite+aiosqlite:///{tmp_path / 'sandbox.db'}"
    assert sandbox_paths(config)[0] == tmp_path / "sandbox-whistle.db"
    config.database.url = "postgresql+asyncpg://whistle@db/whistle"
    config.media_dir = tmp_path / "media"
    assert sandbox_paths(config) == (tmp_path / "sandbox.db", tmp_path / "sandbox-media")
