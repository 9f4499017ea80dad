"""Following a ticket: its reporter and the residents who said "me too" (or whose
duplicate was merged into it) hear about every change and vote at the end."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from models.store.tables import Follower, Ticket


async def followers(session: AsyncSession, ticket_id: int) -> list[int]:
    return list(await session.scalars(select(Follower.person_id).where(
        Follower.ticket_id == ticket_id).order_by(Follower.id)))


async def audience(session: AsyncSession, ticket: Ticket) -> list[int]:
    """Everyone told about the ticket: the reporter first, then its followers."""
    return [ticket.reporter_id, *[p for p in await followers(session, ticket.id)
                                  if p != ticket.reporter_id]]


async def follow(session: AsyncSession, ticket: Ticket, person_id: int, now: datetime) -> bool:
    """Add a follower; False if they already follow it or reported it."""
    if person_id == ticket.reporter_id or person_id in await followers(session, ticket.id):
        return False
    session.add(Follower(ticket_id=ticket.id, person_id=person_id, created_at=now))
    await _count(session, ticket, +1)
    return True


async def _count(session: AsyncSession, ticket: Ticket, change: int) -> None:
    """Change the "also reported by" count in SQL, so concurrent presses both count."""
    await session.execute(update(Ticket).where(Ticket.id == ticket.id)
                          .values(followers=Ticket.followers + change)
                          .execution_options(synchronize_session=False))
    await session.refresh(ticket, ["followers"])


async def unfollow(session: AsyncSession, ticket: Ticket, person_id: int) -> bool:
    result = await session.execute(delete(Follower).where(Follower.ticket_id == ticket.id,
                                                          Follower.person_id == person_id))
    if result.rowcount:
        await _count(session, ticket, -1)
    return bool(result.rowcount)


async def followed_by(session: AsyncSession, person_id: int) -> list[int]:
    return list(await session.scalars(select(Follower.ticket_id).where(
        Follower.person_id == person_id)))
