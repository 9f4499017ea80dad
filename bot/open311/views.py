"""The GeoReport v2 endpoints: read the parameters, call the core, answer in the format
the URL names (``.xml`` or ``.json``). Errors are answered as the spec says, in that
format, whatever fails: an unreadable body, a path or method that does not exist (the
catch-all ``unmatched``), an unexpected failure (the spec's 400 "general service error",
logged without the query string, so a key given there never reaches the log)."""
from __future__ import annotations

import functools
import logging
from dataclasses import replace
from datetime import datetime

from aiohttp import web

from bot.web import whistle_of
from models.logs import keep_out_of_logs
from models.org import limits
from models.org import tree as org
from models.store.tables import Unit
from models.tickets import external

from . import catalog, keys, params, records
from .wire import FORMATS, Open311Error, error_response, respond

log = logging.getLogger(__name__)
CHANNEL = records.API_CHANNEL
STARTED = web.AppKey("open311_started", datetime)  # the discovery document's changeset
SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
KEY_HEADER = "X-API-Key"


class Call:
    """One API call: the service, the format, the translator and the parameters."""

    def __init__(self, request: web.Request, fields: dict[str, str]):
        self.request = request
        self.whistle = whistle_of(request)
        self.config = self.whistle.config
        self.core = self.whistle.core
        self.params = fields
        self.t = translator(request, fields)

    async def read_body(self) -> None:
        """A POST's form fields (form-encoded or multipart) join the query's; a body that
        cannot be read is the client's 400, not a failure of ours."""
        try:
            form = await self.request.post()
        except web.HTTPRequestEntityTooLarge:  # a chunked body, cut off at the limit
            raise Open311Error(413, self.t._("The request body is too large: at most {limit} "
                                             "bytes.", limit=self.request.client_max_size))
        except web.HTTPException:
            raise
        except Exception as exc:  # a malformed multipart or an undecodable form
            log.info("Open311 %s %s: unreadable body (%s)", self.request.method,
                     self.request.path, type(exc).__name__)
            raise Open311Error(400, self.t._(
                "The request body could not be read: send the fields form-encoded "
                "(application/x-www-form-urlencoded or multipart/form-data, UTF-8).")) from None
        self.params.update({k: v for k, v in form.items() if isinstance(v, str)})
        keep_out_of_logs(self.params.get("api_key"))
        self.t = translator(self.request, self.params)


def translator(request: web.Request, fields):
    whistle = whistle_of(request)
    return whistle.i18n.get(params.locale_of(fields, request.headers.get("Accept-Language"),
                                             whistle.config.default_locale))


def format_of(path: str) -> str:
    """The format a path asks for; XML (the spec's required one) when it names none."""
    return "json" if path.lower().endswith(".json") else "xml"


def endpoint(handler):
    """Checks the format and the jurisdiction, and turns ``Open311Error`` into the spec's
    error document (anything unexpected into the spec's 400 general service error, in the
    same format, logged)."""
    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        fmt = request.match_info["format"].lower()
        if fmt not in FORMATS:
            t = whistle_of(request).i18n.get(None)
            return error_response("xml", Open311Error(
                400, t._("Unknown format {format}: use .xml or .json.", format=fmt)))
        call = Call(request, dict(request.query))
        keep_out_of_logs(call.params.get("api_key"))  # the request's key stays out of its log lines
        try:
            if request.method == "POST":
                await call.read_body()
            params.check_jurisdiction(call.params, call.config.open311.jurisdiction_id, call.t)
            return await handler(call, fmt)
        except Open311Error as exc:
            return error_response(fmt, exc)
        except web.HTTPException:
            raise
        except Exception:
            # the path only: a key in the query string must not reach the log
            log.exception("Open311 %s %s failed", request.method, request.path)
            return error_response(fmt, Open311Error(400, call.t._(
                "General service error; please try again later.")))
    wrapper.body_too_large = _too_large  # bot.web.guard: a too long body, before it is read
    return wrapper


def _too_large(request: web.Request, limit: int) -> web.Response:
    fmt = request.match_info.get("format", "").lower()
    t = whistle_of(request).i18n.get(None)
    return error_response(fmt if fmt in FORMATS else "xml", Open311Error(413, t._(
        "The request body is too large: at most {limit} bytes.", limit=limit)))


async def unmatched(request: web.Request) -> web.Response:
    """Every other path under the API's base, and a known path with another method: the
    spec's error document (404, or 405 with Allow), in the format the path names."""
    t = translator(request, request.query)
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if any(route.handler is unmatched for route in resource):
            continue
        _match, methods = await resource.resolve(request)
        allowed |= methods
    if allowed:
        return error_response(format_of(request.path), Open311Error(
            405, t._("{method} is not allowed here; use {allowed}.", method=request.method,
                     allowed=", ".join(sorted(allowed))),
            headers={"Allow": ", ".join(sorted(allowed))}))
    return error_response(format_of(request.path), Open311Error(
        404, t._("There is no such resource: see the service discovery document "
                 "(discovery.xml) and openapi.json.")))


