"""The GeoReport v2 endpoints: read the parameters, call the core, answer in the format
the URL names (``.xml`` or ``.json``). Errors are answered as the spec says, in that format."""
from __future__ import annotations

import functools
import logging
from dataclasses import replace

from aiohttp import web

from bot.web import whistle_of
from models.logs import keep_out_of_logs
from models.org import tree as org
from models.store.tables import Unit
from models.tickets import external

from . import catalog, keys, params, records
from .wire import FORMATS, Open311Error, error_response, respond

log = logging.getLogger(__name__)
CHANNEL = "open311"


class Call:
    """One API call: the service, the format, the translator and the parameters."""

    def __init__(self, request: web.Request, fields: dict[str, str]):
        self.request = request
        self.whistle = whistle_of(request)
        self.config = self.whistle.config
        self.core = self.whistle.core
        self.params = fields
        locale = params.locale_of(fields, request.headers.get("Accept-Language"),
                                  self.config.default_locale)
        self.t = self.whistle.i18n.get(locale)


def endpoint(handler):
    """Checks the format and the jurisdiction, and turns ``Open311Error`` into the spec's
    error document (anything unexpected into a 500 in the same format)."""
    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        fmt = request.match_info["format"].lower()
        if fmt not in FORMATS:
            t = whistle_of(request).i18n.get(None)
            return error_response("xml", Open311Error(
                400, t._("Unknown format {format}: use .xml or .json.", format=fmt)))
        fields = dict(request.query)
        if request.method == "POST":
            fields.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        keep_out_of_logs(fields.get("api_key"))  # the request's key stays out of its log lines
        call = Call(request, fields)
        try:
            params.check_jurisdiction(fields, call.config.open311.jurisdiction_id, call.t)
            return await handler(call, fmt)
        except Open311Error as exc:
            return error_response(fmt, exc)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("Open311 %s %s failed", request.method, request.path)
            return error_response(fmt, Open311Error(500, call.t._(
                "General service error; please try again later.")))
    return wrapper


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
    t, secret = call.t, params.value(call.params, "api_key")
    if not secret:
        raise Open311Error(403, t._("api_key was not provided."))
    try:
        report, grid_code = params.new_report(call.params, call.config, t)
        invalid = None
    except Open311Error as exc:  # told only to a client whose key is good
        report, grid_code, invalid = None, "", exc

    async def act(session):
        key = await keys.verify(session, secret, call.core.now())
        if key is None:
            raise Open311Error(403, t._("Invalid api_key received: it is unknown or revoked."))
        if invalid is not None:
            raise invalid
        grid_id = None
        if grid_code:
            grid = await org.unit_by_code(session, grid_code)
            if grid is None or grid.kind != "grid":
                raise Open311Error(400, t._("attribute[grid]: there is no grid {code}.",
                                            code=grid_code))
            grid_id = grid.id
        ticket = await external.file_report(session, call.core, CHANNEL, key.id,
                                            replace(report, grid_id=grid_id))
        holder = await session.get(Unit, ticket.unit_id)
        return ticket.number, _created_notice(call, ticket, holder)
    number, notice = await call.whistle.db.run(act)
    return respond(fmt, "service_requests",
                   [{"service_request_id": number, "service_notice": notice, "account_id": None}])


def _created_notice(call: Call, ticket, holder) -> str:
    t = call.t
    unit = org.display_name(holder, t.locale)
    if ticket.grid_id is None:
        return t._("Received by {unit}, which will route it to the responsible grid.", unit=unit)
    return t._("Sent to {unit}; to be resolved by {time}.", unit=unit,
               time=call.core.local(ticket.resolve_due_at).strftime("%Y-%m-%d %H:%M"))
