"""The browser sandbox: Whistle against a fake Telegram, no bot token needed.

One aiohttp server on ``host:port`` (127.0.0.1:8080 by default) serves both

* the fake Telegram Bot API (``sandbox.botapi.FakeBotApi`` mounted at ``/bot…`` and
  ``/file/bot…``), which a real ``Whistle`` — the real python-telegram-bot Application —
  polls over HTTP exactly as it would poll api.telegram.org, and
* the sandbox page ``/sandbox``: pick who you are (a resident or any staff member of the
  org file) and chat with the bot like in a messenger, in your private chat and in the
  group chats of your units.

The fake world comes from the org file: a user for every person with a ``telegram_id``,
three sample residents (9001–9003) and a group for every ``[[chats]]`` entry.  The
sandbox runs on its own SQLite database (``sandbox.db`` next to the configured one,
started fresh every time) and its own media folder, never on the real ones.

    python -m bot --config config.example.toml run            # without a token
    python -m bot --config config.toml run --sandbox --port 8081

JSON API used by the page (all under ``/sandbox/api``; unknown person or chat → 404,
malformed input → 400, always with a JSON body ``{"error": ...}``):

    GET  /people                                   who can be picked
    GET  /people/{person}/chats                    their chats
    GET  /people/{person}/chats/{chat}/messages    history and the reply keyboard
    POST /people/{person}/chats/{chat}/text        {"text", "reply_to"?}
    POST /people/{person}/chats/{chat}/photo       multipart: photo, caption?, reply_to?
    POST /people/{person}/chats/{chat}/location    {"latitude", "longitude"}
    POST /people/{person}/chats/{chat}/contact     {} — shares a made-up phone number
    POST /people/{person}/chats/{chat}/press       {"message_id", "data"}
    GET  /people/{person}/events                   Server-Sent Events of their chats
"""
from __future__ import annotations

import asyncio
import html
import inspect
import json
import logging
import math
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from bot.config import Config
from bot.web import body_limit
from models.org.file import OrgSpec, load_org_file
from sandbox.botapi import MAX_TEXT_LENGTH, FakeBotApi

__all__ = ["Sandbox", "run_sandbox", "sandbox_config", "sandbox_paths", "SANDBOX_TOKEN", "RESIDENTS"]

log = logging.getLogger("sandbox")

SANDBOX_TOKEN = "100000:SANDBOX"
BOT_USERNAME = "whistle_sandbox_bot"
BOT_NAME = "Whistle 沙盒 Sandbox"
SQLITE_PREFIX = "sqlite+aiosqlite:///"
MAX_PHOTO_UPLOAD = 20 * 1024 * 1024
PHOTO_BODY_BYTES = MAX_PHOTO_UPLOAD + 64 * 1024  # the photo, its caption and the form around them
KEEPALIVE_SECONDS = 15.0
STOP_TIMEOUT = 10.0

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


@dataclass(frozen=True)
class Resident:
    id: int
    name: str
    language: str


RESIDENTS = (
    Resident(9001, "居民 张三", "zh-hans"),
    Resident(9002, "居民 李四", "zh-hans"),
    Resident(9003, "Resident Alice", "en"),
)

# Role → (Chinese, English), in the order the page lists them.
ROLE_LABELS: dict[str, tuple[str, str]] = {
    "resident": ("居民", "Resident"),
    "grid_chief": ("网格长", "Grid chief"),
    "grid_worker": ("网格员", "Grid worker"),
    "community_secretary": ("社区书记", "Community secretary"),
    "street_dispatcher": ("街道派单", "Street dispatcher"),
    "department_officer": ("部门报到人", "Department officer"),
    "commander": ("指挥中心", "Commander"),
    "admin": ("管理员", "Administrator"),
}


@dataclass
class Person:
    """Someone the page can act as."""

    id: int
    name: str
    role: str  # key of ROLE_LABELS: the first role's name, or "resident"
    language: str
    units: list[str] = field(default_factory=list)  # codes of units with a role
    chats: list[int] = field(default_factory=list)  # private chat first, then groups

    def label(self, unit_names: dict[str, str]) -> str:
        zh, en = ROLE_LABELS.get(self.role, (self.role, self.role))
        where = "、".join(unit_names.get(code, code) for code in self.units)
        return f"{self.name} · {zh} {en}" + (f" · {where}" if where else "")


