"""Who is talking: channel identities resolved to people, and where to reach them."""
from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.inputs import Input, Sender
from models.messages.outbox import OutMessage, Target, enqueue

if TYPE_CHECKING:
    from models.context import Core
    from models.messages.i18n import Translator
from models.store.tables import Dialogue, Identity, Person, Role

# the identity, its person and their dialogue on that channel in one round trip
_RESOLVE = (select(Identity, Person, Dialogue)
            .join(Person, Person.id == Identity.person_id)
            .outerjoin(Dialogue, (Dialogue.person_id == Identity.person_id)
                       & (Dialogue.channel == Identity.channel))
            .where(Identity.channel == bindparam("channel"),
                   Identity.external_id == bindparam("external_id")))


async def resolve(session: AsyncSession, sender: Sender,
                  now: datetime) -> tuple[Person, Identity, Dialogue | None]:
    """The person behind a channel identity, created on first contact, and their dialogue
    on this channel if they have one. Nearly every update reads the dialogue next: while
    the caller holds it, ``load_dialogue`` finds it in the session instead of the database
    (the session keeps unchanged rows only as long as someone refers to them)."""
    found = (await session.execute(_RESOLVE, {"channel": sender.channel,
                                              "external_id": sender.external_id})).first()
    if found is None:
        person = Person(name=sender.name[:200], created_at=now)
        session.add(person)
        await session.flush()
        identity = Identity(person_id=person.id, channel=sender.channel,
                            external_id=sender.external_id, language_code=sender.language_code,
                            blocked=False)
        session.add(identity)
        await session.flush()
        return person, identity, None
    identity, person, dialogue = found
    if sender.language_code and identity.language_code != sender.language_code:
        identity.language_code = sender.language_code
    if identity.blocked:
        identity.blocked = False  # they wrote to us, so they unblocked the bot
    if sender.name and not person.name:
        person.name = sender.name[:200]
    return person, identity, dialogue


async def private_targets(session: AsyncSession, person_id: int,
                          channels: Collection[str]) -> list[tuple[Target, Identity]]:
    """Each running channel on which we can write to this person privately."""
    rows = await session.scalars(select(Identity).where(
        Identity.person_id == person_id, Identity.blocked.is_(False),
        Identity.channel.in_(list(channels))))
    return [(Target(i.channel, i.external_id), i) for i in rows]


async def tell(session: AsyncSession, core: "Core", person_id: int,
               render: Callable[["Translator"], OutMessage | Awaitable[OutMessage]]) -> None:
    """Write to a person privately on each running channel, in their language:
    ``render(t)`` makes the message for the translator ``t``."""
    person = await session.get(Person, person_id)
    for target, identity in await private_targets(session, person_id, core.channels):
        t = core.i18n.get(core.i18n.pick(person.locale, identity.language_code))
        message = render(t)
        if inspect.isawaitable(message):
            message = await message
        enqueue(session, target, message, core.now())


def first_name(name: str) -> str:
    """What a group chat may show of a named reporter."""
    return name.split()[0] if name.strip() else ""


async def load_dialogue(session: AsyncSession, person_id: int, channel: str,
                        now: datetime) -> Dialogue:
    """A person's conversation state on one channel, created empty on first use."""
    row = await session.get(Dialogue, (person_id, channel))
    if row is None:
        row = Dialogue(person_id=person_id, channel=channel, step=None, draft={}, pending=None,
                       updated_at=now)
        session.add(row)
    return row


async def is_admin(session, core: Core, person: Person, inp: Input) -> bool:
    """A Telegram admin of the config, or a person holding the ``admin`` role."""
    if inp.sender.channel == "telegram" and inp.sender.external_id.lstrip("-").isdigit():
        if int(inp.sender.external_id) in core.config.telegram.admins:
            return True
    return await session.scalar(select(Role.id).where(Role.person_id == person.id,
                                                      Role.role == "admin").limit(1)) is not None
