"""The dashboard's HTTP handlers. Thin: check the login (and the CSRF token of a POST),
read or act through ``queries``/``actions`` in one transaction, render a template.
A ticket outside the viewer's scope is answered exactly like one that does not exist."""
from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlencode

import aiohttp_jinja2
from aiohttp import web

from models.lifecycle import State
from models.logs import keep_out_of_logs
from models.messages.i18n import LOCALES, N_
from models.org.people import first_name
from models.tickets import cards
from models.tickets import votes as votes_module

from . import actions, auth, queries, svgmap
from .render import ENV, LANG_COOKIE, Helpers, pick_locale

BASE = web.AppKey("dashboard_base", str)
SERVICE = web.AppKey("dashboard_service", object)  # request -> the running service (face())
VIEWER = web.RequestKey("dashboard_viewer", object)
SESSION_COOKIE = "whistle_session"
LOGIN_CSRF_COOKIE = "whistle_login_csrf"
DEVICE_COOKIE = "whistle_device"  # this browser has logged in as a user before (auth.py)
MAX_FIELD = 1024
# The body limit of every dashboard route (bot/web.py reads a handler's ``max_body``):
# the forms are a few fields of at most a few KB (a note of 1000 Chinese characters is
# 9 KB as a form); the GET pages read no body at all.
FORM_BODY_BYTES = 16 * 1024


def form_body(handler):
    """A route that reads a dashboard form: its body is at most FORM_BODY_BYTES."""
    handler.max_body = FORM_BODY_BYTES
    return handler
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
DONE = {
    "reroute": N_("The ticket was routed to the grid."),
    "retype": N_("The order type was changed."),
    "whistle": N_("The whistle was blown: the departments have the ticket."),
    "duplicate": N_("The ticket was closed as a duplicate."),
    "close": N_("The ticket was closed without a fix."),
}


def whistle_of(request: web.Request):
    """The running service (503 while it starts), as the wiring told ``face()``."""
    return request.app[SERVICE](request)


def add_routes(app: web.Application, base: str) -> None:
    from .render import STATIC, setup_templates
    app[BASE] = base
    setup_templates(app)
    router = app.router
    router.add_get(base, to_overview)
    router.add_get(base + "/", to_overview)
    router.add_get(base + "/login", login_page)
    router.add_post(base + "/login", login)
    router.add_post(base + "/logout", logout)
    router.add_post(base + "/logout-others", logout_others)
    router.add_get(base + "/lang/{locale}", set_language)
    router.add_get(base + "/overview", overview_page)
    router.add_get(base + "/overview/live", overview_live)
    router.add_get(base + "/tickets", tickets_page)
    router.add_get(base + "/tickets/{number}", ticket_page)
    router.add_post(base + "/tickets/{number}/{action}", ticket_action)
    router.add_get(base + "/media/{media_id}", media)
    router.add_get(base + "/map", map_page)
    router.add_get(base + "/map/grids/{code}", grid_panel)
    router.add_static(base + "/static", STATIC)
    app.on_response_prepare.append(_security_headers)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith(request.app[BASE]):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.content_type == "text/html":
            response.headers.setdefault("Cache-Control", "no-store")


# ---- plumbing -----------------------------------------------------------------------------

def _settings(request: web.Request):
    return whistle_of(request).config.dashboard


def _safe_next(request: web.Request, target: str | None) -> str:
    """Only a path inside the dashboard (no open redirect)."""
    base = request.app[BASE]
    if (target and target.startswith(base + "/") and not target.startswith("//")
            and "\\" not in target and "://" not in target):
        return target
    return base + "/overview"


def login_required(page: bool = True):
    """Find the viewer from the session cookie; without one a page redirects to the login
    and anything else is 401. A POST must carry the session's CSRF token."""
    def wrap(handler):
        @functools.wraps(handler)
        async def wrapped(request: web.Request) -> web.StreamResponse:
            whistle = whistle_of(request)
            token = request.cookies.get(SESSION_COOKIE)
            keep_out_of_logs(token)  # the request's secrets stay out of its log lines
            viewer = None
            if token:
                viewer = await whistle.db.run(
                    lambda s: auth.viewer_of(s, token, whistle.core.now()))
            if viewer is None:
                if page and request.method == "GET":
                    target = quote(request.path_qs, safe="")
                    raise web.HTTPSeeOther(f"{request.app[BASE]}/login?next={target}")
                raise web.HTTPUnauthorized(text="log in first")
            keep_out_of_logs(viewer.csrf, viewer.session_id)
            if request.method == "POST":
                form = await request.post()
                sent = form.get("csrf") or request.headers.get("X-CSRF-Token")
                if not isinstance(sent, str) or not auth.same(sent, viewer.csrf):
                    raise web.HTTPForbidden(text="CSRF token missing or wrong")
            request[VIEWER] = viewer
            return await handler(request)
        return wrapped
    return wrap


