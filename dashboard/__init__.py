"""The command-centre dashboard (一目了然): staff log in to see the tickets of their scope
as a list, one by one with the whole timeline, on a district map and as live figures,
and act on them through the same core functions as the chat. See docs/dashboard.md."""
from __future__ import annotations

from collections.abc import Callable

from aiohttp import web


def face(config) -> Callable[[web.Application], None]:
    """The route adder ``bot.web._faces`` registers when ``[dashboard] enabled``."""
    base = config.dashboard.path.rstrip("/")

    def add(app: web.Application) -> None:
        from .views import add_routes
        add_routes(app, base)
    return add
