"""/healthz, /metrics and the structured logs of a running service, over real HTTP."""
from __future__ import annotations

import asyncio
import io
import json
import logging
from datetime import timedelta

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, update

from bot.config import LoggingConfig
from bot.observability import configure_logging
from models.store.db import Database
from models.messages.outbox import OutMessage, Target, enqueue
from models.residents.privacy import FORGOTTEN
from models.store.tables import Inbox, Outbox, Ticket
from scheduler.runner import Scheduler
from tests.flows import G01_CHAT, file_report

UNREACHABLE = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"


async def get(whistle, path: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(whistle.web.origin + path) as answer:
            return answer.status, answer.headers.get("Content-Type", ""), await answer.text()


async def scrape(whistle) -> dict[tuple[str, tuple], float]:
    status, content_type, body = await get(whistle, "/metrics")
    assert status == 200 and content_type.startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body) for sample in family.samples}


async def settled(whistle, api) -> None:
    """Every queued message sent or given up on (the sender works after each commit)."""
    async def pending(session):
        return list(await session.scalars(select(Outbox).where(Outbox.state == "pending")))
    for _ in range(200):
        await api.wait_idle()
        if not await whistle.db.run(pending):
            return
        await asyncio.sleep(0.05)
    rows = await whistle.db.run(pending)
    raise AssertionError(f"still pending: {[(r.chat_id, r.payload, r.error) for r in rows]}")


async def test_healthz_is_ok_on_a_fresh_service(whistle):
    status, content_type, body = await get(whistle, "/healthz")
    assert status == 200 and content_type.startswith("application/json")
    answer = json.loads(body)
    assert answer["status"] == "ok" and answer["database"] == "ok"
    assert answer["sender_lag_seconds"] == 0


async def test_healthz_fails_when_the_database_is_unreachable(whistle):
    own = whistle.db
    whistle.db = Database(UNREACHABLE)
    try:
        status, _, body = await get(whistle, "/healthz")
        metrics_status, _, metrics_body = await get(whistle, "/metrics")
    finally:
        await whistle.db.dispose()
        whistle.db = own
    assert status == 503
    answer = json.loads(body)
    assert answer["status"] == "unhealthy" and answer["database"].startswith("unreachable")
    # /metrics still answers with this process's own figures, without the database's
    assert metrics_status == 200 and "whistle_updates_handled" in metrics_body
    assert "whistle_tickets" not in metrics_body
    assert (await get(whistle, "/healthz"))[0] == 200  # and recovers with the database


async def test_a_message_telegram_holds_back_keeps_the_process_healthy(whistle, api, people,
                                                                       clock):
    """Telegram says "retry after an hour": the message stays pending and its wait grows
    past ``[web] health_max_sender_lag`` (5 minutes here, 10 by default). Nothing is wrong
    with the process: /healthz stays ok and /metrics shows the wait and the chat's backlog."""
    whistle.config.web.health_max_sender_lag = 300
    resident = people(9201, "Alice", "en")
    api.fail_next("sendMessage", 429, "Too Many Requests: retry after 3600", retry_after=3600,
                  count=5)
    api.user_sends_text(resident.id, resident.id, "/start")
    await api.wait_for(lambda: any(name == "sendMessage" for name, _ in api.requests),
                       description="a refused send")
    await api.wait_idle()
    clock.advance(seconds=301)
    status, _, body = await get(whistle, "/healthz")
    answer = json.loads(body)
    assert status == 200 and answer["status"] == "ok" and answer["sender"] == "ok"
    assert answer["sender_lag_seconds"] == 301  # told, not judged
    metrics = await scrape(whistle)
    assert metrics[("whistle_sender_lag_seconds", ())] == 301
    chat = (("channel", "telegram"), ("chat", str(resident.id)))
    assert metrics[("whistle_chat_backlog", chat)] == metrics[
        ("whistle_outbox_queue_depth", ())] >= 1
    assert metrics[("whistle_chat_backlog_age_seconds", chat)] == 301


