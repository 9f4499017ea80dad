"""Shared pieces of the benchmarks: a throw-away database, a bench config, the fake
Telegram with arrival times, simulated residents, a bot in a subprocess, bulk inserts.

Every script runs from a fresh checkout (``.venv/bin/python bench/NAME.py``) and
cleans up what it creates: SQLite lives in a temporary folder, PostgreSQL in a
database ``whistle_bench_<random>`` created and dropped on 127.0.0.1:5432."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import signal
import sys
import tempfile
import time
import tomllib
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import date, datetime, time as dtime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from bot.config import Config, load_config  # noqa: E402
from sandbox.botapi import FakeBotApi  # noqa: E402

TOKEN = "123456:BENCH-TOKEN"
PG_BASE = os.environ.get("WHISTLE_BENCH_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
EXAMPLE = ROOT / "config.example.toml"
DISTRICT = ROOT / "samples" / "district"
HIGH = 1_000_000  # "no limit" for the sender and abuse limits where Telegram's must not dominate


# ---- the header every script prints ---------------------------------------------------------

def header(note: str = "") -> None:
    """The command line, the machine and the load on it (other work may share the 2 cores)."""
    # figures only: warnings the run provokes on purpose (faults, kills) stay out of them
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    # a killed bot leaves half-read requests behind; aiohttp would log each as an error
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    load = os.getloadavg()
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT).as_posix() if script.is_relative_to(ROOT) else sys.argv[0]
    print("command: .venv/bin/python " + " ".join([shown, *sys.argv[1:]]))
    print(f"machine: {os.cpu_count()} cores, {platform.python_implementation()} "
          f"{platform.python_version()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    if note:
        print(note)


def load_now() -> str:
    return f"load average now {os.getloadavg()[0]:.2f}"


# ---- databases -------------------------------------------------------------------------------

async def _pg_admin(*statements: str) -> None:
    engine = create_async_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def temp_database(kind: str):
    """Yield the URL of a new, empty database ("sqlite" or "postgres"), removed afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="whistle-bench-") as folder:
            yield f"sqlite+aiosqlite:///{folder}/bench.db"
        return
    if kind != "postgres":
        raise ValueError(f"--db must be sqlite or postgres, not {kind!r}")
    name = f"whistle_bench_{uuid.uuid4().hex[:10]}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield PG_BASE.rsplit("/", 1)[0] + "/" + name
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---- configuration ---------------------------------------------------------------------------

def raw_config(url: str, api: FakeBotApi, workdir: Path, *, telegram_limits: bool = False,
               schedule: bool = False) -> dict[str, Any]:
    """config.example.toml as a dict, pointed at the fake server and the bench database.

    Unless ``telegram_limits``, the sender's limits are set far above Telegram's (as
    tests/conftest.py does) so that what is measured is Whistle, not the rate limiter;
    the per-resident abuse limits are lifted too (simulated residents file a lot)."""
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    raw["org_file"] = str(DISTRICT / "district.toml")
    raw["media_dir"] = str(workdir / "media")
    raw["telegram"].update(token=TOKEN, base_url=api.base_url, base_file_url=api.base_file_url,
                           poll_timeout=1, mode="polling")
    raw["database"] = {"url": url}
    if not telegram_limits:
        raw["sender"].update(per_second=HIGH, private_burst=HIGH, group_burst=HIGH,
                             private_per_second=HIGH, group_per_minute=HIGH)
    raw.setdefault("limits", {}).update(reports_per_hour=HIGH, messages_per_minute=HIGH)
    raw.setdefault("schedule", {})["enabled"] = schedule
    raw.setdefault("web", {})["enabled"] = False
    return raw


def make_config(raw: dict[str, Any], workdir: Path) -> Config:
    path = write_toml(raw, workdir / "config.toml")
    return load_config(path, env={})


def write_toml(data: dict[str, Any], path: Path) -> Path:
    """A TOML file from plain values: every table written inline, which TOML allows."""
    path.write_text("".join(f"{_key(k)} = {_toml(v)}\n" for k, v in data.items()), encoding="utf-8")
    return path


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() and key.isascii() else json.dumps(key)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, datetime | date | dtime):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


# ---- the fake Telegram ------------------------------------------------------------------------

def district_chats() -> dict[str, int]:
    """Unit code → bound Telegram group id, from the sample district."""
    spec = tomllib.loads((DISTRICT / "district.toml").read_text(encoding="utf-8"))
    return {chat["unit"]: chat["telegram"] for chat in spec.get("chats", []) if "telegram" in chat}


