"""The config's categories as GeoReport services, and their one attribute.

service_name is the category's name in the request's language (``locale=en`` or an
English ``Accept-Language`` gives ``name_en``); keywords carry both names and the
code, so a client in either language finds the service. The group is the class
(enforcement 执法 / resident request 群众诉求).

Every service has one optional attribute, ``grid``: the grid the problem is in, for a
client that has no coordinates (a point inside a grid always wins) — the same as a
resident choosing community → grid from the chat's menus."""
from __future__ import annotations

from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from models.deadlines.calendar import Span
from models.messages.i18n import Translator
from models.org import tree as org
from models.tickets.cards import CLASS_LABELS, ORDER_LABELS

from .wire import Open311Error

GRID_ATTRIBUTE = "grid"
SPAN_TEXTS = {  # written out as calls, so the catalog extractor finds each plural pair
    "m": lambda t, n, a: t.n_("{amount} minute", "{amount} minutes", n, amount=a),
    "h": lambda t, n, a: t.n_("{amount} hour", "{amount} hours", n, amount=a),
    "d": lambda t, n, a: t.n_("{amount} day", "{amount} days", n, amount=a),
    "wh": lambda t, n, a: t.n_("{amount} working hour", "{amount} working hours", n, amount=a),
    "wd": lambda t, n, a: t.n_("{amount} working day", "{amount} working days", n, amount=a),
}


def span_text(t: Translator, span: Span) -> str:
    """``5 working days``; a fractional amount (``1.5h``) takes the plural."""
    amount: Decimal = span.amount
    count = int(amount) if amount == int(amount) else 2
    return SPAN_TEXTS[span.unit](t, count, format(amount, "f"))


def service_name(config, t: Translator, code: str) -> str:
    category = config.category(code)
    if category is None:  # a category since removed from the config
        return code
    return category.name_en if t.is_en else category.name


def services(config, t: Translator) -> list[dict]:
    return [service(config, t, category) for category in config.categories]


def service(config, t: Translator, category) -> dict:
    spans = config.timers_for(category.order_type, category.code)
    description = t._("{klass}, {order}: claimed within {claim}, resolved within {resolve}.",
                      klass=t._(CLASS_LABELS[category.klass]),
                      order=t._(ORDER_LABELS[category.order_type]),
                      claim=span_text(t, spans["claim"]), resolve=span_text(t, spans["resolve"]))
    return {
        "service_code": category.code,
        "service_name": category.name_en if t.is_en else category.name,
        "description": description,
        "metadata": True,
        "type": "realtime",
        "keywords": ", ".join([category.code, category.name, category.name_en]),
        "group": t._(CLASS_LABELS[category.klass]),
    }


async def definition(session: AsyncSession, config, t: Translator, code: str) -> dict:
    if config.category(code) is None:
        raise Open311Error(404, t._("service_code {code} was not found.", code=code))
    grids = await org.units_of_kind(session, "grid")
    attribute = {
        "variable": True,
        "code": GRID_ATTRIBUTE,
        "datatype": "singlevaluelist",
        "required": False,
        "datatype_description": t._("The code of a grid from the list."),
        "order": 1,
        "description": t._("Which grid is the problem in? Only needed without lat and long: "
                           "a point inside a grid always decides."),
        "values": [{"key": grid.code, "name": org.display_name(grid, t.locale)}
                   for grid in sorted(grids, key=lambda g: g.code)],
    }
    return {"service_code": code, "attributes": [attribute]}