async def test_a_backlog_in_one_group_chat_is_not_a_sick_process(whistle, api, clock):
    """Many reports to one grid: its group chat is minutes behind at Telegram's 20 a minute
    (here 2 in any 2 minutes). Every process would be taken out by a load balancer if that
    made them unhealthy; it does not, and /metrics tells which chat waits, and how long."""
    whistle.config.web.health_max_sender_lag = 300
    whistle.config.sender.group_burst, whistle.config.sender.group_per_minute = 2, 1
    backlog = G01_CHAT

    async def queued(session):
        for i in range(12):
            enqueue(session, Target("telegram", str(backlog)), OutMessage(text=f"report {i}"),
                    clock())
    await whistle.db.run(queued)
    await api.wait_for(lambda: len(api.bot_messages(backlog)) == 2, description="the burst")
    await asyncio.wait_for(whistle.sender.idle.wait(), 5)
    clock.advance(seconds=360)
    status, _, body = await get(whistle, "/healthz")
    answer = json.loads(body)
    assert status == 200 and answer["status"] == "ok", answer
    assert answer["sender_lag_seconds"] == 360
    metrics = await scrape(whistle)
    chat = (("channel", "telegram"), ("chat", str(backlog)))
    assert metrics[("whistle_chat_backlog", chat)] == 10
    assert metrics[("whistle_chat_backlog_age_seconds", chat)] == 360
    assert len(api.bot_messages(backlog)) == 2  # still held back by the chat's budget


async def test_healthz_fails_when_this_process_sender_is_stuck_on_a_send(whistle, api, people,
                                                                          clock):
    """A send this process started and that has not come back for longer than
    ``health_max_sender_lag`` is a sick process: /healthz says so, and recovers with it."""
    whistle.config.web.health_max_sender_lag = 300
    resident = people(9206, "Fay", "en")
    api.delay_next("sendMessage", 2)  # answered late (within the client's timeout)

    async def queued(session):
        enqueue(session, Target("telegram", str(resident.id)), OutMessage(text="slow"), clock())
    await whistle.db.run(queued)
    await api.wait_for(lambda: any(name == "sendMessage" for name, _ in api.requests),
                       description="the send under way")
    clock.advance(seconds=301)
    status, _, body = await get(whistle, "/healthz")
    answer = json.loads(body)
    assert status == 503 and answer["status"] == "unhealthy" and answer["database"] == "ok"
    assert answer["sender"].startswith("no progress") and answer["sender_stalled_seconds"] == 301
    await settled(whistle, api)
    status, _, body = await get(whistle, "/healthz")
    assert status == 200 and json.loads(body)["sender"] == "ok"


async def test_healthz_fails_when_this_process_sender_makes_no_pass(whistle, api, clock,
                                                                    monkeypatch):
    """The sender's passes fail (here: one made to raise): nothing this process may send
    goes out, so after ``health_max_sender_lag`` the process is unhealthy."""
    whistle.config.web.health_max_sender_lag = 300

    async def broken():
        raise RuntimeError("the pass broke")
    monkeypatch.setattr(whistle.sender, "due_rows", broken)
    whistle.sender.wake()
    for _ in range(200):  # the next pass fails
        if whistle.sender.no_pass_since is not None:
            break
        await asyncio.sleep(0.025)
    assert (await get(whistle, "/healthz"))[0] == 200  # not yet for long
    clock.advance(seconds=301)
    status, _, body = await get(whistle, "/healthz")
    answer = json.loads(body)
    assert status == 503 and answer["sender"].startswith("no progress")
    assert answer["sender_stalled_seconds"] >= 301
    monkeypatch.undo()
    whistle.sender.wake()
    for _ in range(100):  # the next pass (within a second) is progress again
        if (await get(whistle, "/healthz"))[0] == 200:
            break
        await asyncio.sleep(0.05)
    assert (await get(whistle, "/healthz"))[0] == 200


async def test_healthz_fails_when_a_pass_of_this_process_sender_hangs(whistle, api, clock,
                                                                      monkeypatch):
    """A pass that never ends (here: one made to wait for ever) is no progress either."""
    whistle.config.web.health_max_sender_lag = 300
    entered, release = asyncio.Event(), asyncio.Event()

    async def hanging():
        entered.set()
        await release.wait()
        return []
    monkeypatch.setattr(whistle.sender, "due_rows", hanging)
    whistle.sender.wake()
    await asyncio.wait_for(entered.wait(), 5)
    assert (await get(whistle, "/healthz"))[0] == 200
    clock.advance(seconds=301)
    status, _, body = await get(whistle, "/healthz")
    assert status == 503 and json.loads(body)["sender"] == "no progress for 301 s"
    release.set()
    for _ in range(100):  # the pass completes: progress again
        if (await get(whistle, "/healthz"))[0] == 200:
            break
        await asyncio.sleep(0.05)
    assert (await get(whistle, "/healthz"))[0] == 200


