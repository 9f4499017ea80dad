"""Staff work from the unit chats: who may claim, races on Claim, stale and forged
buttons, return and manual re-routing, notes by private chat, escalation,
resolution with proof, the reporter's privacy and /bind.

Residents speak English; group chats speak zh_Hans (its catalog is being
translated), so group-side checks look at callback data, numbers, names and rows."""
from __future__ import annotations

import asyncio
import logging

from sqlalchemy import select, update

from flows import (
    C1_CHAT, DUTY_CHAT, G01_CHAT, G02_CHAT, ask_note, body, button, buttons, card_now,
    claim, count, events, file_report, group_text, has_button, last_id, media_kinds, press,
    photo_bytes, reply_note, send_photo_reply, ticket_row, wait_card,
)
from models.org import tree as org
from models.tickets import actions as tickets
from models.store.tables import ChatBinding, Dialogue, Identity, Media, Person, Ticket, TicketEvent

STALE = "This button is no longer active."


async def person_of(whistle, telegram_id: int) -> Person:
    return await whistle.db.run(lambda s: s.scalar(
        select(Person).join(Identity, Identity.person_id == Person.id)
        .where(Identity.channel == "telegram", Identity.external_id == str(telegram_id))))


async def unit_id(whistle, code: str) -> int:
    return (await whistle.db.run(lambda s: org.unit_by_code(s, code))).id


def errors(caplog) -> list[str]:
    return [f"{r.name}: {r.getMessage()} {r.exc_info[1]!r}" if r.exc_info else f"{r.name}: {r.getMessage()}"
            for r in caplog.records if r.levelno >= logging.ERROR]


# ---- 1. who may claim --------------------------------------------------------------------

async def test_claim_by_a_stranger_is_refused_and_changes_nothing(whistle, api, people):
    resident = people(9001, "Li Si", language="en")
    people(1002, "李秀英")
    people(2001, "何淑珍")
    filed = await file_report(api, whistle, resident)
    card_before = card_now(api, G01_CHAT, filed)

    for stranger in (9001, 1002):  # the reporter, and the chief of g02 on a g01 ticket
        answer = await claim(api, stranger, filed)
        assert answer["show_alert"] and answer["text"], answer
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.assignee_id, ticket.claimed_at) == ("routed", None, None)
    assert await events(whistle, filed.id) == ["created"]
    await api.wait_idle()
    assert card_now(api, G01_CHAT, filed) == card_before  # the card was not touched

    # A community secretary (c1, above g01) may claim.
    answer = await claim(api, 2001, filed)
    assert filed.number in answer["text"] and not answer["show_alert"]
    ticket = await ticket_row(whistle, filed.id)
    secretary = await person_of(whistle, 2001)
    assert (ticket.state, ticket.assignee_id) == ("claimed", secretary.id)
    assert await events(whistle, filed.id) == ["created", "claimed"]
    claimed = await api.wait_for(lambda: "claim:" not in str(buttons(card_now(api, G01_CHAT, filed)))
                                 and card_now(api, G01_CHAT, filed))
    assert "何淑珍" in claimed["text"] and f"progress:{filed.id}" in buttons(claimed)


async def test_refusal_is_in_the_residents_language(whistle, api, people):
    """Denied's docstring: "the message says why, in their language". An English-speaking
    resident (Telegram language "en", no /lang) pressing Claim must be refused in English."""
    resident = people(9001, "Li Si", language="en")
    filed = await file_report(api, whistle, resident)
    answer = await claim(api, 9001, filed)
    assert answer["text"] == "Only staff of this grid or above can claim this ticket.", answer


# ---- 2. two claims at once ---------------------------------------------------------------

