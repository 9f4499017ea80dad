"""python-telegram-bot's HTTP layer on aiohttp instead of httpx.

PTB lets a bot bring its own ``BaseRequest``. Whistle already runs on aiohttp, and its
client costs far less CPU per Bot API call than httpx over httpcore and anyio, whose
pool checks every idle connection with system calls on each request (about 2 ms a
call with 50 connections on the development machine; `bench/README.md`). Whistle
makes two to three Bot API calls per update, so the transport was most of an update's
cost. Errors map to PTB's as HTTPXRequest maps them: a timeout is ``TimedOut``, any
other transport failure ``NetworkError``; the aiohttp exception stays the cause, so
the sender can tell "never sent" (no connection) from "maybe sent" (`never_sent`)."""
from __future__ import annotations

import ssl
import urllib.request

import aiohttp
import certifi
from telegram._utils.defaultvalue import DefaultValue
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

DEFAULT_NONE = BaseRequest.DEFAULT_NONE

#: failures that happen before the request leaves: Telegram cannot have it
NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


class AiohttpRequest(BaseRequest):
    """One aiohttp session with a bounded pool of keep-alive connections; timeouts as
    in HTTPXRequest (read, write, connect, and the wait for a free connection)."""

    __slots__ = ("_session", "pool_size", "timeouts", "media_write_timeout", "_verify",
                 "_proxies", "_proxy_of")

    def __init__(self, connection_pool_size: int = 256, read_timeout: float | None = 5.0,
                 write_timeout: float | None = 5.0, connect_timeout: float | None = 5.0,
                 pool_timeout: float | None = 1.0, media_write_timeout: float | None = 20.0,
                 verify: bool = True):
        self._session: aiohttp.ClientSession | None = None
        self.pool_size = connection_pool_size
        self.timeouts = {"read": read_timeout, "write": write_timeout,
                         "connect": connect_timeout, "pool": pool_timeout}
        self.media_write_timeout = media_write_timeout
        self._verify = verify
        self._proxies: dict[str, str] = {}
        self._proxy_of: dict[str, str | None] = {}  # "scheme://host[:port]" -> proxy URL

    @property
    def read_timeout(self) -> float | None:
        return self.timeouts["read"]

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            tls = ssl.create_default_context(cafile=certifi.where()) if self._verify else False
            connector = aiohttp.TCPConnector(limit=self.pool_size, ssl=tls)
            # HTTP(S)_PROXY / NO_PROXY apply, as they did with httpx (a bot in mainland
            # China reaches Telegram through a proxy): read once here. aiohttp's own
            # trust_env would look for a .netrc file in a worker thread on every request.
            self._proxies = {scheme: proxy for scheme, proxy in
                             urllib.request.getproxies_environment().items() if scheme != "no"}
            self._proxy_of = {}
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": self.USER_AGENT},
                skip_auto_headers=("Accept-Encoding",))

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def do_request(self, url: str, method: str, request_data: RequestData | None = None,
                         read_timeout=DEFAULT_NONE, write_timeout=DEFAULT_NONE,
                         connect_timeout=DEFAULT_NONE, pool_timeout=DEFAULT_NONE) -> tuple[int, bytes]:
        if self._session is None or self._session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        files = request_data.multipart_data if request_data else None
        read = self._given(read_timeout, "read")
        write = (self._given(write_timeout, "write") if not files
                 else write_timeout if not isinstance(write_timeout, DefaultValue)
                 else self.media_write_timeout)
        connect, pool = self._given(connect_timeout, "connect"), self._given(pool_timeout, "pool")
        # aiohttp has no write timeout of its own: the whole exchange is bounded by the sum,
        # an upload's write time growing with its size (at least 100 kB/s, as httpx's
        # write timeout is per write, not for the whole body)
        parts = (read, write, connect, pool)
        total = None if None in parts else sum(parts) + _size(files) / 100_000
        timeout = aiohttp.ClientTimeout(
            total=total,
            connect=None if connect is None or pool is None else connect + pool,
            sock_connect=connect, sock_read=read)
        try:
            async with self._session.request(method, url, data=_body(request_data, files),
                                             timeout=timeout, proxy=self._proxy(url)) as response:
                return response.status, await response.read()
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutError too
            raise TimedOut from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp.{type(exc).__name__}: {exc}") from exc

    def _proxy(self, url: str) -> str | None:
        """The proxy for this URL's scheme, unless NO_PROXY names its host (per origin,
        remembered: every call goes to the same Bot API server)."""
        if not self._proxies:
            return None
        origin = "/".join(url.split("/", 3)[:3])
        if origin not in self._proxy_of:
            scheme, _, netloc = origin.partition("://")
            host = netloc.rsplit("@", 1)[-1]
            bypass = urllib.request.proxy_bypass_environment(host)
            self._proxy_of[origin] = None if bypass else self._proxies.get(scheme)
        return self._proxy_of[origin]

    def _given(self, value, name: str) -> float | None:
        return self.timeouts[name] if isinstance(value, DefaultValue) else value


def _body(request_data: RequestData | None, files) -> aiohttp.FormData | dict | None:
    """The parameters as a form, as HTTPXRequest sends them; multipart when files go along."""
    if request_data is None:
        return None
    fields = request_data.json_parameters
    if not files:
        return fields
    form = aiohttp.FormData(quote_fields=False)
    for name, value in fields.items():
        form.add_field(name, value)
    for name, (filename, content, mimetype) in files.items():
        form.add_field(name, content, filename=filename, content_type=mimetype)
    return form


def _size(files) -> int:
    """Bytes of the files to upload, where known (file handles count nothing)."""
    return sum(len(content) for _, content, _ in (files or {}).values()
               if isinstance(content, bytes | bytearray))


def never_sent(exc: BaseException) -> bool:
    """The connection was never made (or none was free): Telegram cannot have the
    request, so sending again makes no duplicate."""
    return isinstance(exc.__cause__, NOT_SENT)
