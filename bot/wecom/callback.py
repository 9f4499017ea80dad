"""The callback face: ``GET`` verifies the URL, ``POST`` receives encrypted messages.

A message is checked completely before anything is done with it: parameters present,
timestamp within ``timestamp_window`` of now, signature, decryption to our corp id,
well-formed XML. The URL verification is checked as WeCom's own WXBizMsgCrypt checks it
(signature and decryption; the timestamp only warns): it changes nothing, so a replayed
one does no harm, and a timestamp far from our clock is logged, since the messages that
follow it would be refused. A failure is answered 4xx and logged, and nothing is processed. A
good message is answered at once with an empty 200 (WeCom waits 5 s, then retries)
and handled in the background; the inbox drops the retries."""
from __future__ import annotations

import logging
from xml.etree.ElementTree import ParseError

from aiohttp import web
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from bot.web import UPDATE_BODY_BYTES, RouteAdder, body_limit, whistle_of

from .crypto import CryptoError

log = logging.getLogger(__name__)
MAX_BODY = UPDATE_BODY_BYTES  # WeCom's callbacks are a few kilobytes


class Rejected(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def face(config) -> RouteAdder:
    path = config.wecom.callback_path

    def add(app: web.Application) -> None:
        app.router.add_get(path, verify_url)
        app.router.add_post(path, body_limit(MAX_BODY)(receive))
    return add


def parse_xml(text: str) -> dict[str, str]:
    """A flat <xml> document as a dict of its children's texts (defused)."""
    try:
        root = fromstring(text)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise Rejected(400, f"malformed XML: {exc}") from None
    if root.tag != "xml":
        raise Rejected(400, "XML root is not <xml>")
    return {child.tag: (child.text or "").strip() for child in root}


def _params(request: web.Request, *names: str) -> list[str]:
    values = [request.query.get(name, "") for name in names]
    missing = [n for n, v in zip(names, values) if not v]
    if missing:
        raise Rejected(400, f"missing parameters: {', '.join(missing)}")
    return values


def _skew(whistle, timestamp: str) -> float:
    """Seconds between the request's timestamp and now, either way."""
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise Rejected(400, "timestamp is not a number")
    return abs(whistle.core.now().timestamp() - int(timestamp))


def _fresh(whistle, timestamp: str) -> None:
    skew = _skew(whistle, timestamp)
    if skew > whistle.config.wecom.timestamp_window:
        raise Rejected(403, f"timestamp {skew:.0f} s away from now")


def _service(request: web.Request):
    whistle = whistle_of(request)
    if getattr(whistle, "wecom", None) is None:
        raise web.HTTPServiceUnavailable(text="WeCom is starting")
    return whistle, whistle.wecom


def _reject(request: web.Request, exc: Rejected) -> web.Response:
    log.warning("WeCom callback %s %s rejected from %s: %s", request.method, request.path,
                request.remote, exc.reason)
    return web.Response(status=exc.status, text=exc.reason)


async def verify_url(request: web.Request) -> web.Response:
    whistle, service = _service(request)
    try:
        signature, timestamp, nonce, echostr = _params(
            request, "msg_signature", "timestamp", "nonce", "echostr")
        skew = _skew(whistle, timestamp)
        try:
            plain = service.crypt.verify_url(signature, timestamp, nonce, echostr)
        except CryptoError as exc:
            raise Rejected(403, str(exc)) from None
    except Rejected as exc:
        return _reject(request, exc)
    if skew > whistle.config.wecom.timestamp_window:
        log.warning("WeCom URL verification from %s answered, but its timestamp is %.0f s "
                    "away from this server's clock: messages further off than "
                    "[wecom] timestamp_window (%d s) are refused; is the clock right?",
                    request.remote, skew, whistle.config.wecom.timestamp_window)
    return web.Response(text=plain)


async def receive(request: web.Request) -> web.Response:
    whistle, service = _service(request)
    try:
        signature, timestamp, nonce = _params(request, "msg_signature", "timestamp", "nonce")
        _fresh(whistle, timestamp)
        try:  # a longer body was refused before it was read (bot.web.guard)
            body = await request.text()
        except web.HTTPRequestEntityTooLarge:  # a chunked one, cut off at the limit
            raise Rejected(413, "body too large") from None
        outer = parse_xml(body)
        encrypted = outer.get("Encrypt", "")
        if not encrypted:
            raise Rejected(400, "no Encrypt element")
        try:
            plain = service.crypt.decrypt_message(signature, timestamp, nonce, encrypted)
        except CryptoError as exc:
            raise Rejected(403, str(exc)) from None
        fields = parse_xml(plain)
        if not fields.get("FromUserName") or not fields.get("MsgType"):
            raise Rejected(400, "message without FromUserName or MsgType")
        agent = fields.get("AgentID", "")
        if agent and agent != str(whistle.config.wecom.agent_id):
            raise Rejected(403, f"message for another app (AgentID {agent})")
    except Rejected as exc:
        return _reject(request, exc)
    service.process_later(fields)
    return web.Response(text="")