async def test_simultaneous_claims_in_the_chat_have_one_winner(whistle, api, people):
    resident = people(9001, "Li Si", language="en")
    people(1001, "王建国")
    people(1101, "马超")  # grid worker of g01
    filed = await file_report(api, whistle, resident)
    card = filed.card["message_id"]
    q1 = api.user_presses(1001, G01_CHAT, card, f"claim:{filed.id}")
    q2 = api.user_presses(1101, G01_CHAT, card, f"claim:{filed.id}")
    await api.wait_for(lambda: q1 in api.callback_answers and q2 in api.callback_answers)

    assert (await events(whistle, filed.id)).count("claimed") == 1
    ticket = await ticket_row(whistle, filed.id)
    chief, worker = await person_of(whistle, 1001), await person_of(whistle, 1101)
    assert ticket.state == "claimed" and ticket.assignee_id in (chief.id, worker.id)
    winner, loser_query = (chief, q2) if ticket.assignee_id == chief.id else (worker, q1)
    loser = api.callback_answers[loser_query]
    assert loser["show_alert"] and winner.name in loser["text"], loser
    await api.wait_message(resident.id, contains=winner.name)
    assert (await count(whistle, TicketEvent, TicketEvent.kind == "claimed")) == 1


async def _claim_in_own_session(whistle, telegram_id: int, ticket_id: int) -> int:
    async def act(session):
        person = await session.scalar(select(Person).join(Identity, Identity.person_id == Person.id)
                                      .where(Identity.external_id == str(telegram_id)))
        ticket = await session.get(Ticket, ticket_id)
        await tickets.claim(session, whistle.core, person, ticket)
        return person.id
    return await whistle.db.run(act)


async def test_simultaneous_claims_in_the_core_have_one_winner(whistle, api, people):
    resident = people(9001, "Li Si", language="en")
    filed = await file_report(api, whistle, resident)
    results = await asyncio.gather(_claim_in_own_session(whistle, 1001, filed.id),
                                   _claim_in_own_session(whistle, 1101, filed.id),
                                   return_exceptions=True)
    winners = [r for r in results if isinstance(r, int)]
    losers = [r for r in results if not isinstance(r, int)]
    assert len(winners) == 1 and len(losers) == 1, results
    assert isinstance(losers[0], tickets.Denied), repr(losers[0])
    winner = await whistle.db.run(lambda s: s.get(Person, winners[0]))
    assert winner.name in losers[0].text(whistle.i18n.get("en"))
    assert (await ticket_row(whistle, filed.id)).assignee_id == winners[0]
    assert (await events(whistle, filed.id)).count("claimed") == 1


async def test_guarded_update_refuses_a_claim_read_before_another_won(whistle, api, people):
    """The loser read the ticket as "routed", but by its UPDATE the other claim had
    committed: the guarded UPDATE matches no row and the loser is told who won."""
    resident = people(9001, "Li Si", language="en")
    filed = await file_report(api, whistle, resident)
    worker = await person_of(whistle, 1101)

    async def act(session):
        chief = await session.scalar(select(Person).join(Identity, Identity.person_id == Person.id)
                                     .where(Identity.external_id == "1001"))
        ticket = await session.get(Ticket, filed.id)
        assert ticket.state == "routed"
        # the other claim, as if committed by another process meanwhile (no ORM sync)
        await session.execute(update(Ticket).where(Ticket.id == filed.id).values(
            state="claimed", assignee_id=worker.id, claimed_at=whistle.core.now())
            .execution_options(synchronize_session=False))
        try:
            await tickets.claim(session, whistle.core, chief, ticket)
        except tickets.Denied as exc:
            return exc.text(whistle.i18n.get("en"))
        return None

    message = await whistle.db.run(act)
    assert message is not None and worker.name in message
    assert await events(whistle, filed.id) == ["created"]


# ---- 3. double click ---------------------------------------------------------------------

async def test_double_click_on_claim_records_one_claim(whistle, api, people):
    resident = people(9001, "Li Si", language="en")
    people(1001, "王建国")
    filed = await file_report(api, whistle, resident)
    q1 = api.user_presses(1001, G01_CHAT, filed.card["message_id"], f"claim:{filed.id}")
    q2 = api.user_presses(1001, G01_CHAT, filed.card["message_id"], f"claim:{filed.id}")
    await api.wait_for(lambda: q1 in api.callback_answers and q2 in api.callback_answers)
    first, second = api.callback_answers[q1], api.callback_answers[q2]
    assert filed.number in first["text"]
    assert second["text"] == group_text(whistle, "Already claimed by {name}.", name="王建国")
    assert await events(whistle, filed.id) == ["created", "claimed"]
    await api.wait_idle()
    claimed_notes = [m for m in api.bot_messages(resident.id) if "was claimed by" in body(m)]
    assert len(claimed_notes) == 1


