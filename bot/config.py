"""Configuration: one TOML file, validated on start, secrets from the environment.

A bad file stops the program with one message naming the file, the key and the problem."""
from __future__ import annotations

import ipaddress
import os
import tomllib
from datetime import date, time
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.deadlines.calendar import Span

ENV_OVERRIDES = {
    "WHISTLE_TELEGRAM_TOKEN": ("telegram", "token"),
    "WHISTLE_DATABASE_URL": ("database", "url"),
    "WHISTLE_TELEGRAM_SECRET_TOKEN": ("telegram", "secret_token"),
    "WHISTLE_WECOM_SECRET": ("wecom", "secret"),
    "WHISTLE_METRICS_TOKEN": ("web", "metrics_token"),
}


class ConfigError(Exception):
    """Raised with a message fit to show a person as is."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TelegramConfig(Strict):
    token: str = ""
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    mode: Literal["polling", "webhook"] = "polling"
    poll_timeout: int = Field(10, ge=0, le=50)
    admins: list[int] = []  # Telegram user ids allowed to /bind chats
    # webhook mode: Telegram posts updates to our web server ([web] host/port)
    webhook_url: str = ""  # the public https URL Telegram posts to, e.g. https://x.example/telegram
    webhook_path: str = "/telegram/webhook"
    secret_token: str = Field("", pattern=r"^[A-Za-z0-9_-]{0,256}$")

    @model_validator(mode="after")
    def _webhook_needs_url_and_secret(self) -> "TelegramConfig":
        """Without a secret anyone who finds the URL could post forged updates."""
        if self.mode == "webhook":
            if not self.webhook_url.startswith(("https://", "http://")):
                raise ValueError("webhook mode needs webhook_url (the public https URL)")
            if not self.secret_token:
                raise ValueError("webhook mode needs secret_token "
                                 "(or WHISTLE_TELEGRAM_SECRET_TOKEN)")
            if not self.webhook_path.startswith("/"):
                raise ValueError("webhook_path must start with /")
        return self


class WebConfig(Strict):
    """The bot's own aiohttp server: dashboard, Open311, WeCom callback, webhook, health."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str = ""  # how others reach it (links in messages); default http://host:port
    # /healthz answers 503 when the database does not answer within this many seconds,
    # or this process's sender made no progress on what it may send now for this long
    # (its passes fail, or a send hangs); a chat waiting for its budget does not count
    health_db_timeout: float = Field(2.0, gt=0, le=60)
    health_max_sender_lag: float = Field(600, gt=0)
    # /metrics: when set, a scraper must send "Authorization: Bearer <token>" (else 401);
    # WHISTLE_METRICS_TOKEN sets it from the environment
    metrics_token: str = ""
    # the reverse proxies in front (addresses or networks, e.g. "127.0.0.1", "10.0.0.0/8"):
    # only a request from one of them is believed about the client's address
    # (X-Forwarded-For); empty: the address is the connection's own
    trusted_proxies: list[str] = []

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {entry!r} is not an address or network") from None
        return value


class WecomConfig(Strict):
    """A self-built WeCom app (自建应用); off unless ``enabled``."""

    enabled: bool = False
    corp_id: str = ""
    agent_id: int = 0
    secret: str = ""
    token: str = ""
    encoding_aes_key: str = ""
    api_base_url: str = "https://qyapi.weixin.qq.com/cgi-bin"
    callback_path: str = "/wecom/callback"
    timestamp_window: int = Field(300, ge=1)  # seconds either side of now
    member_per_minute: int = Field(30, ge=1)  # WeCom: app messages a member may receive
    digest_webhooks: dict[str, str] = {}  # unit code → group robot webhook URL

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> "WecomConfig":
        """An enabled app needs all its credentials; the key is checked before the first callback."""
        if not self.enabled:
            return self
        missing = [k for k in ("corp_id", "secret", "token", "encoding_aes_key")
                   if not getattr(self, k)]
        if missing or not self.agent_id:
            raise ValueError("enabled WeCom app needs " + ", ".join(missing + (
                [] if self.agent_id else ["agent_id"])))
        if len(self.encoding_aes_key) != 43:
            raise ValueError("encoding_aes_key must be the 43 characters WeCom shows")
        if not self.callback_path.startswith("/"):
            raise ValueError("callback_path must start with /")
        return self


class DashboardConfig(Strict):
    """The command-centre dashboard (docs/dashboard.md)."""

    enabled: bool = True
    path: str = Field("/dashboard", pattern=r"^/[A-Za-z0-9_/-]*[A-Za-z0-9_-]$")
    session_hours: float = Field(12, gt=0)
    secure_cookies: bool = True  # set False only for plain-http local testing
    # Failed logins slow the guesser, not the owner (docs/dashboard.md): after
    # max_failed_logins failures an account waits login_delay_seconds before the next try,
    # twice as long after each further failure, at most lockout_minutes; a browser that
    # has logged in as that user before (its device cookie) does not wait.
    max_failed_logins: int = Field(5, ge=1)
    login_delay_seconds: float = Field(30, gt=0)
    lockout_minutes: float = Field(15, gt=0)
    max_failed_logins_per_ip: int = Field(20, ge=1)  # per lockout window, any user names
    known_device_days: float = Field(90, gt=0)  # how long a browser stays known
    page_size: int = Field(25, ge=5, le=200)  # tickets per page of the list
    live_seconds: float = Field(5, ge=0.2)  # how often the overview refreshes itself


