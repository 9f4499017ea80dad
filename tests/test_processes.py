"""Real bot processes (``python -m bot --config X run``) behind one webhook.

On PostgreSQL three processes share one database; a round-robin forwarder in front of
them (a load balancer) hands each update Telegram posts to the next process, so one
resident's dialogue hops from process to process. On SQLite the same test runs one
process: SQLite is for a single process (docs/deploy.md), so this half checks the
command-line service in webhook mode end to end.

Checked: every update handled once (also when the same update is posted to two
processes at once), every dialogue continues whichever process gets the next step, the
daily digest runs once however many processes start, each due ticket is swept once, no
message is sent twice, and every process stops cleanly on SIGTERM."""
from __future__ import annotations

import asyncio
import copy
import itertools
import json
import os
import re
import signal
import socket
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, update

from bot.app import Whistle
from bot.config import load_config
from models.store.db import Database
from models.deadlines.periods import previous_month
from models.store.tables import ChatBinding, Inbox, JobRun, Outbox, Ticket, TicketEvent, Timer
from scheduler.jobs import MONTHLY, claim_run, run_sweep
from tests.conftest import PG_ENV, ROOT, TOKEN
from tests.flows import G02, G02_CHAT, claim, file_report

SECRET = "processes-test-secret"
HEADER = "X-Telegram-Bot-Api-Secret-Token"
PROCESSES = 3 if os.environ.get(PG_ENV) else 1
CHIEF_G01 = 1001
SEND_METHODS = {"sendMessage", "sendPhoto", "sendMediaGroup", "sendLocation", "sendDocument"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Forwarder:
    """A round-robin load balancer: each POST goes to the next process, status passed back."""

    backends: list[str] = field(default_factory=list)
    log: list[tuple[int, int, int]] = field(default_factory=list)  # (update id, backend, status)
    bodies: dict[int, bytes] = field(default_factory=dict)
    _turn: itertools.count = field(default_factory=itertools.count)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/{path:.*}", self.forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._session = aiohttp.ClientSession()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        index = next(self._turn) % len(self.backends)
        update_id = json.loads(body).get("update_id", -1)
        self.bodies[update_id] = body
        try:
            async with self._session.post(self.backends[index] + request.path, data=body, headers={
                    HEADER: request.headers.get(HEADER, ""),
                    "Content-Type": "application/json"}) as answer:
                status, text = answer.status, await answer.text()
        except aiohttp.ClientError:
            status, text = 502, "backend down"
        self.log.append((update_id, index, status))
        return web.Response(status=status, text=text)

    async def stop(self) -> None:
        await self._session.close()
        await self._runner.cleanup()


def write_config(tmp_path: Path, api, webhook_url: str, port: int, name: str) -> Path:
    """The example config, pointed at the fake Telegram, in webhook mode on ``port``; the
    sweep every 5 s, no quiet hours, the digest due since midnight (so every process
    tries to catch it up at start)."""
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    for key, value in {
        "org_file": f'"{ROOT / "samples/district/district.toml"}"',
        "media_dir": f'"{tmp_path / "media"}"',
        "base_url": f'"{api.base_url}"', "base_file_url": f'"{api.base_file_url}"',
        "mode": f'"webhook"\nwebhook_url = "{webhook_url}"',
        "port": str(port), "sweep_seconds": "5", "digest_time": "00:00:00",
        "quiet_start": "00:00:00", "quiet_end": "00:00:00",
        "format": '"json"', "level": '"INFO"',
        "private_burst": "100", "group_burst": "100",
    }.items():
        text, found = re.subn(rf"^{key} = .*$", lambda _: f"{key} = {value}", text, count=1,
                              flags=re.M)
        assert found == 1, key
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class BotProcess:
    name: str
    port: int
    config: Path
    log: Path
    proc: asyncio.subprocess.Process | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def start_processes(tmp_path, api, database_url, forwarder_url) -> list[BotProcess]:
    env = {**os.environ, "WHISTLE_TELEGRAM_TOKEN": TOKEN, "WHISTLE_DATABASE_URL": database_url,
           "WHISTLE_TELEGRAM_SECRET_TOKEN": SECRET, "PYTHONUNBUFFERED": "1"}
    processes = []
    for n in range(PROCESSES):
        port = free_port()
        name = f"bot{n}"
        config = write_config(tmp_path, api, forwarder_url + "/telegram/webhook", port, name)
        process = BotProcess(name, port, config, tmp_path / f"{name}.log")
        with open(process.log, "wb") as out:
            process.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "--config", str(config), "run",
                cwd=ROOT, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT)
        processes.append(process)
    return processes