async def test_healthz_fails_when_this_process_sender_loop_has_ended(whistle, clock):
    """The sender's loop is gone while the service runs: nothing will be sent."""
    whistle.config.web.health_max_sender_lag = 300
    await asyncio.wait_for(whistle.sender.idle.wait(), 5)
    whistle.sender._task.cancel()
    await asyncio.wait([whistle.sender._task])
    clock.advance(seconds=301)
    status, _, body = await get(whistle, "/healthz")
    assert status == 503 and json.loads(body)["sender"].startswith("no progress")


async def test_messages_dropped_for_a_forget_are_not_counted_as_failures(whistle, api):
    """/forget drops what still waits for the resident (models/residents/privacy.py): those rows are
    ``failed`` in the table, but nothing went wrong, so /metrics counts them apart."""
    async def queued(session):
        for chat, text in (("forgotten-1", "dropped"), ("forgotten-1", "dropped too"),
                           ("-100999", "refused")):
            enqueue(session, Target("telegram", chat), OutMessage(text=text), whistle.core.now())
        await session.execute(update(Outbox).where(Outbox.chat_id == "forgotten-1")
                              .values(state="failed", error=FORGOTTEN))
        await session.execute(update(Outbox).where(Outbox.chat_id == "-100999")
                              .values(state="failed", error="chat not found"))
    await whistle.db.run(queued)
    metrics = await scrape(whistle)
    assert metrics[("whistle_outbox_dropped", ())] == 2
    assert metrics[("whistle_outbox_failed", ())] == 1


async def test_metrics_match_the_database_after_a_report(whistle, api, people):
    resident = people(9202, "Bob", "en")
    await file_report(api, whistle, resident)
    await file_report(api, whistle, resident, category="road", description="A deep pothole in the lane")
    await settled(whistle, api)
    await Scheduler(whistle.db, whistle.core, on_sweep=whistle.metrics.observe_sweep).sweep()
    metrics = await scrape(whistle)

    async def figures(session):
        tickets = dict((await session.execute(select(Ticket.state, func.count())
                                              .group_by(Ticket.state))).all())
        outbox = dict((await session.execute(select(Outbox.state, func.count())
                                             .group_by(Outbox.state))).all())
        retried = await session.scalar(select(func.count()).select_from(Outbox)
                                       .where(Outbox.attempts > 0))
        inbox = await session.scalar(select(func.count()).select_from(Inbox))
        return tickets, outbox, retried, inbox
    tickets, outbox, retried, inbox = await whistle.db.run(figures)
    assert sum(tickets.values()) == 2
    for state, count in tickets.items():
        assert metrics[("whistle_tickets", (("state", state),))] == count
    assert metrics[("whistle_outbox_sent", ())] == outbox["sent"] > 0
    assert metrics[("whistle_outbox_failed", ())] == outbox.get("failed", 0)
    assert metrics[("whistle_outbox_dropped", ())] == 0
    assert metrics[("whistle_outbox_uncertain", ())] == outbox.get("uncertain", 0)
    assert metrics[("whistle_outbox_queue_depth", ())] == outbox.get("pending", 0) == 0
    assert metrics[("whistle_outbox_retried", ())] == retried
    assert metrics[("whistle_sender_lag_seconds", ())] == 0
    handled = metrics[("whistle_updates_handled_total", (("channel", "telegram"), ("outcome", "handled")))]
    assert handled == inbox >= 14  # two dialogues of at least seven steps
    assert metrics[("whistle_sweep_duration_seconds_count", ())] == 1
    assert metrics[("whistle_sweep_duration_seconds_sum", ())] > 0


async def test_metrics_count_retries_and_failures(whistle, api, people):
    resident = people(9203, "Carol", "en")
    api.fail_next("sendMessage", 400, "Bad Request: chat not found", count=1)
    api.user_sends_text(resident.id, resident.id, "/start")
    await api.wait_for(lambda: any(name == "sendMessage" for name, _ in api.requests),
                       description="a refused send")
    await settled(whistle, api)
    metrics = await scrape(whistle)
    failed = await whistle.db.run(lambda s: s.scalar(
        select(func.count()).select_from(Outbox).where(Outbox.state == "failed")))
    assert metrics[("whistle_outbox_failed", ())] == failed == 1
    assert metrics[("whistle_outbox_retried", ())] == 1  # its one try counts


