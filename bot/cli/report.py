"""``python -m bot --config FILE report --month 2026-11 [--scope CODE] [--out DIR]``:
the report of a period and scope written to a folder (workbook, charts, summary)."""
from __future__ import annotations

import sys
from pathlib import Path

from bot.config import Config


async def run(config: Config, month: str | None, scope: str | None, out: Path,
              locale: str | None = None) -> int:
    from bot.app import Whistle
    from models.deadlines import periods
    from models.org import tree as org
    from reports import bundle

    whistle = Whistle(config)
    try:
        await whistle.prepare()
        now = whistle.core.now()
        try:
            period = (periods.parse(month, config.tz) if month
                      else periods.previous_month(now, config.tz))
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 2

        async def make(session):
            unit = None
            if scope and scope != "district":
                unit = await org.unit_by_code(session, scope)
                if unit is None or unit.kind == "department":
                    return None
            return await bundle.build_and_render(session, whistle.core, period, now, unit, locale)
        made = await whistle.db.run(make)
        if made is None:
            print(f"unknown scope {scope!r}: give a district, street, community or grid code",
                  file=sys.stderr)
            return 2
        for path in bundle.write(out, made[1]):
            print(path)
        return 0
    finally:
        await whistle.db.dispose()