# ---- 4. stale and forged buttons -----------------------------------------------------------

async def test_claim_on_a_resolved_tickets_old_card_is_refused(whistle, api, people):
    resident = people(9001, "Li Si", language="en")
    people(1001, "王建国")
    filed = await file_report(api, whistle, resident)
    await claim(api, 1001, filed)
    prompt = await ask_note(api, 1001, G01_CHAT, filed.card["message_id"], f"resolve:{filed.id}",
                            filed.number)
    await reply_note(api, 1001, G01_CHAT, prompt, "Cleared by the sanitation team")
    await api.wait_for(lambda: buttons(card_now(api, G01_CHAT, filed)) == [])
    assert (await ticket_row(whistle, filed.id)).state == "resolved"

    for data in (f"claim:{filed.id}", f"progress:{filed.id}", f"return:{filed.id}",
                 f"escalate:{filed.id}", f"route:{filed.id}"):
        answer = await press(api, 1001, G01_CHAT, filed.card["message_id"], data)
        assert answer["text"], (data, answer)
    ticket = await ticket_row(whistle, filed.id)
    assert ticket.state == "resolved" and ticket.resolution_note == "Cleared by the sanitation team"
    assert await events(whistle, filed.id) == ["created", "claimed", "resolved"]


FORGED = ["claim:999999", "progress:abc", "zz", "claim:", "claim", ":", "rg:1.x", "rc:abc",
          "rg:999999.1", "route:999999", "bind:abc", "my:abc", "lang:xx", "cat:garbage",
          "cf", "resolve:-1", "claim:1.2.3",
          "claim:99999999999999999999",  # digits, but beyond any integer column
          "claim:²"]  # str.isdigit() is True for a superscript two, int() is not


async def test_forged_callback_data_gets_a_polite_alert(whistle, api, people, caplog):
    resident = people(9001, "Li Si", language="en")
    people(1001, "王建国")
    filed = await file_report(api, whistle, resident)
    card = filed.card["message_id"]
    queries = {data: api.user_presses(1001, G01_CHAT, card, data) for data in FORGED}
    await api.wait_idle()
    unanswered = [data for data, query in queries.items() if query not in api.callback_answers]
    assert unanswered == [], f"never answered (the handler raised): {unanswered}"
    for data, query in queries.items():
        assert api.callback_answers[query]["text"], data
    assert errors(caplog) == []
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.assignee_id) == ("routed", None)
    assert await events(whistle, filed.id) == ["created"]
    # the service still answers
    after = last_id(api, resident.id)
    api.user_sends_text(resident.id, resident.id, "/start")
    await api.wait_message(resident.id, after=after, contains="Welcome")


# ---- 5. return and re-route ----------------------------------------------------------------

