"""Which tickets a unit sees: everything in its subtree (a street sums its
communities, the district sees all) or, for a department, what was whistled to it."""
from __future__ import annotations

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.store.tables import Assignment, Ticket, Unit


async def subtree(session: AsyncSession, unit_id: int) -> list[int]:
    ids, frontier = [unit_id], [unit_id]
    while frontier:
        frontier = list(await session.scalars(select(Unit.id).where(Unit.parent_id.in_(frontier))))
        ids += frontier
    return ids


async def ticket_filter(session: AsyncSession, unit: Unit) -> ColumnElement[bool]:
    """A WHERE clause selecting the tickets in ``unit``'s scope."""
    if unit.kind == "department":
        whistled = select(Assignment.ticket_id).where(Assignment.unit_id == unit.id)
        return or_(Ticket.unit_id == unit.id, Ticket.id.in_(whistled))
    ids = await subtree(session, unit.id)
    return or_(Ticket.grid_id.in_(ids), Ticket.unit_id.in_(ids))
