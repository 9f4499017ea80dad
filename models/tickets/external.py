"""Reports from outside the chats (an Open311 client, a city system).

They enter the same lifecycle as a chat report — numbered, routed by the point,
posted to the grid's chat with Claim and Return, timed and audited — through
``tickets.create``; this module only finds the reporter and builds the draft.

The reporter is a ``Person`` without any chat identity: one per API client and
e-mail address (or account id) when the client gives one, else a new anonymous
person per report. Notifications and vote requests meant for them find no private
chat (``people.private_targets``) and are simply not sent; an unanswered vote
closes the ticket as unrated, as for a resident who never answers."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.store.tables import Person, Ticket

from . import actions as tickets


@dataclass(frozen=True)
class ExternalReport:
    """A report as an outside system submits it, already validated."""

    category: str
    description: str
    location: tuple[float, float] | None = None
    address: str | None = None
    address_id: str | None = None
    grid_id: int | None = None  # a grid the client chose (routes when no point does)
    media_url: str | None = None  # kept as a link; never fetched
    name: str = ""  # the reporter's name as given (first and last name)
    phone: str | None = None  # shown only to whoever claims the ticket, as in the chat
    reporter_key: str | None = None  # e-mail or account id: the same person next time


def reporter_code(channel: str, client_id: int, reporter_key: str) -> str:
    """``Person.code`` of a known external reporter. The e-mail or account id is hashed, so
    the code names the person without holding their address (≤ 64 characters)."""
    digest = hashlib.sha256(f"{client_id}:{reporter_key}".encode()).hexdigest()[:40]
    return f"{channel}:{client_id}:{digest}"


async def reporter(session: AsyncSession, core: Core, channel: str, client_id: int,
                   report: ExternalReport) -> Person:
    """The person behind an external report: found again by client and e-mail/account,
    else created (concurrent first reports of one person agree on one row)."""
    now = core.now()
    if not report.reporter_key:
        person = Person(name=report.name, created_at=now)
        session.add(person)
        await session.flush()
        return person
    code = reporter_code(channel, client_id, report.reporter_key)
    person = await session.scalar(select(Person).where(Person.code == code))
    if person is None:
        try:
            async with session.begin_nested():
                person = Person(code=code, name=report.name, created_at=now)
                session.add(person)
        except IntegrityError:  # the same person's other report won the insert
            person = await session.scalar(select(Person).where(Person.code == code))
    if report.name and person.name != report.name and person.forgotten_at is None:
        person.name = report.name
    return person


async def file_report(session: AsyncSession, core: Core, channel: str, client_id: int,
               report: ExternalReport) -> Ticket:
    """Create the ticket exactly as a confirmed chat report is created."""
    person = await reporter(session, core, channel, client_id, report)
    draft = {"category": report.category, "description": report.description,
             "location": list(report.location) if report.location else None,
             "address": report.address, "anonymous": not report.name, "phone": report.phone,
             "grid_id": report.grid_id}
    ticket = await tickets.create(session, core, person, draft, channel)
    ticket.media_url, ticket.address_id = report.media_url, report.address_id
    await session.flush()
    return ticket
