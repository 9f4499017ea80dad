"""Whistling to departments (吹哨报到) and one whistle, one rating (一哨一评): a community
secretary names a lead department and a cooperating one; the lead claims, reports
progress (seen by the whistler) and resolves; the cooperating department reports for
duty; the whistling unit rates the lead department, with a comment."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from models.store.tables import Assignment, DepartmentRating, Timer

from deadline_helpers import (
    C1_CHAT, CHIEF_G01, D_CG_CHAT, D_HW_CHAT, D_SJ_CHAT, G01_CHAT, OFFICER_CG, OFFICER_SJ,
    SECRETARY_C1, alert_text, body, buttons, claim, count, event_kinds, events_of, file_report,
    group_text, has_button, last_id, local, note, open_timer, person_id, press, sent_requests,
    failed_rows, sweep_at, ticket_row, unit_id, unit_name, wait_card, wait_sent,
    Filed,
)


RESIDENT = 9001
OFFICER_HW = 4004
STALE_ZH = "This button is no longer active."


@pytest.fixture
def staff(people):
    people(RESIDENT, "Li Si", language="en")
    for uid, name in [(CHIEF_G01, "王建国"), (SECRETARY_C1, "何淑珍"), (OFFICER_CG, "郑国栋"),
                      (OFFICER_SJ, "梁红"), (OFFICER_HW, "谢春梅")]:
        people(uid, name)


async def escalated_to_c1(api, whistle) -> tuple[Filed, dict]:
    """A report in g01, escalated by its chief to the community; returns it and its c1 card."""
    filed = await file_report(api, whistle, RESIDENT)
    await claim(api, CHIEF_G01, G01_CHAT, filed)
    await api.wait_for(lambda: f"escalate:{filed.id}" in buttons(
        api.message(G01_CHAT, filed.card["message_id"])), description="the escalate button")
    await note(api, whistle, CHIEF_G01, G01_CHAT, filed.card["message_id"], f"escalate:{filed.id}",
               filed.number, "涉及占道经营，需要城管和环卫联合处置")
    card = await wait_card(api, C1_CHAT, filed.id, prefix="whistle:")
    assert (await ticket_row(whistle, filed.id)).level == "community"
    return filed, card


async def blow_whistle(api, whistle, filed, card, lead: int, coop: list[int]) -> dict:
    """The secretary: whistle → lead (wl) → cooperating (wc) → send (ws). Returns the menu."""
    after = last_id(api, C1_CHAT)
    answer = await press(api, SECRETARY_C1, C1_CHAT, card["message_id"], f"whistle:{filed.id}")
    assert not answer.get("show_alert"), answer
    menu = await api.wait_message(C1_CHAT, predicate=has_button(f"wl:{filed.id}."), after=after)
    departments = [await unit_id(whistle, c) for c in ("d-cg", "d-sj", "d-zj", "d-hw")]
    assert sorted(buttons(menu)) == sorted(f"wl:{filed.id}.{d}" for d in departments)
    await wait_sent(whistle, api)  # the menu's message id is remembered before it is edited

    await press(api, SECRETARY_C1, C1_CHAT, menu["message_id"], f"wl:{filed.id}.{lead}")
    menu = await api.wait_for(lambda: f"ws:{filed.id}" in buttons(api.message(C1_CHAT, menu["message_id"]))
                              and api.message(C1_CHAT, menu["message_id"]), description="lead chosen")
    assert sorted(d for d in buttons(menu) if d.startswith("wc:")) == sorted(
        f"wc:{filed.id}.{d}" for d in departments if d != lead)
    for department in coop:
        await press(api, SECRETARY_C1, C1_CHAT, menu["message_id"], f"wc:{filed.id}.{department}")

        def ticked(department=department):
            message = api.message(C1_CHAT, menu["message_id"])
            labels = {b["callback_data"]: b["text"] for row in message["reply_markup"]["inline_keyboard"]
                      for b in row}
            return labels.get(f"wc:{filed.id}.{department}", "").startswith("☑️") and message
        menu = await api.wait_for(ticked, description="cooperating department ticked")
    answer = await press(api, SECRETARY_C1, C1_CHAT, menu["message_id"], f"ws:{filed.id}")
    assert not answer.get("show_alert") and filed.number in answer["text"], answer
    # One menu message, edited in place.
    assert len([m for m in api.bot_messages(C1_CHAT) if has_button(f"wl:{filed.id}.")(m)
                or has_button(f"ws:{filed.id}")(m)]) == 1
    return menu


async def test_whistle_to_lead_and_cooperating_departments_through_rating(whistle, api, staff, clock):
    filed, c1_card = await escalated_to_c1(api, whistle)
    cg, hw, c1 = (await unit_id(whistle, "d-cg"), await unit_id(whistle, "d-hw"),
                  await unit_id(whistle, "c1"))
    secretary = await person_id(whistle, SECRETARY_C1)
    clock.now = local(2026, 11, 23, 10, 30)
    after_resident = last_id(api, RESIDENT)
    await blow_whistle(api, whistle, filed, c1_card, lead=cg, coop=[hw])

    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.unit_id, ticket.level, ticket.whistler_unit_id, ticket.assignee_id) == (
        "escalated", cg, "department", c1, None)
    rows = await whistle.db.run(lambda s: s.scalars(select(Assignment).where(
        Assignment.ticket_id == filed.id).order_by(Assignment.id)))
    rows = list(rows)
    assert [(a.unit_id, a.role, a.state, a.whistler_unit_id, a.whistled_by) for a in rows] == [
        (cg, "lead", "waiting", c1, secretary), (hw, "coop", "waiting", c1, secretary)]
    whistled = await events_of(whistle, filed.id, "whistled")
    assert len(whistled) == 1 and whistled[0].actor_id == secretary
    assert whistled[0].data == {"lead": "d-cg", "coop": [hw], "by": "c1"}
    claim_t = await open_timer(whistle, filed.id, "claim")
    assert (claim_t.unit_id, claim_t.starts_at, claim_t.due_at) == (
        cg, local(2026, 11, 23, 10, 30), local(2026, 11, 23, 13, 30))  # lunch excluded
    await api.wait_message(RESIDENT, contains="passed up to", after=after_resident)

    lead_card = await wait_card(api, D_CG_CHAT, filed.id, prefix="claim:")
    assert f"claim:{filed.id}" in buttons(lead_card) and f"duty:{filed.id}" not in buttons(lead_card)
    coop_card = await wait_card(api, D_HW_CHAT, filed.id)
    assert buttons(coop_card) == [f"duty:{filed.id}"]
    await wait_sent(whistle, api)
    assert not any(filed.number in body(m) for m in api.bot_messages(D_SJ_CHAT))
    assert buttons(api.message(C1_CHAT, c1_card["message_id"])) == []  # c1 no longer holds it

    # The cooperating department reports for duty; the whistler's chat hears it.
    after_c1 = last_id(api, C1_CHAT)
    clock.now = local(2026, 11, 23, 10, 40)
    answer = await press(api, OFFICER_HW, D_HW_CHAT, coop_card["message_id"], f"duty:{filed.id}")
    assert not answer.get("show_alert"), answer
    duty = group_text(whistle, "📣 {unit} reported for duty on #{number}.",
                      unit=await unit_name(whistle, "d-hw"), number=filed.number)
    await api.wait_message(C1_CHAT, contains=duty, after=after_c1)
    coop = await whistle.db.run(lambda s: s.scalar(select(Assignment).where(
        Assignment.ticket_id == filed.id, Assignment.unit_id == hw)))
    assert (coop.state, coop.reported_by, coop.reported_at) == (
        "reported", await person_id(whistle, OFFICER_HW), local(2026, 11, 23, 10, 40))
    assert "reported_for_duty" in await event_kinds(whistle, filed.id)
    await api.wait_for(lambda: buttons(api.message(D_HW_CHAT, coop_card["message_id"])) == [])
    again = await press(api, OFFICER_HW, D_HW_CHAT, coop_card["message_id"], f"duty:{filed.id}")
    assert again.get("text") == group_text(whistle, STALE_ZH)

    # The lead department claims, reports progress (seen by the whistler) and resolves.
    clock.now = local(2026, 11, 23, 11, 0)
    await claim(api, OFFICER_CG, D_CG_CHAT, filed, card=lead_card)
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.assignee_id, ticket.level) == (
        "claimed", await person_id(whistle, OFFICER_CG), "department")
    lead = await unit_name(whistle, "d-cg")
    after_c1 = last_id(api, C1_CHAT)
    await api.wait_for(lambda: f"progress:{filed.id}" in buttons(api.message(D_CG_CHAT, lead_card["message_id"])))
    await note(api, whistle, OFFICER_CG, D_CG_CHAT, lead_card["message_id"], f"progress:{filed.id}",
               filed.number, "执法队员已到场，责令摊贩撤离")
    await api.wait_message(C1_CHAT, after=after_c1, contains=group_text(
        whistle, "📣 {unit} on #{number}: {note}", unit=lead, number=filed.number,
        note="执法队员已到场，责令摊贩撤离"))
    await api.wait_message(RESIDENT, contains="执法队员已到场")

    after_c1 = last_id(api, C1_CHAT)
    clock.now = local(2026, 11, 23, 14, 0)
    await note(api, whistle, OFFICER_CG, D_CG_CHAT, lead_card["message_id"], f"resolve:{filed.id}",
               filed.number, "摊位已清理，垃圾已由环卫清运")
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.resolved_level) == ("resolved", "department")
    ask = await api.wait_message(C1_CHAT, predicate=has_button(f"rate:{filed.id}."), after=after_c1)
    assert ask["text"] == group_text(
        whistle, "{unit} resolved #{number}. Rate its response (one whistle, one rating):",
        unit=lead, number=filed.number)
    assert buttons(ask) == [f"rate:{filed.id}.{n}" for n in range(1, 6)]
    await api.wait_message(RESIDENT, predicate=has_button(f"vs:{filed.id}."))

    # Only the unit that whistled may rate.
    refused = await press(api, OFFICER_CG, C1_CHAT, ask["message_id"], f"rate:{filed.id}.5")
    assert refused.get("show_alert") is True
    assert await count(whistle, DepartmentRating, DepartmentRating.ticket_id == filed.id) == 0

    clock.now = local(2026, 11, 23, 14, 30)
    await wait_sent(whistle, api)
    after_c1 = last_id(api, C1_CHAT)
    answer = await press(api, SECRETARY_C1, C1_CHAT, ask["message_id"], f"rate:{filed.id}.4")
    assert not answer.get("show_alert"), answer
    prompt = await api.wait_message(C1_CHAT, contains=filed.number, after=after_c1)
    forced = [p for p in sent_requests(api, "sendMessage", C1_CHAT) if p.get("text") == prompt["text"]]
    assert forced[-1]["reply_markup"].get("force_reply") is True
    rating = await whistle.db.run(lambda s: s.scalar(select(DepartmentRating).where(
        DepartmentRating.ticket_id == filed.id)))
    assert (rating.department_id, rating.rater_unit_id, rating.rater_id, rating.score,
            rating.comment, rating.created_at) == (cg, c1, secretary, 4, None, local(2026, 11, 23, 14, 30))
    rated = await events_of(whistle, filed.id, "rated")
    assert len(rated) == 1 and rated[0].data == {"score": 4} and rated[0].actor_id == secretary

    after_c1 = last_id(api, C1_CHAT)
    api.user_sends_text(SECRETARY_C1, C1_CHAT, "响应迅速，处置到位", reply_to_message_id=prompt["message_id"])
    await api.wait_message(C1_CHAT, after=after_c1)
    rating = await whistle.db.run(lambda s: s.scalar(select(DepartmentRating).where(
        DepartmentRating.ticket_id == filed.id)))
    assert (rating.score, rating.comment) == (4, "响应迅速，处置到位")
    assert await count(whistle, DepartmentRating) == 1


async def test_who_may_whistle(whistle, api, staff, clock):
    filed = await file_report(api, whistle, RESIDENT)
    cg = await unit_id(whistle, "d-cg")
    # A ticket still at its grid cannot be whistled (the grid's card has no whistle button).
    assert f"whistle:{filed.id}" not in buttons(filed.card)
    answer = await press(api, CHIEF_G01, G01_CHAT, filed.card["message_id"], f"whistle:{filed.id}")
    assert answer.get("text") == group_text(whistle, STALE_ZH)

    await claim(api, CHIEF_G01, G01_CHAT, filed)
    await api.wait_for(lambda: f"escalate:{filed.id}" in buttons(
        api.message(G01_CHAT, filed.card["message_id"])))
    await note(api, whistle, CHIEF_G01, G01_CHAT, filed.card["message_id"], f"escalate:{filed.id}",
               filed.number, "需要部门协同处置")
    card = await wait_card(api, C1_CHAT, filed.id, prefix="whistle:")
    # The grid chief is below the community: not allowed to whistle for it.
    answer = await press(api, CHIEF_G01, C1_CHAT, card["message_id"], f"whistle:{filed.id}")
    assert answer.get("show_alert") is True
    answer = await press(api, CHIEF_G01, C1_CHAT, card["message_id"], f"wl:{filed.id}.{cg}")
    assert answer.get("show_alert") is True
    answer = await press(api, CHIEF_G01, C1_CHAT, card["message_id"], f"ws:{filed.id}")
    assert answer.get("show_alert") is True
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.level, ticket.whistler_unit_id) == ("community", None)
    assert await count(whistle, Assignment) == 0


async def test_a_whistled_department_that_misses_its_claim_is_reported_to_the_whistler(
        whistle, api, staff, clock):
    filed, c1_card = await escalated_to_c1(api, whistle)
    cg = await unit_id(whistle, "d-cg")
    clock.now = local(2026, 11, 23, 10, 30)
    await blow_whistle(api, whistle, filed, c1_card, lead=cg, coop=[])
    assert await count(whistle, Assignment, Assignment.ticket_id == filed.id) == 1

    after_c1 = last_id(api, C1_CHAT)
    result = await sweep_at(whistle, clock, local(2026, 11, 23, 13, 30))
    assert (result.breached, result.escalated) == (1, 0)
    expected = await alert_text(whistle, "d-cg", filed.number, "garbage", "claim", "11-23 13:30")
    alert = await api.wait_message(C1_CHAT, contains=filed.number, after=after_c1)
    assert expected in alert["text"].splitlines()
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.unit_id, ticket.level, ticket.state) == (cg, "department", "escalated")


async def test_refreshing_cards_that_did_not_change_is_not_a_failed_delivery(whistle, api, staff,
                                                                           clock):
    """Reporting for duty refreshes every card of the ticket; the cards in the grid, community
    and lead department chats come out the same, and Telegram answers "message is not
    modified". That is success (bot.telegram.channel.NOT_MODIFIED), not a failed message."""
    filed, c1_card = await escalated_to_c1(api, whistle)
    cg, hw = await unit_id(whistle, "d-cg"), await unit_id(whistle, "d-hw")
    await blow_whistle(api, whistle, filed, c1_card, lead=cg, coop=[hw])
    coop_card = await wait_card(api, D_HW_CHAT, filed.id, prefix="duty:")
    await wait_sent(whistle, api)
    assert await failed_rows(whistle) == []
    await press(api, OFFICER_HW, D_HW_CHAT, coop_card["message_id"], f"duty:{filed.id}")
    await api.wait_for(lambda: buttons(api.message(D_HW_CHAT, coop_card["message_id"])) == [])
    await wait_sent(whistle, api)
    assert await failed_rows(whistle) == []


