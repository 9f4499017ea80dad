"""A fake Telegram Bot API server on 127.0.0.1, for tests and the browser sandbox.

The real python-telegram-bot stack talks to it over real HTTP, so everything from
request encoding to error mapping is exercised exactly as in production::

    async with FakeBotApi() as api:
        api.add_user(1001, "Alice")
        bot = telegram.Bot(api.token, base_url=api.base_url, base_file_url=api.base_file_url)
        app = ApplicationBuilder().bot(bot).build()   # or .base_url(api.base_url)...
        ...
        api.user_sends_text(1001, 1001, "/start")
        await api.wait_message(1001, contains="Welcome")

It simulates a small Telegram world: users (each with an implicit private chat whose
id equals the user id), groups, messages from users and from the bot, inline and reply
keyboards, callback queries and files.  Answers, including errors, follow Telegram's
real wording and HTTP status codes, because the bot's error handling keys on them.

Two ways to serve it:

* ``await api.start()`` runs a private aiohttp server (port 0 picks a free port);
* ``api.add_routes(app)`` mounts the routes on an existing, not yet started
  ``aiohttp.web.Application`` (the sandbox web page does this); clients then use
  ``http://<that host>/bot`` and ``.../file/bot`` as base URLs.  Give that app a
  ``client_max_size`` large enough for uploads.

Every state change wakes the ``wait_*`` helpers and is published to ``subscribe()``
queues as an event dict with a ``"type"`` of ``message``, ``edit``, ``delete``,
``callback_query``, ``callback_answer``, ``reply_keyboard``, ``chat_action`` or ``pin``.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import itertools
import json
import logging
import math
import mimetypes
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import web

__all__ = ["FakeBotApi", "Upload"]

log = logging.getLogger("sandbox.botapi")

T = TypeVar("T")

MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
MAX_CALLBACK_DATA_BYTES = 64
MAX_UPLOAD_BYTES = 64 * 1024 * 1024

# Error details, as Telegram words them after the "Bad Request: " prefix.
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
WRONG_FILE = "wrong file identifier/HTTP URL specified"
QUERY_TOO_OLD = "query is too old and response timeout expired or query ID is invalid"

# Form values are strings; these stay strings, every other value is JSON-decoded
# (numbers, booleans, and the JSON-encoded objects PTB sends such as reply_markup).
_STRING_FIELDS = frozenset({
    "text", "caption", "parse_mode", "callback_query_id", "file_id", "photo", "document",
    "voice", "audio", "video", "animation", "sticker", "thumbnail", "phone_number",
    "first_name", "last_name", "vcard", "title", "description", "short_description",
    "url", "action", "language_code", "secret_token", "ip_address", "inline_message_id",
    "business_connection_id", "message_effect_id", "emoji", "address", "name",
})

_INLINE_BUTTON_ACTIONS = frozenset({
    "url", "callback_data", "web_app", "login_url", "switch_inline_query",
    "switch_inline_query_current_chat", "switch_inline_query_chosen_chat", "copy_text",
    "callback_game", "pay",
})

_CAPTIONED_MEDIA = ("photo", "document", "voice", "audio", "video", "animation")

_CHAT_ACTIONS = frozenset({
    "typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
    "upload_document", "choose_sticker", "find_location", "record_video_note",
    "upload_video_note",
})

# Update types Telegram only delivers when explicitly listed in allowed_updates.
_OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})

_HTML_ENTITY_TYPES = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline",
    "ins": "underline", "s": "strikethrough", "strike": "strikethrough",
    "del": "strikethrough", "code": "code", "pre": "pre", "a": "text_link",
    "tg-spoiler": "spoiler", "blockquote": "blockquote",
}

_BOT_COMMAND = re.compile(r"/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?")
_COMMAND_NAME = re.compile(r"[a-z0-9_]{1,32}")

_FILE_FOLDERS = {"photo": "photos", "document": "documents", "voice": "voice", "sticker": "stickers"}

_ADMIN_RIGHTS = (
    "can_manage_chat", "can_delete_messages", "can_manage_video_chats", "can_restrict_members",
    "can_change_info", "can_invite_users", "can_post_stories", "can_edit_stories",
    "can_delete_stories", "can_pin_messages",
)
_RESTRICTED_RIGHTS = (
    "can_send_messages", "can_send_audios", "can_send_documents", "can_send_photos",
    "can_send_videos", "can_send_video_notes", "can_send_voice_notes", "can_send_polls",
    "can_send_other_messages", "can_add_web_page_previews", "can_change_info",
    "can_invite_users", "can_pin_messages", "can_manage_topics", "can_edit_tag",
    "can_react_to_messages",
)
# Fields a ChatMember of each status must carry to be valid Bot API JSON.
_MEMBER_DEFAULTS: dict[str, dict[str, Any]] = {
    "creator": {"is_anonymous": False},
    "administrator": {
        "can_be_edited": False, "is_anonymous": False, "can_promote_members": False,
        **dict.fromkeys(_ADMIN_RIGHTS, True),
    },
    "member": {},
    "restricted": {"is_member": True, "until_date": 0, **dict.fromkeys(_RESTRICTED_RIGHTS, False)},
    "left": {},
    "kicked": {"until_date": 0},
}


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart request; the repr omits the bytes so request logs stay readable."""

    file_name: str
    mime_type: str
    data: bytes = field(repr=False)


@dataclass
class _StoredFile:
    """A file the fake server knows; ``media`` is what a message carries when it is re-sent by id."""

    file_id: str
    file_unique_id: str
    kind: str
    data: bytes | None  # None for files only known by URL: listed, but not downloadable
    file_path: str | None
    mime_type: str
    media: Any = None


class _ApiError(Exception):
    """An error answer; the HTTP status equals ``error_code`` as with the real Bot API."""

    def __init__(self, code: int, description: str, **parameters: Any) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters
        self.hold: asyncio.Event | None = None  # answered once set (fault injection)

    def response(self) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": self.code, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return web.json_response(body, status=self.code)


