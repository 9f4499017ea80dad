"""Every web face on one aiohttp application: the faces this config turns on, each
imported late so that its dependencies load only when it is used. The faces import
``bot.web`` (the server and ``whistle_of``), never this module."""
from __future__ import annotations

from aiohttp import web

from bot.web import DEFAULT_BODY_BYTES, WHISTLE, RouteAdder, WhistleRef, guard, whistle_of


def build_app(ref: WhistleRef, config, extra: list[RouteAdder] = (),
              middlewares: list = ()) -> web.Application:
    """The web application with every face the config enables (``extra`` adds more).
    ``bot.web.guard`` comes first: the client's address (trusted proxies) and each
    route's body limit (a handler's ``max_body``; see ``bot.web.body_limit``)."""
    app = web.Application(client_max_size=DEFAULT_BODY_BYTES,
                          middlewares=[guard(config.web.trusted_proxies), *middlewares])
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