async def test_a_cooperating_department_has_its_own_duty_deadline(whistle, api, staff, clock):
    """Each cooperating department must report for duty within the claim span of the order
    type: it is on that department's board when due, and a miss alerts the unit that
    whistled. Reporting for duty in time ends the timer."""
    filed, c1_card = await escalated_to_c1(api, whistle)
    cg, sj, hw = [await unit_id(whistle, c) for c in ("d-cg", "d-sj", "d-hw")]
    await blow_whistle(api, whistle, filed, c1_card, lead=cg, coop=[sj, hw])
    duties = {t.unit_id: t for t in await timers_of(whistle, filed.id, "duty")}
    assert set(duties) == {sj, hw}
    start = duties[sj].starts_at
    assert duties[sj].due_at == whistle.core.calendar.add(start, whistle.config.deadlines.routine.claim)

    # 梁红 reports for duty for 市场监管 in time; 环卫 does not
    duty_card = await wait_card(api, D_SJ_CHAT, filed.id, prefix="duty:")
    await press(api, OFFICER_SJ, D_SJ_CHAT, duty_card["message_id"], f"duty:{filed.id}")
    await wait_sent(whistle, api)
    duties = {t.unit_id: t for t in await timers_of(whistle, filed.id, "duty")}
    assert (duties[sj].stage, duties[sj].met) == ("done", True)

    await sweep_at(whistle, clock, duties[hw].warn_at)  # the lead's claim timer warns too
    assert {t.unit_id: t.stage for t in await timers_of(whistle, filed.id, "duty")}[hw] == "warned"
    board = await api.wait_message(D_HW_CHAT, contains="📋")
    assert filed.number in board["text"]
    after = last_id(api, C1_CHAT)
    await sweep_at(whistle, clock, duties[hw].due_at)
    alert = await api.wait_message(C1_CHAT, contains=filed.number, after=after)
    assert await unit_name(whistle, "d-hw") in alert["text"]
    duties = {t.unit_id: t for t in await timers_of(whistle, filed.id, "duty")}
    assert (duties[hw].stage, duties[hw].met) == ("breached", False)


async def timers_of(whistle, ticket_id: int, kind: str) -> list[Timer]:
    return list(await whistle.db.run(lambda s: s.scalars(
        select(Timer).where(Timer.ticket_id == ticket_id, Timer.kind == kind).order_by(Timer.id))))