class Open311Config(Strict):
    """Open311 GeoReport v2 (docs/open311.md); keys: ``python -m bot apikey add NAME``."""

    enabled: bool = True
    path: str = Field("/open311/v2", pattern=r"^/[A-Za-z0-9_./-]*[A-Za-z0-9_-]$")
    jurisdiction_id: str = Field("", max_length=200)  # when set, a different one is refused
    max_description: int = Field(4000, ge=10, le=100_000)
    default_days: int = Field(90, ge=1)  # GET requests: the default and the longest range
    max_results: int = Field(1000, ge=1, le=10_000)
    # a chat report's point is published as the centre of a cell this many metres wide
    # (0 = exact); a category with public_exact = true is published exactly
    location_precision_m: float = Field(100, ge=0, le=100_000)
    posts_per_minute: int = Field(30, ge=0)  # POST requests per API key and minute (0 = no limit)
    contact: str = Field("", max_length=500)  # service discovery: who to ask about the API
    key_service: str = Field("", max_length=500)  # service discovery: how to get a key


class ReportConfig(Strict):
    """Definitions of the rates where places differ (see docs/reports.md)."""

    basic_weight: float = Field(0.9, ge=0, le=1)  # 基本满意 counts this much of 满意
    weights: dict[str, float] = {"response": 0.1, "resolution": 0.5, "satisfaction": 0.4}
    department_weights: dict[str, float] = {"rating": 0.6, "on_time": 0.4}
    worker_weights: dict[str, float] = {"response": 0.2, "resolution": 0.4, "satisfaction": 0.4}
    monthly_day: int = Field(1, ge=1, le=28)
    monthly_time: time = time(9, 0)

    @model_validator(mode="after")
    def _known_weights(self) -> "ReportConfig":
        for name, allowed in (("weights", {"response", "resolution", "satisfaction"}),
                              ("department_weights", {"rating", "on_time"}),
                              ("worker_weights", {"response", "resolution", "satisfaction"})):
            weights = getattr(self, name)
            unknown = sorted(set(weights) - allowed)
            if unknown:
                raise ValueError(f"{name}: unknown key {', '.join(unknown)} (allowed: "
                                 f"{', '.join(sorted(allowed))})")
            if any(w < 0 for w in weights.values()) or not sum(weights.values()) > 0:
                raise ValueError(f"{name}: weights must be at least 0 and not all 0")
        return self


class LimitsConfig(Strict):
    """Per-resident abuse limits."""

    reports_per_hour: int = Field(5, ge=1)
    messages_per_minute: int = Field(30, ge=1)


class LoggingConfig(Strict):
    """Log lines: "json" (one object a line, for collectors), "console" (for people), or
    "auto": console on a terminal, JSON otherwise."""

    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class DatabaseConfig(Strict):
    url: str = "sqlite+aiosqlite:///var/whistle.db"
    # PostgreSQL connections per process: up to 64 updates are handled at once, each in
    # its own short transaction, beside the sender and the scheduler (SQLite: unused)
    pool_size: int = Field(20, ge=1)
    max_overflow: int = Field(10, ge=0)


class IntakeConfig(Strict):
    min_description: int = Field(10, ge=1)
    max_description: int = Field(1000, ge=10, le=3500)
    max_photos: int = Field(3, ge=0, le=10)
    max_photo_bytes: int = Field(10_000_000, ge=10_000)
    # refused from the header, before anything is decoded (decoding costs about 3-4 bytes
    # a pixel); Pillow's own decompression-bomb guard is set to it too
    max_photo_pixels: int = Field(40_000_000, ge=1_000_000, le=500_000_000)
    max_note: int = Field(1000, ge=10, le=3500)


class SenderConfig(Strict):
    """Telegram's limits: ~30 messages/s per bot, ~1/s per private chat, 20/min per group."""

    per_second: float = Field(30, gt=0)
    private_per_second: float = Field(1, gt=0)
    private_burst: int = Field(8, ge=1)
    group_per_minute: float = Field(20, gt=0)
    group_burst: int = Field(10, ge=1)
    max_attempts: int = Field(8, ge=1)
    # What a Telegram edit in place counts against these budgets. Telegram documents its
    # limits for messages sent; its Bot API maintainers say edits share them, one each
    # (docs/reliability.md). Raise it only if edits meet 429s where sends do not.
    edit_cost: int = Field(1, ge=1, le=4)
    # Budgets are shared by every process through the database: a chat may get ``burst``
    # messages in any ``burst / rate`` seconds, the bot ``per_second`` in any second.
    margin: float = Field(0.005, ge=0, le=5)  # seconds added to each window (clock granularity)
    lease_seconds: float = Field(60, ge=5)  # a process delivers a chat's head this long at most
    concurrency: int = Field(16, ge=1, le=200)  # chats one process sends to at once
    alert_minutes: float = Field(60, gt=0)  # at most one failure alert per chat this often


