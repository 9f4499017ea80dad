"""A small client for WeCom's server API (qyapi.weixin.qq.com/cgi-bin) over aiohttp.

The access token is cached until shortly before it expires and fetched again once
when WeCom says it is invalid or expired (40014, 42001). Every other error is raised
as ``WecomError`` carrying WeCom's errcode and errmsg, or no code when WeCom could not
be reached or answered no JSON; it says whether the call may have been carried out all
the same (``reached``: it went out and its answer was lost), and so whether a message
may show though the call failed (``uncertain``)."""
from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp

log = logging.getLogger(__name__)
TOKEN_ERRORS = {40014, 42001}  # invalid access_token, access_token expired
RATE_ERRORS = {45009, 45033, -1}  # API frequency limit, concurrency limit, system busy
TOKEN_MARGIN = 300  # refetch the token this many seconds before WeCom's expiry
# seconds to connect (at most half the call's): a timeout then means WeCom never got the call
CONNECT_TIMEOUT = 5.0
# the calls that show something to people: only these can leave a message uncertain
SENDS = frozenset({"/message/send", "/message/update_template_card"})
# failures before the request left: WeCom cannot have it
NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)

# a URL's query in an error's text: gettoken's carries the secret, other calls the token
# (aiohttp names the whole URL, e.g. "Connection timeout to host https://…?corpsecret=…")
URL_QUERY = re.compile(r"(https?://[^\s?#'\"]*)\?([^\s#'\"]*)")


def describe(exc: BaseException) -> str:
    """An error as text for the outbox row, the log and the admins' alert: any URL in it
    keeps its query's names, not their values."""
    def blank(match: re.Match) -> str:
        names = [part.split("=", 1)[0] for part in match.group(2).split("&")]
        return match.group(1) + "?" + "&".join(f"{name}=…" for name in names)
    return URL_QUERY.sub(blank, f"{type(exc).__name__}: {exc}")


class WecomError(Exception):
    """WeCom answered with a non-zero errcode (or not at all: ``code`` None).
    ``reached``: the request went out and no answer came back, so WeCom may have carried
    it out; not when the connection failed or WeCom answered (an HTTP error included)."""

    def __init__(self, code: int | None, message: str, path: str = "", reached: bool = False):
        super().__init__(f"WeCom {path}: {code} {message}".strip())
        self.code, self.message, self.path, self.reached = code, message, path, reached

    @property
    def retryable(self) -> bool:
        return self.code is None or self.code in RATE_ERRORS

    @property
    def uncertain(self) -> bool:
        """A message may show though the call failed: it went to a sending call and its
        answer was lost. A failed ``gettoken``, upload or connection sent nothing."""
        return self.code is None and self.reached and self.path in SENDS