async def test_return_then_dispatch_reroutes_to_another_grid(whistle, api, people):
    resident = people(9001, "Li Si", language="en")
    people(1001, "王建国")
    people(3001, "罗志刚")
    filed = await file_report(api, whistle, resident)

    prompt = await ask_note(api, 1001, G01_CHAT, filed.card["message_id"], f"return:{filed.id}",
                            filed.number)
    forced = [p for name, p in api.requests if name == "sendMessage"
              and str(p.get("chat_id")) == str(G01_CHAT) and "force_reply" in str(p.get("reply_markup"))]
    assert forced, "the note prompt is a ForceReply"
    await reply_note(api, 1001, G01_CHAT, prompt, "This gate belongs to the next grid")

    ticket = await ticket_row(whistle, filed.id)
    street = await unit_id(whistle, "s1")
    assert (ticket.state, ticket.unit_id, ticket.level, ticket.assignee_id) == (
        "returned", street, "street", None)
    assert await events(whistle, filed.id) == ["created", "returned"]
    duty_card = await wait_card(api, DUTY_CHAT, filed.id, prefix="route:")
    assert filed.number in duty_card["text"]
    await api.wait_for(lambda: buttons(card_now(api, G01_CHAT, filed)) == [],
                       description="the g01 card loses its buttons")
    await api.wait_message(resident.id, contains="being sent to the right grid")

    # a grid chief may not route, neither by the button nor by a forged grid choice
    answer = await press(api, 1001, DUTY_CHAT, duty_card["message_id"], f"route:{filed.id}")
    assert answer["show_alert"]
    g01 = await unit_id(whistle, "g01")
    answer = await press(api, 1001, DUTY_CHAT, duty_card["message_id"], f"rg:{filed.id}.{g01}")
    assert answer["show_alert"]
    assert (await ticket_row(whistle, filed.id)).state == "returned"
    assert not [m for m in api.bot_messages(DUTY_CHAT) if has_button("rc:")(m)]

    # the dispatcher: route → community → grid
    after = last_id(api, DUTY_CHAT)
    await press(api, 3001, DUTY_CHAT, duty_card["message_id"], f"route:{filed.id}")
    c1 = await unit_id(whistle, "c1")
    menu = await api.wait_message(DUTY_CHAT, after=after, predicate=has_button("rc:"))
    assert f"rc:{filed.id}.{c1}" in buttons(menu)
    after = last_id(api, DUTY_CHAT)
    await press(api, 3001, DUTY_CHAT, menu["message_id"], f"rc:{filed.id}.{c1}")
    grids = await api.wait_message(DUTY_CHAT, after=after, predicate=has_button("rg:"))
    g02 = await unit_id(whistle, "g02")
    assert f"rg:{filed.id}.{g02}" in buttons(grids) and len(buttons(grids)) == 4
    await press(api, 3001, DUTY_CHAT, grids["message_id"], f"rg:{filed.id}.{g02}")

    new_card = await wait_card(api, G02_CHAT, filed.id, prefix="claim:")
    assert filed.number in new_card["text"]
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.unit_id, ticket.grid_id, ticket.level) == ("routed", g02, g02, "grid")
    assert await events(whistle, filed.id) == ["created", "returned", "routed"]
    await api.wait_for(lambda: buttons(api.message(DUTY_CHAT, duty_card["message_id"])) == [],
                       description="the duty card loses its route button")
    await api.wait_message(resident.id, contains="Huaishu Grid 2")
    # the chief of g01 cannot claim it any more; the chief of g02 can
    people(1002, "李秀英")
    assert (await press(api, 1001, G02_CHAT, new_card["message_id"], f"claim:{filed.id}"))["show_alert"]
    answer = await press(api, 1002, G02_CHAT, new_card["message_id"], f"claim:{filed.id}")
    assert filed.number in answer["text"]


# ---- 6. a note by private chat; /cancel ------------------------------------------------------

async def test_note_by_private_chat_and_cancel_in_the_group(whistle, api, people):
    resident = people(9001, "Li Si", language="en")
    people(1001, "王建国")
    filed = await file_report(api, whistle, resident)
    await claim(api, 1001, filed)
    await ask_note(api, 1001, G01_CHAT, filed.card["message_id"], f"progress:{filed.id}", filed.number)

    after = last_id(api, 1001)
    api.user_sends_text(1001, 1001, "Called the sanitation team, pickup at 3 pm")
    confirmation = await api.wait_message(1001, after=after)
    assert filed.number in confirmation["text"]
    await api.wait_message(resident.id, contains="Called the sanitation team, pickup at 3 pm")
    assert await events(whistle, filed.id) == ["created", "claimed", "progress"]
    assert (await ticket_row(whistle, filed.id)).state == "in_progress"

    prompt = await ask_note(api, 1001, G01_CHAT, filed.card["message_id"], f"progress:{filed.id}",
                            filed.number)
    after = last_id(api, G01_CHAT)
    api.user_sends_text(1001, G01_CHAT, "/cancel")
    await api.wait_message(G01_CHAT, after=after,
                           contains=group_text(whistle, "Cancelled. Nothing was recorded."))
    pending = await whistle.db.run(lambda s: s.scalar(select(Dialogue.pending).join(
        Identity, Identity.person_id == Dialogue.person_id).where(Identity.external_id == "1001")))
    assert pending is None

    after_group, after_resident = last_id(api, G01_CHAT), last_id(api, resident.id)
    api.user_sends_text(1001, G01_CHAT, "This should not be recorded",
                        reply_to_message_id=prompt["message_id"])
    await api.wait_idle()
    assert [m for m in api.bot_messages(G01_CHAT) if m["message_id"] > after_group] == []
    assert [m for m in api.bot_messages(resident.id) if m["message_id"] > after_resident] == []
    assert await events(whistle, filed.id) == ["created", "claimed", "progress"]


