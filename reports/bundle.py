"""A report in all its forms: the chat summary, the charts and the workbook, rendered
off the event loop (``asyncio.to_thread``), and either queued for a chat or written to
a folder."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.deadlines.periods import Period
from models.figures.stats import Report, build
from models.messages.outbox import OutMessage, Target, enqueue
from models.org.names import category_name
from models.store.tables import Unit

from . import charts, summary, workbook
from .summary import stats_text  # noqa: F401  (models.figures.commands.ReportOutputs)


@dataclass
class Rendered:
    text: str
    charts: list[tuple[str, bytes]]  # (file name, PNG)
    workbook: bytes
    workbook_name: str


async def render(core: Core, report: Report, locale: str | None = None) -> Rendered:
    t = core.i18n.get(locale)
    images = await asyncio.to_thread(charts.render, report,
                                     lambda code: category_name(core, code, t), t)
    book = await asyncio.to_thread(workbook.render, core, t, report)
    name = f"whistle-report-{report.top.scope.key}-{report.period.label}.xlsx"
    return Rendered(summary.report_text(core, t, report), images, book, name)


async def build_and_render(session: AsyncSession, core: Core, period: Period, now: datetime,
                           unit: Unit | None = None, locale: str | None = None
                           ) -> tuple[Report, Rendered]:
    report = await build(session, core, period, now, unit)
    return report, await render(core, report, locale)


def queue(session: AsyncSession, core: Core, target: Target, rendered: Rendered) -> None:
    """The summary, then the charts (one album), then the workbook as a document; the
    files are kept in the media store so a retried delivery sends the same bytes."""
    now = core.now()
    enqueue(session, target, OutMessage(text=rendered.text), now)
    pictures = [core.media.save(png, ".png")[0] for _, png in rendered.charts]
    enqueue(session, target, OutMessage(text="", pictures=pictures), now)
    path, _ = core.media.save(rendered.workbook, ".xlsx")
    enqueue(session, target, OutMessage(text="", document=path,
                                        filename=rendered.workbook_name), now)


def write(folder: Path, rendered: Rendered) -> list[Path]:
    """Write the workbook, the charts and ``summary.txt`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [(rendered.workbook_name, rendered.workbook), *rendered.charts,
             (rendered.workbook_name.replace(".xlsx", ".txt"), rendered.text.encode("utf-8"))]
    written = []
    for name, data in files:
        path = folder / name
        path.write_bytes(data)
        written.append(path)
    return written
