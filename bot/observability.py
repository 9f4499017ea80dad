"""What an operator sees of a running process: structured logs, ``/healthz`` and ``/metrics``.

Logs: the code logs through the standard ``logging`` module; structlog renders every
record (ours and the libraries') as one JSON object a line, or readably on a terminal,
and adds what ``structlog.contextvars`` holds for the task at hand — the update, chat
and ticket being handled (bound by the Telegram handlers and by ``models.tickets.actions``).
A traceback shows the code and the exception, never the frames' local variables, and one
processor (``Redactor``) masks secrets and phone numbers in the message, every field and
the rendered exception: logs go to journald, Docker and log shippers.

Metrics: a per-service ``CollectorRegistry``. Counters and the sweep histogram count what
*this* process did (Prometheus adds the processes up); the outbox and ticket figures are
read from the database at scrape time, so they are the same whichever process answers —
they are gauges, since rows are also pruned and change state."""
from __future__ import annotations

import asyncio
import hmac
import logging
import re
import sys
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

import structlog
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select, text

from models.logs import secrets_in_hand
from models.residents.privacy import FORGOTTEN
from models.store.tables import Outbox, Ticket

if TYPE_CHECKING:
    from bot.app import Whistle
    from bot.config import Config, LoggingConfig
    from models.inputs import Reply
    from models.store.db import Database

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- logs

MASK = "[redacted]"
# What a secret or a phone number looks like where no configuration names it. A group
# named ``keep`` is kept (the name in ``token=…``), the rest of the match is masked.
PATTERNS = [
    # a Telegram bot token, alone or in a Bot API URL (…/bot<token>/sendMessage)
    r"(?<![0-9])[0-9]{5,}:[A-Za-z0-9_-]{30,}",
    # an Open311 API key (bot/open311/keys.py)
    r"w311_[A-Za-z0-9_-]{10,}",
    # secrets in URLs, forms and reprs: ?access_token=…, corpsecret=…, token='…', key=…
    (r"(?P<keep1>(?<![A-Za-z0-9_])(?i:api_key|access_token|corpsecret|secret|secret_token"
     r"|token|metrics_token|password|passwd|csrf|csrf_token|encoding_aes_key"
     r"""|whistle_session)['"]?\s*[=:]\s*['"]?|(?<![A-Za-z0-9_])key=)"""
     r"""(?!\[redacted\])[^\s&'",;)\]}>]+"""),
    # credentials in an HTTP header or a URL (postgresql://user:password@host)
    r"(?P<keep2>(?i:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{6,}",
    r"(?P<keep3>://[^/\s:@]+:)[^/\s@]+(?=@)",
    # phone numbers: a Chinese mobile (138 1234 5678, +86 13812345678) …
    r"(?<![0-9])(?:\+?86[ -]?)?1[3-9][0-9](?:[ -]?[0-9]{4}){2}(?![0-9])",
    # … and any number in international form (+44 7911 123456)
    r"(?<![0-9A-Za-z+])\+[1-9][0-9]{0,2}[ -]?[0-9](?:[ -]?[0-9]){6,13}(?![0-9])",
]
PLAIN = (int, float, bool, type(None), datetime, date, timedelta)
OURS = frozenset({"level", "logger", "timestamp"})  # written by our processors: nothing secret
SHORTEST = 6  # no secret or pattern is shorter


def _mask(match: re.Match) -> str:
    kept = match["keep1"] or match["keep2"] or match["keep3"] or ""
    return kept + MASK


