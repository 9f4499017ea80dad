"""Abuse limits: per-resident budgets (and per-client ones, such as an Open311 key's)
counted in ``rate_counter`` (so they hold across processes), and the ban list staff keep.

Over a limit a resident gets one polite answer per window and nothing else happens;
staff (anyone with a role) are never limited."""
from __future__ import annotations

import functools
import math
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.store.db import upsert_insert
from models.store.tables import Ban, Person, RateCounter, Role, Ticket

PREFIX = "limit:"


async def bump(session: AsyncSession, key: str, period: str, expires_at: datetime,
               amount: int = 1) -> int:
    """Add ``amount`` to a counter, creating it; returns the new count."""
    connection = await session.connection()
    result = await connection.execute(_bump_statement(session.bind.dialect.name), {
        "counter_key": key, "counter_period": period, "amount": amount,
        "counter_expires": expires_at})
    return result.scalar_one()


@functools.cache
def _bump_statement(dialect: str):
    """The upsert returning the new count, built once per dialect."""
    insert = upsert_insert(dialect)
    statement = insert(RateCounter).values(
        key=bindparam("counter_key"), period=bindparam("counter_period"),
        count=bindparam("amount"), expires_at=bindparam("counter_expires"))
    statement = statement.on_conflict_do_update(
        index_elements=["key", "period"],
        set_={"count": RateCounter.count + statement.excluded.count})
    return statement.returning(RateCounter.count)


def _minute(now: datetime) -> tuple[str, datetime]:
    start = now.replace(second=0, microsecond=0)
    return start.strftime("%Y%m%d%H%M"), start + timedelta(minutes=1)


def _hour(now: datetime) -> tuple[str, datetime]:
    start = now.replace(minute=0, second=0, microsecond=0)
    return start.strftime("%Y%m%d%H"), start + timedelta(hours=1)


async def within_minute(session: AsyncSession, name: str, allowed: int,
                        now: datetime) -> tuple[bool, int]:
    """Count one use of ``name`` (an API key, say) in this minute: (within ``allowed``?,
    seconds until the next minute). The count holds across processes."""
    period, ends = _minute(now)
    count = await bump(session, f"{PREFIX}{name}", period, ends)
    return count <= allowed, max(1, math.ceil((ends - now).total_seconds()))


async def is_staff(session: AsyncSession, person_id: int) -> bool:
    return await session.scalar(select(Role.id).where(Role.person_id == person_id)
                                .limit(1)) is not None


async def count_message(session: AsyncSession, person: Person, per_minute: int,
                        now: datetime) -> str:
    """Count one input of ``person`` in this minute: "ok", "warn" (just went over: answer
    once) or "quiet" (over, already answered this minute)."""
    period, ends = _minute(now)
    count = await bump(session, f"{PREFIX}msg:{person.id}", period, ends)
    if count <= per_minute or await is_staff(session, person.id):
        return "ok"
    return "warn" if count == per_minute + 1 else "quiet"


# built once: composing this statement costs more than running it
_STANDING = select(
    select(Ban.person_id).where(Ban.person_id == bindparam("person_id")).exists(),
    select(func.count(Ticket.id)).where(Ticket.reporter_id == bindparam("person_id"),
                                        Ticket.created_at > bindparam("since")).scalar_subquery())


async def standing(session: AsyncSession, person_id: int, now: datetime) -> tuple[bool, int]:
    """(banned?, reports filed in the last hour) in one round trip; the ticket rows are
    the truth for the reports, in every process."""
    banned, recent = (await session.execute(_STANDING, {
        "person_id": person_id, "since": now - timedelta(hours=1)})).one()
    return bool(banned), recent


async def first_refusal(session: AsyncSession, person: Person, what: str, now: datetime) -> bool:
    """True once per hour and kind of refusal, so a refused resident is answered, not spammed."""
    period, ends = _hour(now)
    return await bump(session, f"{PREFIX}told:{what}:{person.id}", period, ends) == 1


async def ban(session: AsyncSession, person_id: int, by: int | None, reason: str | None,
              now: datetime) -> bool:
    """False if the person was banned already."""
    if await session.get(Ban, person_id) is not None:
        return False
    session.add(Ban(person_id=person_id, banned_by=by, reason=reason, created_at=now))
    await session.flush()
    return True


async def unban(session: AsyncSession, person_id: int) -> bool:
    result = await session.execute(delete(Ban).where(Ban.person_id == person_id))
    return result.rowcount > 0


async def prune(session: AsyncSession, now: datetime) -> None:
    """Counters whose window has passed."""
    await session.execute(delete(RateCounter).where(
        RateCounter.key.startswith(PREFIX), RateCounter.expires_at < now))


# ---- what the resident is told --------------------------------------------------------

def banned_text(t) -> str:
    return t._("You can no longer file reports here. If you think this is a mistake, "
               "please contact your community office.")


async def is_banned(session: AsyncSession, person_id: int) -> bool:
    return await session.get(Ban, person_id) is not None


async def report_refusal(session: AsyncSession, core, person: Person, t) -> str | None:
    """Why this person may not file a report now, or None if they may."""
    banned, recent = await standing(session, person.id, core.now())
    if banned:
        return banned_text(t)
    per_hour = core.config.limits.reports_per_hour
    if recent >= per_hour and not await is_staff(session, person.id):
        return t._("You have filed {count} reports in the last hour, the most allowed. "
                   "Please wait a while before filing another.", count=per_hour)
    return None


async def too_fast(session: AsyncSession, core, person: Person, t) -> tuple[bool, str | None]:
    """(over the limit?, what to tell them — only the first time in the minute)."""
    verdict = await count_message(session, person, core.config.limits.messages_per_minute,
                                  core.now())
    if verdict == "ok":
        return False, None
    return True, (t._("You are sending messages too fast. Please wait a minute, then try again.")
                  if verdict == "warn" else None)
