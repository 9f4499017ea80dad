"""Resolving a ticket: the ticket action, then what follows it — the resident is asked
for a vote and the whistling department for its rating. It sits above ``tickets``,
``votes`` and ``whistle`` because it uses all three; they use ``tickets`` alone."""
from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.deadlines import timers as deadlines
from models.lifecycle import Action
from models.store.tables import Media, Person, Ticket

from . import votes, whistle
from .actions import audit, refresh_cards, transition
from .cards import notify_reporter


async def resolve(session: AsyncSession, core: Core, actor: Person, ticket: Ticket, note: str,
                  proof_media_id: int | None = None) -> None:
    now = core.now()
    previous = await transition(session, ticket, Action.RESOLVE, now, resolved_at=now,
                                resolution_note=note, resolved_level=ticket.level)
    if proof_media_id is not None:
        await session.execute(update(Media).where(Media.id == proof_media_id)
                              .values(ticket_id=ticket.id, kind="proof"))
    audit(session, ticket, actor.id, "resolved", now, previous, note=note,
          data={"proof": proof_media_id} if proof_media_id else None)
    await deadlines.after(session, core, ticket, Action.RESOLVE)
    await refresh_cards(session, core, ticket)
    await notify_reporter(session, core, ticket, "resolved", actor=actor, note=note,
                          photo=proof_media_id)
    await votes.ask(session, core, ticket)
    await whistle.ask_rating(session, core, ticket)