class ApiError(Exception):
    """An error answer of the sandbox's JSON API."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


# ---- configuration ---------------------------------------------------------------------

def sandbox_paths(config: Config) -> tuple[Path, Path]:
    """(database file, media folder) of the sandbox: ``sandbox.db`` and ``sandbox-media`` in
    the folder of the configured SQLite database (``var/`` next to the config file), or, for
    a non-SQLite database, in the folder that holds the media folder."""
    url = config.database.url
    path = url[len(SQLITE_PREFIX):] if url.startswith(SQLITE_PREFIX) else ""
    if path and ":memory:" not in path and not path.startswith("file:"):
        folder = Path(path.split("?", 1)[0]).parent
    else:
        folder = Path(config.media_dir).parent
    database = folder / "sandbox.db"
    if url.startswith(SQLITE_PREFIX) and Path(path.split("?", 1)[0]) == database:
        database = folder / "sandbox-whistle.db"  # never the real database, whatever its name
    return database, folder / "sandbox-media"


def sandbox_config(config: Config, origin: str, database: Path, media: Path) -> Config:
    """A copy of ``config`` pointing Whistle at the fake Bot API at ``origin`` and at the
    sandbox's own database and media folder."""
    copy = config.model_copy(deep=True)
    copy.telegram.token = SANDBOX_TOKEN
    copy.telegram.base_url = f"{origin}/bot"
    copy.telegram.base_file_url = f"{origin}/file/bot"
    copy.database.url = f"{SQLITE_PREFIX}{database}"
    copy.media_dir = media
    copy.dashboard.secure_cookies = False  # the sandbox is plain http on 127.0.0.1
    return copy


# ---- the sandbox -----------------------------------------------------------------------

