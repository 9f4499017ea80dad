"""The core's dependencies in one object, handed to every core action."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from .i18n import I18n
from .media import MediaStore
from .routing import Router

if TYPE_CHECKING:
    from bot.config import Config


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Core:
    config: "Config"
    i18n: I18n
    router: Router
    media: MediaStore
    clock: Callable[[], datetime] = field(default=utcnow)

    def now(self) -> datetime:
        return self.clock()

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.config.tz)
