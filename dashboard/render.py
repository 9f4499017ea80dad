"""Pages through Jinja2 (aiohttp-jinja2) with the project's gettext catalogs: templates
say ``{{ _("English text") }}`` (``jinja2.ext.i18n``, new-style, autoescaped), and each
request renders in the viewer's language — the ``whistle_lang`` cookie, else the
browser's Accept-Language, else the deployment's default (zh_Hans)."""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from models.deadlines.board import KIND_WORDS
from models.figures import rates
from models.lifecycle import STATE_LABELS, State
from models.messages.i18n import LOCALES, N_, Translator, normalise
from models.org import names
from models.org import tree as org
from models.tickets import cards

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
ENV = web.AppKey("dashboard_jinja", jinja2.Environment)
LANG_COOKIE = "whistle_lang"
TIMER_WORDS = {**KIND_WORDS, "vote": N_("resident's verdict")}


@jinja2.pass_context
def _gettext(context, message: str) -> str:
    return context["t"]._(message)


@jinja2.pass_context
def _ngettext(context, singular: str, plural: str, n: int) -> str:
    return context["t"].n_(singular, plural, n)


def setup_templates(app: web.Application) -> jinja2.Environment:
    env = aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(TEMPLATES), app_key=ENV,
                               autoescape=True, extensions=["jinja2.ext.i18n"],
                               trim_blocks=True, lstrip_blocks=True)
    env.install_gettext_callables(_gettext, _ngettext, newstyle=True)
    return env


def pick_locale(request: web.Request, default: str) -> str:
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LOCALES:
        return chosen
    for tag, quality in _accepted(request.headers.get("Accept-Language", "")):
        locale = normalise(tag)
        if locale and quality > 0:
            return locale
    return default


def _accepted(header: str) -> list[tuple[str, float]]:
    """Accept-Language's tags, most wanted first."""
    tags = []
    for index, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        try:
            quality = float(params.strip()[2:]) if params.strip().startswith("q=") else 1.0
        except ValueError:
            quality = 0.0
        tags.append((-quality, index, tag.strip()))
    return [(tag, -negative) for negative, _, tag in sorted(tags)]


class Helpers:
    """Formatting for templates, in one language and time zone."""

    def __init__(self, core, t: Translator):
        self.core, self.t = core, t

    def now(self) -> datetime:
        return self.core.now()

    @staticmethod
    def percent(value: float | None) -> str:
        return rates.percent(value)

    def when(self, moment: datetime | None) -> str:
        return "—" if moment is None else self.core.local(moment).strftime("%Y-%m-%d %H:%M")

    def state(self, value: str) -> str:
        return self.t._(STATE_LABELS[State(value)])

    def category(self, code: str) -> str:
        return names.category_name(self.core, code, self.t)

    def unit(self, unit) -> str:
        return "—" if unit is None else org.display_name(unit, self.t.locale)

    def order(self, value: str) -> str:
        return self.t._(cards.ORDER_LABELS.get(value, value))

    def klass(self, value: str) -> str:
        return self.t._(cards.CLASS_LABELS.get(value, value))

    def event(self, kind: str) -> str:
        return self.t._(cards.EVENT_LABELS.get(kind, kind))

    def timer(self, kind: str) -> str:
        return self.t._(TIMER_WORDS.get(kind, kind))

    def close_reason(self, value: str | None) -> str:
        return self.t._(cards.CLOSE_LABELS.get(value, "—")) if value else "—"

    def span(self, delta: timedelta) -> str:
        """A duration as people say it: 3 d 4 h, 2 h 5 min, 7 min."""
        minutes = int(abs(delta.total_seconds()) // 60)
        days, hours, mins = minutes // 1440, minutes % 1440 // 60, minutes % 60
        if days:
            return self.t._("{days} d {hours} h", days=days, hours=hours)
        if hours:
            return self.t._("{hours} h {minutes} min", hours=hours, minutes=mins)
        return self.t._("{minutes} min", minutes=mins)

    def short(self, text: str | None, limit: int = 80) -> str:
        text = (text or "").replace("\n", " ")
        return text if len(text) <= limit else text[:limit - 1] + "…"
