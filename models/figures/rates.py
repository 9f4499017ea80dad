"""The three rates — one definition for the daily digest, /stats and the monthly
report (docs/reports.md writes them as formulas):

- response rate = tickets claimed by their claim deadline ÷ tickets whose claim
  deadline fell in the period (the ticket's first claim deadline, ``claim_due_at``;
  "claimed" means a claim by staff, at or before that deadline);
- resolution rate = "solved" answers ÷ votes (residents who answered "is it solved?"
  in the period: what residents say, not what staff mark);
- satisfaction rate = (satisfied + basic_weight × basically satisfied) ÷ votes
  (basic_weight 0.9 by default, ``[report] basic_weight``). A vote without a
  satisfaction answer counts in the denominator and is not satisfied; unrated
  tickets cast no vote and so never count as satisfied.

Tickets closed as duplicates are left out everywhere: their residents follow, and
vote on, the original, so nothing is counted twice."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.store.tables import Ticket, TicketEvent, Vote

BASIC_WEIGHT = 0.9
RATES = ("response", "resolution", "satisfaction")


def not_duplicate() -> ColumnElement[bool]:
    return Ticket.duplicate_of_id.is_(None)


@dataclass
class Rates:
    claims_due: int  # tickets whose claim deadline fell in the period
    claims_met: int  # … and were claimed by it
    votes: int  # residents who said whether it is solved
    solved: int
    satisfied: int
    basic: int
    basic_weight: float = BASIC_WEIGHT

    @property
    def response(self) -> float | None:
        return self.claims_met / self.claims_due if self.claims_due else None

    @property
    def resolution(self) -> float | None:
        return self.solved / self.votes if self.votes else None

    @property
    def satisfaction(self) -> float | None:
        if not self.votes:
            return None
        return (self.satisfied + self.basic_weight * self.basic) / self.votes

    def as_dict(self) -> dict[str, float | None]:
        return {name: getattr(self, name) for name in RATES}


def composite(rates: Rates, weights: dict[str, float]) -> float | None:
    """Σ weight × rate over the rates that exist, ÷ the sum of their weights (a rate
    without a denominator is left out); None when none exists. A share in 0…1."""
    present = {k: v for k, v in rates.as_dict().items() if v is not None and weights.get(k, 0) > 0}
    total = sum(weights[k] for k in present)
    return sum(weights[k] * v for k, v in present.items()) / total if total else None


async def three_rates(session: AsyncSession, scope: ColumnElement[bool], start: datetime,
                      end: datetime, basic_weight: float = BASIC_WEIGHT) -> Rates:
    """Rates over [start, end); pass ``end`` no later than now, as deadlines still ahead
    have not "fallen" yet."""
    scope = and_(scope, not_duplicate())
    claimed_in_time = select(TicketEvent.id).where(
        TicketEvent.ticket_id == Ticket.id, TicketEvent.kind == "claimed",
        TicketEvent.at <= Ticket.claim_due_at).exists()
    claims = await session.execute(
        select(func.count(), func.count().filter(claimed_in_time)).select_from(Ticket)
        .where(scope, Ticket.claim_due_at >= start, Ticket.claim_due_at < end))
    claims_due, claims_met = claims.one()
    votes = await session.execute(
        select(func.count(), func.count().filter(Vote.solved.is_(True)),
               func.count().filter(Vote.satisfaction == "satisfied"),
               func.count().filter(Vote.satisfaction == "basic"))
        .select_from(Vote).join(Ticket, Ticket.id == Vote.ticket_id)
        .where(scope, Vote.solved.is_not(None), Vote.updated_at >= start, Vote.updated_at < end))
    return Rates(claims_due, claims_met, *votes.one(), basic_weight=basic_weight)


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"