def api_key(call: Call) -> str:
    """The key from the form or the query (``api_key``), or the ``X-API-Key`` or
    ``Authorization: Bearer`` header."""
    given = params.value(call.params, "api_key") or call.request.headers.get(KEY_HEADER, "")
    if not given:
        scheme, _, token = call.request.headers.get("Authorization", "").partition(" ")
        given = token if scheme.lower() == "bearer" else ""
    keep_out_of_logs(given.strip())
    return given.strip()


@endpoint
async def discovery(call: Call, fmt: str) -> web.Response:
    """The spec's service discovery document: this one production endpoint, both formats."""
    cfg, request = call.config.open311, call.request
    origin = (call.config.web.public_url or f"{request.scheme}://{request.host}").rstrip("/")
    changeset = records.w3(call.core, request.app[STARTED])
    return respond(fmt, "discovery", {
        "changeset": changeset,
        "contact": cfg.contact or None,
        "key_service": cfg.key_service or None,
        "endpoints": [{
            "specification": SPECIFICATION,
            "url": origin + cfg.path.rstrip("/"),
            "changeset": changeset,
            "type": "production",
            "formats": ["text/xml", "application/json"],
        }],
    })


@endpoint
async def services(call: Call, fmt: str) -> web.Response:
    return respond(fmt, "services", catalog.services(call.config, call.t))


@endpoint
async def service_definition(call: Call, fmt: str) -> web.Response:
    code = call.request.match_info["code"]
    document = await call.whistle.db.run(
        lambda s: catalog.definition(s, call.config, call.t, code))
    return respond(fmt, "service_definition", document)


@endpoint
async def list_requests(call: Call, fmt: str) -> web.Response:
    query = params.request_query(call.params, call.config, call.core.now(), call.t)

    async def read(session):
        return await records.render(session, call.core, call.t, await records.find(session, query))
    return respond(fmt, "service_requests", await call.whistle.db.run(read))


@endpoint
async def one_request(call: Call, fmt: str) -> web.Response:
    number = call.request.match_info["number"]
    query = records.Query(numbers=(number,), limit=1)

    async def read(session):
        return await records.render(session, call.core, call.t, await records.find(session, query))
    found = await call.whistle.db.run(read)
    if not found:
        raise Open311Error(404, call.t._("service_request_id {id} was not found.", id=number))
    return respond(fmt, "service_requests", found)


@endpoint
async def create_request(call: Call, fmt: str) -> web.Response:
    t, secret = call.t, api_key(call)
    if not secret:
        raise Open311Error(403, t._("api_key was not provided."))
    try:
        report, grid_code, dropped = params.new_report(call.params, call.config, t)
        invalid = None
    except Open311Error as exc:  # told only to a client whose key is good
        report, grid_code, dropped, invalid = None, "", [], exc
    per_minute = call.config.open311.posts_per_minute

    async def act(session):
        """The filed ticket's number and notice, or the error to answer: a refusal after
        the key is known is returned, not raised, so its count is committed."""
        key = await keys.verify(session, secret, call.core.now())
        if key is None:
            raise Open311Error(403, t._("Invalid api_key received: it is unknown or revoked."))
        if per_minute:
            within, wait = await limits.within_minute(session, f"open311:{key.id}", per_minute,
                                                      call.core.now())
            if not within:
                return Open311Error(429, t._(
                    "Too many requests: this api_key may post at most {n} requests a minute. "
                    "Please try again in {seconds} seconds.", n=per_minute, seconds=wait),
                    headers={"Retry-After": str(wait)})
        if invalid is not None:
            return invalid
        grid_id = None
        if grid_code:
            grid = await org.unit_by_code(session, grid_code)
            if grid is None or grid.kind != "grid":
                return Open311Error(400, t._("attribute[grid]: there is no grid {code}.",
                                             code=grid_code))
            grid_id = grid.id
        ticket = await external.file_report(session, call.core, CHANNEL, key.id,
                                            replace(report, grid_id=grid_id))
        holder = await session.get(Unit, ticket.unit_id)
        return ticket.number, " ".join([_created_notice(call, ticket, holder), *dropped])
    outcome = await call.whistle.db.run(act)
    if isinstance(outcome, Open311Error):
        raise outcome
    number, notice = outcome
    return respond(fmt, "service_requests",
                   [{"service_request_id": number, "service_notice": notice, "account_id": None}])


def _created_notice(call: Call, ticket, holder) -> str:
    t = call.t
    unit = org.display_name(holder, t.locale)
    if ticket.grid_id is None:
        return t._("Received by {unit}, which will route it to the responsible grid.", unit=unit)
    return t._("Sent to {unit}; to be resolved by {time}.", unit=unit,
               time=call.core.local(ticket.resolve_due_at).strftime("%Y-%m-%d %H:%M"))
