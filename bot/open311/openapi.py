"""An OpenAPI 3 description of the GeoReport v2 endpoints, served at ``{path}/openapi.json``.
Built from the config (the base path, the limits, the category codes), so it always
describes what this deployment answers."""
from __future__ import annotations

from aiohttp import web

from bot.web import whistle_of

from .params import (
    MAX_ADDRESS,
    MAX_ADDRESS_ID,
    MAX_EMAIL,
    MAX_NAME,
    MAX_URL,
    MAX_YEAR,
    MIN_YEAR,
    PHONE_PATTERN,
)
from .views import KEY_HEADER


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _param(name: str, where: str, description: str, schema: dict | None = None,
           required: bool = False) -> dict:
    out = {"name": name, "in": where, "required": required or where == "path",
           "description": description, "schema": schema or {"type": "string"}}
    if where == "query":
        out["allowEmptyValue"] = True  # an empty parameter counts as absent
    return out


def _one_of_words(*words: str) -> str:
    """An ECMA-262 pattern for a comma-separated list of ``words``, any case (the server
    lower-cases it and skips empty items)."""
    word = "|".join("".join(f"[{c.upper()}{c.lower()}]" for c in w) for w in words)
    return f"^[ ,]*(({word})[ ,]*)*$"


# the years start_date and end_date may have (in both the date-time and the bare date)
_YEARS = "^(19[7-9][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-"
assert MIN_YEAR == 1970 and MAX_YEAR == 9998  # what _YEARS says


ALWAYS = {"400": "Missing or invalid parameters (every problem is listed), or the spec's "
                 "general service error",
          "404": "Unknown jurisdiction_id",
          "405": "Another method is needed (the Allow header names it)"}


def _answers(ok: dict, description: str, errors: dict[str, str]) -> dict:
    """200 and every error status the server answers, each with the spec's error document."""
    out = {"200": {"description": description, "content": {
        "application/json": {"schema": ok}, "text/xml": {"schema": {"type": "string"}}}}}
    for status, text in sorted({**ALWAYS, **errors}.items()):
        out[status] = {"description": text, "content": {
            "application/json": {"schema": {"type": "array", "items": _ref("Error")}},
            "text/xml": {"schema": {"type": "string"}}}}
    return out


