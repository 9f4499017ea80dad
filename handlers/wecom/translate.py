"""A decrypted WeCom callback message (its XML fields) → a neutral ``Input``.

An image is handed to the core with the way to download it (``PhotoIn.fetch``), run
outside any transaction and only if the core takes it; locations arrive in GCJ-02 and
are converted to WGS-84, the datum of the grids."""
from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable

from models.geo import gcj_to_wgs
from models.inputs import Input, PhotoIn, Sender
from models.messages.outbox import Target

from .cards import CHANNEL, KEYBOARD_PREFIX

log = logging.getLogger(__name__)
COMMAND = re.compile(r"^/[A-Za-z0-9_]+(\s|$)")
PHONE = re.compile(r"^\+?\d{7,15}$")
MENU_COMMANDS = {"report", "my", "help", "lang", "cancel", "start", "forget", "status"}

# media/get of the WeCom API: the bytes, or None when WeCom will not give them
Download = Callable[[str], Awaitable[bytes | None]]


def dedupe_key(fields: dict[str, str]) -> str:
    """WeCom's advice: MsgId for messages, sender + CreateTime for events (plus the
    event, its key and a card press's response code, so two presses in one second stay
    apart while a retry, which repeats them all, does not)."""
    if fields.get("MsgId"):
        return f"msg:{fields['MsgId']}"
    return ":".join(["ev", fields.get("FromUserName", ""), fields.get("CreateTime", ""),
                     fields.get("Event", ""), fields.get("EventKey", ""),
                     fields.get("ResponseCode", "")])  # each press has its own code


async def message_input(fields: dict[str, str], download: Download,
                        max_photo_bytes: int) -> Input | None:
    userid = fields.get("FromUserName", "")
    if not userid:
        return None
    base = dict(sender=Sender(CHANNEL, userid), chat=Target(CHANNEL, userid), private=True,
                dedupe_key=dedupe_key(fields))
    kind = fields.get("MsgType", "")
    if kind == "text":
        return text_input(fields.get("Content", ""), base)
    if kind == "image":
        return Input(kind="photo", photo=_photo(download, fields.get("MediaId", ""),
                                                max_photo_bytes), **base)
    if kind == "location":
        try:
            lat, lon = float(fields["Location_X"]), float(fields["Location_Y"])
        except (KeyError, ValueError):
            return Input(kind="other", **base)
        return Input(kind="location", location=gcj_to_wgs(lat, lon), **base)
    if kind == "event":
        return event_input(fields, base)
    return Input(kind="other", **base)


def text_input(content: str, base: dict) -> Input:
    text = content.strip()
    if COMMAND.match(text):
        command, *args = text[1:].split()
        return Input(kind="command", command=command.lower(), args=args, text=text, **base)
    if PHONE.match(text.replace(" ", "")):  # WeCom has no "share contact": a typed number is it
        return Input(kind="contact", contact_phone=text.replace(" ", ""), contact_is_own=True,
                     text=text, **base)
    return Input(kind="text", text=content, **base)


def event_input(fields: dict[str, str], base: dict) -> Input | None:
    event, key = fields.get("Event", ""), fields.get("EventKey", "") or ""
    if event == "enter_agent":
        return Input(kind="command", command="start", **base)
    if event == "click":
        command = key.lstrip("/").lower()
        if command in MENU_COMMANDS:
            return Input(kind="command", command=command, **base)
        return None
    if event == "template_card_event":
        if key.startswith(KEYBOARD_PREFIX):  # a reply-keyboard label: as if typed
            return Input(kind="text", text=key[len(KEYBOARD_PREFIX):], **base)
        action, _, arg = key.partition(":")
        if not action:
            return None
        return Input(kind="button", action=action, arg=arg, **base)
    return None  # subscribe, LOCATION reports and other events: nothing to do


def _photo(download: Download, media_id: str, limit: int) -> PhotoIn:
    """An image to download if the core takes it (WeCom says nothing of its size before)."""
    if not media_id:
        return PhotoIn(data=b"", size=0, unreadable=True)
    return PhotoIn(data=None, size=0, channel_file_id=media_id,
                   fetch=functools.partial(_fetch, download, media_id, limit))


async def _fetch(download: Download, media_id: str, limit: int) -> PhotoIn:
    """The image's bytes; a file WeCom will not give us reads as an unreadable photo."""
    data = await download(media_id)
    if data is None:
        return PhotoIn(data=b"", size=0, channel_file_id=media_id, unreadable=True)
    if len(data) > limit:
        return PhotoIn(data=None, size=len(data), channel_file_id=media_id)
    return PhotoIn(data=data, size=len(data), channel_file_id=media_id)
