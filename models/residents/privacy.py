"""What Whistle keeps about people, and how it forgets.

Stored per resident: their name as their chat app gives it, their chat identity
(e.g. Telegram user id), their language, and — only if they share it — their phone
number (shown to the person who claims their report, nobody else). Tickets keep the
description, location, photos (metadata stripped) and the audit trail.
``/forget`` replaces the name with a pseudonym, drops the phone number and the chat
identity, and ends the dialogue; tickets and statistics stay. With
``privacy.photo_retention_days`` set, photos of tickets closed that long ago are
deleted, and so are photos of drafts never filed that are older than that; /forget
deletes a person's unfiled photos at once."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import String, cast, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.lifecycle import FINAL
from models.store.tables import (
    Dialogue,
    Follower,
    Identity,
    Media,
    MessageRef,
    Outbox,
    Person,
    Ticket,
)

FORGOTTEN = "dropped: the resident erased their data (/forget)"
PSEUDONYM = "forgotten-"  # a forgotten identity's external id, and its chat's in every row


def looks_forgotten(chat_id: str) -> bool:
    """Spelt like the pseudonym /forget gives a chat: a cheap first test. Telegram's chat
    ids are numbers, but a WeCom userid could be spelt this way: ``forgotten_chats``
    asks the database."""
    rest = chat_id[len(PSEUDONYM):]
    return chat_id.startswith(PSEUDONYM) and rest.isascii() and rest.isdigit()


async def forgotten_chats(session: AsyncSession,
                          chats: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (channel, chat id) are the pseudonyms of residents who used /forget:
    the identity that took the name belongs to a forgotten person. One query, and none
    when no chat is even spelt like a pseudonym (the sender asks after every answer)."""
    candidates = {(channel, chat) for channel, chat in chats if looks_forgotten(chat)}
    if not candidates:
        return set()
    found = await session.execute(select(Identity.channel, Identity.external_id)
                                  .join(Person, Person.id == Identity.person_id)
                                  .where(Identity.external_id.in_({c for _, c in candidates}),
                                         Person.forgotten_at.is_not(None)))
    return {(channel, chat) for channel, chat in found} & candidates


async def forget(session: AsyncSession, core: Core, person: Person) -> dict[str, str]:
    """Erase a resident's personal data; their tickets stay, anonymous. Returns the
    pseudonym that replaced their chat on each channel (for the goodbye's row)."""
    from models.tickets import actions as tickets  # the cards they appear on are redrawn

    now = core.now()
    phones = {p for p in [person.phone, *await session.scalars(select(Ticket.contact_phone).where(
        Ticket.reporter_id == person.id, Ticket.contact_phone.is_not(None)))] if p}
    person.name, person.phone, person.locale, person.forgotten_at = (
        f"resident-{person.id}", None, None, now)
    pseudonyms: dict[str, str] = {}
    for identity in await session.scalars(select(Identity).where(Identity.person_id == person.id)):
        pseudonym = pseudonyms[identity.channel] = f"{PSEUDONYM}{identity.id}"
        for table in (Outbox, MessageRef):  # the chat id goes from what was sent, too
            await session.execute(update(table).where(
                table.channel == identity.channel, table.chat_id == identity.external_id)
                .values(chat_id=pseudonym))
        # what still waits for them goes nowhere: a pseudonym is no chat to try, and no
        # delivery failure to report. A row a sender holds is left to its outcome (the
        # sender drops it too unless it went out: ``Sender._record``); one whose sender
        # died holding it (its lease ran out) is dropped here.
        await session.execute(update(Outbox).where(
            Outbox.channel == identity.channel, Outbox.chat_id == pseudonym,
            Outbox.state == "pending",
            or_(Outbox.lease_owner.is_(None), Outbox.lease_until < now))
            .values(state="failed", error=FORGOTTEN, lease_owner=None, lease_until=None))
        identity.external_id, identity.language_code, identity.blocked = pseudonym, None, True
    for phone in phones:  # e.g. "Reporter's phone for #…" sent to the handler
        rows = await session.scalars(select(Outbox).where(
            cast(Outbox.payload, String).like(f"%{phone}%")))
        for row in rows:
            row.payload = {**row.payload, "text": row.payload.get("text", "").replace(phone, "—")}
    followed = list(await session.scalars(select(Follower.ticket_id).where(
        Follower.person_id == person.id)))
    await session.execute(delete(Follower).where(Follower.person_id == person.id))
    await session.execute(update(Ticket).where(Ticket.id.in_(followed))
                          .values(followers=Ticket.followers - 1))
    await session.execute(delete(Dialogue).where(Dialogue.person_id == person.id))
    # photos of drafts never filed are theirs alone: rows and files go now
    drafts = list(await session.scalars(select(Media).where(Media.owner_id == person.id,
                                                            Media.ticket_id.is_(None))))
    await session.execute(delete(Media).where(Media.id.in_([m.id for m in drafts])))
    for path in {m.path for m in drafts}:
        if await session.scalar(select(func.count()).where(Media.path == path)) == 0:
            core.media.path(path).unlink(missing_ok=True)
    reported = list(await session.scalars(select(Ticket).where(Ticket.reporter_id == person.id)))
    for ticket in reported:
        ticket.contact_phone, ticket.anonymous = None, True
    await session.flush()
    for ticket in [*reported, *[await session.get(Ticket, i) for i in followed]]:
        await tickets.refresh_cards(session, core, ticket)
    return pseudonyms


async def expired_photos(session: AsyncSession, core: Core, now: datetime) -> list[str]:
    """Delete the media rows of tickets closed more than the retention period ago and
    return the stored files no remaining row uses (delete them after commit)."""
    days = core.config.privacy.photo_retention_days
    if not days:
        return []
    cutoff = now - timedelta(days=days)
    closed = select(Ticket.id).where(Ticket.state.in_([s.value for s in FINAL]),
                                     Ticket.closed_at < cutoff)
    rows = list(await session.scalars(select(Media).where(
        Media.ticket_id.in_(closed)
        | (Media.ticket_id.is_(None) & (Media.created_at < cutoff)))))  # drafts never filed
    paths = {row.path for row in rows}
    await session.execute(delete(Media).where(Media.id.in_([row.id for row in rows])))
    still_used = set(await session.scalars(select(Media.path).where(Media.path.in_(paths))
                                           .group_by(Media.path).having(func.count() > 0)))
    return sorted(paths - still_used)
