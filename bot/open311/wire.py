"""GeoReport v2 documents in XML and JSON, and its error bodies.

The JSON follows the spec's "Spark convention" mapping of the XML: a list element
(``services``, ``service_requests``, ``attributes``, ``values``, ``errors``, and the
discovery document's ``endpoints`` and ``formats``) becomes
an array of its items; ``None`` is JSON ``null`` and an empty XML element."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Any

from aiohttp import web

FORMATS = ("xml", "json")
CONTENT_TYPES = {"xml": "text/xml", "json": "application/json"}
ITEM_TAGS = {"services": "service", "service_requests": "request", "attributes": "attribute",
             "values": "value", "errors": "error", "endpoints": "endpoint", "formats": "format"}
XML_DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>\n'
# characters XML 1.0 cannot carry at all (a report's text may contain them)
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class Open311Error(Exception):
    """An error answered as the spec says: the HTTP status and one or more descriptions."""

    def __init__(self, status: int, *descriptions: str, headers: dict[str, str] | None = None):
        super().__init__(f"{status}: {'; '.join(descriptions)}")
        self.status, self.descriptions, self.headers = status, descriptions, headers or {}


def respond(fmt: str, root: str, payload: Any, status: int = 200,
            headers: dict[str, str] | None = None) -> web.Response:
    if fmt == "json":
        body = json.dumps(payload, ensure_ascii=False).encode()
    else:
        body = XML_DECLARATION + ET.tostring(_element(root, payload), encoding="utf-8",
                                             xml_declaration=False)
    return web.Response(body=body, status=status, content_type=CONTENT_TYPES[fmt],
                        charset="utf-8", headers=headers)


def error_response(fmt: str, error: Open311Error) -> web.Response:
    items = [{"code": error.status, "description": d} for d in error.descriptions]
    return respond(fmt, "errors", items, status=error.status, headers=error.headers)


def _element(tag: str, value: Any) -> ET.Element:
    element = ET.Element(tag)
    if isinstance(value, list):
        item_tag = ITEM_TAGS[tag]
        element.extend(_element(item_tag, item) for item in value)
    elif isinstance(value, dict):
        element.extend(_element(key, item) for key, item in value.items())
    elif value is not None:
        element.text = _scalar(value)
    return element


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _NOT_XML.sub("", str(value))
