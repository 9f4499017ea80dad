"""Neutral outgoing messages. The core says *what* to show (text, buttons, photos,
a map pin); each channel's sender decides *how* (inline keyboard, template card)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from models.store.db import QUEUED
from models.store.tables import Outbox

OUTBOX_ROWS = "whistle.outbox_rows"  # session.info: rows queued and not yet written
SAVEPOINT_MARKS = "whistle.outbox_marks"  # session.info: savepoint -> rows queued before it
_INSERT_ROWS = Outbox.__table__.insert()

CALLBACK_LIMIT = 64  # bytes, Telegram's limit for callback data


def utf16_len(text: str) -> int:
    """Length as Telegram (and JavaScript) count it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True)
class Button:
    """An inline button: a label and an action the core understands ("claim", 17)."""

    label: str
    action: str
    arg: str = ""

    @property
    def data(self) -> str:
        data = f"{self.action}:{self.arg}" if self.arg != "" else self.action
        if len(data.encode()) > CALLBACK_LIMIT:
            raise ValueError(f"callback data too long: {data!r}")
        return data


@dataclass(frozen=True)
class KeyButton:
    """A reply-keyboard button; ``request`` asks the client for "location" or "contact"."""

    label: str
    request: str | None = None


@dataclass
class OutMessage:
    text: str
    buttons: list[list[Button]] = field(default_factory=list)
    keyboard: list[list[KeyButton]] | None = None  # reply keyboard
    remove_keyboard: bool = False
    force_reply: bool = False
    placeholder: str | None = None  # input field hint with force_reply
    photos: list[int] = field(default_factory=list)  # media ids, sent before the text
    location: tuple[float, float] | None = None  # (lat, lon), sent before the text
    pictures: list[str] = field(default_factory=list)  # generated images (MediaStore paths), e.g. charts
    document: str | None = None  # a generated file (MediaStore path), sent after the text …
    filename: str | None = None  # … under this name (report-2026-11.xlsx)
    ref: str | None = None  # remember the sent message under this name …
    edit: bool = False  # … or edit the message remembered under ``ref`` in place
    # once it is sent (or given up), the row's chat becomes this: a forgotten resident's
    # goodbye must go to their chat, and then keep no trace of it (models/residents/privacy.py)
    then_rename: str | None = None

    def to_payload(self) -> dict[str, Any]:
        """The row's JSON: what ``dataclasses.asdict`` gives, built directly (asdict deep-
        copies every value through a generic recursion, a few percent of an update)."""
        payload = {name: getattr(self, name) for name in _FIELDS}
        payload["buttons"] = [[{"label": b.label, "action": b.action, "arg": b.arg} for b in row]
                              for row in self.buttons]
        if self.keyboard is not None:
            payload["keyboard"] = [[{"label": b.label, "request": b.request} for b in row]
                                   for row in self.keyboard]
        payload["photos"], payload["pictures"] = list(self.photos), list(self.pictures)
        return payload

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> "OutMessage":
        """The message a row holds. ``NewerPayload`` if it has a field this code does not
        know: a newer process queued it (a rolling deploy), and it is that one's to send —
        the field may matter (``then_rename`` does), so it is neither dropped nor the
        message given up."""
        if not data.keys() <= _KNOWN:
            raise NewerPayload(data.keys() - _KNOWN)
        data = dict(data)
        data["buttons"] = [[Button(**_known(b, _BUTTON)) for b in row]
                           for row in data.get("buttons") or []]
        if data.get("keyboard") is not None:
            data["keyboard"] = [[KeyButton(**_known(b, _KEY_BUTTON)) for b in row]
                                for row in data["keyboard"]]
        if data.get("location") is not None:
            data["location"] = tuple(data["location"])
        return cls(**data)


_FIELDS = tuple(f.name for f in fields(OutMessage))
_KNOWN = frozenset(_FIELDS)
_BUTTON = frozenset(f.name for f in fields(Button))
_KEY_BUTTON = frozenset(f.name for f in fields(KeyButton))


class NewerPayload(ValueError):
    """An outbox row written by a newer version, with fields this one does not know."""

    def __init__(self, unknown):
        self.unknown = frozenset(unknown)
        super().__init__("fields this version does not know: " + ", ".join(sorted(self.unknown)))


def _known(data: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    if not data.keys() <= names:
        raise NewerPayload(data.keys() - names)
    return data


@dataclass(frozen=True)
class Target:
    """Where a message goes: a chat on one channel."""

    channel: str
    chat_id: str


def enqueue(session: AsyncSession, target: Target, message: OutMessage, now: datetime) -> None:
    """Queue a message in the caller's transaction; the sender delivers it after commit.

    Photos, a map pin and the text become separate rows, one channel call each, so a
    retry after a failure never sends the same part twice."""
    for row in message.buttons:
        for button in row:
            button.data  # validates the length now, not at send time
    parts = []
    if message.photos:
        parts.append(OutMessage(text="", photos=message.photos))
    if message.pictures:
        parts.append(OutMessage(text="", pictures=message.pictures))
    if message.location:
        parts.append(OutMessage(text="", location=message.location))
    if message.text:
        parts.append(replace(message, photos=[], location=None, pictures=[], document=None,
                             filename=None))
    if message.document:
        parts.append(OutMessage(text="", document=message.document, filename=message.filename))
    session.info.setdefault(OUTBOX_ROWS, []).extend(
        {"channel": target.channel, "chat_id": str(target.chat_id), "payload": part.to_payload(),
         "state": "pending", "attempts": 0, "next_try_at": now, "created_at": now}
        for part in parts)


@event.listens_for(Session, "before_commit")
def _write_queued(session: Session) -> None:
    """The rows a transaction queued go in together, in the order they were queued (a
    chat's messages are sent in id order): one statement, cheaper than an object each
    through the unit of work. They go in as the transaction commits, or before its next
    statement through the session, where the session's autoflush would have written
    them: what the transaction does next (``/forget`` rewriting a chat's rows) sees them.
    Never inside a savepoint: one that fails must not take earlier rows with it (they go
    after it; nothing done inside a savepoint reads the outbox)."""
    if session.in_nested_transaction():
        return
    rows = session.info.pop(OUTBOX_ROWS, None)
    if rows:
        session.connection().execute(_INSERT_ROWS, rows)
        session.info[QUEUED] = True  # the sender wakes after the commit (only if written)


@event.listens_for(Session, "do_orm_execute")
def _write_queued_first(state) -> None:
    _write_queued(state.session)


@event.listens_for(Session, "after_transaction_create")
def _mark_savepoint(session: Session, transaction) -> None:
    """Remember how many rows were queued when a savepoint began …"""
    if transaction.nested:
        session.info.setdefault(SAVEPOINT_MARKS, {})[transaction] = len(
            session.info.get(OUTBOX_ROWS, ()))


@event.listens_for(Session, "after_soft_rollback")
def _drop_rolled_back(session: Session, previous_transaction) -> None:
    """… so that what was queued inside it goes when it rolls back, as the objects added
    inside a rolled-back savepoint do; a whole transaction rolled back takes all."""
    if not previous_transaction.nested:
        session.info.pop(OUTBOX_ROWS, None)
        session.info.pop(QUEUED, None)
        session.info.pop(SAVEPOINT_MARKS, None)
        return
    mark = session.info.get(SAVEPOINT_MARKS, {}).pop(previous_transaction, None)
    if mark is not None:
        del session.info.get(OUTBOX_ROWS, [])[mark:]
