"""The command-centre dashboard (一目了然): staff log in to see the tickets of their scope as a list, one by one with the whole timeline, on a district map and as live figures, and act on them through the same core functions as the chat. See docs/dashboard.md.
May import: aiohttp, Jinja2, argon2 and the core; nothing of bot (the wiring hands face() its service getter)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web


def face(config, service: Callable[[web.Request], Any]) -> Callable[[web.Application], None]:
    """The route adder ``bot.faces`` registers when ``[dashboard] enabled``. ``service``
    finds the running service for a request (``bot.web.whistle_of``): handed in, so the
    dashboard depends on nothing of the bot's wiring."""
    base = config.dashboard.path.rstrip("/")

    def add(app: web.Application) -> None:
        from .views import SERVICE, add_routes
        app[SERVICE] = service
        add_routes(app, base)
    return add