class Redactor:
    """The last processor before rendering: masks the secrets it was told about (the
    configuration's, see ``secrets_of``), those the task at hand holds
    (``models.logs.keep_out_of_logs``: a password, a session cookie, an API key) and
    whatever ``PATTERNS`` recognise, in the message, every field and the exception
    (already rendered to text or to structured frames by then). One scan a text: the
    known secrets (longest first) and the patterns are one regular expression."""

    def __init__(self) -> None:
        self.known: set[str] = set()
        self._pattern = self._compile()

    def add(self, values: Iterable[str | None]) -> None:
        new = {v for v in values if v and len(v) >= SHORTEST} - self.known
        if new:
            self.known |= new
            self._pattern = self._compile()

    def _compile(self) -> re.Pattern:
        known = [re.escape(v) for v in sorted(self.known, key=len, reverse=True)]
        return re.compile("|".join(known + PATTERNS))

    def text(self, value: str) -> str:
        if len(value) < SHORTEST:
            return value
        for secret in secrets_in_hand():
            value = value.replace(secret, MASK)
        return self._pattern.sub(_mask, value)

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, PLAIN):
            return value
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self.value(item) for item in value]
        return self.text(str(value))  # what the renderer would show of it

    def __call__(self, logger: Any, method: str, event_dict: dict) -> dict:
        return {key: item if key in OURS else self.value(item)
                for key, item in event_dict.items()}


REDACT = Redactor()


