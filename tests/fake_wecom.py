"""A fake WeCom server API on 127.0.0.1 for the tests: issues access tokens, records
the app messages, card updates and group-robot pushes it receives, serves media, and
can be told to answer the next calls with an error (40014, 42001, 45009 …), with an
HTTP error status, or not at all (the connection dropped after the call was taken), and
be stopped and started again on the same port (connections refused meanwhile).

It checks what WeCom checks: a text must not be empty (44004), an image or file
message must name media uploaded with that type (40007), and an upload needs a type
WeCom knows, a file name and more than 5 bytes (an image: a JPEG or PNG)."""
from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

CORP_ID = "wwtestcorp0001"
SECRET = "test-secret"
ROBOT_LIMIT = 4096


class FakeWecom:
    def __init__(self, corp_id: str = CORP_ID, secret: str = SECRET):
        self.corp_id, self.secret = corp_id, secret
        self.tokens: set[str] = set()
        self.token_calls = 0
        self.sent: list[dict[str, Any]] = []  # message/send bodies, in order
        self.updates: list[dict[str, Any]] = []  # message/update_template_card bodies
        self.robot: list[dict[str, Any]] = []  # {"key", "content"}
        self.media: dict[str, bytes] = {}
        self.uploads: dict[str, bytes] = {}
        self.upload_info: dict[str, dict[str, str]] = {}  # media id -> {"type", "filename"}
        self.codes: dict[str, bool] = {}  # response code -> still usable
        self.calls: list[str] = []  # every path called, in order
        self._errors: list[tuple[str | None, int]] = []
        self._http_errors: list[list] = []  # [path, status, calls to let through first]
        self._drops: list[str] = []  # paths whose next call is taken but not answered
        self._hangs: list[str] = []  # paths whose next call is never answered
        self._release = asyncio.Event()
        self._ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- life ----------------------------------------------------------------------------

    async def start(self, port: int = 0) -> None:
        """Serve on ``port`` (0: any free one; the port of a stopped fake: the same again)."""
        self._release = asyncio.Event()
        app = web.Application(client_max_size=30 * 1024 * 1024)
        app.router.add_get("/cgi-bin/gettoken", self._gettoken)
        app.router.add_post("/cgi-bin/message/send", self._send)
        app.router.add_post("/cgi-bin/message/update_template_card", self._update)
        app.router.add_get("/cgi-bin/media/get", self._media_get)
        app.router.add_post("/cgi-bin/media/upload", self._media_upload)
        app.router.add_post("/cgi-bin/webhook/send", self._robot)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cgi-bin"

    def robot_url(self, key: str) -> str:
        return f"http://127.0.0.1:{self.port}/cgi-bin/webhook/send?key={key}"

    # -- control -------------------------------------------------------------------------

    def fail_next(self, errcode: int, path: str | None = None, times: int = 1) -> None:
        """The next ``times`` calls (to ``path``, e.g. "/message/send", or any but
        gettoken) answer with ``errcode``."""
        self._errors += [(path, errcode)] * times

    def fail_http(self, status: int, path: str | None = None, times: int = 1,
                  after: int = 0) -> None:
        """The next ``times`` calls (to ``path``, "/gettoken" included, or any), once
        ``after`` more have gone through, answer with HTTP ``status`` and no JSON (a
        gateway in trouble)."""
        self._http_errors += [[path, status, after]] + [[path, status, 0]] * (times - 1)

    def drop_next(self, path: str, times: int = 1) -> None:
        """The next ``times`` calls to ``path`` are carried out, then their connection
        closed without an answer: the caller cannot know that they arrived. (aiohttp's
        client repeats a GET once on a kept-alive connection that closed.)"""
        self._drops += [path] * times

    def hang_next(self, path: str) -> None:
        """The next call to ``path`` gets no answer until the caller gives up."""
        self._hangs.append(path)

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def add_media(self, data: bytes) -> str:
        media_id = f"media-{next(self._ids)}"
        self.media[media_id] = data
        return media_id

    def to(self, userid: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if userid in m["touser"].split("|")]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0,
                       description: str = "a condition") -> Any:
        async def check():
            async with self._changed:
                while not (result := predicate()):
                    await self._changed.wait()
                return result
        try:
            return await asyncio.wait_for(check(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {description}; sent: "
                                 f"{json.dumps(self.sent, ensure_ascii=False)[-3000:]}") from None

    async def wait_sent(self, userid: str, predicate: Callable[[dict], Any] = lambda m: True,
                        after: int = 0, description: str = "") -> dict:
        """The first message to ``userid`` at index ``after`` or later matching ``predicate``."""
        def find():
            for message in self.to(userid)[after:]:
                if predicate(message):
                    return message
            return None
        return await self.wait_for(find, description=description or f"a message to {userid}")

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- handlers ------------------------------------------------------------------------

    async def _trouble(self, request: web.Request) -> web.Response | None:
        """An injected HTTP error: the call is not carried out."""
        path = request.path.removeprefix("/cgi-bin")
        for i, (only, status, skip) in enumerate(self._http_errors):
            if only is None or only == path:
                if skip:
                    self._http_errors[i][2] -= 1
                    return None
                del self._http_errors[i]
                return web.Response(status=status, text="<html>Bad Gateway</html>",
                                    content_type="text/html")
        return None

    async def _withheld(self, request: web.Request) -> bool:
        """After the call was carried out: no answer until the caller gives up
        (``hang_next``), or the connection closed instead (``drop_next``)."""
        path = request.path.removeprefix("/cgi-bin")
        if path in self._hangs:
            self._hangs.remove(path)
            await self._release.wait()  # the caller gives up first; stop() ends it
            return True
        if path not in self._drops:
            return False
        self._drops.remove(path)
        if request.transport is not None:
            request.transport.abort()
        return True

    def _error(self, path: str) -> web.Response | None:
        for i, (only, code) in enumerate(self._errors):
            if only is None or only == path:
                del self._errors[i]
                return web.json_response({"errcode": code, "errmsg": f"injected {code}"})
        return None

    async def _authorised(self, request: web.Request) -> web.Response | None:
        if (trouble := await self._trouble(request)) is not None:
            return trouble
        token = request.query.get("access_token", "")
        if token not in self.tokens:
            return web.json_response({"errcode": 42001 if token.startswith("tok-") else 40014,
                                      "errmsg": "access_token expired or invalid"})
        return self._error(request.path.removeprefix("/cgi-bin"))

    async def _gettoken(self, request: web.Request) -> web.Response:
        self.calls.append("/gettoken")
        self.token_calls += 1
        if (trouble := await self._trouble(request)) is not None:
            return trouble
        for i, (only, code) in enumerate(self._errors):  # only when named: fail_next(…, "/gettoken")
            if only == "/gettoken":
                del self._errors[i]
                return web.json_response({"errcode": code, "errmsg": f"injected {code}"})
        if (request.query.get("corpid") != self.corp_id
                or request.query.get("corpsecret") != self.secret):
            return web.json_response({"errcode": 40001, "errmsg": "invalid credential"})
        token = f"tok-{next(self._ids)}"
        self.tokens.add(token)
        if await self._withheld(request):
            return web.Response()
        return web.json_response({"errcode": 0, "errmsg": "ok", "access_token": token,
                                  "expires_in": 7200})

    async def _send(self, request: web.Request) -> web.Response:
        self.calls.append("/message/send")
        if (refused := await self._authorised(request)) is not None:
            return refused
        body = await request.json()
        if (refused := self._check_message(body)) is not None:
            return refused
        answer: dict[str, Any] = {"errcode": 0, "errmsg": "ok", "invaliduser": "",
                                  "msgid": f"msg-{next(self._ids)}"}
        if body.get("msgtype") == "template_card":
            code = f"rc-{next(self._ids)}"
            self.codes[code] = True
            answer["response_code"] = code
            body["response_code"] = code
        self.sent.append(body)
        await self._notify()
        if await self._withheld(request):
            return web.Response()  # not written: the connection is gone
        return web.json_response(answer)

    def _check_message(self, body: dict) -> web.Response | None:
        kind = body.get("msgtype")
        content = body.get(kind) if isinstance(body.get(kind), dict) else {}
        if kind in ("text", "markdown") and not str(content.get("content", "")).strip():
            return web.json_response({"errcode": 44004, "errmsg": "empty content"})
        if kind in ("image", "file"):
            info = self.upload_info.get(content.get("media_id", ""))
            if info is None or info["type"] != kind:
                return web.json_response({"errcode": 40007, "errmsg": "invalid media_id"})
        return None

    async def _update(self, request: web.Request) -> web.Response:
        self.calls.append("/message/update_template_card")
        if (refused := await self._authorised(request)) is not None:
            return refused
        body = await request.json()
        if not self.codes.get(body.get("response_code")):
            return web.json_response({"errcode": 40058, "errmsg": "response_code invalid or used"})
        self.codes[body["response_code"]] = False
        self.updates.append(body)
        await self._notify()
        return web.json_response({"errcode": 0, "errmsg": "ok", "invaliduser": []})

    def issue_code(self) -> str:
        """A response code as a button press hands it out."""
        code = f"rc-{next(self._ids)}"
        self.codes[code] = True
        return code

    async def _media_get(self, request: web.Request) -> web.Response:
        self.calls.append("/media/get")
        if (refused := await self._authorised(request)) is not None:
            return refused
        data = self.media.get(request.query.get("media_id", ""))
        if data is None:
            return web.json_response({"errcode": 40007, "errmsg": "invalid media_id"})
        return web.Response(body=data, content_type="image/jpeg")

    async def _media_upload(self, request: web.Request) -> web.Response:
        self.calls.append("/media/upload")
        if (refused := await self._authorised(request)) is not None:
            return refused
        kind = request.query.get("type", "")
        if kind not in ("image", "voice", "video", "file"):
            return web.json_response({"errcode": 40004, "errmsg": "invalid media type"})
        form = await request.post()
        media = form.get("media")
        if not isinstance(media, web.FileField) or not media.filename:
            return web.json_response({"errcode": 41006, "errmsg": "media data missing"})
        data = media.file.read()
        if len(data) <= 5:
            return web.json_response({"errcode": 40005, "errmsg": "invalid file size"})
        if kind == "image" and not data.startswith((b"\xff\xd8", b"\x89PNG")):
            return web.json_response({"errcode": 40113, "errmsg": "unsupported file type"})
        media_id = f"up-{next(self._ids)}"
        self.uploads[media_id] = data
        self.upload_info[media_id] = {"type": kind, "filename": media.filename}
        if await self._withheld(request):
            return web.Response()
        return web.json_response({"errcode": 0, "errmsg": "ok", "type": kind,
                                  "media_id": media_id, "created_at": "1380000000"})

    async def _robot(self, request: web.Request) -> web.Response:
        self.calls.append("/webhook/send")
        if (refused := self._error("/webhook/send")) is not None:
            return refused
        body = await request.json()
        content = body.get("markdown", {}).get("content", "")
        if len(content.encode()) > ROBOT_LIMIT:
            return web.json_response({"errcode": 40058, "errmsg": "content exceed max length"})
        self.robot.append({"key": request.query.get("key"), "content": content})
        await self._notify()
        return web.json_response({"errcode": 0, "errmsg": "ok"})