def _context(request: web.Request, values: dict) -> dict:
    whistle = whistle_of(request)
    t = whistle.i18n.get(pick_locale(request, whistle.config.default_locale))
    viewer = request.get(VIEWER)
    return {"t": t, "h": Helpers(whistle.core, t), "base": request.app[BASE],
            "viewer": viewer, "csrf": viewer.csrf if viewer else "", "lang": t.locale,
            "locales": LOCALES, "here": request.path_qs, "page_name": "", **values}


def render(request: web.Request, template: str, values: dict | None = None,
           status: int = 200) -> web.Response:
    return aiohttp_jinja2.render_template(template, request, _context(request, values or {}),
                                          status=status, app_key=ENV)


def not_found(request: web.Request) -> web.Response:
    message = _translator(request)._("Not found.")
    return render(request, "error.html", {"message": message}, status=404)


def _translator(request: web.Request):
    whistle = whistle_of(request)
    return whistle.i18n.get(pick_locale(request, whistle.config.default_locale))


# ---- logging in and out -------------------------------------------------------------------

async def to_overview(request: web.Request) -> web.Response:
    raise web.HTTPFound(request.app[BASE] + "/overview")


def _login_form(request: web.Request, error: str | None = None, status: int = 200,
                next_url: str | None = None) -> web.Response:
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", {
        "login_csrf": token, "error": _translator(request)._(error) if error else None,
        "next": _safe_next(request, next_url or request.query.get("next"))}, status=status)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, path=request.app[BASE], httponly=True,
                        samesite="Strict", secure=_settings(request).secure_cookies)
    return response


async def login_page(request: web.Request) -> web.Response:
    return _login_form(request)


@form_body
async def login(request: web.Request) -> web.Response:
    whistle = whistle_of(request)
    settings = whistle.config.dashboard
    if not request.cookies.get(LOGIN_CSRF_COOKIE):  # cannot be right: the body is not read
        return _login_form(request, N_("The form had expired. Please try again."), 403)
    form = await request.post()
    next_url = form.get("next") if isinstance(form.get("next"), str) else None
    sent = form.get("csrf")
    keep_out_of_logs(sent, form.get("password"), request.cookies.get(LOGIN_CSRF_COOKIE))
    if not isinstance(sent, str) or not auth.same(sent, request.cookies.get(LOGIN_CSRF_COOKIE)):
        return _login_form(request, N_("The form had expired. Please try again."), 403, next_url)
    username, password = form.get("username"), form.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username \
            or not password or len(username) > MAX_FIELD or len(password) > MAX_FIELD:
        return _login_form(request, N_("Enter your user name and password."), 400, next_url)

    end_others = form.get("end_others") == "1"

    async def attempt(session):
        result = await auth.check_login(session, settings, whistle.core.now(), username, password,
                                        request.remote or "unknown",
                                        request.cookies.get(DEVICE_COOKIE))
        token = None
        if result.user is not None:
            token = await auth.open_session(session, result.user, whistle.core.now(),
                                            settings.session_hours, end_others=end_others)
        return result, token
    result, token = await whistle.db.run(attempt)
    keep_out_of_logs(token)
    if result.throttled:
        return _login_form(request, N_("Too many failed logins from your address. Try again "
                                       "later."), 429, next_url)
    if token is None:
        return _login_form(request, N_("Wrong user name or password, or the login is locked "
                                       "for a while after too many failed attempts."),
                           401, next_url)
    response = web.Response(status=303, headers={"Location": _safe_next(request, next_url)})
    response.set_cookie(SESSION_COOKIE, token, path=request.app[BASE], httponly=True,
                        samesite="Lax", secure=settings.secure_cookies,
                        max_age=int(settings.session_hours * 3600))
    response.set_cookie(DEVICE_COOKIE, result.device, path=request.app[BASE], httponly=True,
                        samesite="Strict", secure=settings.secure_cookies,
                        max_age=int(settings.known_device_days * 86400))
    response.del_cookie(LOGIN_CSRF_COOKIE, path=request.app[BASE])
    return response