class WecomApi:
    def __init__(self, base_url: str, corp_id: str, secret: str, agent_id: int,
                 clock: Callable[[], float] = time.monotonic, timeout: float = 15):
        self.base_url = base_url.rstrip("/")
        self.corp_id, self.secret, self.agent_id = corp_id, secret, agent_id
        self.clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout,
                                              connect=min(timeout / 2, CONNECT_TIMEOUT))
        self._token: str | None = None
        self._expires = 0.0
        self._token_lock = asyncio.Lock()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- token ---------------------------------------------------------------------------

    async def token(self, *, refresh: bool = False) -> str:
        async with self._token_lock:
            if refresh or self._token is None or self.clock() >= self._expires:
                data = await self._request("GET", "/gettoken", params={
                    "corpid": self.corp_id, "corpsecret": self.secret})
                self._token = data["access_token"]
                expires_in = int(data.get("expires_in", 7200))
                self._expires = self.clock() + max(60, expires_in - TOKEN_MARGIN)
            return self._token

    async def call(self, method: str, path: str, **kwargs) -> dict[str, Any]:
        """An authenticated call; a token error fetches a fresh token and retries once."""
        stale = await self.token()
        try:
            return await self._request(method, path, token=stale, **kwargs)
        except WecomError as exc:
            if exc.code not in TOKEN_ERRORS:
                raise
            log.info("WeCom token rejected (%s); fetching a new one", exc.code)
            if self._token == stale:
                await self.token(refresh=True)
            return await self._request(method, path, token=self._token, **kwargs)

    async def _request(self, method: str, path: str, token: str | None = None,
                       params: dict | None = None, raw: bool = False, **kwargs) -> Any:
        params = dict(params or {})
        if "form" in kwargs:  # a multipart body can be sent once: build it for each attempt
            kwargs["data"] = kwargs.pop("form")()
        if token is not None:
            params["access_token"] = token
        try:
            async with self.session.request(method, self.base_url + path, params=params,
                                            **kwargs) as response:
                kind = response.content_type or ""
                if raw and response.status == 200 and "json" not in kind and "text" not in kind:
                    return await response.read(), response.headers.get("Content-Type", "")
                if response.status != 200:  # an answer: the call was not carried out
                    raise WecomError(None, f"HTTP {response.status}", path)
                data = await response.json(content_type=None)
        except NOT_SENT as exc:
            raise WecomError(None, describe(exc), path) from exc
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise WecomError(None, describe(exc), path, reached=True) from exc
        if not isinstance(data, dict):
            raise WecomError(None, "answer is not a JSON object", path)
        code = int(data.get("errcode", 0) or 0)
        if code:
            raise WecomError(code, str(data.get("errmsg", "")), path)
        return data

    # -- messages ------------------------------------------------------------------------

    async def send(self, userids: list[str], msgtype: str, body: dict[str, Any]) -> dict[str, Any]:
        """message/send to members; WeCom answers with msgid (and response_code for
        interactive cards). Members it could not reach are named in ``invaliduser``."""
        payload = {"touser": "|".join(userids), "msgtype": msgtype, "agentid": self.agent_id,
                   msgtype: body}
        return await self.call("POST", "/message/send", json=payload)

    async def send_text(self, userids: list[str], content: str) -> dict[str, Any]:
        return await self.send(userids, "text", {"content": content})

    async def send_markdown(self, userids: list[str], content: str) -> dict[str, Any]:
        return await self.send(userids, "markdown", {"content": content})

    async def send_card(self, userids: list[str], card: dict[str, Any]) -> dict[str, Any]:
        return await self.send(userids, "template_card", card)

    async def send_image(self, userids: list[str], media_id: str) -> dict[str, Any]:
        return await self.send(userids, "image", {"media_id": media_id})

    async def send_file(self, userids: list[str], media_id: str) -> dict[str, Any]:
        return await self.send(userids, "file", {"media_id": media_id})

    async def update_card(self, userids: list[str], response_code: str,
                          card: dict[str, Any]) -> dict[str, Any]:
        """message/update_template_card: replace an interactive card for ``userids``;
        a response code works once and for 72 hours."""
        return await self.call("POST", "/message/update_template_card", json={
            "userids": userids, "agentid": self.agent_id, "response_code": response_code,
            "template_card": card})

    # -- media ---------------------------------------------------------------------------

    async def download_media(self, media_id: str) -> bytes:
        """media/get: the file's bytes (WeCom answers errors as JSON)."""
        answer = await self.call("GET", "/media/get", params={"media_id": media_id}, raw=True)
        if isinstance(answer, dict):
            raise WecomError(None, "media/get answered JSON without a file", "/media/get")
        return answer[0]

    async def media_or_none(self, media_id: str) -> bytes | None:
        """media/get, or None (logged) when WeCom will not give us the file: what the
        handler reads as an unreadable photo."""
        try:
            return await self.download_media(media_id)
        except WecomError as exc:
            log.warning("WeCom media %s could not be downloaded: %s", media_id, exc)
            return None

    async def upload(self, data: bytes, kind: str, filename: str,
                     content_type: str = "application/octet-stream") -> str:
        """media/upload: a temporary file (three days) of ``kind`` image, voice, video or
        file; its ``filename`` is the name a file message shows. Returns its media id."""
        def form() -> aiohttp.FormData:
            body = aiohttp.FormData()
            body.add_field("media", data, filename=filename, content_type=content_type)
            return body
        answer = await self.call("POST", "/media/upload", params={"type": kind}, form=form)
        return answer["media_id"]

    async def upload_image(self, data: bytes, filename: str = "photo.jpg") -> str:
        content_type = "image/png" if filename.lower().endswith(".png") else "image/jpeg"
        return await self.upload(data, "image", filename, content_type)