def secrets_of(config: Config) -> list[str]:
    """The secrets a configuration holds: they are masked in every log line."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError
    try:
        db_password = make_url(config.database.url).password
    except (ArgumentError, ValueError):  # a URL the database layer will refuse on its own
        db_password = None
    return [config.telegram.token, config.telegram.secret_token, config.wecom.secret,
            config.wecom.token, config.wecom.encoding_aes_key, config.web.metrics_token,
            *config.wecom.digest_webhooks.values(), db_password]


def configure_logging(config: LoggingConfig | None = None, *, stream: TextIO | None = None,
                      verbose: bool = False) -> logging.Handler:
    """Route every ``logging`` record through structlog: JSON lines when the output is
    not a terminal (or ``format = "json"``), coloured key=value lines on a terminal.
    Replaces a handler installed by an earlier call; returns the new one."""
    stream = stream if stream is not None else sys.stderr
    fmt = config.format if config is not None else "auto"
    as_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    level = logging.DEBUG if verbose else getattr(logging, config.level if config else "INFO")
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # Tracebacks are rendered before the redaction, as frames (JSON) or plain text (console),
    # without local variables: a frame's locals hold the bot (its token), the config, the
    # update (a resident's text and phone number), the request's form.
    if as_json:
        tracebacks = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False, default=str)
    else:
        tracebacks = structlog.processors.format_exc_info
        renderer = structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, tracebacks,
                    REDACT, renderer])
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.whistle = True  # type: ignore[attr-defined]  # ours, replaced on the next call
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "whistle", False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # Debug lines that repeat what residents wrote: aiosqlite's (every statement with its
    # parameters: texts, session and CSRF tokens) and python-telegram-bot's (every Bot API
    # call with its parameters and answer, every update: names, texts, shared phone numbers)
    for chatty in ("aiosqlite", "telegram"):
        logging.getLogger(chatty).setLevel(logging.INFO)
    structlog.configure(
        processors=[*shared[:1], structlog.stdlib.filter_by_level, *shared[1:],
                    structlog.stdlib.PositionalArgumentsFormatter(),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True)
    return handler


# ---------------------------------------------------------------------------- metrics

CHATS_SHOWN = 50  # chats with a backlog in /metrics, the longest queues first


class Metrics:
    """This service's metrics. ``refresh`` reads the shared figures from the database;
    ``render`` writes the Prometheus text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.updates = Counter(
            "whistle_updates_handled", "Updates (messages, button presses) this process handled; "
            "outcome: handled, duplicate (a redelivery, nothing done) or failed",
            ["channel", "outcome"], registry=self.registry)
        self.sweep_seconds = Histogram(
            "whistle_sweep_duration_seconds", "Time one deadline sweep took in this process",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry)
        self.snapshot = _DatabaseCollector()
        self.registry.register(self.snapshot)

    def update_handled(self, channel: str, reply: Reply | None) -> None:
        outcome = "failed" if reply is None else "duplicate" if reply.duplicate else "handled"
        self.updates.labels(channel=channel, outcome=outcome).inc()

    def observe_sweep(self, seconds: float) -> None:
        self.sweep_seconds.observe(seconds)

    async def refresh(self, db: Database, now: datetime, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            self.snapshot.figures = await db.run(lambda s: _read_figures(s, now))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _DatabaseCollector(Collector):
    """Gauges from the last ``refresh``: the same in every process, so sum() over processes
    is wrong for them — use max() or any one."""

    def __init__(self) -> None:
        self.figures: dict[str, Any] | None = None

    def describe(self):
        return []  # values exist only after a refresh; nothing to check at registration

    def collect(self):
        figures = self.figures
        if figures is None:
            return
        outbox = figures["outbox"]
        for name, state, help_text in (
                ("whistle_outbox_sent", "sent", "Messages delivered (rows in the outbox)"),
                ("whistle_outbox_failed", "failed", "Messages given up on (refused, or too many tries)"),
                ("whistle_outbox_dropped", "dropped",
                 "Messages not sent because the resident erased their data (/forget)"),
                ("whistle_outbox_uncertain", "uncertain",
                 "Messages that may not have arrived or may show twice: the answer was lost, "
                 "or they were sent again after a crash"),
                ("whistle_outbox_queue_depth", "pending", "Messages waiting to be sent")):
            yield GaugeMetricFamily(name, help_text, value=outbox.get(state, 0))
        yield GaugeMetricFamily("whistle_outbox_retried",
                                "Messages that needed more than one try (any state)",
                                value=figures["retried"])
        yield GaugeMetricFamily("whistle_sender_lag_seconds",
                                "Age of the oldest message still waiting to be sent (0: none)",
                                value=figures["lag"])
        backlog = GaugeMetricFamily(
            "whistle_chat_backlog", f"Messages waiting to be sent, per chat (the {CHATS_SHOWN} "
            "chats with the most)", labels=["channel", "chat"])
        age = GaugeMetricFamily(
            "whistle_chat_backlog_age_seconds", "Age of the oldest message waiting to be sent, "
            "per chat (the same chats)", labels=["channel", "chat"])
        for channel, chat, count, seconds in figures["chats"]:
            backlog.add_metric([channel, chat], count)
            age.add_metric([channel, chat], seconds)
        yield backlog
        yield age
        tickets = GaugeMetricFamily("whistle_tickets", "Tickets by state", labels=["state"])
        for state, count in sorted(figures["tickets"].items()):
            tickets.add_metric([state], count)
        yield tickets


async def _read_figures(session, now: datetime) -> dict[str, Any]:
    outbox: dict[str, int] = {}
    retried = 0
    doubted = 0
    rows = await session.execute(select(
        Outbox.state, func.count(), func.sum(case((Outbox.attempts > 0, 1), else_=0)),
        func.sum(case((Outbox.doubt.is_not(None) & (Outbox.state == "sent"), 1), else_=0)),
        func.sum(case((Outbox.error == FORGOTTEN, 1), else_=0)))
        .group_by(Outbox.state))
    for state, count, with_retries, with_doubt, forgotten in rows:
        outbox[state] = count
        retried += int(with_retries or 0)
        doubted += int(with_doubt or 0)
        if state == "failed":  # dropped for a /forget: nothing went wrong
            outbox["dropped"] = int(forgotten or 0)
            outbox[state] -= outbox["dropped"]
    # sent again after a crash: they may show twice, so they count as uncertain too
    outbox["uncertain"] = outbox.get("uncertain", 0) + doubted
    tickets = dict((await session.execute(
        select(Ticket.state, func.count()).group_by(Ticket.state))).all())
    chats = [(channel, chat, count, max(now - oldest, timedelta(0)).total_seconds())
             for channel, chat, count, oldest in await session.execute(
                 select(Outbox.channel, Outbox.chat_id, func.count(), func.min(Outbox.created_at))
                 .where(Outbox.state == "pending").group_by(Outbox.channel, Outbox.chat_id)
                 .order_by(func.count().desc(), Outbox.channel, Outbox.chat_id)
                 .limit(CHATS_SHOWN))]
    return {"outbox": outbox, "retried": retried, "tickets": tickets, "chats": chats,
            "lag": (await sender_lag(session, now)).total_seconds()}


async def sender_lag(session, now: datetime) -> timedelta:
    """How long the oldest pending message has waited (by the pending index)."""
    oldest = await session.scalar(select(Outbox.created_at).where(Outbox.state == "pending")
                                  .order_by(Outbox.id).limit(1))
    return max(now - oldest, timedelta(0)) if oldest is not None else timedelta(0)


# ---------------------------------------------------------------------------- web faces

async def check_health(whistle: Whistle) -> tuple[bool, dict[str, Any]]:
    """This process is healthy when the database answers (``SELECT 1`` within ``[web]
    health_db_timeout``) and its own sender makes progress on what it may send now: no
    pass failing or hanging, and no send under way, for longer than
    ``health_max_sender_lag``.
    The age of the oldest waiting message is told (``sender_lag_seconds``), not judged:
    a chat waiting for Telegram's limit (a grid's group at 20 a minute, a "retry after")
    is not a sick process, and would otherwise fail every process at once. /metrics shows
    the backlog per chat."""
    now, web_config = whistle.core.now(), whistle.config.web
    timeout, max_lag = web_config.health_db_timeout, web_config.health_max_sender_lag

    async def probe(session):
        await session.execute(text("SELECT 1"))
        return await sender_lag(session, now)
    try:
        async with asyncio.timeout(timeout):
            lag = await whistle.db.run(probe, urgent=True)  # not behind a burst (SQLite)
    except TimeoutError:
        return False, {"status": "unhealthy", "database": f"no answer within {timeout:g} s"}
    except Exception as exc:  # any failure to reach the database is the answer itself
        return False, {"status": "unhealthy", "database": f"unreachable: {type(exc).__name__}"}
    body: dict[str, Any] = {"database": "ok", "sender_lag_seconds": round(lag.total_seconds(), 3),
                            "max_sender_lag_seconds": max_lag, "sender": "ok"}
    healthy = True
    if whistle.sender is not None:
        stalled = whistle.sender.stalled(now).total_seconds()
        body["sender_stalled_seconds"] = round(stalled, 3)
        if stalled > max_lag:
            healthy = False
            body["sender"] = f"no progress for {stalled:.0f} s"
    body["status"] = "ok" if healthy else "unhealthy"
    return healthy, body


async def healthz(request: web.Request) -> web.Response:
    from bot.web import whistle_of
    healthy, body = await check_health(whistle_of(request))
    if not healthy:
        log.warning("health check failed: %s", body)
    return web.json_response(body, status=200 if healthy else 503)


def scraper_allowed(request: web.Request, token: str) -> bool:
    """No token configured: open (bind the server to a private address). Else the bearer
    token, compared in constant time."""
    if not token:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


async def metrics(request: web.Request) -> web.Response:
    from bot.web import whistle_of
    whistle = whistle_of(request)
    if not scraper_allowed(request, whistle.config.web.metrics_token):
        return web.Response(status=401, text="401: a bearer token is required for /metrics",
                            headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    try:
        await whistle.metrics.refresh(whistle.db, whistle.core.now(),
                                      whistle.config.web.health_db_timeout)
    except Exception as exc:  # the process's own counters are still worth scraping
        log.warning("metrics: database figures unavailable (%s)", type(exc).__name__)
        whistle.metrics.snapshot.figures = None
    return web.Response(body=whistle.metrics.render(),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