@form_body
@login_required(page=False)
async def logout(request: web.Request) -> web.Response:
    viewer = request[VIEWER]
    await whistle_of(request).db.run(lambda s: auth.close_session(s, viewer.session_id))
    response = web.Response(status=303, headers={"Location": request.app[BASE] + "/login"})
    response.del_cookie(SESSION_COOKIE, path=request.app[BASE])
    return response


@form_body
@login_required(page=False)
async def logout_others(request: web.Request) -> web.Response:
    """End the user's other sessions (other browsers, a lost phone); this one stays."""
    viewer = request[VIEWER]
    await whistle_of(request).db.run(
        lambda s: auth.close_other_sessions(s, viewer.user_id, viewer.session_id))
    raise web.HTTPSeeOther(request.app[BASE] + "/overview")


async def set_language(request: web.Request) -> web.Response:
    locale = request.match_info["locale"]
    if locale not in LOCALES:
        return not_found(request)
    response = web.Response(status=303, headers={
        "Location": _safe_next(request, request.query.get("next"))})
    response.set_cookie(LANG_COOKIE, locale, path=request.app[BASE], samesite="Lax",
                        max_age=365 * 86400, secure=_settings(request).secure_cookies)
    return response


# ---- the overview -------------------------------------------------------------------------

async def _overview(request: web.Request):
    whistle = whistle_of(request)
    viewer = request[VIEWER]
    return await whistle.db.run(lambda s: queries.overview(
        s, viewer, whistle.core.now(), whistle.config.tz, whistle.config.report.basic_weight))


@login_required()
async def overview_page(request: web.Request) -> web.Response:
    settings = _settings(request)
    return render(request, "overview.html", {
        "o": await _overview(request), "page_name": "overview",
        "live_ms": int(settings.live_seconds * 1000)})


@login_required(page=False)
async def overview_live(request: web.Request) -> web.Response:
    return render(request, "_overview_live.html", {"o": await _overview(request)})


# ---- the ticket list ----------------------------------------------------------------------

@login_required()
async def tickets_page(request: web.Request) -> web.Response:
    whistle = whistle_of(request)
    viewer = request[VIEWER]
    try:
        filters = queries.parse_filters(request.query, {c.code for c in whistle.config.categories})
    except queries.BadFilter as exc:
        message = _translator(request)._("A filter value is not valid: {name}", name=str(exc))
        return render(request, "error.html", {"message": message}, status=400)

    async def read(session):
        page = await queries.ticket_page(session, viewer, filters, whistle.core.now(),
                                         whistle.config.tz, whistle.config.dashboard.page_size)
        return page, await queries.visible_units(session, viewer)
    page, units = await whistle.db.run(read)
    return render(request, "tickets.html", {
        "page": page, "filters": filters, "units": units, "page_name": "tickets",
        "categories": whistle.config.categories, "states": [s.value for s in State],
        "order_types": queries.ORDER_TYPES, "classes": queries.CLASSES,
        "link": lambda **changes: "?" + urlencode(filters.query(**changes))})


# ---- one ticket ---------------------------------------------------------------------------

@dataclass
class Entry:
    """One line of the timeline."""

    at: datetime
    kind: str
    who: str
    note: str | None
    data: dict | None


async def _timeline(session, t, d: queries.Detail) -> list[Entry]:
    entries = []
    for event, person in d.events:
        if person is None:
            who = ""
        elif person.id in d.staff:
            who = await cards.role_label(session, t, person, d.ticket.unit_id)
        elif person.id == d.ticket.reporter_id:
            who = _reporter_label(t, d)
        else:
            who = t._("a resident")
        entries.append(Entry(event.at, event.kind, who, event.note, event.data))
    return entries


def _reporter_label(t, d: queries.Detail) -> str:
    """As the chat cards show it: anonymous, or the first name only — never the phone."""
    name = "" if d.ticket.anonymous or d.reporter is None else first_name(d.reporter.name)
    return name or t._("anonymous")


