"""The three rates, as the monthly report and the digests count them:

- response rate = claim deadlines met ÷ claim deadlines that fell in the period
  (each level's claim timer counts; a ticket escalated for a missed claim counts
  as missed once per level);
- resolution rate = "solved" answers ÷ residents who answered "solved?" in the period
  (what residents say);
- satisfaction rate = (satisfied + 0.9 × basically satisfied) ÷ residents who answered
  "how satisfied?" (a "not solved" reopens at once; how satisfied is then optional).
A claim deadline counts as met when whoever held the ticket acted on it in time:
claimed it, or returned, escalated or closed it.

Unrated tickets cast no vote and so never count as satisfied."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from .tables import Ticket, Timer, Vote

BASIC_WEIGHT = 0.9


@dataclass
class Rates:
    claims_due: int
    claims_met: int
    votes: int  # residents who said whether it is solved
    solved: int
    rated: int  # residents who said how satisfied they are
    satisfied: int
    basic: int

    @property
    def response(self) -> float | None:
        return self.claims_met / self.claims_due if self.claims_due else None

    @property
    def resolution(self) -> float | None:
        return self.solved / self.votes if self.votes else None

    @property
    def satisfaction(self) -> float | None:
        return (self.satisfied + BASIC_WEIGHT * self.basic) / self.rated if self.rated else None


async def three_rates(session: AsyncSession, scope: ColumnElement[bool], start: datetime,
                      end: datetime) -> Rates:
    """Rates over [start, end); pass ``end`` no later than now, as deadlines still ahead
    have not "fallen" yet."""
    claims = await session.execute(
        select(func.count(), func.count().filter(Timer.met.is_(True)))
        .select_from(Timer).join(Ticket, Ticket.id == Timer.ticket_id)
        .where(scope, Timer.kind == "claim", Timer.due_at >= start, Timer.due_at < end))
    claims_due, claims_met = claims.one()
    votes = await session.execute(
        select(func.count(), func.count().filter(Vote.solved.is_(True)),
               func.count().filter(Vote.satisfaction.is_not(None)),
               func.count().filter(Vote.satisfaction == "satisfied"),
               func.count().filter(Vote.satisfaction == "basic"))
        .select_from(Vote).join(Ticket, Ticket.id == Vote.ticket_id)
        .where(scope, Vote.solved.is_not(None), Vote.updated_at >= start, Vote.updated_at < end))
    return Rates(claims_due, claims_met, *votes.one())


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"
