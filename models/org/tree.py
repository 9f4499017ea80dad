"""The org tree in the database: importing an org file, and the read helpers the
rest of the core uses to walk the tree (who is above whom, which chat speaks for
which unit, who may act where).

Importing is an upsert by code and safe to repeat. The file is the truth for what
it lists; what it does not list is left alone: units that disappeared from the
file (old tickets still point at them), people who are not in the file (residents,
staff added by commands), and chat bindings for chats the file does not mention.
"""
from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import astuple, dataclass, fields
from datetime import datetime
from itertools import groupby
from operator import attrgetter

from shapely.geometry import mapping
from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from models.store.tables import ChatBinding, Identity, Person, Role, Unit

from .file import ROLES, OrgSpec, PersonSpec, UnitEntry


@dataclass
class ImportReport:
    """What an import changed; all zeros when the database already matched the file."""

    units_created: int = 0
    units_updated: int = 0
    people_created: int = 0
    people_updated: int = 0
    identities_created: int = 0
    identities_updated: int = 0
    identities_removed: int = 0
    roles_added: int = 0
    roles_removed: int = 0
    chats_created: int = 0
    chats_updated: int = 0

    @property
    def changes(self) -> int:
        return sum(astuple(self))

    def __str__(self) -> str:
        done = [f"{f.name.replace('_', ' ')}: {getattr(self, f.name)}" for f in fields(self) if getattr(self, f.name)]
        return ", ".join(done) or "no changes"


# ---- import ---------------------------------------------------------------------------

async def import_org(session: AsyncSession, spec: OrgSpec, now: datetime) -> ImportReport:
    """Bring the database in line with ``spec`` inside the caller's transaction."""
    report = ImportReport()
    unit_ids = await _sync_units(session, spec, report)
    for person_spec in spec.people:
        person = await _upsert_person(session, person_spec, now, report)
        await _sync_identities(session, person, person_spec, report)
        await _sync_roles(session, person, person_spec, unit_ids, report)
    await _sync_chats(session, spec, unit_ids, report)
    await session.flush()
    return report


async def _sync_units(session: AsyncSession, spec: OrgSpec, report: ImportReport) -> dict[str, int]:
    """Upsert the units level by level, so each level's parents already have ids."""
    units = {unit.code: unit for unit in await session.scalars(select(Unit))}
    for _, level in groupby(spec.units(), key=attrgetter("kind")):
        for entry in level:
            _upsert_unit(session, units, entry, report)
        await session.flush()
    return {code: unit.id for code, unit in units.items()}


def _upsert_unit(session: AsyncSession, units: dict[str, Unit], entry: UnitEntry, report: ImportReport) -> None:
    values = {
        "kind": entry.kind,
        "name": entry.name,
        "name_en": entry.name_en,
        "parent_id": units[entry.parent].id if entry.parent else None,
        "boundary": json.dumps(mapping(entry.geometry)) if entry.geometry is not None else None,
    }
    unit = units.get(entry.code)
    if unit is None:
        units[entry.code] = unit = Unit(code=entry.code, **values)
        session.add(unit)
        report.units_created += 1
    elif _assign(unit, values):
        report.units_updated += 1


def _assign(row: object, values: dict[str, object]) -> bool:
    """Set the attributes that differ; True if any did (so unchanged rows are not counted)."""
    changed = {key: value for key, value in values.items() if getattr(row, key) != value}
    for key, value in changed.items():
        setattr(row, key, value)
    return bool(changed)


async def _upsert_person(session: AsyncSession, spec: PersonSpec, now: datetime, report: ImportReport) -> Person:
    """The person with this code; else a resident already using one of the file's
    addresses (their history stays theirs); else a new person."""
    person = await session.scalar(select(Person).where(Person.code == spec.code))
    if person is None:
        person = await _resident_at(session, spec.addresses())
    if person is None:
        person = Person(code=spec.code, name=spec.name, created_at=now)
        session.add(person)
        await session.flush()
        report.people_created += 1
    elif _assign(person, {"code": spec.code, "name": spec.name}):
        report.people_updated += 1
    return person


async def _resident_at(session: AsyncSession, addresses: list[tuple[str, str]]) -> Person | None:
    if not addresses:
        return None
    query = (select(Person).join(Identity, Identity.person_id == Person.id)
             .where(Person.code.is_(None), tuple_(Identity.channel, Identity.external_id).in_(addresses))
             .order_by(Person.id).limit(1))
    return await session.scalar(query)


async def _sync_identities(session: AsyncSession, person: Person, spec: PersonSpec, report: ImportReport) -> None:
    """An address the file gives is this person's only one on that channel; channels
    the file leaves out are not touched."""
    for channel, external_id in spec.addresses():
        identity = await session.scalar(
            select(Identity).where(Identity.channel == channel, Identity.external_id == external_id))
        if identity is None:
            session.add(Identity(person_id=person.id, channel=channel, external_id=external_id))
            report.identities_created += 1
        elif identity.person_id != person.id:
            identity.person_id = person.id
            report.identities_updated += 1
        stale = await session.scalars(select(Identity).where(
            Identity.person_id == person.id, Identity.channel == channel, Identity.external_id != external_id))
        for old in stale:
            await session.delete(old)
            report.identities_removed += 1


