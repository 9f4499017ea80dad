"""A hand-computed month of tickets for the report tests, made through the real core
functions (create, claim, escalate, whistle, resolve, votes.settle, close …) with the
controlled clock. Times are Beijing wall-clock; working time is 09:00–12:00 and
13:00–18:00 on working days; routine orders must be claimed within 2 working hours and
resolved within 5 working days, emergencies (water) within 10 minutes and 24 hours.

November 2026 (Mon 2, Mon 9, Fri 20, Wed 25, Mon 30):

  T1 garbage g01  created 11-02 10:00, claim due 12:00; 王建国 claims 10:30 (on time),
                  resolves 11-03 10:00; vote 11:00 solved + satisfied → closed.
  T6 garbage g01  created 11-02 10:15; closed 10:40 as a duplicate of T1.
  T2 garbage g01  created 11-02 11:00, claim due 14:00; 王建国 claims 15:00 (late),
                  resolves 11-04 09:00; vote 10:00 solved + basically satisfied → closed.
  T3 road    g02  created 11-05 09:00, claim due 11:00; 李秀英 claims 09:30, resolves
                  10:00; vote 11:00 "not solved" → reopened; resolves 11-06 09:00; the
                  vote changes 10:00 to solved + satisfied → closed.
  T4 garbage g01  created 11-09 10:00, claim due 12:00; 王建国 escalates 10:30 to c1;
                  何淑珍 (c1) claims 11:00 (on time), resolves 11-10 10:00 (community);
                  no vote: closed unrated 11-13 11:00.
  T5 water   g05  created 11-20 20:00 (Friday evening), claim due 20:10; 陈志强 claims
                  20:30 (late); resolves 12-01 10:00 (overdue: due 11-21 20:00); vote
                  11:00 solved + basically satisfied → closed (in December).
  T8 garbage g09  created 11-25 10:00, claim due 12:00; 周杰 escalates 10:30 to c3;
                  林晓燕 (c3) whistles 11:00 to 城管 (lead) and 水务 (cooperating); 郑国栋
                  (城管) claims 11:30, resolves 11-26 10:00 (department); c3 rates 城管 4
                  stars 11:00. 水务 never reports for duty (due 14:00: missed).
  T9 road    g02  created 11-30 09:00, claim due 11:00; nobody claims it.

Reports are taken at NOW = 12-02 12:00."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from models.tickets import resolution, actions as tickets, votes
from models.tickets import whistle as whistling
from models.store.tables import DepartmentRating, Person, Ticket, Unit, Vote

from deadline_helpers import local, utc

NOW = local(2026, 12, 2, 12, 0)


@dataclass
class Fixture:
    ids: dict[str, int]  # T1 … → ticket id
    people: dict[str, int]  # person code → id
    units: dict[str, int]  # unit code → id


async def _unit(session, code: str) -> Unit:
    return await session.scalar(select(Unit).where(Unit.code == code))


async def _staff(session, code: str) -> Person:
    return await session.scalar(select(Person).where(Person.code == code))


async def build(whistle, clock) -> Fixture:
    core, ids, reporters = whistle.core, {}, {}

    async def at(moment: datetime, action):
        clock.now = utc(moment)
        return await whistle.db.run(action)

    def create(name: str, category: str, grid: str):
        async def action(session):
            reporter = Person(name=f"resident {name}", created_at=core.now())
            session.add(reporter)
            await session.flush()
            ticket = await tickets.create(session, core, reporter, {
                "category": category, "description": f"Report {name} for the monthly figures",
                "grid_id": (await _unit(session, grid)).id, "anonymous": True}, "telegram")
            ids[name], reporters[name] = ticket.id, reporter.id
        return action

    def staff(name: str, code: str, verb: str, *args):
        async def action(session):
            ticket = await session.get(Ticket, ids[name])
            actor = await _staff(session, code)
            if verb == "claim":
                await tickets.claim(session, core, actor, ticket)
            elif verb == "resolve":
                await resolution.resolve(session, core, actor, ticket, "Done.")
            elif verb == "escalate":
                await tickets.escalate(session, core, actor, ticket, "Needs the community.")
            elif verb == "duplicate":
                await tickets.close_duplicate(session, core, actor, ticket,
                                              await session.get(Ticket, ids[args[0]]))
            elif verb == "whistle":
                holder, lead, coop = [await _unit(session, c) for c in args]
                await whistling.whistle(session, core, actor, ticket, holder, lead.id, [coop.id])
            elif verb == "rate":
                session.add(DepartmentRating(
                    ticket_id=ticket.id, department_id=ticket.unit_id,
                    rater_unit_id=ticket.whistler_unit_id, rater_id=actor.id, score=args[0],
                    created_at=core.now()))
        return action

    def vote(name: str, solved: bool, satisfaction: str | None):
        async def action(session):
            ticket = await session.get(Ticket, ids[name])
            person = await session.get(Person, reporters[name])
            row = await session.scalar(select(Vote).where(Vote.ticket_id == ticket.id,
                                                          Vote.person_id == person.id))
            if row is None:
                row = Vote(ticket_id=ticket.id, person_id=person.id, created_at=core.now(),
                           updated_at=core.now())
                session.add(row)
            row.solved, row.satisfaction, row.updated_at = solved, satisfaction, core.now()
            await session.flush()
            await votes.settle(session, core, person, ticket, row)
        return action

    def unrated(name: str):
        async def action(session):
            await tickets.close(session, core, None, await session.get(Ticket, ids[name]),
                                unrated=True)
        return action

    chief1, chief2, chief5, chief9 = "p-wangjianguo", "p-lixiuying", "p-chenzhiqiang", "p-zhoujie"
    steps = [
        (local(2026, 11, 2, 10, 0), create("T1", "garbage", "g01")),
        (local(2026, 11, 2, 10, 15), create("T6", "garbage", "g01")),
        (local(2026, 11, 2, 10, 30), staff("T1", chief1, "claim")),
        (local(2026, 11, 2, 10, 40), staff("T6", chief1, "duplicate", "T1")),
        (local(2026, 11, 2, 11, 0), create("T2", "garbage", "g01")),
        (local(2026, 11, 2, 15, 0), staff("T2", chief1, "claim")),
        (local(2026, 11, 3, 10, 0), staff("T1", chief1, "resolve")),
        (local(2026, 11, 3, 11, 0), vote("T1", True, "satisfied")),
        (local(2026, 11, 4, 9, 0), staff("T2", chief1, "resolve")),
        (local(2026, 11, 4, 10, 0), vote("T2", True, "basic")),
        (local(2026, 11, 5, 9, 0), create("T3", "road", "g02")),
        (local(2026, 11, 5, 9, 30), staff("T3", chief2, "claim")),
        (local(2026, 11, 5, 10, 0), staff("T3", chief2, "resolve")),
        (local(2026, 11, 5, 11, 0), vote("T3", False, None)),
        (local(2026, 11, 6, 9, 0), staff("T3", chief2, "resolve")),
        (local(2026, 11, 6, 10, 0), vote("T3", True, "satisfied")),
        (local(2026, 11, 9, 10, 0), create("T4", "garbage", "g01")),
        (local(2026, 11, 9, 10, 30), staff("T4", chief1, "escalate")),
        (local(2026, 11, 9, 11, 0), staff("T4", "p-heshuzhen", "claim")),
        (local(2026, 11, 10, 10, 0), staff("T4", "p-heshuzhen", "resolve")),
        (local(2026, 11, 13, 11, 0), unrated("T4")),
        (local(2026, 11, 20, 20, 0), create("T5", "water", "g05")),
        (local(2026, 11, 20, 20, 30), staff("T5", chief5, "claim")),
        (local(2026, 11, 25, 10, 0), create("T8", "garbage", "g09")),
        (local(2026, 11, 25, 10, 30), staff("T8", chief9, "escalate")),
        (local(2026, 11, 25, 11, 0), staff("T8", "p-linxiaoyan", "whistle", "c3", "d-cg", "d-sj")),
        (local(2026, 11, 25, 11, 30), staff("T8", "p-zhengguodong", "claim")),
        (local(2026, 11, 26, 10, 0), staff("T8", "p-zhengguodong", "resolve")),
        (local(2026, 11, 26, 11, 0), staff("T8", "p-linxiaoyan", "rate", 4)),
        (local(2026, 11, 30, 9, 0), create("T9", "road", "g02")),
        (local(2026, 12, 1, 10, 0), staff("T5", chief5, "resolve")),
        (local(2026, 12, 1, 11, 0), vote("T5", True, "basic")),
    ]
    for moment, action in steps:
        await at(moment, action)
    clock.now = utc(NOW)

    async def lookup(session):
        people = {p.code: p.id for p in await session.scalars(select(Person).where(
            Person.code.is_not(None)))}
        units = {u.code: u.id for u in await session.scalars(select(Unit))}
        return people, units
    people, units = await whistle.db.run(lookup)
    return Fixture(ids, people, units)