# ---- 7. escalation ---------------------------------------------------------------------------

async def _escalated(whistle, api, people):
    resident = people(9001, "Li Si", language="en")
    people(1001, "王建国")
    people(2001, "何淑珍")
    filed = await file_report(api, whistle, resident)
    await claim(api, 1001, filed)
    card = await api.wait_for(lambda: f"escalate:{filed.id}" in buttons(card_now(api, G01_CHAT, filed))
                              and card_now(api, G01_CHAT, filed))
    prompt = await ask_note(api, 1001, G01_CHAT, card["message_id"], button(card, "escalate:"),
                            filed.number)
    await reply_note(api, 1001, G01_CHAT, prompt, "Needs the community's truck")
    community_card = await wait_card(api, C1_CHAT, filed.id, prefix="claim:")
    return resident, filed, community_card


async def test_escalate_to_the_community_which_claims_it(whistle, api, people):
    resident, filed, community_card = await _escalated(whistle, api, people)
    ticket = await ticket_row(whistle, filed.id)
    c1 = await unit_id(whistle, "c1")
    assert (ticket.state, ticket.level, ticket.unit_id, ticket.assignee_id) == (
        "escalated", "community", c1, None)
    assert filed.number in community_card["text"]
    await api.wait_for(lambda: buttons(card_now(api, G01_CHAT, filed)) == [])
    await api.wait_message(resident.id, contains="Huaishu Community")

    # the grid chief can no longer claim: neither on the community card nor on his old one
    for chat, message_id in ((C1_CHAT, community_card["message_id"]),
                             (G01_CHAT, filed.card["message_id"])):
        answer = await press(api, 1001, chat, message_id, f"claim:{filed.id}")
        assert answer["show_alert"], answer
    assert (await ticket_row(whistle, filed.id)).state == "escalated"

    answer = await press(api, 2001, C1_CHAT, community_card["message_id"], f"claim:{filed.id}")
    assert filed.number in answer["text"]
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.assignee_id) == ("claimed", (await person_of(whistle, 2001)).id)
    assert await events(whistle, filed.id) == ["created", "claimed", "escalated", "claimed"]
    answer = await press(api, 1001, C1_CHAT, community_card["message_id"], f"claim:{filed.id}")
    assert answer["show_alert"]
    assert await events(whistle, filed.id) == ["created", "claimed", "escalated", "claimed"]


async def test_escalated_card_offers_no_dead_buttons(whistle, api, people):
    """A fresh card's buttons should all be live. The escalated card shows "Return"
    (card_buttons: WAITING), but Action.RETURN does not accept "escalated"."""
    _resident, filed, community_card = await _escalated(whistle, api, people)
    dead = []
    for data in buttons(community_card):
        if data.startswith("claim:"):
            continue  # claiming changes the card; it is checked above
        answer = await press(api, 2001, C1_CHAT, community_card["message_id"], data)
        if answer["text"] == group_text(whistle, STALE):
            dead.append(data)
    assert dead == [], f"buttons on a fresh escalated card answer {STALE!r}: {dead}"


# ---- 8. resolution with proof ----------------------------------------------------------------

