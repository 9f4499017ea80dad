"""/stats and /report in group chats. /stats: the chat's unit, this month so far.
/report [PERIOD]: in the command centre's chat, the report of a period (last month by
default) — summary, charts and the workbook."""
from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.deadlines import periods
from models.inputs import Input
from models.messages.i18n import Translator
from models.messages.outbox import OutMessage, Target, enqueue
from models.org import tree as org
from models.store.tables import Unit

from .stats import Figures, Report, build, stats_for


class ReportOutputs(Protocol):
    """What renders figures for people (the ``reports`` package: text, charts, workbook).
    The wiring hands it to the core as ``Core.reports``; the core never imports it."""

    def stats_text(self, core: Core, t: Translator, figures: Figures, label: str) -> str: ...

    async def render(self, core: Core, report: Report) -> Any: ...

    def queue(self, session: AsyncSession, core: Core, target: Target, rendered: Any) -> None: ...


# commands whose transaction reads a month of tickets: they keep SQLite's worker thread
# (bot/app.py), so the event loop is not held up meanwhile
HEAVY_COMMANDS = frozenset({"stats", "report"})


def _say(session: AsyncSession, core: Core, inp: Input, text: str) -> None:
    enqueue(session, inp.chat, OutMessage(text=text), core.now())


async def on_group_command(session: AsyncSession, core: Core, inp: Input):
    """Answer /stats at once; for /report, return the work to do after the commit."""
    t = core.i18n.get(None)  # group chats speak the deployment's language
    unit = await org.unit_of_chat(session, inp.chat.channel, inp.chat.chat_id)
    if unit is None:
        _say(session, core, inp, t._("This chat is not bound to a unit yet; an administrator "
                                     "binds it with /bind."))
        return
    now = core.now()
    if inp.command == "stats":
        period = periods.month_of(now, core.config.tz)
        figures = await stats_for(session, core, unit, period, now)
        _say(session, core, inp, core.reports.stats_text(core, t, figures, period.label))
        return
    centre = await org.command_centre(session, core)
    if unit.id != centre.id:
        _say(session, core, inp, t._("/report works in the command centre's chat; use /stats "
                                     "here for this unit's figures."))
        return
    try:
        period = (periods.parse(inp.args[0], core.config.tz) if inp.args
                  else periods.previous_month(now, core.config.tz))
    except ValueError:
        _say(session, core, inp, t._("I don't know the period “{period}”. Use /report 2026-11 "
                                     "(a month), 2026-Q4, 2026-H2, 2026 or "
                                     "2026-11-01..2026-11-15.", period=inp.args[0][:40]))
        return
    if period.start > now:
        _say(session, core, inp, t._("{period} has not begun yet.", period=period.label))
        return
    return _report_later(core, inp.chat, unit.id, period, now)


def _report_later(core: Core, chat: Target, unit_id: int, period, now):
    """The report is computed in its own transaction and rendered after it: charts and
    the workbook take seconds, and must not hold SQLite's write lock meanwhile."""
    async def run(db) -> None:
        async def figures(session):
            return await build(session, core, period, now, await session.get(Unit, unit_id))
        rendered = await core.reports.render(core, await db.run(figures))
        await db.run(lambda session: _queue(session, core, chat, rendered))
    return run


async def _queue(session: AsyncSession, core: Core, chat: Target, rendered) -> None:
    core.reports.queue(session, core, chat, rendered)