async def until_healthy(processes: list[BotProcess], timeout: float = 90) -> None:
    """Each process answers /healthz (it is migrated, its web server and webhook are up)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession() as session:
        for process in processes:
            while True:
                if process.proc.returncode is not None:
                    raise AssertionError(f"{process.name} exited:\n{process.log.read_text()[-3000:]}")
                try:
                    async with session.get(process.origin + "/healthz") as answer:
                        if answer.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if loop.time() > deadline:
                    raise AssertionError(f"{process.name} not healthy:\n{process.log.read_text()[-3000:]}")
                await asyncio.sleep(0.1)  # polling another process's readiness, not time-driven logic


async def stop_processes(processes: list[BotProcess]) -> list[int | None]:
    for process in processes:
        if process.proc is not None and process.proc.returncode is None:
            process.proc.send_signal(signal.SIGTERM)
    codes = []
    for process in processes:
        if process.proc is None:
            codes.append(None)
            continue
        try:
            codes.append(await asyncio.wait_for(process.proc.wait(), 15))
        except TimeoutError:
            process.proc.kill()
            codes.append(await process.proc.wait())
    return codes


async def sweeps_done(processes: list[BotProcess]) -> list[float]:
    """How many sweeps each process has run, from its /metrics."""
    counts = []
    async with aiohttp.ClientSession() as session:
        for process in processes:
            async with session.get(process.origin + "/metrics") as answer:
                body = await answer.text()
            counts.append(next(sample.value for family in text_string_to_metric_families(body)
                               for sample in family.samples
                               if sample.name == "whistle_sweep_duration_seconds_count"))
    return counts


async def post_update(process: BotProcess, update: dict) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.post(process.origin + "/telegram/webhook", json=update,
                                headers={HEADER: SECRET}) as answer:
            return answer.status


def fresh_update(api, user_id: int, text: str) -> dict:
    """An update Telegram would post for ``text`` (stored in the fake chat, not queued)."""
    message = api._store_message(api._chat(user_id), api._users[user_id], {
        "text": text, "entities": [{"type": "bot_command", "offset": 0, "length": len(text)}]})
    api._last_update_id += 1
    return {"update_id": api._last_update_id, "message": copy.deepcopy(message)}


def sender_of(body: bytes) -> int | None:
    update = json.loads(body)
    for kind in ("message", "callback_query"):
        if kind in update:
            return update[kind]["from"]["id"]
    return None


async def count(db: Database, query) -> int:
    return await db.run(lambda s: s.scalar(query))


async def test_processes_behind_one_webhook(tmp_path, api, people, database_url):
    forwarder = Forwarder()
    forwarder_url = await forwarder.start()
    db = Database(database_url)
    processes: list[BotProcess] = []
    try:
        # last month's report is not under test here (tests/test_reports.py): mark it done,
        # or every process would render its charts at start, and a loaded machine stalls
        now = datetime.now(timezone.utc)
        label = previous_month(now, ZoneInfo("Asia/Shanghai")).label
        await db.run(lambda s: claim_run(s, MONTHLY, label, now))
        processes = await start_processes(tmp_path, api, database_url, forwarder_url)
        forwarder.backends = [process.origin for process in processes]
        await until_healthy(processes)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60  # the digest each process catches up at start, sent
        while not await count(db, select(func.count()).select_from(JobRun)
                              .where(JobRun.job == "digest")):
            assert loop.time() < deadline, "no process sent the digest"
            await asyncio.sleep(0.1)
        await api.wait_idle(quiet=0.5, timeout=60)
        assert api.webhook["url"] == forwarder_url + "/telegram/webhook"
        assert api.webhook["secret_token"] == SECRET
        shim = SimpleNamespace(config=load_config(processes[0].config, env={
            "WHISTLE_TELEGRAM_SECRET_TOKEN": SECRET, "WHISTLE_DATABASE_URL": database_url}), db=db)

        # 1. one resident's report: each step goes to the next process
        alice = people(9301, "Alice", "en")
        first = await file_report(api, shim, alice)
        steps = [(update_id, backend) for update_id, backend, status in forwarder.log
                 if status == 200 and sender_of(forwarder.bodies[update_id]) == alice.id]
        assert len(steps) >= 7
        assert {backend for _, backend in steps} == set(range(PROCESSES))
        if PROCESSES > 1:  # consecutive steps of the dialogue were handled by different processes
            assert all(a[1] != b[1] for a, b in zip(steps, steps[1:]))
        people(CHIEF_G01, "王建国", "zh-hans")
        await claim(api, CHIEF_G01, first)
        claimed = await db.run(lambda s: s.get(Ticket, first.id))
        assert claimed.state == "claimed" and claimed.assignee_id is not None

        # 2. four residents at once: dialogues interleave across the processes
        residents = [people(9310 + n, f"R{n}", "en") for n in range(4)]
        filed = await asyncio.gather(*(
            file_report(api, shim, resident, point=(G02[0] + n * 0.00004, G02[1]), card_chat=G02_CHAT,
                        description=f"Broken paving stones near house number {n}")
            for n, resident in enumerate(residents)))
        assert len({f.number for f in filed}) == 4
        assert await count(db, select(func.count()).select_from(Ticket)) == 5

        # 3. every update handled once: one inbox row per update, none lost, none twice
        delivered = {update_id for update_id, _, status in forwarder.log if status == 200}
        assert await count(db, select(func.count()).select_from(Inbox)) == len(delivered)
        # the same update posted again to every process at once changes nothing
        inbox_before = await count(db, select(func.count()).select_from(Inbox))
        outbox_before = await count(db, select(func.count()).select_from(Outbox))
        start_id = next(update_id for update_id, _ in steps)
        again = json.loads(forwarder.bodies[start_id])
        assert await asyncio.gather(*(post_update(p, again) for p in processes)) == [200] * PROCESSES
        assert await count(db, select(func.count()).select_from(Inbox)) == inbox_before
        assert await count(db, select(func.count()).select_from(Outbox)) == outbox_before
        # a new update posted to two processes at once: handled by exactly one of them
        chats = (alice.id, residents[0].id)
        rows_before = [await count(db, select(func.count()).select_from(Outbox)
                                   .where(Outbox.chat_id == str(chat))) for chat in chats]
        last = [api.bot_messages(chat)[-1]["message_id"] for chat in chats]
        twice, once = fresh_update(api, alice.id, "/my"), fresh_update(api, residents[0].id, "/my")
        targets = [processes[0], processes[1 % PROCESSES]]
        assert await asyncio.gather(*(post_update(p, twice) for p in targets)) == [200, 200]
        assert await post_update(processes[-1], once) == 200
        keys = [f"{api.bot_user['id']}:{u['update_id']}" for u in (twice, once)]
        assert await count(db, select(func.count()).select_from(Inbox).where(Inbox.key == keys[0])) == 1
        assert await count(db, select(func.count()).select_from(Inbox).where(Inbox.key == keys[1])) == 1
        rows_after = [await count(db, select(func.count()).select_from(Outbox)
                                  .where(Outbox.chat_id == str(chat))) for chat in chats]
        added = [after - before for before, after in zip(rows_before, rows_after)]
        assert added[0] == added[1] >= 1  # posted twice, answered as often as posted once
        for chat, ticket, after in zip(chats, (first, filed[0]), last):  # each /my list, once
            await api.wait_message(chat, after=after,
                                   predicate=lambda m, t=ticket: f"my:{t.id}" in json.dumps(m))
        await api.wait_idle(quiet=0.5, timeout=15)

        # 4. each due ticket swept once: make the four unclaimed tickets' claim deadlines due
        due = [f.id for f in filed]
        now = datetime.now(timezone.utc)

        async def make_due(session):
            await session.execute(update(Timer).where(
                Timer.ticket_id.in_(due), Timer.kind == "claim", Timer.stage == "running")
                .values(warn_at=now - timedelta(minutes=2), due_at=now - timedelta(minutes=1),
                        next_at=now - timedelta(minutes=1)))

        async def escalations(session):
            rows = await session.execute(select(TicketEvent.ticket_id, func.count()).where(
                TicketEvent.ticket_id.in_(due), TicketEvent.kind == "escalated")
                .group_by(TicketEvent.ticket_id))
            return dict(rows.all())
        await db.run(make_due)
        # the processes sweep every 5 s; three more sweepers (engines of their own, like
        # three more processes) start at the same instant to make the claims collide
        sweepers = [Whistle(shim.config) for _ in range(3)]
        try:
            results = await asyncio.gather(*(run_sweep(w.db, w.core, w.core.now())
                                             for w in sweepers))
        finally:
            for w in sweepers:
                await w.db.dispose()
        assert sum(result.escalated for result in results) <= len(due)
        deadline = loop.time() + 30  # a bound for a loaded machine; normally done at once
        while len(await db.run(escalations)) < len(due):  # some may have gone to a process
            assert loop.time() < deadline, f"not all swept: {await db.run(escalations)}"
            await asyncio.sleep(0.2)
        assert await db.run(escalations) == {ticket_id: 1 for ticket_id in due}
        deadline = loop.time() + 30  # every process sweeps, once its first 5 s are over
        while not all(n >= 1 for n in await sweeps_done(processes)):
            assert loop.time() < deadline, f"a process never swept: {await sweeps_done(processes)}"
            await asyncio.sleep(0.2)

        # 5. the digest: every process tried to catch it up at start; it ran once
        assert await count(db, select(func.count()).select_from(JobRun)
                           .where(JobRun.job == "digest")) == 1
        rows = await db.run(lambda s: s.scalars(select(Outbox)))
        digests = Counter(row.chat_id for row in rows
                          if (row.payload.get("text") or "").startswith("📰"))
        bound = await count(db, select(func.count(func.distinct(ChatBinding.chat_id)))
                            .where(ChatBinding.channel == "telegram"))
        assert digests and set(digests.values()) == {1} and len(digests) == bound

        # 6. nothing sent twice: every send call is a distinct outbox row's
        await api.wait_idle(quiet=0.5, timeout=15)
        sends = [(method, params.get("chat_id"), params.get("text") or params.get("caption"),
                  params.get("latitude"), json.dumps(params.get("reply_markup"), sort_keys=True,
                                                     default=str))
                 for method, params in api.requests if method in SEND_METHODS]
        repeated = {key: n for key, n in Counter(sends).items() if n > 1}
        assert not repeated, f"sent more than once: {repeated}"
    finally:
        codes = await stop_processes(processes)
        await forwarder.stop()
        await db.dispose()
    assert codes == [0] * PROCESSES, [p.log.read_text()[-2000:] for p in processes]
    for process in processes:  # structured logs: JSON lines carrying the update being handled
        lines = [json.loads(line) for line in process.log.read_text().splitlines()
                 if line.startswith("{")]
        assert any("webhook set" in line["event"] for line in lines)
        assert not [line for line in lines if "catch-up" in line["event"]
                    and "missed" in line["event"]], "a process skipped its digest catch-up"
        handled = [line for line in lines if line["event"].startswith("update handled")]
        assert handled and all(isinstance(line["update_id"], int) and line["chat_id"]
                               for line in handled)