async def test_resolve_with_a_photo_reply_stores_proof_and_tells_the_resident(whistle, api, people):
    resident = people(9001, "Li Si", language="en")
    people(1001, "王建国")
    filed = await file_report(api, whistle, resident, photos=1)
    await claim(api, 1001, filed)
    prompt = await ask_note(api, 1001, G01_CHAT, filed.card["message_id"], f"resolve:{filed.id}",
                            filed.number)
    after, after_resident = last_id(api, G01_CHAT), last_id(api, resident.id)
    send_photo_reply(api, 1001, G01_CHAT, prompt["message_id"], photo_bytes(7), caption="All cleared")
    await api.wait_message(G01_CHAT, after=after)
    await api.wait_message(resident.id, after=after_resident, contains="All cleared")
    photo = await api.wait_message(resident.id, after=after_resident, predicate=lambda m: "photo" in m)
    proof = await whistle.db.run(lambda s: s.scalar(select(Media).where(
        Media.ticket_id == filed.id, Media.kind == "proof")))
    assert api.file_bytes(photo["photo"][-1]["file_id"]) == whistle.media.read(proof.path)
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.resolution_note) == ("resolved", "All cleared")
    assert await media_kinds(whistle, filed.id) == ["proof", "report"]
    assert await events(whistle, filed.id) == ["created", "claimed", "resolved"]


async def test_resolve_with_a_photo_then_the_note(whistle, api, people):
    resident = people(9001, "Li Si", language="en")
    people(1001, "王建国")
    filed = await file_report(api, whistle, resident)
    await claim(api, 1001, filed)
    prompt = await ask_note(api, 1001, G01_CHAT, filed.card["message_id"], f"resolve:{filed.id}",
                            filed.number)
    after = last_id(api, G01_CHAT)
    send_photo_reply(api, 1001, G01_CHAT, prompt["message_id"], photo_bytes(8))
    ask = await api.wait_message(G01_CHAT, after=after)
    assert (await ticket_row(whistle, filed.id)).state == "claimed"
    await reply_note(api, 1001, G01_CHAT, ask, "Swept and washed")
    await api.wait_message(resident.id, contains="Swept and washed")
    await api.wait_for(lambda: any("photo" in m for m in api.bot_messages(resident.id)))
    assert (await ticket_row(whistle, filed.id)).state == "resolved"
    assert await media_kinds(whistle, filed.id) == ["proof"]


async def test_resolve_with_text_only(whistle, api, people):
    resident = people(9001, "Li Si", language="en")
    people(1001, "王建国")
    filed = await file_report(api, whistle, resident)
    await claim(api, 1001, filed)
    prompt = await ask_note(api, 1001, G01_CHAT, filed.card["message_id"], f"resolve:{filed.id}",
                            filed.number)
    await reply_note(api, 1001, G01_CHAT, prompt, "Removed this morning")
    await api.wait_message(resident.id, contains="Removed this morning")
    ticket = await ticket_row(whistle, filed.id)
    assert (ticket.state, ticket.resolution_note) == ("resolved", "Removed this morning")
    assert await media_kinds(whistle, filed.id) == []
    await api.wait_idle()
    assert not [m for m in api.bot_messages(resident.id) if "photo" in m]
    resolved = await api.wait_for(lambda: "Removed this morning" in body(card_now(api, G01_CHAT, filed))
                                  and card_now(api, G01_CHAT, filed))
    assert buttons(resolved) == []


# ---- 9. the reporter's privacy -----------------------------------------------------------------

PHONE = "+8613912345678"


def group_texts(api) -> list[str]:
    """Everything the bot ever sent or edited into a group chat."""
    return [str(p.get("text") or p.get("caption") or "") for name, p in api.requests
            if name in ("sendMessage", "editMessageText", "sendPhoto", "editMessageCaption")
            and str(p.get("chat_id", "")).startswith("-")]


def reporter_line(whistle, name: str) -> str:
    return group_text(whistle, "👤 Reporter: {name}", name=name)