async def _sync_roles(session: AsyncSession, person: Person, spec: PersonSpec,
                      unit_ids: dict[str, int], report: ImportReport) -> None:
    wanted = {(unit_ids[role.unit], role.role) for role in spec.roles}
    held = {(role.unit_id, role.role): role
            for role in await session.scalars(select(Role).where(Role.person_id == person.id))}
    for unit_id, role in sorted(wanted - held.keys()):
        session.add(Role(person_id=person.id, unit_id=unit_id, role=role))
        report.roles_added += 1
    for key in sorted(held.keys() - wanted):
        await session.delete(held[key])
        report.roles_removed += 1


async def _sync_chats(session: AsyncSession, spec: OrgSpec, unit_ids: dict[str, int], report: ImportReport) -> None:
    for chat in spec.chats:
        for channel, chat_id in chat.addresses():
            binding = await session.scalar(
                select(ChatBinding).where(ChatBinding.channel == channel, ChatBinding.chat_id == chat_id))
            if binding is None:
                session.add(ChatBinding(unit_id=unit_ids[chat.unit], channel=channel, chat_id=chat_id))
                report.chats_created += 1
            elif _assign(binding, {"unit_id": unit_ids[chat.unit]}):
                report.chats_updated += 1


# ---- reading the tree --------------------------------------------------------------------

async def unit_by_code(session: AsyncSession, code: str) -> Unit | None:
    return await session.scalar(select(Unit).where(Unit.code == code))


async def ancestors(session: AsyncSession, unit_id: int) -> list[Unit]:
    """The unit itself first, then its parent, … up to the district (empty if unknown)."""
    chain: list[Unit] = []
    unit = await session.get(Unit, unit_id)
    while unit is not None:
        chain.append(unit)
        unit = await session.get(Unit, unit.parent_id) if unit.parent_id is not None else None
    return chain


async def children(session: AsyncSession, unit_id: int, kind: str | None = None) -> list[Unit]:
    query = select(Unit).where(Unit.parent_id == unit_id)
    if kind is not None:
        query = query.where(Unit.kind == kind)
    return list(await session.scalars(query.order_by(Unit.code)))


async def units_of_kind(session: AsyncSession, kind: str) -> list[Unit]:
    return list(await session.scalars(select(Unit).where(Unit.kind == kind).order_by(Unit.code)))


async def chats_of_unit(session: AsyncSession, unit_id: int, channel: str | None = None,
                        channels: Collection[str] | None = None) -> list[ChatBinding]:
    """The unit's bound chats, on one channel or on those in ``channels`` (the running ones)."""
    query = select(ChatBinding).where(ChatBinding.unit_id == unit_id)
    if channel is not None:
        query = query.where(ChatBinding.channel == channel)
    if channels is not None:
        query = query.where(ChatBinding.channel.in_(list(channels)))
    return list(await session.scalars(query.order_by(ChatBinding.id)))


async def unit_of_chat(session: AsyncSession, channel: str, chat_id: str | int) -> Unit | None:
    """The unit a group chat speaks for; Telegram's integer chat ids are accepted as is."""
    query = (select(Unit).join(ChatBinding, ChatBinding.unit_id == Unit.id)
             .where(ChatBinding.channel == channel, ChatBinding.chat_id == str(chat_id)))
    return await session.scalar(query)


async def roles_of(session: AsyncSession, person_id: int) -> list[Role]:
    return list(await session.scalars(select(Role).where(Role.person_id == person_id).order_by(Role.id)))


async def has_role_at_or_above(session: AsyncSession, person_id: int, unit_id: int) -> bool:
    """True if the person holds a staff role on the unit or on any unit above it: a
    community secretary may act on all of the community's grids, a commander anywhere."""
    chain = [unit.id for unit in await ancestors(session, unit_id)]
    query = select(Role.id).where(
        Role.person_id == person_id, Role.unit_id.in_(chain), Role.role.in_(ROLES)).limit(1)
    return await session.scalar(query) is not None


def display_name(unit: Unit, locale: str | None) -> str:
    """The English name for English locales when there is one, else the Chinese name."""
    if locale and locale.lower().startswith("en") and unit.name_en:
        return unit.name_en
    return unit.name


async def command_centre(session, core) -> Unit:
    """The unit that reads digests and reports: ``[schedule] command_centre_unit``, or the district."""
    code = core.config.schedule.command_centre_unit
    if code:
        unit = await unit_by_code(session, code)
        if unit is not None:
            return unit
    return (await units_of_kind(session, "district"))[0]