def grid_points() -> dict[str, tuple[float, float]]:
    """Grid code → a (lat, lon) point well inside it."""
    from shapely.geometry import shape
    features = json.loads((DISTRICT / "grids.geojson").read_text(encoding="utf-8"))["features"]
    points = {}
    for feature in features:
        point = shape(feature["geometry"]).representative_point()
        points[feature["properties"]["code"]] = (point.y, point.x)
    return points


def staff_ids() -> list[int]:
    """Telegram ids of the sample district's staff (they must exist as fake users)."""
    spec = tomllib.loads((DISTRICT / "district.toml").read_text(encoding="utf-8"))
    return [p["telegram_id"] for p in spec.get("people", []) if "telegram_id" in p]


async def fake_telegram() -> FakeBotApi:
    """The fake Bot API on 127.0.0.1 with the district's groups and staff."""
    api = FakeBotApi(TOKEN)
    await api.start()
    for unit, chat in district_chats().items():
        api.add_group(chat, f"group {unit}")
    for user in staff_ids():
        api.add_user(user, f"staff {user}")
    return api


class Arrivals:
    """Bot messages as the fake server stores them, each with its arrival time
    (``time.perf_counter()`` taken in the server's handler), awaited without polling."""

    def __init__(self, api: FakeBotApi):
        self.api = api
        self.waiters: dict[int, list[tuple[Callable[[dict], bool], asyncio.Future]]] = defaultdict(list)
        self.watchers: list[Callable[[dict, float], None]] = []
        self.bot_id = api.bot_user["id"]
        api.listen(self._on_event)

    def _on_event(self, event: dict) -> None:
        if event["type"] != "message" or event["message"].get("from", {}).get("id") != self.bot_id:
            return
        at = time.perf_counter()
        message = event["message"]
        for watcher in self.watchers:
            watcher(message, at)
        waiting = self.waiters.get(event["chat_id"])
        if not waiting:
            return
        for entry in list(waiting):
            predicate, future = entry
            if not future.done() and predicate(message):
                future.set_result((message, at))
                waiting.remove(entry)

    def expect(self, chat_id: int, predicate: Callable[[dict], bool] = lambda m: True) -> asyncio.Future:
        """A future for the next new bot message in the chat matching ``predicate``; call it
        before the action that causes the message."""
        future = asyncio.get_running_loop().create_future()
        self.waiters[chat_id].append((predicate, future))
        return future

    def forget(self, chat_id: int, future: asyncio.Future) -> None:
        self.waiters[chat_id] = [(p, f) for p, f in self.waiters[chat_id] if f is not future]


def body(message: dict | None) -> str:
    return (message or {}).get("text") or (message or {}).get("caption") or ""


def buttons(message: dict | None) -> list[str]:
    markup = (message or {}).get("reply_markup") or {}
    return [b.get("callback_data") or "" for row in markup.get("inline_keyboard", []) for b in row]


def has_button(prefix: str) -> Callable[[dict], bool]:
    return lambda m: any(d == prefix or d.startswith(prefix + ":") or d.startswith(prefix)
                         for d in buttons(m))


class StepLost(Exception):
    """The bot never answered a step of the dialogue."""