class Sandbox:
    """The fake Telegram, the page and a real Whistle, started and stopped together.

    ``Sandbox(config, port=0)`` picks a free port (tests); ``url`` is the page's address.
    ``fresh=True`` (the default) deletes the sandbox's previous database first: the fake
    Telegram keeps its chats in memory only, so old tickets would point at messages that
    no longer exist."""

    def __init__(self, config: Config, host: str = "127.0.0.1", port: int = 8080, *,
                 database: Path | None = None, fresh: bool = True):
        self.config = config
        self.host = host
        self.port = port
        default_db, self.media_dir = sandbox_paths(config)
        self.database = Path(database) if database is not None else default_db
        self.fresh = fresh
        # update ids grow across restarts (the database remembers which ones were handled)
        self.api = FakeBotApi(SANDBOX_TOKEN, bot_username=BOT_USERNAME, bot_name=BOT_NAME,
                              first_update_id=int(time.time() * 10) % 2**31)
        self.spec: OrgSpec = load_org_file(config.org_file)
        self.unit_names: dict[str, str] = {}
        self.unit_names_en: dict[str, str] = {}
        self.people: dict[int, Person] = {}
        self.groups: dict[int, str] = {}  # chat id → unit code
        self.whistle = None
        self._runner: web.AppRunner | None = None
        self._streams: set[asyncio.Queue] = set()
        self._queries: dict[str, int] = {}  # callback query id → person who pressed
        self._page: str | None = None
        self.dashboard_password: str | None = None  # the demo dashboard logins' password
        self.dashboard_users: list[str] = []
        self._build_world()

    # -- lifecycle

    @property
    def origin(self) -> str:
        if self._runner is None:
            raise RuntimeError("the sandbox is not started")
        host = self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.origin}/sandbox"

    async def start(self) -> None:
        from bot.app import Whistle  # imported late: the CLI imports this module cheaply
        from bot.faces import build_app
        from bot.web import WhistleRef

        ref = WhistleRef()
        # one server for everything: the fake Telegram, the page, and Whistle's own faces
        app = build_app(ref, self.config, extra=[self.api.add_routes, self._add_routes],
                        middlewares=[same_origin_only])
        app[ALLOWED_HOSTS] = {"127.0.0.1", "localhost", "::1", self.host}
        app.on_shutdown.append(self._close_streams)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
            self.port = self._runner.addresses[0][1]
            self.api.port = self.port  # base_url/base_file_url of the fake now name this server
            self._prepare_files()
            self.whistle = Whistle(sandbox_config(self.config, self.origin, self.database,
                                                  self.media_dir), web_ref=ref)
            await self.whistle.start()
            if self.config.dashboard.enabled:  # demo logins for the dashboard on this server
                from dashboard.demo import create_demo_users
                self.dashboard_password, self.dashboard_users = await create_demo_users(
                    self.whistle.db, self.whistle.core.now())
        except BaseException:
            await self.stop()
            raise
        log.info("沙盒 SANDBOX (fake Telegram, nothing reaches real Telegram): %s — database %s",
                 self.url, self.database)

    async def stop(self) -> None:
        whistle, self.whistle = self.whistle, None
        try:
            if whistle is not None:
                # Answer the bot's held long poll now (the fake's own server is not running,
                # so this only releases pollers), or stopping would wait for its timeout.
                await self.api.stop()
                await self._stop_whistle(whistle)
        finally:
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None

    async def _stop_whistle(self, whistle) -> None:
        """Stop Whistle, but never let Ctrl-C hang on it (a database call cancelled mid-flight
        has been seen never to return)."""
        stopping = asyncio.ensure_future(whistle.stop())
        done, _ = await asyncio.wait({stopping}, timeout=STOP_TIMEOUT)
        if done:
            stopping.result()
            return
        log.warning("Whistle did not stop within %.0f s; shutting the sandbox down anyway", STOP_TIMEOUT)
        stopping.cancel()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _prepare_files(self) -> None:
        self.database.parent.mkdir(parents=True, exist_ok=True)
        if self.fresh:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.database}{suffix}").unlink(missing_ok=True)
            if self.media_dir.name == "sandbox-media" and self.media_dir.is_dir():
                shutil.rmtree(self.media_dir)
        self.media_dir.mkdir(parents=True, exist_ok=True)

    async def _close_streams(self, _app: web.Application) -> None:
        for queue in list(self._streams):
            queue.put_nowait(None)

    # -- the fake world

    def _build_world(self) -> None:
        spec = self.spec
        for unit in spec.units():
            self.unit_names[unit.code] = unit.name
            self.unit_names_en[unit.code] = unit.name_en or unit.name
        chats_by_unit: dict[str, list[int]] = {}
        for chat in spec.chats:
            if chat.telegram is not None:
                self.api.add_group(chat.telegram, self.unit_names.get(chat.unit, chat.unit))
                self.groups[chat.telegram] = chat.unit
                chats_by_unit.setdefault(chat.unit, []).append(chat.telegram)
        for resident in RESIDENTS:
            self.api.add_user(resident.id, resident.name, language_code=resident.language)
            self.people[resident.id] = Person(resident.id, resident.name, "resident",
                                              resident.language, chats=[resident.id])
        for person in spec.people:
            if person.telegram_id is None or person.telegram_id in self.people:
                continue
            self.api.add_user(person.telegram_id, person.name, language_code="zh-hans")
            units = list(dict.fromkeys(role.unit for role in person.roles))
            groups = [chat for unit in units for chat in chats_by_unit.get(unit, [])]
            role = person.roles[0].role if person.roles else "resident"
            self.people[person.telegram_id] = Person(
                person.telegram_id, person.name, role, "zh-hans", units,
                [person.telegram_id, *dict.fromkeys(groups)])

    def ordered_people(self) -> list[Person]:
        order = list(ROLE_LABELS)
        return sorted(self.people.values(),
                      key=lambda p: (order.index(p.role) if p.role in order else len(order),
                                     p.units[:1], p.id))

    def chat_info(self, chat_id: int) -> dict[str, Any]:
        if chat_id in self.groups:
            unit = self.groups[chat_id]
            return {"id": chat_id, "type": "group", "title": self.unit_names.get(unit, unit),
                    "subtitle": f"群聊 Group · {self.unit_names_en.get(unit, unit)}"}
        return {"id": chat_id, "type": "private", "title": f"{BOT_NAME}",
                "subtitle": "私聊 Private chat with the bot"}

    def person_json(self, person: Person) -> dict[str, Any]:
        zh, en = ROLE_LABELS.get(person.role, (person.role, person.role))
        return {"id": person.id, "name": person.name, "role": person.role,
                "role_label": f"{zh} {en}", "language": person.language,
                "units": [{"code": code, "name": self.unit_names.get(code, code),
                           "name_en": self.unit_names_en.get(code, code)} for code in person.units],
                "label": person.label(self.unit_names),
                "chats": [self.chat_info(chat) for chat in person.chats]}

    # -- messages as the page sees them

    def message_view(self, message: dict) -> dict[str, Any]:
        sender = message.get("from") or {}
        view: dict[str, Any] = {
            "id": message["message_id"], "chat_id": message["chat"]["id"],
            "date": message.get("date"), "edited": "edit_date" in message,
            "from": {"id": sender.get("id"), "is_bot": bool(sender.get("is_bot")),
                     "name": " ".join(p for p in (sender.get("first_name"), sender.get("last_name")) if p)},
        }
        for key in ("text", "entities", "caption", "caption_entities", "location", "contact",
                    "media_group_id"):
            if key in message:
                view[key] = message[key]
        if message.get("photo"):
            view["photo_url"] = self._file_url(message["photo"][-1]["file_id"])
        if message.get("document"):
            document = message["document"]
            view["document"] = {"file_name": document.get("file_name"),
                                "url": self._file_url(document["file_id"])}
        for kind in ("voice", "sticker"):
            if message.get(kind):
                view["other"] = kind
        if message.get("new_chat_members"):
            view["service"] = "加入了群聊 joined the group"
        markup = message.get("reply_markup") or {}
        if markup.get("inline_keyboard"):
            view["buttons"] = [[{"text": b.get("text", ""), "data": b.get("callback_data"),
                                 "url": b.get("url")} for b in row]
                               for row in markup["inline_keyboard"]]
        if markup.get("force_reply"):
            view["force_reply"] = True
        reply = message.get("reply_to_message")
        if reply:
            replied_from = reply.get("from") or {}
            view["reply_to"] = {"id": reply.get("message_id"),
                                "name": replied_from.get("first_name", ""),
                                "text": _snippet(reply)}
        return view

    def _file_url(self, file_id: str) -> str | None:
        """The fake server's download address of a file (relative: same server as the page)."""
        try:
            info = self.api._get_file({"file_id": file_id})  # the getFile method, without HTTP
        except Exception:  # noqa: BLE001 - a file it does not know is simply not shown
            return None
        path = info.get("file_path")
        return f"/file/bot{self.api.token}/{path}" if path else None

    def keyboard_view(self, keyboard: dict | None) -> list[list[dict]] | None:
        if not keyboard:
            return None
        rows = []
        for row in keyboard.get("keyboard", []):
            buttons = []
            for button in row:
                if isinstance(button, str):
                    button = {"text": button}
                request = ("location" if button.get("request_location")
                           else "contact" if button.get("request_contact") else None)
                buttons.append({"text": button.get("text", ""), "request": request})
            rows.append(buttons)
        return rows

    def event_view(self, event: dict, person: Person) -> dict | None:
        """An event of the fake server as the page of ``person`` receives it, or None."""
        kind = event.get("type")
        if kind == "callback_answer":
            if self._queries.get(event.get("query_id")) != person.id:
                return None
            return {"type": "callback_answer", "query_id": event["query_id"], **event["answer"]}
        chat_id = event.get("chat_id")
        if chat_id not in person.chats:
            return None
        if kind in ("message", "edit"):
            return {"type": kind, "chat_id": chat_id, "message": self.message_view(event["message"])}
        if kind == "delete":
            return {"type": "delete", "chat_id": chat_id, "message_id": event["message_id"]}
        if kind == "reply_keyboard":
            return {"type": "keyboard", "chat_id": chat_id,
                    "keyboard": self.keyboard_view(event.get("keyboard"))}
        if kind == "chat_action":
            return {"type": "chat_action", "chat_id": chat_id, "action": event.get("action")}
        return None

    # -- HTTP: routes

    def _add_routes(self, app: web.Application) -> None:
        api = "/sandbox/api"
        chat = api + "/people/{person}/chats/{chat}"
        app.router.add_get("/", self._redirect)
        app.router.add_get("/sandbox", self._page_handler)
        app.router.add_get("/sandbox/", self._redirect)
        app.router.add_static("/sandbox/static", STATIC)
        for method, path, handler in (
            ("GET", api + "/people", self._people),
            ("GET", api + "/people/{person}/chats", self._chats),
            ("GET", api + "/people/{person}/events", self._events),
            ("GET", chat + "/messages", self._messages),
            ("POST", chat + "/text", self._send_text),
            ("POST", chat + "/photo", self._send_photo),
            ("POST", chat + "/location", self._send_location),
            ("POST", chat + "/contact", self._send_contact),
            ("POST", chat + "/press", self._press),
        ):
            wrapped = _json_errors(handler)
            if path == chat + "/photo":  # the only upload; the rest are small JSON bodies
                body_limit(PHOTO_BODY_BYTES)(wrapped)
            app.router.add_route(method, path, wrapped)
        app.router.add_route("*", api + "/{tail:.*}", _json_errors(self._unknown))

    async def _redirect(self, _request: web.Request) -> web.Response:
        raise web.HTTPFound("/sandbox")

    async def _unknown(self, _request: web.Request) -> web.Response:
        raise _not_found("API endpoint")

    async def _page_handler(self, _request: web.Request) -> web.Response:
        if self._page is None:
            self._page = self._render_page()
        return web.Response(text=self._page, content_type="text/html", charset="utf-8")

    # -- HTTP: lookups

    def _person(self, request: web.Request) -> Person:
        person = self.people.get(_int(request.match_info["person"]))
        if person is None:
            raise _not_found("person")
        return person

    def _chat(self, request: web.Request) -> tuple[Person, int]:
        person = self._person(request)
        chat_id = _int(request.match_info["chat"])
        if chat_id not in person.chats:
            raise _not_found("chat")
        return person, chat_id

    # -- HTTP: reading

    async def _people(self, _request: web.Request) -> web.Response:
        return web.json_response({"people": [self.person_json(p) for p in self.ordered_people()]})

    async def _chats(self, request: web.Request) -> web.Response:
        person = self._person(request)
        return web.json_response({"person": self.person_json(person),
                                  "chats": [self.chat_info(chat) for chat in person.chats]})

    async def _messages(self, request: web.Request) -> web.Response:
        _person, chat_id = self._chat(request)
        return web.json_response({
            "chat": self.chat_info(chat_id),
            "messages": [self.message_view(m) for m in self.api.messages(chat_id)],
            "keyboard": self.keyboard_view(self.api.reply_keyboard(chat_id)),
        })

    async def _events(self, request: web.Request) -> web.StreamResponse:
        person = self._person(request)
        queue = self.api.subscribe()
        self._streams.add(queue)
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no"})
        try:
            await response.prepare(request)
            await response.write(b"retry: 2000\n: connected\n\n")
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if event is None:  # the server is shutting down
                    break
                view = self.event_view(event, person)
                if view is not None:
                    data = json.dumps(view, ensure_ascii=False)
                    await response.write(f"data: {data}\n\n".encode())
        except ConnectionResetError:
            pass  # the page went away
        finally:
            self.api.unsubscribe(queue)
            self._streams.discard(queue)
        return response

    # -- HTTP: acting

    async def _send_text(self, request: web.Request) -> web.Response:
        person, chat_id = self._chat(request)
        body = await _json_body(request)
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _bad('"text" must be a non-empty string')
        if len(text.encode("utf-16-le")) // 2 > MAX_TEXT_LENGTH:
            raise _bad(f'"text" is longer than {MAX_TEXT_LENGTH} characters')
        reply_to = self._reply_target(chat_id, body.get("reply_to"))
        message = self.api.user_sends_text(person.id, chat_id, text, reply_to_message_id=reply_to)
        return web.json_response({"message": self.message_view(message)})

    async def _send_photo(self, request: web.Request) -> web.Response:
        person, chat_id = self._chat(request)
        if not request.content_type.startswith("multipart/"):
            raise _bad("send the photo as multipart/form-data with a \"photo\" file")
        try:
            form = await request.post()
        except (ValueError, web.HTTPException) as exc:
            raise _bad(f"cannot read the form: {exc}") from None
        upload = form.get("photo")
        if not isinstance(upload, web.FileField):
            raise _bad('a file field "photo" is required')
        data = upload.file.read(MAX_PHOTO_UPLOAD + 1)
        if len(data) > MAX_PHOTO_UPLOAD:
            raise ApiError(413, f"the photo is larger than {MAX_PHOTO_UPLOAD // 2**20} MB")
        size = _image_size(data)
        if size is None:
            raise _bad("that file is not a JPEG, PNG, GIF or WebP image")
        caption = form.get("caption")
        caption = caption.strip() if isinstance(caption, str) and caption.strip() else None
        if caption and len(caption) > 1024:
            raise _bad("the caption is longer than 1024 characters")
        reply_to = self._reply_target(chat_id, _optional_int(form.get("reply_to"), "reply_to"))
        message = self._user_sends_photo(person.id, chat_id, data, caption, size, reply_to)
        return web.json_response({"message": self.message_view(message)})

    def _user_sends_photo(self, user_id: int, chat_id: int, data: bytes, caption: str | None,
                          size: tuple[int, int], reply_to: int | None) -> dict:
        width, height = size
        if reply_to is None:
            return self.api.user_sends_photo(user_id, chat_id, data, caption, width, height)
        if "reply_to_message_id" in inspect.signature(self.api.user_sends_photo).parameters:
            return self.api.user_sends_photo(user_id, chat_id, data, caption, width, height,
                                             reply_to_message_id=reply_to)
        # This FakeBotApi's user_sends_photo cannot reply; build the same message by hand.
        fields: dict[str, Any] = {"photo": self.api._store_photo(data, width, height)}
        if caption:
            fields["caption"] = caption
        return self.api.user_sends(user_id, chat_id, reply_to_message_id=reply_to, **fields)

    async def _send_location(self, request: web.Request) -> web.Response:
        person, chat_id = self._chat(request)
        body = await _json_body(request)
        latitude, longitude = body.get("latitude"), body.get("longitude")
        for name, value, limit in (("latitude", latitude, 90), ("longitude", longitude, 180)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise _bad(f'"{name}" must be a number')
            if abs(value) > limit:
                raise _bad(f'"{name}" must be between -{limit} and {limit}')
        message = self.api.user_sends_location(person.id, chat_id, float(latitude), float(longitude))
        return web.json_response({"message": self.message_view(message)})

    async def _send_contact(self, request: web.Request) -> web.Response:
        person, chat_id = self._chat(request)
        if request.body_exists:
            await _json_body(request)
        phone = f"+86 138 0000 {person.id % 10000:04d}"
        message = self.api.user_sends_contact(person.id, chat_id, phone, person.name,
                                              contact_user_id=person.id)
        return web.json_response({"message": self.message_view(message)})

    async def _press(self, request: web.Request) -> web.Response:
        person, chat_id = self._chat(request)
        body = await _json_body(request)
        message_id, data = body.get("message_id"), body.get("data")
        if isinstance(message_id, bool) or not isinstance(message_id, int):
            raise _bad('"message_id" must be an integer')
        if not isinstance(data, str) or not data:
            raise _bad('"data" must be a non-empty string')
        message = self.api.message(chat_id, message_id)
        if message is None:
            raise _not_found("message")
        rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
        if not any(button.get("callback_data") == data for row in rows for button in row):
            raise _not_found("button")
        query_id = self.api.user_presses(person.id, chat_id, message_id, data)
        self._queries[query_id] = person.id
        return web.json_response({"query_id": query_id})

    def _reply_target(self, chat_id: int, reply_to: Any) -> int | None:
        if reply_to is None:
            return None
        if isinstance(reply_to, bool) or not isinstance(reply_to, int):
            raise _bad('"reply_to" must be a message id')
        if self.api.message(chat_id, reply_to) is None:
            raise _not_found("message to reply to")
        return reply_to

    # -- the page

    def _render_page(self) -> str:
        template = Template((TEMPLATES / "sandbox.html").read_text(encoding="utf-8"))
        options = []
        by_role: dict[str, list[Person]] = {}
        for person in self.ordered_people():
            by_role.setdefault(person.role, []).append(person)
        for role, people in by_role.items():
            zh, en = ROLE_LABELS.get(role, (role, role))
            items = "".join(
                f'<option value="{p.id}">{html.escape(p.label(self.unit_names))}</option>'
                for p in people)
            options.append(f'<optgroup label="{html.escape(f"{zh} {en}")}">{items}</optgroup>')
        people_json = json.dumps([self.person_json(p) for p in self.ordered_people()],
                                 ensure_ascii=False).replace("</", "<\\/")
        return template.substitute(
            people_options="\n".join(options),
            people_json=people_json,
            district=html.escape(f"{self.spec.district.name} {self.spec.district.name_en or ''}".strip()),
            map_svg=self._map_svg(),
            bot_username=html.escape(BOT_USERNAME),
            version=str(int((STATIC / "sandbox.js").stat().st_mtime)),
            dashboard=self._dashboard_note(),
        )

    def _dashboard_note(self) -> str:
        """The link to the dashboard on the same server, with the demo logins."""
        if not self.dashboard_users:
            return ""
        path = html.escape(self.config.dashboard.path)
        users = html.escape(", ".join(self.dashboard_users))
        return (f'<p class="dashboard-link"><a href="{path}" target="_blank" rel="noopener" '
                f'id="dashboard-link">指挥中心 Dashboard ↗</a><br>'
                f'<span class="en">登录 Log in as <b>{users}</b>, 密码 password '
                f'<code id="dashboard-password">{html.escape(self.dashboard_password or "")}'
                f'</code></span></p>')

    def _map_svg(self) -> str:
        """The district's grids as inline SVG (equirectangular projection, north up)."""
        geometries = self.spec.geometries
        if not geometries:
            return '<p class="nomap">组织文件中没有网格边界。The org file has no grid boundaries.</p>'
        bounds = [g.bounds for g in geometries.values()]
        min_lon, min_lat = min(b[0] for b in bounds), min(b[1] for b in bounds)
        max_lon, max_lat = max(b[2] for b in bounds), max(b[3] for b in bounds)
        kx = math.cos(math.radians((min_lat + max_lat) / 2))
        width_deg = max((max_lon - min_lon) * kx, 1e-9)
        height_deg = max(max_lat - min_lat, 1e-9)
        # Leave a margin around the district so a point outside every grid can be picked.
        margin = 0.12 * max(width_deg, height_deg)
        scale = 1000 / (width_deg + 2 * margin)
        width = 1000
        height = round((height_deg + 2 * margin) * scale)
        origin_lon = min_lon - margin / kx
        origin_lat = max_lat + margin

        def xy(lon: float, lat: float) -> str:
            return f"{(lon - origin_lon) * kx * scale:.1f},{(origin_lat - lat) * scale:.1f}"

        def ring(coords) -> str:
            points = list(coords)
            return "M" + " L".join(xy(lon, lat) for lon, lat, *_ in points) + " Z"

        shapes, holes, labels = [], [], []
        for index, (code, geometry) in enumerate(geometries.items()):
            polygons = getattr(geometry, "geoms", [geometry])
            path = " ".join(ring(p.exterior.coords) + " " + " ".join(ring(i.coords) for i in p.interiors)
                            for p in polygons)
            name = self.unit_names.get(code, code)
            title = html.escape(f"{name} {self.unit_names_en.get(code, '')} ({code})")
            shapes.append(f'<path class="grid g{index % 4}" d="{path}" fill-rule="evenodd">'
                          f'<title>{title}</title></path>')
            holes.extend(f'<path class="hole" d="{ring(i.coords)}"/>' for p in polygons for i in p.interiors)
            point = geometry.representative_point()
            x, y = xy(point.x, point.y).split(",")
            labels.append(f'<text x="{x}" y="{y}" class="label">{html.escape(name)}'
                          f'<tspan x="{x}" dy="1.2em" class="code">{html.escape(code)}</tspan></text>')
        return (f'<svg id="map" viewBox="0 0 {width} {height}" role="img" '
                f'aria-label="{html.escape(self.spec.district.name)} 地图 map" '
                f'data-origin-lon="{origin_lon!r}" data-origin-lat="{origin_lat!r}" '
                f'data-kx="{kx!r}" data-scale="{scale!r}">'
                f'<rect class="outside" width="{width}" height="{height}"/>'
                + "".join(shapes) + "".join(holes) + "".join(labels)
                + '<circle id="map-pin" r="9" cx="-100" cy="-100"/></svg>')


# ---- helpers ---------------------------------------------------------------------------

def _json_errors(handler):
    """JSON error bodies for the sandbox API (aiohttp's default is plain text)."""
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return web.json_response({"error": exc.message}, status=exc.status)
        except ValueError as exc:  # the fake Telegram refused a scripted action
            return web.json_response({"error": str(exc)}, status=400)
    return wrapped


ALLOWED_HOSTS = web.AppKey("allowed_hosts", set)


@web.middleware
async def same_origin_only(request: web.Request, handler):
    """The sandbox acts as anyone in the district: only its own page may drive it. A POST
    from another site (its Origin differs) or to another host name (DNS rebinding) is refused."""
    if request.path.startswith("/sandbox/api") and request.method != "GET":
        origin = request.headers.get("Origin")
        host = request.headers.get("Host", "")
        if origin is not None and urlsplit(origin).netloc != host:
            raise web.HTTPForbidden(text='{"error": "cross-site request refused"}',
                                    content_type="application/json")
        if urlsplit(f"//{host}").hostname not in request.app[ALLOWED_HOSTS]:
            raise web.HTTPForbidden(text='{"error": "unknown host"}', content_type="application/json")
    return await handler(request)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise _bad("the body must be JSON (Content-Type: application/json)")
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise _bad("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    return body


def _int(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def _optional_int(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _bad(f'"{name}" must be an integer') from None


def _snippet(message: dict) -> str:
    text = message.get("text") or message.get("caption")
    if text:
        return text if len(text) <= 80 else text[:79] + "…"
    for key, label in (("photo", "🖼 照片 Photo"), ("location", "📍 位置 Location"),
                       ("contact", "📱 联系方式 Contact"), ("document", "📎 文件 File")):
        if key in message:
            return label
    return "…"


def _image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG, PNG, GIF or WebP image, or None if it is none of those;
    (800, 600) when the header is recognised but the size cannot be read."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return struct.unpack(">II", data[16:24])
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", data[6:10])
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return 800, 600
        if data.startswith(b"\xff\xd8\xff"):
            index = 2
            while index + 9 < len(data):
                if data[index] != 0xFF:
                    break
                marker = data[index + 1]
                length = struct.unpack(">H", data[index + 2:index + 4])[0]
                if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                    height, width = struct.unpack(">HH", data[index + 5:index + 9])
                    return width, height
                index += 2 + length
            return 800, 600
    except struct.error:
        return 800, 600
    return None


async def run_sandbox(config: Config, host: str = "127.0.0.1", port: int = 8080,
                      stop: asyncio.Event | None = None) -> None:
    """Run the sandbox until ``stop`` is set (forever without one); prints its address."""
    sandbox = Sandbox(config, host, port)
    await sandbox.start()
    try:
        print(f"\n  沙盒 SANDBOX — Whistle with a fake Telegram (nothing is sent to real Telegram).\n"
              f"  打开 Open: {sandbox.url}\n"
              + (f"  指挥中心 Dashboard: {sandbox.origin}{config.dashboard.path} — log in as "
                 f"{', '.join(sandbox.dashboard_users)} with the password "
                 f"{sandbox.dashboard_password}\n" if sandbox.dashboard_users else "") +
              f"  数据库 Database: {sandbox.database}\n", flush=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("the sandbox listens on %s: anyone who can reach it can use it", host)
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await sandbox.stop()
