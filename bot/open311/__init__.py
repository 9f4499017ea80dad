"""Open311 GeoReport v2 on the bot's web server (docs/open311.md); face(config) is what bot.faces registers: the routes under [open311] path (default /open311/v2).
May import: bot.web, aiohttp and the core (models.tickets.external for new reports)."""
from __future__ import annotations

from aiohttp import web

from bot.web import RouteAdder


def face(config) -> RouteAdder:
    base = config.open311.path.rstrip("/")

    def add_routes(app: web.Application) -> None:
        from models.context import utcnow

        from . import openapi, views

        app[views.STARTED] = utcnow()  # services come from the config and org file read now
        app.router.add_get(f"{base}/discovery.{{format}}", views.discovery)
        app.router.add_get(f"{base}/services.{{format}}", views.services)
        app.router.add_get(f"{base}/services/{{code}}.{{format}}", views.service_definition)
        app.router.add_get(f"{base}/requests.{{format}}", views.list_requests)
        app.router.add_post(f"{base}/requests.{{format}}", views.create_request)
        app.router.add_get(f"{base}/requests/{{number}}.{{format}}", views.one_request)
        app.router.add_get(f"{base}/openapi.json", openapi.serve)
        # last: whatever else is asked under the base gets the spec's error document
        app.router.add_route("*", base, views.unmatched)
        app.router.add_route("*", f"{base}/{{tail:.*}}", views.unmatched)
    return add_routes