def _bad_request(detail: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {detail}")


def _now() -> int:
    return int(time.time())


def _utf16_len(text: str) -> int:
    """Telegram measures text lengths and entity offsets in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _decode_value(key: str, value: Any) -> Any:
    if not isinstance(value, str) or key in _STRING_FIELDS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


async def _read_params(request: web.Request) -> dict[str, Any]:
    """Merge query string and body (JSON, urlencoded or multipart) into one decoded dict."""
    raw: dict[str, Any] = dict(request.query)
    if request.body_exists:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise _bad_request("can't parse JSON object") from None
            if not isinstance(body, dict):
                raise _bad_request("can't parse JSON object")
            raw.update(body)
        else:  # aiohttp reads both urlencoded and multipart forms here
            for key, value in (await request.post()).items():
                if isinstance(value, web.FileField):
                    value = Upload(value.filename, value.content_type, value.file.read())
                raw[key] = value
    return {key: value if isinstance(value, Upload) else _decode_value(key, value)
            for key, value in raw.items()}


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def _update_kind(update: dict) -> str | None:
    return next((key for key in update if key != "update_id"), None)


def _as_reply(message: dict) -> dict:
    """Telegram never nests ``reply_to_message`` inside a replied-to message."""
    return {key: copy.deepcopy(value) for key, value in message.items() if key != "reply_to_message"}


def _summary(message: dict) -> str:
    body = message.get("text") or message.get("caption")
    if body is None:
        body = "<" + ",".join(k for k in message if k not in ("message_id", "from", "chat", "date")) + ">"
    buttons = [f"{b.get('text')}={b.get('callback_data', b.get('url'))}"
               for row in message.get("reply_markup", {}).get("inline_keyboard", []) for b in row]
    return f"{body!r}" + (f" buttons={buttons}" if buttons else "")


class _HtmlText(HTMLParser):
    """Turns Telegram-flavoured HTML into plain text plus entities, rejecting what Telegram rejects."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self._source = source
        line_lengths = (len(line) + 1 for line in source.split("\n"))
        self._line_starts = list(itertools.accumulate(line_lengths, initial=0))
        self._parts: list[str] = []
        self._length = 0
        self._open: list[tuple[str, str, int, dict[str, str | None]]] = []
        self.entities: list[dict[str, Any]] = []

    def parse(self) -> str:
        self.feed(self._source)
        self.close()
        if self._open:
            raise self._error(f'Can\'t find end tag corresponding to start tag "{self._open[-1][0]}"')
        self.entities.sort(key=lambda entity: (entity["offset"], -entity["length"]))
        return "".join(self._parts)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        kind = _HTML_ENTITY_TYPES.get(tag)
        if tag == "span" and attributes.get("class") == "tg-spoiler":
            kind = "spoiler"
        if kind is None:
            raise self._error(f'Unsupported start tag "{tag}" at byte offset {self._byte_offset()}')
        self._open.append((tag, kind, self._length, attributes))

    def handle_endtag(self, tag: str) -> None:
        if not self._open:
            raise self._error(f"Unexpected end tag at byte offset {self._byte_offset()}")
        open_tag, kind, start, attributes = self._open.pop()
        if open_tag != tag:
            raise self._error(f'Unmatched end tag at byte offset {self._byte_offset()}, '
                              f'expected "</{open_tag}>", found "</{tag}>"')
        if self._length > start and (kind != "text_link" or attributes.get("href")):
            entity: dict[str, Any] = {"type": kind, "offset": start, "length": self._length - start}
            if kind == "text_link":
                entity["url"] = attributes["href"]
            self.entities.append(entity)

    def handle_data(self, data: str) -> None:
        self._parts.append(data)
        self._length += _utf16_len(data)

    def _byte_offset(self) -> int:
        line, column = self.getpos()
        return len(self._source[: self._line_starts[line - 1] + column].encode())

    @staticmethod
    def _error(detail: str) -> _ApiError:
        return _bad_request(f"can't parse entities: {detail}")


def _parse_markup(text: str, parse_mode: str) -> tuple[str, list[dict] | None]:
    """Apply parse_mode. Only HTML is checked and converted; Markdown text is accepted as is."""
    mode = parse_mode.lower()
    if mode == "html":
        parser = _HtmlText(text)
        return parser.parse(), parser.entities
    if mode in ("markdown", "markdownv2"):
        return text, None
    raise _bad_request("unsupported parse_mode")


def _formatted(value: Any, parse_mode: Any, entities: Any, kind: str) -> dict[str, Any]:
    """Validate a message text (``kind="text"``) or caption; returns the message fields to store."""
    text = "" if value is None else str(value)
    if text and parse_mode:
        text, entities = _parse_markup(text, str(parse_mode))
    if not text.strip():
        if kind == "text":
            raise _bad_request("message text is empty")
        return {}
    limit, error = ((MAX_TEXT_LENGTH, "message is too long") if kind == "text"
                    else (MAX_CAPTION_LENGTH, "message caption is too long"))
    if _utf16_len(text) > limit:
        raise _bad_request(error)
    fields: dict[str, Any] = {kind: text}
    if entities:
        fields["entities" if kind == "text" else "caption_entities"] = entities
    return fields


def _check_rows(markup: dict, key: str, kind: str) -> list:
    rows = markup[key]
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise _bad_request(f'field "{key}" of the {kind} must be an Array of Arrays')
    return [button for row in rows for button in row]


def _check_inline_button(button: Any) -> None:
    if not isinstance(button, dict) or not isinstance(button.get("text"), str):
        raise _bad_request("can't parse inline keyboard button: InlineKeyboardButton must be an Object")
    if "callback_data" in button:
        data = button["callback_data"]
        if not isinstance(data, str) or not 1 <= len(data.encode()) <= MAX_CALLBACK_DATA_BYTES:
            raise _bad_request("BUTTON_DATA_INVALID")
    elif not _INLINE_BUTTON_ACTIONS.intersection(button):
        raise _bad_request("can't parse inline keyboard button: "
                           "Text buttons are unallowed in the inline keyboard")


def _reply_markup(markup: Any) -> dict | None:
    """Validate any of the four reply_markup kinds; returns it unchanged (or None)."""
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise _bad_request("object expected as reply markup")
    if "inline_keyboard" in markup:
        for button in _check_rows(markup, "inline_keyboard", "InlineKeyboardMarkup"):
            _check_inline_button(button)
    elif "keyboard" in markup:
        _check_rows(markup, "keyboard", "ReplyKeyboardMarkup")
    elif not (markup.get("remove_keyboard") or markup.get("force_reply")):
        raise _bad_request("can't parse reply keyboard markup JSON object")
    return markup


def _inline_markup(markup: Any) -> dict | None:
    """Edits accept only inline keyboards."""
    markup = _reply_markup(markup)
    if markup is not None and "inline_keyboard" not in markup:
        raise _bad_request("inline keyboard expected")
    return markup


def _required(params: dict, key: str) -> Any:
    value = params.get(key)
    if value is None or value == "":
        raise _bad_request(f'parameter "{key}" is required')
    return value


class _Limits:
    """Sliding-window send counters, as Telegram limits a bot (see enforce_limits)."""

    def __init__(self, per_second: int, group_per_minute: int, private_per_second: float,
                 private_burst: int) -> None:
        self.overall = (per_second, 1.0)
        self.group = (group_per_minute, 60.0)
        self.private = (private_burst, private_burst / private_per_second)
        self.sent: dict[Any, deque[float]] = {}  # "*" or a chat id -> send times

    def _wait(self, key: Any, limit: tuple[int, float], now: float, cost: int) -> float:
        times = self.sent.setdefault(key, deque())
        while times and times[0] <= now - limit[1]:
            times.popleft()
        if len(times) + cost <= limit[0]:
            return 0.0
        return times[max(0, len(times) + cost - limit[0] - 1)] + limit[1] - now

    def admit(self, chat_id: Any, group: bool, cost: int) -> int | None:
        """Record the sends and return None, or the seconds to wait (nothing recorded)."""
        now = time.monotonic()
        chat = self.group if group else self.private
        wait = max(self._wait("*", self.overall, now, cost), self._wait(chat_id, chat, now, cost))
        if wait > 0:
            return max(1, math.ceil(wait))
        for key in ("*", chat_id):
            self.sent[key].extend([now] * cost)
        return None


class FakeBotApi:
    """An in-process Telegram: Bot API over HTTP on one side, scripted users on the other."""

    def __init__(self, token: str = "123456:TEST", bot_username: str = "whistle_test_bot",
                 bot_name: str = "Whistle", first_update_id: int = 1) -> None:
        """``first_update_id``: like Telegram's, update ids only grow; a server started
        again over an old database must not reuse ids the bot recorded as handled."""
        self.token = token
        self.bot_user: dict[str, Any] = {
            "id": int(token.split(":", 1)[0]), "is_bot": True,
            "first_name": bot_name, "username": bot_username,
        }
        self.port: int | None = None
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.callback_answers: dict[str, dict[str, Any]] = {}
        self.webhook: dict[str, Any] = {}
        # webhook mode: (update id, HTTP status or error) of every POST, in order
        self.webhook_deliveries: list[tuple[int, int | str]] = []
        self.webhook_retry_delay = 0.05  # first retry after a failed POST; doubles up to 2 s
        self._webhook_task: asyncio.Task | None = None
        self._webhook_error: tuple[int, str] | None = None

        self._host = "127.0.0.1"
        self._runner: web.AppRunner | None = None
        self._closing = False
        self._changed = asyncio.Event()
        self._subscribers: set[asyncio.Queue] = set()
        self._listeners: list[Callable[[dict], None]] = []  # called at once, see listen()

        self._users: dict[int, dict] = {}
        self._groups: dict[int, dict] = {}
        self._migrated: dict[int, int] = {}
        self._blocked: set[int] = set()
        self._member_status: dict[tuple[int, int], dict[str, Any]] = {}
        self._messages: dict[int, dict[int, dict]] = {}
        self._last_message_id: dict[int, int] = {}
        self._keyboards: dict[int, dict] = {}
        self._pinned: dict[int, list[int]] = {}
        self._commands: dict[tuple[str, str], list[dict]] = {}
        self._files: dict[str, _StoredFile] = {}
        self._files_by_path: dict[str, _StoredFile] = {}
        self._queries: set[str] = set()
        self._recent_bot_messages: deque[tuple[int, int]] = deque(maxlen=10)
        self._faults: dict[str, deque[_ApiError | None]] = {}  # None: let one call through
        self._delays: dict[str, deque[float]] = {}  # answer late, after doing the work
        self._limits: _Limits | None = None  # Telegram's rate limits, see enforce_limits()
        self.rate_limited = 0  # 429s answered because the bot went too fast

        self._queued: list[tuple[int, dict]] = []  # (update id, update), unconfirmed
        self._last_update_id = first_update_id - 1
        self._delivered_upto = 0
        self._allowed_updates: frozenset[str] | None = None
        self._poll_generation = 0
        self._bot_calls = 0  # API calls other than getUpdates, for wait_idle
        self._counter = itertools.count(1)  # file, query and media group ids

        self._methods: dict[str, tuple[str, Callable[[dict], Any]]] = {
            name.lower(): (name, handler) for name, handler in (
                ("getMe", self._get_me), ("logOut", self._ok), ("close", self._ok),
                ("getUpdates", self._get_updates), ("setWebhook", self._set_webhook),
                ("deleteWebhook", self._delete_webhook), ("getWebhookInfo", self._get_webhook_info),
                ("setMyCommands", self._set_my_commands), ("getMyCommands", self._get_my_commands),
                ("deleteMyCommands", self._delete_my_commands),
                ("sendMessage", self._send_message), ("sendPhoto", self._send_photo),
                ("sendMediaGroup", self._send_media_group), ("sendDocument", self._send_document),
                ("sendLocation", self._send_location), ("sendContact", self._send_contact),
                ("sendChatAction", self._send_chat_action),
                ("editMessageText", self._edit_message_text),
                ("editMessageCaption", self._edit_message_caption),
                ("editMessageReplyMarkup", self._edit_message_reply_markup),
                ("deleteMessage", self._delete_message),
                ("answerCallbackQuery", self._answer_callback_query),
                ("getFile", self._get_file), ("getChat", self._get_chat),
                ("getChatMember", self._get_chat_member),
                ("pinChatMessage", self._pin_chat_message),
                ("unpinChatMessage", self._unpin_chat_message),
            )
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on ``host:port``; port 0 picks a free port, readable afterwards as ``api.port``."""
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES)
        self.add_routes(app)
        self._closing = False
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self._host = "127.0.0.1" if host in ("", "0.0.0.0") else host
        self.port = self._runner.addresses[0][1]
        log.info("fake Bot API listening on %s", self.base_url)

    async def stop(self) -> None:
        """Release held long polls, then shut the server down."""
        self._release_pollers()
        await self._stop_webhook()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeBotApi:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def add_routes(self, app: web.Application) -> None:
        """Mount the Bot API and file routes on an existing, not yet started aiohttp application.

        ``base_url``/``base_file_url`` need ``api.port``: set it to the host server's port.
        """
        async def handle_method(request: web.Request) -> web.StreamResponse:
            return await self._handle_method(request)
        # the body limit this route declares to a host application's guard (bot/web.py)
        handle_method.max_body = MAX_UPLOAD_BYTES
        app.router.add_route("*", "/bot{token}/{method}", handle_method)
        app.router.add_get("/file/bot{token}/{file_path:.+}", self._handle_file)
        app.on_shutdown.append(self._on_shutdown)

    @property
    def base_url(self) -> str:
        return f"{self._origin()}/bot"

    @property
    def base_file_url(self) -> str:
        return f"{self._origin()}/file/bot"

    def _origin(self) -> str:
        if self.port is None:
            raise RuntimeError("FakeBotApi is not started")
        return f"http://{self._host}:{self.port}"

    async def _on_shutdown(self, _app: web.Application) -> None:
        self._release_pollers()

    def _release_pollers(self) -> None:
        # A held getUpdates would otherwise keep aiohttp's graceful shutdown waiting.
        self._closing = True
        self._touch()

    # ------------------------------------------------------------------ world setup

    def add_user(self, user_id: int, first_name: str, language_code: str = "zh-hans",
                 username: str | None = None, last_name: str | None = None) -> dict:
        """Create a user; their private chat (id == user_id) exists implicitly."""
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if last_name:
            user["last_name"] = last_name
        if username:
            user["username"] = username
        user["language_code"] = language_code
        self._users[user_id] = user
        return copy.deepcopy(user)

    def add_group(self, chat_id: int, title: str, type: str = "group") -> dict:  # noqa: A002 - Bot API name
        """Create a group or supergroup the bot can talk to."""
        if type not in ("group", "supergroup"):
            raise ValueError(f"group type must be 'group' or 'supergroup', not {type!r}")
        self._groups[chat_id] = {"id": chat_id, "type": type, "title": title}
        return copy.deepcopy(self._groups[chat_id])

    def set_member_status(self, chat_id: int, user_id: int, status: str, **fields: Any) -> None:
        """Make getChatMember report ``status`` (creator/administrator/member/restricted/left/kicked)."""
        if status not in _MEMBER_DEFAULTS:
            raise ValueError(f"unknown chat member status {status!r}")
        self._member_status[(chat_id, user_id)] = {"status": status, **_MEMBER_DEFAULTS[status], **fields}

    def block_user(self, user_id: int) -> None:
        """Sends to this user's private chat now fail with 403, as after the user blocked the bot."""
        self._blocked.add(user_id)

    def unblock_user(self, user_id: int) -> None:
        self._blocked.discard(user_id)

    # ------------------------------------------------------------------ user actions

    def user_sends(self, user_id: int, chat_id: int, *, reply_to_message_id: int | None = None,
                   **message_fields: Any) -> dict:
        """Deliver a message with arbitrary fields from a user; the base of all ``user_sends_*``."""
        user = self._known_user(user_id)
        chat = self._user_chat(user_id, chat_id)
        if reply_to_message_id is not None:
            target = self._messages.get(chat_id, {}).get(reply_to_message_id)
            if target is None:
                raise ValueError(f"no message {reply_to_message_id} in chat {chat_id} to reply to")
            message_fields["reply_to_message"] = _as_reply(target)
        message = self._store_message(chat, user, message_fields)
        keyboard = self._keyboards.get(chat_id)
        if keyboard is not None and keyboard.get("one_time_keyboard"):
            self._set_keyboard(chat_id, None)
        self._enqueue({"message": copy.deepcopy(message)})
        return copy.deepcopy(message)

    def user_sends_text(self, user_id: int, chat_id: int, text: str,
                        reply_to_message_id: int | None = None) -> dict:
        """A text message; a leading /command gets its ``bot_command`` entity like in Telegram."""
        fields: dict[str, Any] = {"text": text}
        command = _BOT_COMMAND.match(text)
        if command:
            fields["entities"] = [{"type": "bot_command", "offset": 0, "length": _utf16_len(command.group())}]
        return self.user_sends(user_id, chat_id, reply_to_message_id=reply_to_message_id, **fields)

    def user_sends_photo(self, user_id: int, chat_id: int, data: bytes, caption: str | None = None,
                         width: int = 800, height: int = 600,
                         reply_to_message_id: int | None = None) -> dict:
        """A photo: two downloadable PhotoSizes (thumbnail, full); the full one's bytes are ``data``."""
        fields: dict[str, Any] = {"photo": self._store_photo(data, width, height)}
        if caption:
            fields["caption"] = caption
        return self.user_sends(user_id, chat_id, reply_to_message_id=reply_to_message_id, **fields)

    def user_sends_document(self, user_id: int, chat_id: int, data: bytes, file_name: str,
                            mime_type: str = "application/octet-stream",
                            caption: str | None = None) -> dict:
        fields: dict[str, Any] = {"document": self._store_document(data, file_name, mime_type)}
        if caption:
            fields["caption"] = caption
        return self.user_sends(user_id, chat_id, **fields)

    def user_sends_location(self, user_id: int, chat_id: int, latitude: float, longitude: float) -> dict:
        return self.user_sends(user_id, chat_id, location={"latitude": latitude, "longitude": longitude})

    def user_sends_contact(self, user_id: int, chat_id: int, phone_number: str, first_name: str,
                           contact_user_id: int | None = None, last_name: str | None = None) -> dict:
        contact: dict[str, Any] = {"phone_number": phone_number, "first_name": first_name}
        if last_name:
            contact["last_name"] = last_name
        if contact_user_id is not None:
            contact["user_id"] = contact_user_id
        return self.user_sends(user_id, chat_id, contact=contact)

    def user_sends_sticker(self, user_id: int, chat_id: int, emoji: str = "👍") -> dict:
        stored = self._new_file("sticker", None, ".webp", "image/webp")
        sticker = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id, "type": "regular",
                   "width": 512, "height": 512, "is_animated": False, "is_video": False, "emoji": emoji}
        stored.media = sticker
        return self.user_sends(user_id, chat_id, sticker=sticker)

    def user_sends_voice(self, user_id: int, chat_id: int, data: bytes = b"OggS", duration: int = 3) -> dict:
        stored = self._new_file("voice", data, ".oga", "audio/ogg")
        voice = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                 "duration": duration, "mime_type": stored.mime_type, "file_size": len(data)}
        stored.media = voice
        return self.user_sends(user_id, chat_id, voice=voice)

    def user_presses(self, user_id: int, chat_id: int, message_id: int, callback_data: str,
                     inaccessible: bool = False) -> str:
        """Press an inline button; returns the callback query id.

        The query carries the message as it is *now*, so stale keyboards can be pressed.  Data is
        not checked against the keyboard and unknown message ids get a stub message, so tests can
        forge presses.  ``inaccessible=True`` sends Telegram's date-0 stub used for old messages.
        """
        user = self._known_user(user_id)
        chat = self._user_chat(user_id, chat_id)
        message = self._messages.get(chat_id, {}).get(message_id)
        if inaccessible:
            message = {"message_id": message_id, "chat": chat, "date": 0}
        elif message is None:
            message = {"message_id": message_id, "from": self.bot_user, "chat": chat, "date": _now()}
        query_id = f"cbq-{next(self._counter)}"
        query = {"id": query_id, "from": user, "message": message,
                 "chat_instance": f"ci{chat_id}", "data": callback_data}
        self._queries.add(query_id)
        self._emit({"type": "callback_query", "chat_id": chat_id, "query": copy.deepcopy(query)})
        self._enqueue({"callback_query": copy.deepcopy(query)})
        return query_id

    def user_joins_group(self, user_id: int, chat_id: int) -> dict:
        """A ``new_chat_members`` service message for a user joining a group."""
        user = self._known_user(user_id)
        message = self._store_message(self._known_group(chat_id), user, {"new_chat_members": [user]})
        self._enqueue({"message": copy.deepcopy(message)})
        return copy.deepcopy(message)

    def bot_added_to_group(self, chat_id: int, by_user_id: int) -> dict:
        """Both updates Telegram sends: ``my_chat_member`` and a ``new_chat_members`` message."""
        chat = self._known_group(chat_id)
        user = self._known_user(by_user_id)
        self._enqueue({"my_chat_member": copy.deepcopy({
            "chat": chat, "from": user, "date": _now(),
            "old_chat_member": {"status": "left", "user": self.bot_user},
            "new_chat_member": {"status": "member", "user": self.bot_user},
        })})
        message = self._store_message(chat, user, {"new_chat_members": [self.bot_user]})
        self._enqueue({"message": copy.deepcopy(message)})
        return copy.deepcopy(message)

    def group_migrates(self, chat_id: int, new_chat_id: int, by_user_id: int | None = None) -> dict:
        """Upgrade a group to a supergroup: service messages in both chats; the old id stops working."""
        old = self._known_group(chat_id)
        sender = self._known_user(by_user_id) if by_user_id is not None else None
        new = {"id": new_chat_id, "type": "supergroup", "title": old["title"]}
        self._groups[new_chat_id] = new
        for (member_chat, user_id), status in list(self._member_status.items()):
            if member_chat == chat_id:
                self._member_status[(new_chat_id, user_id)] = status
        message = self._store_message(old, sender, {"migrate_to_chat_id": new_chat_id})
        self._migrated[chat_id] = new_chat_id
        arrival = self._store_message(new, sender, {"migrate_from_chat_id": chat_id})
        self._enqueue({"message": copy.deepcopy(message)})
        self._enqueue({"message": copy.deepcopy(arrival)})
        return copy.deepcopy(message)

    def enqueue_update(self, update: dict) -> int:
        """Queue a raw update as is (tests use malformed ones); ``update_id`` is added if missing."""
        update = copy.deepcopy(update)
        given = update.get("update_id")
        if isinstance(given, int) and not isinstance(given, bool):
            self._last_update_id = max(self._last_update_id, given)
            update_id = given
        else:
            self._last_update_id += 1
            update_id = self._last_update_id
            update.setdefault("update_id", update_id)
        self._queued.append((update_id, update))
        log.debug("queued update %s (%s)", update_id, _update_kind(update))
        self._touch()
        return update_id

    def _enqueue(self, payload: dict) -> None:
        self._last_update_id += 1
        self.enqueue_update({"update_id": self._last_update_id, **payload})

    # ------------------------------------------------------------------ inspection

    def messages(self, chat_id: int) -> list[dict]:
        """Every message still in the chat, oldest first, users' and the bot's."""
        return copy.deepcopy(list(self._messages.get(chat_id, {}).values()))

    def bot_messages(self, chat_id: int) -> list[dict]:
        return [message for message in self.messages(chat_id) if self._from_bot(message)]

    def message(self, chat_id: int, message_id: int) -> dict | None:
        """Current state of a message, or None once deleted (or never sent)."""
        return copy.deepcopy(self._messages.get(chat_id, {}).get(message_id))

    def reply_keyboard(self, chat_id: int) -> dict | None:
        """The ReplyKeyboardMarkup currently shown in the chat, if any."""
        return copy.deepcopy(self._keyboards.get(chat_id))

    def pinned_message_ids(self, chat_id: int) -> list[int]:
        return list(self._pinned.get(chat_id, []))

    def my_commands(self, scope: dict | None = None, language_code: str = "") -> list[dict]:
        """Commands set via setMyCommands for that scope and language."""
        return copy.deepcopy(self._commands.get(self._commands_key(scope, language_code), []))

    def file_bytes(self, file_id: str) -> bytes | None:
        """Bytes behind a file id (None for files only known by URL); KeyError if unknown."""
        return self._files[file_id].data

    def subscribe(self) -> asyncio.Queue:
        """A queue receiving an event dict for every change, for live views."""
        queue: asyncio.Queue = asyncio.Queue()
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._subscribers.discard(queue)

    def listen(self, callback: Callable[[dict], None]) -> None:
        """Call ``callback(event)`` synchronously on every change, as it happens (benchmarks
        time arrivals with it; a queue consumer would add its own scheduling delay)."""
        self._listeners.append(callback)

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0,
                       description: str | None = None) -> T:
        """Wait until ``predicate()`` is truthy and return its value; re-checked on every change."""
        result = await self._wait(predicate, timeout)
        if not result:
            what = description or getattr(predicate, "__name__", "condition")
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self._dump()}")
        return result

    async def wait_message(self, chat_id: int, contains: str | None = None,
                           predicate: Callable[[dict], Any] | None = None, timeout: float = 5.0,
                           after: int | None = None) -> dict:
        """First bot message in the chat (after message id ``after``) matching text and predicate."""
        def matching_message() -> dict | None:
            for message in self._messages.get(chat_id, {}).values():
                if not self._from_bot(message) or (after is not None and message["message_id"] <= after):
                    continue
                body = message.get("text") or message.get("caption") or ""
                if contains is not None and contains not in body:
                    continue
                if predicate is None or predicate(copy.deepcopy(message)):
                    return copy.deepcopy(message)
            return None

        what = f"a bot message in chat {chat_id}" + (f" containing {contains!r}" if contains else "")
        return await self.wait_for(matching_message, timeout, what)

    async def wait_idle(self, quiet: float = 0.2, timeout: float = 5.0) -> None:
        """Wait until the bot fetched every update and then made no API call for ``quiet`` seconds.

        Lets a test assert that something did *not* happen without a fixed sleep.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and await self._wait(lambda: not self._undelivered(),
                                                          deadline - loop.time()):
            calls = self._bot_calls
            if not await self._wait(lambda: self._bot_calls != calls or self._undelivered(), quiet):
                return
        raise AssertionError(f"bot did not fetch all updates and go quiet within {timeout}s\n{self._dump()}")

    # ------------------------------------------------------------------ fault injection

    def fail_next(self, method: str, error_code: int, description: str,
                  retry_after: int | None = None, count: int = 1, after: int = 0,
                  hold: asyncio.Event | None = None) -> None:
        """The next ``count`` calls of ``method`` answer with this error (429s carry
        ``retry_after``), once ``after`` calls of it have gone through; with ``hold``,
        each error is answered only once that event is set (a refusal still on its way)."""
        parameters = {"retry_after": retry_after} if retry_after is not None else {}
        faults = self._faults.setdefault(method.lower(), deque())
        faults.extend([None] * after)
        for _ in range(count):
            fault = _ApiError(error_code, description, **parameters)
            fault.hold = hold
            faults.append(fault)

    def delay_next(self, method: str, seconds: float, count: int = 1) -> None:
        """The next ``count`` calls of ``method`` are carried out, then answered only after
        ``seconds``: a client that gives up sooner sees a timeout, yet the message was sent."""
        self._delays.setdefault(method.lower(), deque()).extend([seconds] * count)

    def enforce_limits(self, per_second: int = 30, group_per_minute: int = 20,
                       private_per_second: float = 1, private_burst: int = 1) -> None:
        """Answer 429 with ``retry_after`` like Telegram when the bot sends (or edits)
        faster than this, counted over sliding windows: ``per_second`` in any second,
        ``group_per_minute`` per group in any minute, ``private_burst`` per private chat in
        any ``private_burst / private_per_second`` seconds. An album counts per photo."""
        self._limits = _Limits(per_second, group_per_minute, private_per_second, private_burst)

    # ------------------------------------------------------------------ change notification

    def _touch(self) -> None:
        # Swapping in a fresh Event is a Condition.notify_all() that synchronous code can call.
        self._changed.set()
        self._changed = asyncio.Event()

    def _emit(self, event: dict) -> None:
        for queue in self._subscribers:
            queue.put_nowait(event)
        for listener in self._listeners:
            listener(event)
        self._touch()

    async def _wait(self, predicate: Callable[[], T], timeout: float) -> T | None:
        """Like wait_for, but returns None on timeout."""
        try:
            async with asyncio.timeout(max(timeout, 0)):
                while True:
                    changed = self._changed
                    if result := predicate():
                        return result
                    await changed.wait()
        except TimeoutError:
            return None

    def _undelivered(self) -> bool:
        return any(update_id > self._delivered_upto for update_id, _ in self._deliverable())

    def _dump(self) -> str:
        lines = ["recent bot messages:"]
        for chat_id, message_id in self._recent_bot_messages:
            message = self._messages.get(chat_id, {}).get(message_id)
            state = _summary(message) if message else "(deleted)"
            lines.append(f"  chat {chat_id} #{message_id}: {state}")
        if len(lines) == 1:
            lines.append("  (none)")
        lines.append(f"recent API calls: {[method for method, _ in self.requests[-8:]]}")
        lines.append(f"unconfirmed updates: {[update_id for update_id, _ in self._queued]}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ HTTP plumbing

    async def _handle_method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _ApiError(401, "Unauthorized").response()
        entry = self._methods.get(request.match_info["method"].lower())
        if entry is None:
            return _ApiError(404, "Not Found").response()
        name, handler = entry
        try:
            params = await _read_params(request)
            self.requests.append((name, params))
            if name != "getUpdates":
                self._bot_calls += 1
            self._touch()
            log.debug("%s %s", name, params)
            faults = self._faults.get(name.lower())
            if faults and (fault := faults.popleft()) is not None:
                if fault.hold is not None:
                    await fault.hold.wait()
                raise fault
            if self._limits is not None:
                self._check_limits(name, params)
            result = handler(params)
            if inspect.isawaitable(result):
                result = await result
            delays = self._delays.get(name.lower())
            if delays:
                await asyncio.sleep(delays.popleft())
        except _ApiError as error:
            log.debug("%s failed: %s %s", name, error.code, error.description)
            return error.response()
        return web.json_response({"ok": True, "result": result})

    async def _handle_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _ApiError(401, "Unauthorized").response()
        stored = self._files_by_path.get(request.match_info["file_path"])
        if stored is None or stored.data is None:
            return _ApiError(404, "Not Found").response()
        return web.Response(body=stored.data, content_type=stored.mime_type)

    def _check_limits(self, name: str, params: dict) -> None:
        lower = name.lower()
        if not (lower.startswith(("send", "edit")) and lower != "sendchataction"):
            return
        chat_id = params.get("chat_id")
        media = params.get("media")
        cost = len(media) if lower == "sendmediagroup" and isinstance(media, list) else 1
        after = self._limits.admit(chat_id, chat_id in self._groups or (
            isinstance(chat_id, int) and chat_id < 0), cost)
        if after is not None:
            self.rate_limited += 1
            raise _ApiError(429, f"Too Many Requests: retry after {after}", retry_after=after)

    # ------------------------------------------------------------------ Bot API: bot and updates

    def _ok(self, _params: dict) -> bool:
        return True

    def _get_me(self, _params: dict) -> dict:
        return {**self.bot_user, "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False, "can_connect_to_business": False,
                "has_main_web_app": False}

    async def _get_updates(self, params: dict) -> list[dict]:
        """Long poll: answer as soon as an update is deliverable, or after ``timeout`` seconds."""
        if self.webhook.get("url"):
            raise _ApiError(409, "Conflict: can't use getUpdates method while webhook is active; "
                                 "use deleteWebhook to delete the webhook first")
        offset = params.get("offset")
        if isinstance(offset, int):
            self._queued = [(update_id, update) for update_id, update in self._queued if update_id >= offset]
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = frozenset(allowed) or None
        limit = params.get("limit")
        limit = min(max(limit, 1), 100) if isinstance(limit, int) else 100
        timeout = params.get("timeout")
        timeout = timeout if isinstance(timeout, int | float) else 0

        self._poll_generation += 1
        generation = self._poll_generation
        self._touch()  # wakes an older poll so it can be terminated below
        await self._wait(lambda: self._closing or generation != self._poll_generation
                         or self._deliverable(), timeout)
        if generation != self._poll_generation:
            raise _ApiError(409, "Conflict: terminated by other getUpdates request; "
                                 "make sure that only one bot instance is running")
        if self.webhook.get("url"):  # set while this poll waited
            raise _ApiError(409, "Conflict: can't use getUpdates method while webhook is active; "
                                 "use deleteWebhook to delete the webhook first")
        batch = [] if self._closing else self._deliverable()[:limit]
        if batch:
            self._delivered_upto = max(self._delivered_upto, batch[-1][0])
        return [update for _, update in batch]

    def _deliverable(self) -> list[tuple[int, dict]]:
        allowed = self._allowed_updates
        return [(update_id, update) for update_id, update in self._queued
                if (kind := _update_kind(update)) is None
                or (kind in allowed if allowed is not None else kind not in _OPT_IN_UPDATES)]

    def _set_webhook(self, params: dict) -> bool:
        """From now on updates are POSTed to ``url`` (see ``_deliver_webhook``), not polled."""
        url = _required(params, "url")
        if not _is_url(url):
            raise _bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        self.webhook = {"url": url, **{key: value for key, value in params.items() if key != "url"}}
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            self._allowed_updates = frozenset(allowed) or None
        if params.get("drop_pending_updates"):
            self._queued.clear()
        if self._webhook_task is None or self._webhook_task.done():
            self._webhook_task = asyncio.create_task(self._deliver_webhook(), name="fake-webhook")
        self._touch()
        return True

    async def _delete_webhook(self, params: dict) -> bool:
        await self._stop_webhook()
        if params.get("drop_pending_updates"):
            self._queued.clear()
        return True

    async def _stop_webhook(self) -> None:
        self.webhook = {}
        task, self._webhook_task = self._webhook_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _deliver_webhook(self) -> None:
        """Like Telegram: POST each update, oldest first, with the secret header; an update
        is forgotten once answered 2xx, and retried (with a growing pause) until then.
        Updates go one at a time, so a chat's updates arrive in order."""
        import aiohttp  # the client side is needed only in webhook mode

        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            delay = self.webhook_retry_delay
            while self.webhook.get("url") and not self._closing:
                pending = self._deliverable()  # an update leaves the queue once answered 2xx
                if not pending:
                    await self._wait(lambda: self._closing or not self.webhook.get("url")
                                     or self._deliverable(), 3600)
                    continue
                update_id, update = pending[0]
                headers = {}
                if self.webhook.get("secret_token"):
                    headers["X-Telegram-Bot-Api-Secret-Token"] = str(self.webhook["secret_token"])
                try:
                    async with session.post(self.webhook["url"], json=update, headers=headers) as answer:
                        await answer.read()
                        outcome: int | str = answer.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    outcome = type(exc).__name__
                self.webhook_deliveries.append((update_id, outcome))
                if isinstance(outcome, int) and 200 <= outcome < 300:
                    self._delivered_upto = max(self._delivered_upto, update_id)
                    self._queued = [(uid, u) for uid, u in self._queued if uid != update_id]
                    self._webhook_error = None
                    delay = self.webhook_retry_delay
                    self._touch()
                    continue
                description = (f"Wrong response from the webhook: {outcome}"
                               if isinstance(outcome, int) else f"Connection failed: {outcome}")
                self._webhook_error = (_now(), description)
                log.debug("webhook delivery of update %s failed: %s", update_id, outcome)
                self._touch()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _get_webhook_info(self, _params: dict) -> dict:
        info: dict[str, Any] = {"url": self.webhook.get("url", ""), "has_custom_certificate": False,
                                "pending_update_count": len(self._queued)}
        if self._webhook_error is not None:
            info["last_error_date"], info["last_error_message"] = self._webhook_error
        for key in ("max_connections", "ip_address", "allowed_updates"):
            if key in self.webhook:
                info[key] = self.webhook[key]
        return info

    @staticmethod
    def _commands_key(scope: Any, language_code: Any) -> tuple[str, str]:
        return json.dumps(scope or {"type": "default"}, sort_keys=True), language_code or ""

    def _set_my_commands(self, params: dict) -> bool:
        commands = _required(params, "commands")
        if not isinstance(commands, list):
            raise _bad_request("can't parse commands JSON object")
        for command in commands:
            if not isinstance(command, dict) or not _COMMAND_NAME.fullmatch(str(command.get("command", ""))):
                raise _bad_request("BOT_COMMAND_INVALID")
        self._commands[self._commands_key(params.get("scope"), params.get("language_code"))] = commands
        return True

    def _get_my_commands(self, params: dict) -> list[dict]:
        return self._commands.get(self._commands_key(params.get("scope"), params.get("language_code")), [])

    def _delete_my_commands(self, params: dict) -> bool:
        self._commands.pop(self._commands_key(params.get("scope"), params.get("language_code")), None)
        return True

    # ------------------------------------------------------------------ Bot API: sending

    def _send_message(self, params: dict) -> dict:
        chat = self._target_chat(params.get("chat_id"), sending=True)
        content = _formatted(params.get("text"), params.get("parse_mode"), params.get("entities"), "text")
        if params.get("link_preview_options") is not None:
            content["link_preview_options"] = params["link_preview_options"]
        return self._bot_sends(chat, params, content)

    def _send_photo(self, params: dict) -> dict:
        chat = self._target_chat(params.get("chat_id"), sending=True)
        caption = _formatted(params.get("caption"), params.get("parse_mode"),
                             params.get("caption_entities"), "caption")
        if params.get("photo") in (None, ""):
            raise _bad_request("there is no photo in the request")
        return self._bot_sends(chat, params, {"photo": self._photo_input(params, params["photo"]), **caption})

    def _send_document(self, params: dict) -> dict:
        chat = self._target_chat(params.get("chat_id"), sending=True)
        caption = _formatted(params.get("caption"), params.get("parse_mode"),
                             params.get("caption_entities"), "caption")
        if params.get("document") in (None, ""):
            raise _bad_request("there is no document in the request")
        document = self._document_input(params, params["document"])
        return self._bot_sends(chat, params, {"document": document, **caption})

    def _send_media_group(self, params: dict) -> list[dict]:
        """Send an album: one message per item, all sharing a ``media_group_id``."""
        chat = self._target_chat(params.get("chat_id"), sending=True)
        media = params.get("media")
        if not isinstance(media, list) or not media:
            raise _bad_request("media to send are not specified")
        if len(media) > 10:
            raise _bad_request("too much messages to send as an album")
        if len(media) < 2:
            raise _bad_request("media group must contain 2-10 items")
        for item in media:
            if not isinstance(item, dict) or item.get("type") not in ("photo", "document"):
                raise _bad_request("can't parse InputMedia: only photo and document media are supported")
        captions = [_formatted(item.get("caption"), item.get("parse_mode"), item.get("caption_entities"),
                               "caption") for item in media]
        group_id = str(next(self._counter))
        contents = [{"photo": self._photo_input(params, item.get("media"))} if item["type"] == "photo"
                    else {"document": self._document_input(params, item.get("media"))} for item in media]
        no_markup = {key: value for key, value in params.items() if key != "reply_markup"}
        return [self._bot_sends(chat, no_markup, {**content, "media_group_id": group_id, **caption})
                for content, caption in zip(contents, captions)]

    def _send_location(self, params: dict) -> dict:
        chat = self._target_chat(params.get("chat_id"), sending=True)
        location = {"latitude": _required(params, "latitude"), "longitude": _required(params, "longitude")}
        if not all(isinstance(value, int | float) for value in location.values()):
            raise _bad_request("wrong latitude or longitude specified")
        return self._bot_sends(chat, params, {"location": location})

    def _send_contact(self, params: dict) -> dict:
        chat = self._target_chat(params.get("chat_id"), sending=True)
        contact = {"phone_number": _required(params, "phone_number"),
                   "first_name": _required(params, "first_name")}
        contact.update({key: params[key] for key in ("last_name", "vcard") if params.get(key)})
        return self._bot_sends(chat, params, {"contact": contact})

    def _send_chat_action(self, params: dict) -> bool:
        chat = self._target_chat(params.get("chat_id"), sending=True)
        if params.get("action") not in _CHAT_ACTIONS:
            raise _bad_request("wrong parameter action in request")
        self._emit({"type": "chat_action", "chat_id": chat["id"], "action": params["action"]})
        return True

    def _bot_sends(self, chat: dict, params: dict, content: dict) -> dict:
        """Shared tail of all send methods: reply target, reply markup, storage."""
        markup = _reply_markup(params.get("reply_markup"))
        fields = {**content, **self._reply_fields(chat["id"], params)}
        if params.get("message_thread_id"):
            fields["message_thread_id"] = params["message_thread_id"]
        if markup is not None and "inline_keyboard" in markup:
            fields["reply_markup"] = markup
        message = self._store_message(chat, self.bot_user, fields)
        self._recent_bot_messages.append((chat["id"], message["message_id"]))
        if markup is not None and "keyboard" in markup:
            self._set_keyboard(chat["id"], markup)
        elif markup is not None and markup.get("remove_keyboard"):
            self._set_keyboard(chat["id"], None)
        return copy.deepcopy(message)

    def _reply_fields(self, chat_id: int, params: dict) -> dict:
        """Resolve reply_parameters (or the legacy reply_to_message_id) into ``reply_to_message``."""
        reply = params.get("reply_parameters") or {}
        if not isinstance(reply, dict):
            raise _bad_request("can't parse reply parameters JSON object")
        target_id = reply.get("message_id", params.get("reply_to_message_id"))
        if target_id is None:
            return {}
        target = self._messages.get(reply.get("chat_id", chat_id), {}).get(target_id)
        if target is not None:
            return {"reply_to_message": _as_reply(target)}
        if reply.get("allow_sending_without_reply", params.get("allow_sending_without_reply")):
            return {}
        raise _bad_request("message to be replied not found")

    # ------------------------------------------------------------------ Bot API: editing

    def _edit_message_text(self, params: dict) -> dict:
        message = self._message_to_edit(params)
        if "text" not in message:
            raise _bad_request("there is no text in the message to edit")
        content = _formatted(params.get("text"), params.get("parse_mode"), params.get("entities"), "text")
        return self._apply_edit(message, {"text": content["text"], "entities": content.get("entities"),
                                          "reply_markup": _inline_markup(params.get("reply_markup"))})

    def _edit_message_caption(self, params: dict) -> dict:
        message = self._message_to_edit(params)
        if not any(kind in message for kind in _CAPTIONED_MEDIA):
            raise _bad_request("there is no caption in the message to edit")
        content = _formatted(params.get("caption"), params.get("parse_mode"),
                             params.get("caption_entities"), "caption")
        return self._apply_edit(message, {"caption": content.get("caption"),
                                          "caption_entities": content.get("caption_entities"),
                                          "reply_markup": _inline_markup(params.get("reply_markup"))})

    def _edit_message_reply_markup(self, params: dict) -> dict:
        message = self._message_to_edit(params)
        return self._apply_edit(message, {"reply_markup": _inline_markup(params.get("reply_markup"))})

    def _message_to_edit(self, params: dict) -> dict:
        chat = self._target_chat(params.get("chat_id"))
        message_id = params.get("message_id")
        if message_id is None:
            raise _bad_request("message identifier is not specified")
        message = self._messages.get(chat["id"], {}).get(message_id)
        if message is None:
            raise _bad_request("message to edit not found")
        if not self._from_bot(message):
            raise _bad_request("message can't be edited")
        return message

    def _apply_edit(self, message: dict, changes: dict[str, Any]) -> dict:
        """Apply field changes (None removes a field); an edit that changes nothing is an error."""
        if all(message.get(key) == value for key, value in changes.items()):
            raise _bad_request(NOT_MODIFIED)
        for key, value in changes.items():
            if value is None:
                message.pop(key, None)
            else:
                message[key] = value
        message["edit_date"] = _now()
        self._emit({"type": "edit", "chat_id": message["chat"]["id"], "message": copy.deepcopy(message)})
        return copy.deepcopy(message)

    def _delete_message(self, params: dict) -> bool:
        chat = self._target_chat(params.get("chat_id"))
        message_id = params.get("message_id")
        if self._messages.get(chat["id"], {}).pop(message_id, None) is None:
            raise _bad_request("message to delete not found")
        self._emit({"type": "delete", "chat_id": chat["id"], "message_id": message_id})
        return True

    def _answer_callback_query(self, params: dict) -> bool:
        query_id = params.get("callback_query_id")
        if query_id not in self._queries or query_id in self.callback_answers:
            raise _bad_request(QUERY_TOO_OLD)
        answer = {"text": params.get("text"), "show_alert": bool(params.get("show_alert", False)),
                  "url": params.get("url")}
        self.callback_answers[query_id] = answer
        self._emit({"type": "callback_answer", "query_id": query_id, "answer": dict(answer)})
        return True

    # ------------------------------------------------------------------ Bot API: files, chats

    def _get_file(self, params: dict) -> dict:
        file_id = params.get("file_id")
        stored = self._files.get(file_id) if isinstance(file_id, str) else None
        if stored is None:
            raise _bad_request(WRONG_FILE)
        result: dict[str, Any] = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id}
        if stored.data is not None:
            result.update(file_size=len(stored.data), file_path=stored.file_path)
        return result

    def _get_chat(self, params: dict) -> dict:
        chat = self._target_chat(params.get("chat_id"))
        full = {**chat, "accent_color_id": 0, "max_reaction_count": 11,
                "accepted_gift_types": dict.fromkeys(("unlimited_gifts", "limited_gifts", "unique_gifts",
                                                      "premium_subscription", "gifts_from_channels"), False)}
        pinned = self._pinned.get(chat["id"])
        message = self._messages.get(chat["id"], {}).get(pinned[-1]) if pinned else None
        if message is not None:
            full["pinned_message"] = message
        return full

    def _get_chat_member(self, params: dict) -> dict:
        chat = self._target_chat(params.get("chat_id"))
        user_id = params.get("user_id")
        user = self.bot_user if user_id == self.bot_user["id"] else self._users.get(user_id)
        if user is None:
            raise _bad_request("user not found")
        return {**self._member_status.get((chat["id"], user_id), {"status": "member"}), "user": user}

    def _pin_chat_message(self, params: dict) -> bool:
        chat = self._target_chat(params.get("chat_id"))
        message_id = params.get("message_id")
        if message_id not in self._messages.get(chat["id"], {}):
            raise _bad_request("message to pin not found")
        pinned = self._pinned.setdefault(chat["id"], [])
        if message_id in pinned:
            pinned.remove(message_id)
        pinned.append(message_id)
        self._emit({"type": "pin", "chat_id": chat["id"], "pinned": list(pinned)})
        return True

    def _unpin_chat_message(self, params: dict) -> bool:
        chat = self._target_chat(params.get("chat_id"))
        pinned = self._pinned.get(chat["id"], [])
        message_id = params.get("message_id", pinned[-1] if pinned else None)
        if message_id in pinned:
            pinned.remove(message_id)
            self._emit({"type": "pin", "chat_id": chat["id"], "pinned": list(pinned)})
        return True

    # ------------------------------------------------------------------ state helpers

    def _chat(self, chat_id: Any) -> dict | None:
        if isinstance(chat_id, bool) or not isinstance(chat_id, int):
            return None  # "@username" addressing is not simulated
        if chat_id in self._groups:
            return self._groups[chat_id]
        user = self._users.get(chat_id)
        if user is None:
            return None
        return {"id": chat_id, "type": "private",
                **{key: user[key] for key in ("first_name", "last_name", "username") if key in user}}

    def _target_chat(self, chat_id: Any, *, sending: bool = False) -> dict:
        """The chat a Bot API call addresses, or the error Telegram would give."""
        if chat_id is None or chat_id == "":
            raise _bad_request("chat_id is empty")
        if isinstance(chat_id, int) and chat_id in self._migrated:
            raise _ApiError(400, "Bad Request: group chat was upgraded to a supergroup chat",
                            migrate_to_chat_id=self._migrated[chat_id])
        chat = self._chat(chat_id)
        if chat is None:
            raise _bad_request("chat not found")
        if sending and chat_id in self._blocked:
            raise _ApiError(403, "Forbidden: bot was blocked by the user")
        return chat

    def _known_user(self, user_id: int) -> dict:
        if user_id not in self._users:
            raise ValueError(f"unknown user {user_id}; call add_user() first")
        return self._users[user_id]

    def _known_group(self, chat_id: int) -> dict:
        if chat_id in self._migrated or chat_id not in self._groups:
            raise ValueError(f"unknown or migrated group {chat_id}; call add_group() first")
        return self._groups[chat_id]

    def _user_chat(self, user_id: int, chat_id: int) -> dict:
        """The chat a scripted user acts in; users can only write in their own private chat."""
        chat = self._chat(chat_id)
        if chat is None or chat_id in self._migrated:
            raise ValueError(f"unknown or migrated chat {chat_id}")
        if chat["type"] == "private" and chat_id != user_id:
            raise ValueError(f"user {user_id} cannot write in the private chat of {chat_id}")
        return chat

    def _from_bot(self, message: dict) -> bool:
        return message.get("from", {}).get("id") == self.bot_user["id"]

    def _store_message(self, chat: dict, sender: dict | None, fields: dict) -> dict:
        chat_id = chat["id"]
        message_id = self._last_message_id[chat_id] = self._last_message_id.get(chat_id, 0) + 1
        message: dict[str, Any] = {"message_id": message_id}
        if sender is not None:
            message["from"] = sender
        message.update({"chat": chat, "date": _now()})
        message.update(fields)  # may override anything, e.g. a forged date
        message = copy.deepcopy(message)
        self._messages.setdefault(chat_id, {})[message_id] = message
        self._emit({"type": "message", "chat_id": chat_id, "message": copy.deepcopy(message)})
        return message

    def _set_keyboard(self, chat_id: int, keyboard: dict | None) -> None:
        if keyboard is None:
            self._keyboards.pop(chat_id, None)
        else:
            self._keyboards[chat_id] = keyboard
        self._emit({"type": "reply_keyboard", "chat_id": chat_id, "keyboard": copy.deepcopy(keyboard)})

    def _new_file(self, kind: str, data: bytes | None, extension: str, mime_type: str) -> _StoredFile:
        number = next(self._counter)
        stored = _StoredFile(
            file_id=f"{kind}-{number}", file_unique_id=f"u{number}", kind=kind, data=data,
            file_path=f"{_FILE_FOLDERS[kind]}/file_{number}{extension}" if data is not None else None,
            mime_type=mime_type,
        )
        self._files[stored.file_id] = stored
        if stored.file_path:
            self._files_by_path[stored.file_path] = stored
        return stored

    def _store_photo(self, data: bytes | None, width: int, height: int) -> list[dict]:
        """Two PhotoSizes like Telegram's. Without an image library the thumbnail shares the
        original bytes; only its reported dimensions are scaled down."""
        scale = min(1.0, 90 / max(width, height, 1))
        sizes = []
        for size_width, size_height in ((max(1, round(width * scale)), max(1, round(height * scale))),
                                        (width, height)):
            stored = self._new_file("photo", data, ".jpg", "image/jpeg")
            size = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                    "width": size_width, "height": size_height}
            if data is not None:
                size["file_size"] = len(data)
            sizes.append(size)
        for size in sizes:
            self._files[size["file_id"]].media = sizes
        return copy.deepcopy(sizes)

    def _store_document(self, data: bytes | None, file_name: str, mime_type: str) -> dict:
        extension = "." + file_name.rsplit(".", 1)[1] if "." in file_name else ""
        stored = self._new_file("document", data, extension, mime_type)
        document: dict[str, Any] = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                                    "file_name": file_name, "mime_type": mime_type}
        if data is not None:
            document["file_size"] = len(data)
        stored.media = document
        return copy.deepcopy(document)

    def _file_input(self, params: dict, value: Any) -> Upload | str:
        """Resolve ``attach://name`` to the uploaded part it names."""
        if isinstance(value, str) and value.startswith("attach://"):
            value = params.get(value.removeprefix("attach://"))
        if not isinstance(value, Upload | str):
            raise _bad_request(WRONG_FILE)
        return value

    def _known_media(self, file_id: str, kind: str) -> Any:
        stored = self._files.get(file_id)
        if stored is None or stored.kind != kind:
            raise _bad_request(WRONG_FILE)
        return copy.deepcopy(stored.media)

    def _photo_input(self, params: dict, value: Any) -> list[dict]:
        """A new upload, a URL (recorded, not fetched) or a known photo file_id."""
        value = self._file_input(params, value)
        if isinstance(value, Upload):
            return self._store_photo(value.data, 800, 600)
        if _is_url(value):
            return self._store_photo(None, 800, 600)
        return self._known_media(value, "photo")

    def _document_input(self, params: dict, value: Any) -> dict:
        value = self._file_input(params, value)
        if isinstance(value, Upload):
            return self._store_document(value.data, value.file_name, value.mime_type)
        if _is_url(value):
            name = urlsplit(value).path.rsplit("/", 1)[-1] or "file"
            mime_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
            return self._store_document(None, name, mime_type)
        return self._known_media(value, "document")