def document(config, server_url: str) -> dict:
    o = config.open311
    fmt = _param("format", "path", "xml or json", {"type": "string", "enum": ["xml", "json"]})
    common = [_param("jurisdiction_id", "query",
                     "Accepted always; when this deployment names one, it must match."),
              _param("locale", "query", "zh_Hans (default) or en: the language of names "
                     "and texts; Accept-Language works too; anything else gives the default.",
                     {"type": "string", "example": "en"})]
    codes = [c.code for c in config.categories]
    text = {"type": "string"}
    nullable = {"type": "string", "nullable": True}
    number = {"type": "number", "nullable": True}
    request_fields = {
        "service_request_id": {**text, "description": "The ticket number, e.g. 20261122-0007."},
        "status": {"type": "string", "enum": ["open", "closed"]},
        "status_notes": nullable, "service_name": text, "service_code": text,
        "description": nullable, "agency_responsible": nullable, "service_notice": nullable,
        "requested_datetime": {"type": "string", "format": "date-time"},
        "updated_datetime": {"type": "string", "format": "date-time"},
        "expected_datetime": {"type": "string", "format": "date-time", "nullable": True},
        "address": nullable, "address_id": nullable, "zipcode": nullable,
        "lat": number, "long": number, "media_url": nullable,
    }
    schemas = {
        "Service": {"type": "object", "properties": {
            "service_code": {"type": "string", "enum": codes}, "service_name": text,
            "description": text, "metadata": {"type": "boolean"},
            "type": {"type": "string", "enum": ["realtime"]}, "keywords": text, "group": text}},
        "ServiceDefinition": {"type": "object", "properties": {
            "service_code": text, "attributes": {"type": "array", "items": _ref("Attribute")}}},
        "Attribute": {"type": "object", "properties": {
            "variable": {"type": "boolean"}, "code": text,
            "datatype": {"type": "string", "enum": ["string", "number", "datetime", "text",
                                                     "singlevaluelist", "multivaluelist"]},
            "required": {"type": "boolean"}, "datatype_description": nullable,
            "order": {"type": "integer"}, "description": text,
            "values": {"type": "array", "items": {"type": "object", "properties": {
                "key": text, "name": text}}}}},
        "ServiceRequest": {"type": "object", "properties": request_fields},
        "CreatedRequest": {"type": "object", "properties": {
            "service_request_id": text, "service_notice": nullable, "account_id": nullable}},
        "Error": {"type": "object", "properties": {"code": {"type": "integer"},
                                                   "description": text}},
        "Discovery": {"type": "object", "properties": {
            "changeset": {"type": "string", "format": "date-time"},
            "contact": nullable, "key_service": nullable,
            "endpoints": {"type": "array", "items": {"type": "object", "properties": {
                "specification": text, "url": text,
                "changeset": {"type": "string", "format": "date-time"},
                "type": {"type": "string", "enum": ["production", "test"]},
                "formats": {"type": "array", "items": text}}}}}},
        "NewRequest": {
            "type": "object", "required": ["service_code"],
            # a location is required: a point, or an address, or an address id
            # (an empty address counts as absent)
            "anyOf": [{"required": ["lat", "long"]},
                      {"required": ["address_string"],
                       "properties": {"address_string": {"minLength": 1, "pattern": r"\S"}}},
                      {"required": ["address_id"],
                       "properties": {"address_id": {"minLength": 1, "pattern": r"\S"}}}],
            # lat and long come together
            "allOf": [{"not": {"required": ["lat"], "not": {"required": ["long"]}}},
                      {"not": {"required": ["long"], "not": {"required": ["lat"]}}}],
            "properties": {
            "api_key": {"type": "string", "maxLength": 200,
                        "description": "From `python -m bot apikey add NAME`. Required, here "
                                       f"or in the {KEY_HEADER} (or Authorization: Bearer) "
                                       "header."},
            "jurisdiction_id": text, "service_code": {"type": "string", "enum": codes},
            "lat": {"type": "number", "minimum": -90, "maximum": 90},
            "long": {"type": "number", "minimum": -180, "maximum": 180},
            "address_string": {"type": "string", "maxLength": MAX_ADDRESS},
            "address_id": {"type": "string", "maxLength": MAX_ADDRESS_ID},
            "attribute[grid]": {**text, "description": "A grid code from the service "
                                "definition; used only when no point decides."},
            "description": {"type": "string", "maxLength": o.max_description,
                            "description": "Optional, as in the spec."},
            "media_url": {"type": "string", "maxLength": MAX_URL, "anyOf": [
                {"format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]"},
                {"maxLength": 0}]},
            # never a reason to refuse a report: so neither has a format in the schema
            "email": {"type": "string", "description": "An e-mail address (at most "
                      f"{MAX_EMAIL} characters); left out, and service_notice says so, if "
                      "malformed."},
            "first_name": {"type": "string", "maxLength": MAX_NAME},
            "last_name": {"type": "string", "maxLength": MAX_NAME},
            "phone": {"type": "string", "description": "A phone number (digits, spaces, "
                      f"+ - . ( ); {PHONE_PATTERN}); left out, and service_notice says so, "
                      "if malformed."},
            "device_id": text, "account_id": text}},
    }
    date_range = (f"W3C date-time with a time zone, or a date (local midnight), in the years "
                  f"{MIN_YEAR} to {MAX_YEAR}")
    dates = {"type": "string", "anyOf": [
        {"format": "date-time", "pattern": _YEARS}, {"format": "date", "pattern": _YEARS}]}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Whistle Open311 GeoReport v2", "version": "2",
                 "description": "GeoReport v2 (wiki.open311.org/GeoReport_v2). Personal data "
                                "of residents is never returned. See docs/open311.md."},
        "servers": [{"url": server_url}],
        "paths": {
            "/discovery.{format}": {"get": {
                "operationId": "getDiscovery", "summary": "The spec's service discovery document",
                "parameters": [fmt, *common],
                "responses": _answers(_ref("Discovery"), "This endpoint", {})}},
            "/services.{format}": {"get": {
                "operationId": "getServices", "summary": "The categories as services",
                "parameters": [fmt, *common],
                "responses": _answers({"type": "array", "items": _ref("Service")},
                                      "The services", {})}},
            "/services/{service_code}.{format}": {"get": {
                "operationId": "getServiceDefinition", "summary": "A service's attributes",
                "parameters": [_param("service_code", "path", "A service_code"), fmt, *common],
                "responses": _answers(_ref("ServiceDefinition"), "The definition",
                                      {"404": "Unknown service_code or jurisdiction_id"})}},
            "/requests.{format}": {
                "get": {
                    "operationId": "getServiceRequests",
                    "summary": f"Requests of the last {o.default_days} days (at most "
                               f"{o.max_results}), or those named",
                    "parameters": [fmt, *common,
                                   _param("service_request_id", "query",
                                          "Comma-separated numbers; overrides the rest"),
                                   _param("service_code", "query", "Comma-separated codes"),
                                   _param("start_date", "query", date_range, dates),
                                   _param("end_date", "query", date_range, dates),
                                   _param("status", "query", "open, closed or both", {
                                       "type": "string",
                                       "pattern": _one_of_words("open", "closed")})],
                    "responses": _answers({"type": "array", "items": _ref("ServiceRequest")},
                                          "The requests", {})},
                "post": {
                    "operationId": "postServiceRequest",
                    "summary": "Report a problem: it is routed and posted to the grid's chat",
                    "parameters": [fmt, _param(KEY_HEADER, "header",
                                               "The api_key, if not in the body")],
                    "requestBody": {"required": True, "content": {
                        "application/x-www-form-urlencoded": {"schema": _ref("NewRequest")},
                        "multipart/form-data": {"schema": _ref("NewRequest")}}},
                    "responses": _limited(_answers(
                        {"type": "array", "items": _ref("CreatedRequest")},
                        "The new request's number", {
                            "403": "Missing, unknown or revoked api_key",
                            "404": "Unknown service_code or jurisdiction_id",
                            "429": f"More than {o.posts_per_minute} requests a minute with "
                                   "this api_key (Retry-After says when to try again)"}),
                        o.posts_per_minute)}},
            "/requests/{service_request_id}.{format}": {"get": {
                "operationId": "getServiceRequest", "summary": "One request",
                "parameters": [_param("service_request_id", "path", "A ticket number"), fmt,
                               *common],
                "responses": _answers({"type": "array", "items": _ref("ServiceRequest")},
                                      "The request (a list of one)",
                                      {"404": "Unknown service_request_id or "
                                                     "jurisdiction_id"})}},
        },
        "components": {"schemas": schemas},
    }


def _limited(responses: dict, per_minute: int) -> dict:
    """The 429 only when a limit is set; with its Retry-After header."""
    if not per_minute:
        responses.pop("429")
    else:
        responses["429"]["headers"] = {"Retry-After": {
            "description": "Seconds until the key may post again",
            "schema": {"type": "integer"}}}
    return responses


async def serve(request: web.Request) -> web.Response:
    whistle = whistle_of(request)
    config = whistle.config
    base = (config.web.public_url or "").rstrip("/") + config.open311.path.rstrip("/")
    return web.json_response(document(config, base))
