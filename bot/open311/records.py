"""Tickets as GeoReport service requests: the query and the public fields.

Only public columns are read (never the reporter, their phone, the assignee or any
chat id), one indexed query per page (``ticket.created_at``, ``ticket.number``), and
the holders' names in one more. Free text written by people (description, address,
resolution and close notes) has phone numbers, identity cards and e-mail addresses
masked (``models.messages.masking``), since a resident may have typed theirs into it. A
chat report's point is published as the centre of a cell of ``[open311]
location_precision_m`` (about 100 m) unless its category is ``public_exact``; a point
an API client posted is returned as it was given."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.geo import coarse
from models.lifecycle import FINAL, OPEN, STATE_LABELS, State
from models.messages.i18n import Translator
from models.messages.masking import mask
from models.org.tree import display_name
from models.store.tables import Ticket, Unit
from models.tickets.cards import CLOSE_LABELS, ORDER_LABELS

from .catalog import service_name

STATUSES = {"open": sorted(s.value for s in OPEN),
            "closed": sorted({State.RESOLVED.value} | {s.value for s in FINAL})}
PUBLIC_COLUMNS = (Ticket.id, Ticket.number, Ticket.category, Ticket.state, Ticket.order_type,
                  Ticket.channel,
                  Ticket.description, Ticket.unit_id, Ticket.created_at, Ticket.updated_at,
                  Ticket.resolve_due_at, Ticket.address, Ticket.address_id, Ticket.lat,
                  Ticket.lon, Ticket.media_url, Ticket.resolution_note, Ticket.close_reason,
                  Ticket.close_note, Ticket.duplicate_of_id)
API_CHANNEL = "open311"


@dataclass(frozen=True)
class Query:
    """GET requests: either numbers (which override everything else) or the filters."""

    numbers: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    limit: int = 1000


def status_of(state: str) -> str:
    return "open" if state in STATUSES["open"] else "closed"


def published_point(config, row) -> tuple[float | None, float | None]:
    """The point as published: a chat report's rounded to its cell (its reporter's door
    stays private), unless the category is public_exact; an API client's as given."""
    if row.lat is None or row.lon is None:
        return None, None
    category = config.category(row.category)
    if row.channel == API_CHANNEL or (category is not None and category.public_exact):
        return row.lat, row.lon
    return coarse(row.lat, row.lon, config.open311.location_precision_m)


async def find(session: AsyncSession, query: Query) -> list:
    stmt = select(*PUBLIC_COLUMNS)
    if query.numbers:
        stmt = stmt.where(Ticket.number.in_(query.numbers))
    else:
        stmt = stmt.where(Ticket.created_at >= query.start, Ticket.created_at <= query.end)
        if query.codes:
            stmt = stmt.where(Ticket.category.in_(query.codes))
        if query.statuses:
            stmt = stmt.where(Ticket.state.in_([s for st in query.statuses for s in STATUSES[st]]))
    stmt = stmt.order_by(Ticket.created_at.desc(), Ticket.id.desc()).limit(query.limit)
    return list(await session.execute(stmt))


async def render(session: AsyncSession, core: Core, t: Translator, rows: list) -> list[dict]:
    """The rows as service requests, in the spec's field order."""
    unit_ids = {row.unit_id for row in rows}
    units = {u.id: u for u in await session.scalars(select(Unit).where(Unit.id.in_(unit_ids)))} \
        if unit_ids else {}
    originals = {r.duplicate_of_id for r in rows if r.duplicate_of_id}
    numbers = dict((await session.execute(select(Ticket.id, Ticket.number).where(
        Ticket.id.in_(originals)))).all()) if originals else {}
    return [_record(core, t, row, units.get(row.unit_id), numbers) for row in rows]


def _record(core: Core, t: Translator, row, unit: Unit | None, numbers: dict) -> dict:
    status = status_of(row.state)
    lat, lon = published_point(core.config, row)
    return {
        "service_request_id": row.number,
        "status": status,
        "status_notes": _notes(t, row, numbers),
        "service_name": service_name(core.config, t, row.category),
        "service_code": row.category,
        "description": mask(row.description),
        "agency_responsible": display_name(unit, t.locale) if unit else None,
        "service_notice": _notice(core, t, row) if status == "open" else None,
        "requested_datetime": w3(core, row.created_at),
        "updated_datetime": w3(core, row.updated_at),
        "expected_datetime": w3(core, row.resolve_due_at),
        "address": mask(row.address),
        "address_id": row.address_id,
        "zipcode": None,
        "lat": lat,
        "long": lon,
        "media_url": row.media_url,
    }


def _notes(t: Translator, row, numbers: dict) -> str:
    """Why the request is where it is: public text only (what the resident is shown too)."""
    label = t._(STATE_LABELS[State(row.state)])
    if row.state == State.CLOSED_DUPLICATE and row.duplicate_of_id in numbers:
        return t._("Duplicate of {number}.", number=numbers[row.duplicate_of_id])
    if row.state == State.CLOSED_NOT_FIXED:
        kind = t._(CLOSE_LABELS[row.close_reason]) if row.close_reason in CLOSE_LABELS else label
        return f"{kind}: {mask(row.close_note)}" if row.close_note else kind
    if row.state in (State.RESOLVED, State.CLOSED) and row.resolution_note:
        return f"{label}: {mask(row.resolution_note)}"
    return label


def _notice(core: Core, t: Translator, row) -> str | None:
    if row.resolve_due_at is None:
        return None
    return t._("{order}: to be resolved by {time}.", order=t._(ORDER_LABELS[row.order_type]),
               time=core.local(row.resolve_due_at).strftime("%Y-%m-%d %H:%M"))


def w3(core: Core, moment: datetime | None) -> str | None:
    """The spec's date format (W3C ISO 8601 with the offset), in local time."""
    return core.local(moment).isoformat(timespec="seconds") if moment else None
