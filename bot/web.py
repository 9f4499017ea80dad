"""The bot's own aiohttp web server, and how a web face finds the running service.

Each face (health and metrics, the Telegram webhook, the WeCom callback, Open311, the
dashboard, and in the sandbox the fake Telegram and its page) adds its routes to one
application (``bot.faces.build_app``). Handlers find the running service through
``whistle_of(request)``; the reference is filled in once the service has started, so a
server can be listening before the service exists (the sandbox must be, since the
service's Bot API is that server). This module imports no face: faces import it."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from bot.app import Whistle

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 25 * 1024 * 1024  # the largest upload any face accepts (photos)


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