class Resident:
    """A simulated resident filing complete reports in English, step by step, each step
    waiting for the bot's answer (as a person would)."""

    def __init__(self, api: FakeBotApi, arrivals: Arrivals, user_id: int, *,
                 timeout: float = 30.0, retry: bool = False):
        self.api, self.arrivals, self.id = api, arrivals, user_id
        self.timeout, self.retry = timeout, retry
        self.updates = 0  # updates this resident sent
        self.retried = 0  # steps sent a second time because no answer came
        api.add_user(user_id, f"resident {user_id}", language_code="en")

    async def step(self, action: Callable[[], Any], predicate: Callable[[dict], bool]) -> tuple[dict, float]:
        """Do ``action`` and wait for the matching answer; (message, arrival time)."""
        for attempt in (1, 2):
            future = self.arrivals.expect(self.id, predicate)
            action()
            self.updates += 1
            try:
                return await asyncio.wait_for(future, self.timeout)
            except TimeoutError:
                self.arrivals.forget(self.id, future)
                if os.environ.get("BENCH_DEBUG"):
                    last = [body(m)[:40] for m in self.api.messages(self.id)[-4:]]
                    print(f"  [{time.strftime('%X')}] resident {self.id} attempt {attempt} timed out; "
                          f"chat ends with {last}", flush=True)
                if not self.retry or attempt == 2:
                    raise StepLost(f"resident {self.id}: no answer within {self.timeout:.0f} s") from None
                self.retried += 1
        raise AssertionError("unreachable")

    def send(self, text: str) -> Callable[[], Any]:
        return lambda: self.api.user_sends_text(self.id, self.id, text)

    def press(self, message: dict, data: str) -> Callable[[], Any]:
        return lambda: self.api.user_presses(self.id, self.id, message["message_id"], data)

    async def report(self, point: tuple[float, float], description: str, category: str = "garbage",
                     on_confirm: Callable[[], None] | None = None) -> tuple[str, float, float]:
        """One complete report; returns (ticket number, time of the confirm press, time the
        answer with the number arrived)."""
        msg, _ = await self.step(self.send("/start"), has_button("cat:"))
        await self.step(self.press(msg, f"cat:{category}"), lambda m: True)
        msg, _ = await self.step(self.send(description), has_button("ph:"))
        await self.step(self.press(msg, "ph:done"), has_button("lc:"))
        msg, _ = await self.step(lambda: self.api.user_sends_location(self.id, self.id, *point),
                                 lambda m: "contact you" in body(m) or "mn" in buttons(m))
        if "mn" in buttons(msg):  # "me too?" offered: file a new report anyway
            await self.step(self.press(msg, "mn"), lambda m: "contact you" in body(m))
        msg, _ = await self.step(self.send("🙈 Stay anonymous"), has_button("cf"))
        confirmed = time.perf_counter()
        if on_confirm is not None:
            on_confirm()
        done, answered = await self.step(self.press(msg, "cf"), lambda m: "ticket number is" in body(m))
        return ticket_number(done), confirmed, answered

    async def echo(self, text: str) -> None:
        await self.step(self.send(text), lambda m: body(m) == text)


def ticket_number(message: dict) -> str:
    return body(message).split("ticket number is ")[1].split(".")[0].split()[0]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


# ---- the bot as a real process -----------------------------------------------------------------

class BotProcess:
    """``python -m bot --config FILE run`` in a subprocess (its output in a log file)."""

    def __init__(self, config_path: Path, log_path: Path, api: FakeBotApi):
        self.config_path, self.log_path, self.api = config_path, log_path, api
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self, ready_timeout: float = 60.0) -> None:
        """Start and wait until it polls the fake server for updates."""
        polls = self._polls()
        log = open(self.log_path, "ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "--config", str(self.config_path), "run",
            cwd=ROOT, stdout=log, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        self.starts += 1
        deadline = time.monotonic() + ready_timeout
        while self._polls() <= polls:
            if self.proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the bot did not start; see {self.log_path}:\n"
                                   + self.log_path.read_text(errors="replace")[-3000:])
            await asyncio.sleep(0.05)

    def _polls(self) -> int:
        return sum(1 for name, _ in self.api.requests if name == "getUpdates")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def kill(self) -> None:
        """kill -9: no cleanup of any kind."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> None:
        """A clean stop (SIGTERM), the way an operator stops it."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                await self.kill()


# ---- bulk rows ---------------------------------------------------------------------------------

async def bulk_insert(session, table, rows: list[dict[str, Any]]) -> None:
    """Insert many rows fast: COPY on PostgreSQL, executemany on SQLite. Rows carry every
    column they need (no Python-side defaults are applied) and naive UTC datetimes."""
    if not rows:
        return
    columns = list(rows[0])
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        raw = await conn.get_raw_connection()
        await raw.driver_connection.copy_records_to_table(
            table.__tablename__, records=[tuple(r[c] for c in columns) for r in rows],
            columns=columns)
    else:
        placeholders = ", ".join("?" for _ in columns)
        await conn.exec_driver_sql(
            f"INSERT INTO {table.__tablename__} ({', '.join(columns)}) VALUES ({placeholders})",
            [tuple(_sqlite_value(r[c]) for c in columns) for r in rows])


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite format
    return value


async def fix_sequences(session, *tables: str) -> None:
    """After rows with explicit ids: move PostgreSQL's id sequences past them."""
    conn = await session.connection()
    if conn.dialect.name != "postgresql":
        return
    for table in tables:
        await conn.exec_driver_sql(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"(SELECT COALESCE(MAX(id), 1) FROM {table}))")


async def analyze(db) -> None:
    """Fresh planner statistics after a bulk load (autovacuum would do it a little later)."""
    async with db.engine.connect() as conn:
        if db.dialect == "postgresql":
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("ANALYZE")
        else:
            await conn.exec_driver_sql("ANALYZE")
            await conn.commit()