@pytest.fixture
def log_lines():
    """Capture the service's log lines as the JSON objects structlog renders."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging(LoggingConfig(format="json", level="DEBUG"), stream=stream)

    def lines() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    yield lines
    root.removeHandler(handler)
    root.setLevel(level)


async def test_log_lines_carry_update_chat_and_ticket_ids(whistle, api, people, log_lines):
    resident = people(9204, "Dan", "en")
    filed = await file_report(api, whistle, resident)
    lines = log_lines()
    assert lines and all({"event", "level", "timestamp", "logger"} <= set(line) for line in lines)
    handled = [line for line in lines if line["event"].startswith("update handled")]
    assert len(handled) >= 7
    assert all(line["chat_id"] == resident.id and line["user_id"] == resident.id
               and isinstance(line["update_id"], int) for line in handled)
    with_ticket = [line for line in handled if "ticket_id" in line]
    assert with_ticket and {line["ticket_id"] for line in with_ticket} == {filed.id}
    assert {line["ticket"] for line in with_ticket} == {filed.number}
    # the ticket is forgotten with its update: earlier steps and later updates do not carry it
    assert "ticket_id" not in handled[0]
    after = len(log_lines())
    last = api.bot_messages(resident.id)[-1]["message_id"]
    api.user_sends_text(resident.id, resident.id, "/my")
    await api.wait_message(resident.id, after=last)

    def later() -> list[dict]:
        return [line for line in log_lines()[after:] if line["event"].startswith("update handled")]
    for _ in range(100):  # the line is written as the handler returns, maybe after the reply
        if later():
            break
        await asyncio.sleep(0.05)
    assert later() and all("ticket_id" not in line for line in later())


async def test_console_format_renders_the_same_ids(whistle, api, people):
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging(LoggingConfig(format="console", level="DEBUG"), stream=stream)
    try:
        resident = people(9205, "Eve", "en")
        api.user_sends_text(resident.id, resident.id, "/start")
        await api.wait_message(resident.id)
        for _ in range(100):  # written as the handler returns, maybe after the reply
            if "update handled" in stream.getvalue():
                break
            await asyncio.sleep(0.05)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    text = stream.getvalue()
    handled = [line for line in text.splitlines() if "update handled" in line]
    assert handled and "chat_id=9205" in handled[0] and "update_id=" in handled[0]
    assert not text.lstrip().startswith("{")


async def test_a_message_sent_again_after_a_crash_counts_as_uncertain(whistle, api, people, clock):
    """A row leased by a process that died (its lease ran out) is sent again, marked with
    its doubt, and /metrics counts it with the uncertain ones (it may show twice)."""
    resident = people(9204, "Dora", "en")

    async def orphan(session):
        enqueue(session, Target("telegram", str(resident.id)), OutMessage(text="left behind"),
                clock())
        await session.flush()
        await session.execute(update(Outbox).where(Outbox.state == "pending").values(
            lease_owner="dead:1", lease_until=clock() - timedelta(seconds=1)))
    await whistle.db.run(orphan)
    await api.wait_message(resident.id, contains="left behind")
    await settled(whistle, api)
    row = await whistle.db.run(lambda s: s.scalar(select(Outbox).where(
        Outbox.chat_id == str(resident.id))))
    assert (row.state, row.doubt) == ("sent", "sent again: sender dead:1 stopped mid-send")
    metrics = await scrape(whistle)
    assert metrics[("whistle_outbox_uncertain", ())] == 1
    assert metrics[("whistle_outbox_sent", ())] >= 1


async def test_metrics_need_the_bearer_token_when_one_is_set(whistle):
    whistle.config.web.metrics_token = "s3cret-scraper"
    assert (await get(whistle, "/metrics"))[0] == 401
    for wrong in ("Bearer nope", "s3cret-scraper", "Basic s3cret-scraper"):
        async with aiohttp.ClientSession(headers={"Authorization": wrong}) as session:
            async with session.get(whistle.web.origin + "/metrics") as answer:
                assert answer.status == 401, wrong
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer s3cret-scraper"}) as session:
        async with session.get(whistle.web.origin + "/metrics") as answer:
            assert answer.status == 200 and "whistle_outbox_sent" in await answer.text()
    assert (await get(whistle, "/healthz"))[0] == 200  # health stays open to the load balancer
