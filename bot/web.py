"""The bot's own aiohttp web server, and how a web face finds the running service.

Each face (health and metrics, the Telegram webhook, the WeCom callback, Open311, the
dashboard, and in the sandbox the fake Telegram and its page) adds its routes to one
application (``bot.faces.build_app``). Handlers find the running service through
``whistle_of(request)``; the reference is filled in once the service has started, so a
server can be listening before the service exists (the sandbox must be, since the
service's Bot API is that server). This module imports no face: faces import it."""
from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from bot.app import Whistle

log = logging.getLogger(__name__)

# Request bodies: every route reads at most its own limit (``body_limit``); a route that
# declares none gets DEFAULT_BODY_BYTES. See ``guard`` and docs/deploy.md.
FORM_BODY_BYTES = 16 * 1024  # the dashboard's forms (login, actions): a few KB
DEFAULT_BODY_BYTES = 64 * 1024  # JSON and form APIs (Open311, the sandbox's page)
UPDATE_BODY_BYTES = 1024 * 1024  # channel callbacks: a Telegram update, a WeCom message
MAX_BODY_BYTES = 25 * 1024 * 1024  # the largest limit a route may declare (photo uploads)
BODY_LIMIT_ATTR = "max_body"  # a handler's own limit, in bytes (set by ``body_limit``)
# a handler's own 413 answer in its protocol's format: (request, limit) -> response
TOO_LARGE_ATTR = "body_too_large"


class WhistleRef:
    """Where handlers find the service; ``None`` until it has started."""

    def __init__(self, whistle: Whistle | None = None):
        self.whistle = whistle


WHISTLE = web.AppKey("whistle", WhistleRef)

RouteAdder = Callable[[web.Application], None]


def whistle_of(request: web.Request) -> Whistle:
    """The running service, or 503 while it is still starting."""
    whistle = request.app[WHISTLE].whistle
    if whistle is None:
        raise web.HTTPServiceUnavailable(text="starting, try again in a moment")
    return whistle


def body_limit(size: int):
    """Declare a handler's body limit in bytes (read by ``guard``). A face that may not
    import this module sets the handler's ``max_body`` attribute itself."""
    if not 0 <= size <= MAX_BODY_BYTES:
        raise ValueError(f"a body limit is 0 to {MAX_BODY_BYTES} bytes")

    def mark(handler):
        setattr(handler, BODY_LIMIT_ATTR, size)
        return handler
    return mark


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def guard(trusted_proxies: Iterable[str] = ()):
    """The first middleware of every application: the client's address and the body limit.

    * The address: a request from a trusted proxy (``[web] trusted_proxies``) comes from
      the address that proxy names in ``X-Forwarded-For`` (the nearest one that is not
      itself a trusted proxy); from anyone else the header is ignored, so a client cannot
      choose its own address. ``request.remote`` is that address everywhere after this.
    * The body: the route's limit (its handler's ``max_body``, else DEFAULT_BODY_BYTES).
      A declared length over it is answered 413 at once, before any of the body is read;
      a body without a length (chunked) is read up to the limit and then refused (413),
      whichever of ``read()``, ``post()`` or ``json()`` the handler calls. A handler
      with a ``body_too_large`` attribute gives the early 413 in its own format."""
    networks = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        limit = getattr(request.match_info.handler, BODY_LIMIT_ATTR, DEFAULT_BODY_BYTES)
        length = request.content_length
        if length is not None and length > limit:
            answer = getattr(request.match_info.handler, TOO_LARGE_ATTR, None)
            too_large = answer(request, limit) if answer is not None else web.Response(
                status=413, text=f"Request body too large: {length} bytes; "
                                 f"this address takes at most {limit}.")
            too_large.force_close()  # the unread body stays unread: this connection is done
            return too_large
        changes: dict = {}
        if limit != request.client_max_size:
            changes["client_max_size"] = limit
        if networks:
            remote = client_address(request.remote, request.headers.getall(
                "X-Forwarded-For", ()), networks)
            if remote != request.remote:
                changes["remote"] = remote
        return await handler(request.clone(**changes) if changes else request)
    return middleware


def client_address(peer: str | None, forwarded: Iterable[str], trusted: list[Network]) -> str | None:
    """The client behind ``peer``: the X-Forwarded-For chain is read from the right (the
    hop nearest to us) for as long as each hop is a trusted proxy."""
    def is_trusted(address: str | None) -> bool:
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        ip = getattr(ip, "ipv4_mapped", None) or ip  # ::ffff:127.0.0.1 on a dual-stack socket
        return any(ip in net for net in trusted)
    if not is_trusted(peer):
        return peer
    hops = [hop.strip() for value in forwarded for hop in value.split(",")]
    client = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # not an address: nothing further left can be believed
        client = hop
        if not is_trusted(hop):
            break
    return client


class WebServer:
    """Runs an application (``bot.faces.build_app``) on the configured host and port."""

    def __init__(self, app: web.Application, host: str, port: int):
        self.app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except BaseException:
            await self.stop()
            raise
        self.port = self._runner.addresses[0][1]
        log.info("web server listening on http://%s:%s", self.host, self.port)

    @property
    def origin(self) -> str:
        host = self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