class Timers(Strict):
    """Deadlines of one order type: claim (response), on site, resolve, progress interval.
    A span is a number and a unit: m, h, d (calendar) or wh, wd (working hours, days)."""

    claim: Span
    onsite: Span | None = None
    resolve: Span
    progress: Span | None = None


class TimerOverride(Strict):
    claim: Span | None = None
    onsite: Span | None = None
    resolve: Span | None = None
    progress: Span | None = None


class Deadlines(Strict):
    emergency: Timers = Timers(claim="10m", onsite="30m", resolve="24h")
    routine: Timers = Timers(claim="2wh", resolve="5wd")
    key: Timers = Timers(claim="1wh", progress="1wd", resolve="15wd")
    resolve_grace: Span = Span.parse("4wh")  # after a missed resolve deadline, escalate
    vote_reminder: Span = Span.parse("24h")  # remind a resident who has not voted
    vote_close: Span = Span.parse("72h")  # then close as unrated
    vote_change: Span = Span.parse("14d")  # a vote may be changed this long
    quiet_start: time = time(22, 0)  # hold back all but emergency orders …
    quiet_end: time = time(7, 0)  # … until here
    board_max_age: Span = Span.parse("24h")  # post a fresh overdue board after this


class CalendarConfig(Strict):
    """Working time: the working periods of a working day, China's public holidays and
    adjusted working days (chinesecalendar), and local exceptions."""

    hours: list[tuple[time, time]] = [(time(9, 0), time(12, 0)), (time(13, 0), time(18, 0))]
    use_chinese_calendar: bool = True
    extra_holidays: list[date] = []
    extra_workdays: list[date] = []


class Schedule(Strict):
    enabled: bool = True  # run the sweep and the digest in this process
    sweep_seconds: int = Field(30, ge=5, le=3600)
    digest_time: time = time(8, 30)
    command_centre_unit: str | None = None  # unit code; default: the district


class NearbyConfig(Strict):
    """"Me too": open reports of the same category offered before filing a new one."""

    radius_m: float = Field(250, gt=0, le=5000)
    days: int = Field(30, ge=1)
    limit: int = Field(5, ge=1, le=8)


class PrivacyConfig(Strict):
    photo_max_side: int = Field(2048, ge=256)  # photos are scaled down to this long side
    photo_retention_days: int = Field(0, ge=0)  # delete photos of closed tickets after N days; 0 = keep


class Category(Strict):
    code: str = Field(pattern=r"^[a-z0-9_-]{1,24}$")
    name: str
    name_en: str
    klass: Literal["enforcement", "request"] = Field(alias="class")
    order_type: Literal["emergency", "routine", "key"] = "routine"
    deadlines: TimerOverride = TimerOverride()
    public_exact: bool = False  # Open311 publishes a chat report's exact point (e.g. street lights)


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
    deadlines: Deadlines = Deadlines()
    calendar: CalendarConfig = CalendarConfig()
    schedule: Schedule = Schedule()
    nearby: NearbyConfig = NearbyConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    web: WebConfig = WebConfig()
    wecom: WecomConfig = WecomConfig()
    dashboard: DashboardConfig = DashboardConfig()
    open311: Open311Config = Open311Config()
    report: ReportConfig = ReportConfig()
    limits: LimitsConfig = LimitsConfig()
    logging: LoggingConfig = LoggingConfig()
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

    @model_validator(mode="after")
    def _webhook_needs_web_server(self) -> "Config":
        if self.telegram.mode == "webhook" and not self.web.enabled:
            raise ValueError("telegram.mode = \"webhook\" needs the web server ([web] enabled)")
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def category(self, code: str) -> Category | None:
        return next((c for c in self.categories if c.code == code), None)

    def timers_for(self, order_type: str, category: str) -> dict[str, Span]:
        """The deadlines of an order type, with the category's overrides applied."""
        spans = getattr(self.deadlines, order_type).model_dump(exclude_none=True)
        cat = self.category(category)
        if cat is not None:
            spans.update(cat.deadlines.model_dump(exclude_none=True))
        return {kind: value if isinstance(value, Span) else Span.parse(str(value))
                for kind, value in spans.items()}


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
            if not isinstance(raw.setdefault(section, {}), dict):
                raise ConfigError(f"config file {path} is invalid:\n  {section}: must be a "
                                  f"[{section}] table (overridden by {var})")
            raw[section][key] = env[var]
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