async def show_ticket(request: web.Request, number: str, error: actions.ActionError | None = None,
                      status: int = 200) -> web.Response:
    whistle = whistle_of(request)
    viewer = request[VIEWER]
    t = _translator(request)
    now = whistle.core.now()

    async def read(session):
        ticket = await queries.ticket_in_scope(session, viewer, number)
        if ticket is None:
            return None
        d = await queries.detail(session, ticket, now)
        assignee = (await cards.role_label(session, t, d.assignee, ticket.unit_id)
                    if d.assignee else None)
        grids = await actions.grids(session)
        return (d, await _timeline(session, t, d), assignee, grids,
                await actions.departments(session))
    found = await whistle.db.run(read)
    if found is None:
        return not_found(request)
    d, timeline, assignee, grids, departments = found
    projection, shapes = svgmap.draw(grids)
    done = request.query.get("done")
    return render(request, "ticket.html", {
        "d": d, "ticket": d.ticket, "timeline": timeline, "assignee": assignee,
        "reporter": _reporter_label(t, d), "now": now,
        "error": error.text(t) if error else None,
        "done": t._(DONE[done]) if done in DONE else None, "grids": grids, "departments": departments,
        "offer": actions.offers(d.ticket, d.unit), "projection": projection, "shapes": shapes,
        "satisfaction": votes_module.SATISFACTION_LABELS, "close_reasons": cards.CLOSE_LABELS,
        "order_labels": cards.ORDER_LABELS, "page_name": "tickets"}, status=status)


@login_required()
async def ticket_page(request: web.Request) -> web.Response:
    return await show_ticket(request, request.match_info["number"])


@form_body
@login_required(page=False)
async def ticket_action(request: web.Request) -> web.Response:
    whistle = whistle_of(request)
    viewer = request[VIEWER]
    number, name = request.match_info["number"], request.match_info["action"]
    if name not in actions.ACTIONS:
        return not_found(request)
    form = await request.post()

    async def act(session):
        ticket = await queries.ticket_in_scope(session, viewer, number)
        if ticket is None:
            return False
        await actions.perform(session, whistle.core, viewer, ticket, name, form)
        return True
    try:
        found = await whistle.db.run(act)
    except actions.ActionError as exc:
        return await show_ticket(request, number, error=exc, status=exc.status)
    if not found:
        return not_found(request)
    raise web.HTTPSeeOther(f"{request.app[BASE]}/tickets/{number}?done={name}")


@login_required(page=False)
async def media(request: web.Request) -> web.StreamResponse:
    whistle = whistle_of(request)
    viewer = request[VIEWER]
    raw = request.match_info["media_id"]
    if not raw.isdigit() or len(raw) > 12:
        return not_found(request)
    row = await whistle.db.run(lambda s: queries.media_in_scope(s, viewer, int(raw)))
    path = whistle.media.path(row.path) if row is not None else None
    if path is None or not path.is_file():
        return not_found(request)
    kind = {".png": "image/png", ".webp": "image/webp"}.get(path.suffix.lower(), "image/jpeg")
    return web.FileResponse(path, headers={"Content-Type": kind,
                                           "Cache-Control": "private, max-age=3600"})


# ---- the map ------------------------------------------------------------------------------

@login_required()
async def map_page(request: web.Request) -> web.Response:
    whistle = whistle_of(request)
    viewer = request[VIEWER]
    now = whistle.core.now()

    async def read(session):
        return (await actions.grids(session), await queries.grid_loads(session, viewer, now),
                await queries.open_points(session, viewer, now),
                await queries.grids_in_scope(session, viewer))
    grids, loads, points, in_scope = await whistle.db.run(read)
    projection, shapes = svgmap.draw(grids)
    return render(request, "map.html", {
        "projection": projection, "shapes": shapes, "loads": loads, "points": points,
        "in_scope": in_scope,
        "empty_load": queries.GridLoad(), "page_name": "map"})


@login_required(page=False)
async def grid_panel(request: web.Request) -> web.Response:
    whistle = whistle_of(request)
    viewer = request[VIEWER]
    code = request.match_info["code"]

    async def read(session):
        grid = next((g for g in await actions.grids(session) if g.code == code), None)
        if grid is None:
            return None
        return grid, await queries.grid_tickets(session, viewer, grid, whistle.core.now())
    found = await whistle.db.run(read)
    if found is None:
        return not_found(request)
    grid, rows = found
    return render(request, "_grid_panel.html", {"grid": grid, "rows": rows})
