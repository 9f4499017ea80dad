"""The bot's own aiohttp web server: one application for every web face.

Each face (health and metrics, the Telegram webhook, the WeCom callback, Open311, the
dashboard, and in the sandbox the fake Telegram and its page) adds its routes here.
Handlers find the running service through ``whistle_of(request)``; the reference is
filled in once the service has started, so a server can be listening before the
service exists (the sandbox must be, since the service's Bot API is that server)."""
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


def build_app(ref: WhistleRef, config, extra: list[RouteAdder] = (), middlewares: list = (),
              client_max_size: int = MAX_BODY_BYTES) -> web.Application:
    """The web application with every face the config enables (``extra`` adds more)."""
    app = web.Application(client_max_size=client_max_size, middlewares=list(middlewares))
    app[WHISTLE] = ref
    for add in [*_faces(config), *extra]:
        add(app)
    return app


def _faces(config) -> list[RouteAdder]:
    """The faces this config turns on. Each is imported here, late, so a face's
    dependencies load only when it is used."""
    faces: list[RouteAdder] = []
    # Faces register themselves below, one line each.
    from bot import observability, webhook
    faces.append(observability.add_routes)  # /healthz, /metrics
    if config.telegram.mode == "webhook":
        faces.append(webhook.routes(config))  # POST [telegram] webhook_path
    if config.open311.enabled:
        from bot import open311
        faces.append(open311.face(config))  # GeoReport v2 under [open311] path
    if config.dashboard.enabled:
        from dashboard import face as dashboard_face
        faces.append(dashboard_face(config))  # the command centre under [dashboard] path
    if config.wecom.enabled:
        from bot.wecom import callback as wecom_callback
        faces.append(wecom_callback.face(config))  # WeCom callback at [wecom] callback_path
    return faces


class WebServer:
    """Runs ``build_app`` on the configured host and port."""

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
