"""Text from outside made safe to store and to send back: lone UTF-16 surrogates
(possible in JSON as "\\ud800", never valid Unicode) and NUL characters (PostgreSQL
text cannot hold them) are replaced, so one odd message cannot poison a row that every
later transaction or send trips over."""
from __future__ import annotations

from dataclasses import replace

from models.inputs import Input


def text(value: str | None) -> str | None:
    if value is None or not isinstance(value, str):
        return value
    if value.isascii():
        return value.replace("\x00", "\ufffd")
    return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def scrub(inp: Input) -> Input:
    sender = replace(inp.sender, name=text(inp.sender.name) or "")
    return replace(inp, sender=sender, text=text(inp.text), args=[text(a) for a in inp.args],
                   arg=text(inp.arg) or "", command=text(inp.command),
                   contact_phone=text(inp.contact_phone))