async def test_phone_goes_only_to_the_claimer(whistle, api, people):
    resident = people(9001, "Li Si", language="en")
    people(1001, "王建国")
    people(1101, "马超")
    filed = await file_report(api, whistle, resident, contact="phone", phone=PHONE)
    assert reporter_line(whistle, "Li") in filed.card["text"]
    assert "Li Si" not in filed.card["text"]
    await claim(api, 1001, filed)
    shared = await api.wait_message(1001, contains=PHONE)
    assert filed.number in shared["text"]
    await api.wait_for(lambda: "claim:" not in str(buttons(card_now(api, G01_CHAT, filed))))
    await api.wait_idle()
    digits = PHONE.lstrip("+")
    assert not [t for t in group_texts(api) if digits[-8:] in t]
    assert not [m for m in api.bot_messages(1101) if digits[-8:] in body(m)]
    assert (await ticket_row(whistle, filed.id)).contact_phone == PHONE


async def test_card_shows_anonymous_or_only_the_first_name(whistle, api, people):
    anonymous = people(9002, "Wang Wu", language="en")
    api.add_user(9003, "Zhao", language_code="en", last_name="Liu")
    a = await file_report(api, whistle, anonymous, contact="anonymous")
    assert reporter_line(whistle, group_text(whistle, "anonymous")) in a.card["text"]
    assert "Wang" not in a.card["text"]
    named = await file_report(api, whistle, 9003, contact="first_name")
    assert reporter_line(whistle, "Zhao") in named.card["text"]
    assert "Liu" not in named.card["text"]
    assert not any("Wang" in t or "Liu" in t for t in group_texts(api))


# ---- 10. /bind ---------------------------------------------------------------------------------

async def test_bind_a_new_group(whistle, api, people):
    resident = people(9001, "Li Si", language="en")
    people(5001, "韩东")
    people(1001, "王建国")
    api.add_group(-100999, "new grid group")
    g03 = await unit_id(whistle, "g03")

    after = last_id(api, -100999)
    api.user_sends_text(1001, -100999, "/bind")
    refusal = await api.wait_message(-100999, after=after)
    assert buttons(refusal) == []
    assert await count(whistle, ChatBinding, ChatBinding.chat_id == "-100999") == 0

    after = last_id(api, -100999)
    api.user_sends_text(5001, -100999, "/bind")
    top = await api.wait_message(-100999, after=after, predicate=has_button("bind:"))
    c1 = await unit_id(whistle, "c1")
    # two levels: units above the grids, and "grids of …" per community
    assert f"bind:{c1}" in buttons(top) and f"bindg:{c1}" in buttons(top)
    assert f"bind:{g03}" not in buttons(top)
    assert (await press(api, 1001, -100999, top["message_id"], f"bindg:{c1}"))["show_alert"]
    after = last_id(api, -100999)
    await press(api, 5001, -100999, top["message_id"], f"bindg:{c1}")
    menu = await api.wait_message(-100999, after=after, predicate=has_button("bind:"))
    assert f"bind:{g03}" in buttons(menu) and len(buttons(menu)) == 4

    answer = await press(api, 1001, -100999, menu["message_id"], f"bind:{g03}")
    assert answer["show_alert"]
    assert await count(whistle, ChatBinding, ChatBinding.chat_id == "-100999") == 0

    answer = await press(api, 5001, -100999, menu["message_id"], f"bind:{g03}")
    assert answer["text"] and not answer["show_alert"]
    binding = await whistle.db.run(lambda s: s.scalar(select(ChatBinding).where(
        ChatBinding.channel == "telegram", ChatBinding.chat_id == "-100999")))
    assert binding is not None and binding.unit_id == g03

    # a non-admin cannot re-bind it either
    g01 = await unit_id(whistle, "g01")
    assert (await press(api, 1001, -100999, menu["message_id"], f"bind:{g01}"))["show_alert"]
    assert (await whistle.db.run(lambda s: s.get(ChatBinding, binding.id))).unit_id == g03

    # the new chat now gets g03's cards, next to g03's own chat
    filed = await file_report(api, whistle, resident, point=(39.93545, 116.41286), card_chat=-100103)
    card = await wait_card(api, -100999, filed.id, prefix="claim:")
    assert filed.number in card["text"]
