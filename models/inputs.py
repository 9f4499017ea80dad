"""Neutral inputs: what a person sent, stripped of the channel's types."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from models.messages.outbox import Target


def parse_id(text: str) -> int | None:
    """A row id from button data, or None: only plain ASCII digits of sane length (a
    forged "²" or a 30-digit number must not reach the database)."""
    if 0 < len(text) <= 15 and text.isascii() and text.isdigit():
        return int(text)
    return None


@dataclass(frozen=True)
class Sender:
    channel: str
    external_id: str
    name: str = ""
    language_code: str | None = None


@dataclass(frozen=True)
class PhotoIn:
    """A photo the person sent. ``size`` is what they sent (in bytes; 0 while not known);
    ``data`` is None for a photo too big to download. ``fetch``, if set, downloads it (the
    adapter's way, giving the downloaded ``PhotoIn``): the core asks for that only where
    it takes a photo (``models.media.photos.require``). ``cleaned`` marks ``data`` as
    already re-encoded (``gps`` then holds the position its metadata carried),
    ``unreadable`` a file that is no image, ``too_many_pixels`` one refused from its
    header (more pixels than ``intake.max_photo_pixels``)."""

    data: bytes | None
    size: int
    channel_file_id: str | None = None
    cleaned: bool = False
    gps: tuple[float, float] | None = None
    unreadable: bool = False
    too_many_pixels: bool = False
    fetch: Callable[[], Awaitable[PhotoIn]] | None = field(default=None, repr=False,
                                                            compare=False)


@dataclass
class Input:
    """One thing a person did: a message of some kind, or a button press."""

    sender: Sender
    chat: Target
    private: bool
    kind: str  # text | command | photo | location | contact | button | other
    text: str | None = None
    command: str | None = None
    args: list[str] = field(default_factory=list)
    photo: PhotoIn | None = None
    location: tuple[float, float] | None = None
    contact_phone: str | None = None
    contact_is_own: bool = False
    action: str | None = None  # for buttons: "claim"
    arg: str = ""  # for buttons: "17"
    reply_to_bot: bool = False
    dedupe_key: str | None = None  # the channel's id of this update: handled at most once


@dataclass
class Reply:
    """What the adapter answers at once (a callback alert); everything else is in the outbox."""

    alert: str | None = None
    show_alert: bool = False
    duplicate: bool = False  # this update was handled before (a redelivery): nothing done
    # slow work to run after the transaction committed, holding no lock (rendering a
    # report); it gets the Database and runs its own short transactions
    after: Callable[[Any], Awaitable[None]] | None = None
