"""Every web face on one aiohttp application: the faces this config turns on, each
imported late so that its dependencies load only when it is used. The faces import
``bot.web`` (the server and ``whistle_of``), never this module."""
from __future__ import annotations

from aiohttp import web

from bot.web import MAX_BODY_BYTES, WHISTLE, RouteAdder, WhistleRef, whistle_of


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
    from bot import observability
    from bot.telegram import webhook
    faces.append(observability.add_routes)  # /healthz, /metrics
    if config.telegram.mode == "webhook":
        faces.append(webhook.routes(config))  # POST [telegram] webhook_path
    if config.open311.enabled:
        from bot import open311
        faces.append(open311.face(config))  # GeoReport v2 under [open311] path
    if config.dashboard.enabled:
        from dashboard import face as dashboard_face
        faces.append(dashboard_face(config, whistle_of))  # the command centre under [dashboard] path
    if config.wecom.enabled:
        from bot.wecom import callback as wecom_callback
        faces.append(wecom_callback.face(config))  # WeCom callback at [wecom] callback_path
    return faces
