"""Configuration: one TOML file, validated on start, secrets from the environment.

A bad file stops the program with one message naming the file, the key and the problem."""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_OVERRIDES = {
    "WHISTLE_TELEGRAM_TOKEN": ("telegram", "token"),
    "WHISTLE_DATABASE_URL": ("database", "url"),
}


class ConfigError(Exception):
    """Raised with a message fit to show a person as is."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TelegramConfig(Strict):
    token: str = ""
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    mode: Literal["polling"] = "polling"
    poll_timeout: int = Field(10, ge=0, le=50)
    admins: list[int] = []  # Telegram user ids allowed to /bind chats


class DatabaseConfig(Strict):
    url: str = "sqlite+aiosqlite:///var/whistle.db"


class IntakeConfig(Strict):
    min_description: int = Field(10, ge=1)
    max_description: int = Field(1000, ge=10, le=3500)
    max_photos: int = Field(3, ge=0, le=10)
    max_photo_bytes: int = Field(10_000_000, ge=10_000)
    max_note: int = Field(1000, ge=10, le=3500)


class SenderConfig(Strict):
    """Telegram's limits: ~30 messages/s per bot, ~1/s per private chat, 20/min per group."""

    per_second: float = Field(30, gt=0)
    private_per_second: float = Field(1, gt=0)
    private_burst: int = Field(8, ge=1)
    group_per_minute: float = Field(20, gt=0)
    group_burst: int = Field(10, ge=1)
    max_attempts: int = Field(8, ge=1)


class Category(Strict):
    code: str = Field(pattern=r"^[a-z0-9_-]{1,24}$")
    name: str
    name_en: str
    klass: Literal["enforcement", "request"] = Field(alias="class")
    order_type: Literal["emergency", "routine", "key"] = "routine"


class Config(Strict):
    timezone: str = "Asia/Shanghai"
    default_locale: Literal["zh_Hans", "en"] = "zh_Hans"
    org_file: Path = Path("samples/district/district.toml")
    media_dir: Path = Path("var/media")
    duty_unit: str | None = None  # unit code whose chat routes what nothing else decides
    telegram: TelegramConfig = TelegramConfig()
    database: DatabaseConfig = DatabaseConfig()
    intake: IntakeConfig = IntakeConfig()
    sender: SenderConfig = SenderConfig()
    categories: list[Category] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _unique_categories(self) -> "Config":
        codes = [c.code for c in self.categories]
        duplicates = sorted({c for c in codes if codes.count(c) > 1})
        if duplicates:
            raise ValueError(f"duplicate category codes: {', '.join(duplicates)}")
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def category(self, code: str) -> Category | None:
        return next((c for c in self.categories if c.code == code), None)


def load_config(path: str | Path, env: dict[str, str] | None = None) -> Config:
    """Read, override from the environment, validate; relative paths are taken from the file's folder."""
    path = Path(path)
    env = os.environ if env is None else env
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            raw.setdefault(section, {})[key] = env[var]
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(path, exc)) from None
    base = path.resolve().parent
    config.org_file = _relative_to(base, config.org_file)
    config.media_dir = _relative_to(base, config.media_dir)
    config.database.url = _sqlite_relative(base, config.database.url)
    return config


def _describe(path: Path, exc: ValidationError) -> str:
    lines = [f"config file {path} is invalid:"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (misspelt?)"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def _relative_to(base: Path, value: Path) -> Path:
    return value if value.is_absolute() else base / value


def _sqlite_relative(base: Path, url: str) -> str:
    """``sqlite+aiosqlite:///var/x.db`` is relative to the config file, like the other paths."""
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix) and not url[len(prefix):].startswith("/") and ":memory:" not in url:
        return prefix + str(base / url[len(prefix):])
    return url
