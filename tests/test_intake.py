"""The resident's intake dialogue, end to end: the real Application polls the fake
Bot API, every step is driven by a simulated English-speaking resident, and each
test checks both what the chat shows and what the database holds.

Residents speak English so the assertions use the msgids from the code; group chats
speak the default locale (zh_Hans), so for them only structure is checked (ticket
numbers, callback data such as ``claim:1``)."""
from __future__ import annotations

import hashlib

import pytest
from chat import Resident, all_button_data
from images import jpeg
from sqlalchemy import func, select

from models.media.photos import clean as clean_photo

from models.store.tables import Dialogue, Identity, Media, Outbox, Person, Ticket, TicketEvent, Unit

# ---- the sample district ---------------------------------------------------------------

G05 = (39.93072, 116.40087)       # a point inside grid g05 (Liuyin Grid 1)
G01 = (39.93524, 116.40107)       # a point inside grid g01 (Huaishu Grid 1)
LAKE = (39.93125, 116.40765)      # the lake: a hole in g06, no grid
G05_CHAT, G06_CHAT, G10_CHAT, STREET_CHAT = -100105, -100106, -100110, -100301

JPEG = jpeg(1)
DESCRIPTION = "Garbage has piled up by the gate for three days and it smells."
ADDRESS = "Beiqiao Road 12, next to the bus stop"

# ---- what the resident sees (msgids) -----------------------------------------------------

WELCOME = "Welcome to Whistle."
ASK_CATEGORY = "What kind of problem is it? Choose a category:"
ASK_DESCRIPTION = "Describe the problem in a few sentences (10–1000 characters)."
ASK_PHOTOS = "Send up to 3 photos of the problem, or press Skip."
ASK_LOCATION = "Where is it? Press “📍 Send my location”"
COMMUNITIES = "Communities:"
CHOOSE_GRID = "Choose the grid:"
ASK_CONTACT = "Can the grid contact you?"
CHECK = "Please check your report:"
SUMMARY = "Category: "
RECEIVED = "✅ Report received. Your ticket number is "
CANCELLED = "Cancelled. Nothing was sent."
NOTHING_TO_CANCEL = "There is nothing to cancel."
STALE = "This button is no longer active."
IDLE_HINT = "Press “📝 Report a problem” to report something, or /my to see your reports."
REPORT_BUTTON = "📝 Report a problem"
ANONYMOUS = "🙈 Stay anonymous"
FIRST_NAME = "👤 Show my first name, no phone"

HINT_CATEGORY = "Please choose a category with the buttons."
HINT_DESCRIPTION = "Please describe the problem in words, as a text message."
HINT_SHORT = "That is a bit short: please write at least 10 characters."
HINT_PHOTO = "Please send a photo, or press Done."
HINT_FIRST_PHOTO = "Please send a photo, or press Skip."
OUTSIDE = "That point is outside the district's grids."
HINT_LOCATION = ("Please send your location with the button, choose a community, "
                 "or type the address.")
HINT_ADDRESS = "Please type the address in 4 to 300 characters."
HINT_CONTACT = "Please use the buttons below: share your phone number"
HINT_OWN_CONTACT = "Please share your own number with the button below."
HINT_CONFIRM = "Please press Confirm, Edit or Cancel."


# ---- a resident in a private chat ---------------------------------------------------------


def keyboard_labels(api, chat: int) -> list[str]:
    keyboard = api.reply_keyboard(chat) or {}
    return [b["text"] for row in keyboard.get("keyboard", []) for b in row]


@pytest.fixture
def resident(api, people):
    def make(user_id: int = 9001, name: str = "Li Si", language: str = "en") -> Resident:
        people(user_id, name, language=language)
        return Resident(api, user_id)
    return make


# ---- walking the dialogue ------------------------------------------------------------------

async def begin(r: Resident) -> dict:
    """/start: the welcome, then the category question (returned)."""
    return await r.text("/start", WELCOME, ASK_CATEGORY)


async def walk(r: Resident, until: str = "confirm", *, category: str = "garbage",
               description: str = DESCRIPTION, photos: tuple[bytes, ...] = (),
               where: tuple = ("point", G05), contact: str = "anonymous") -> dict:
    """Answer every step up to ``until``; returns the message that asks for that step
    (for "location" the community list, for "confirm" the summary with its buttons)."""
    msg = await begin(r)
    if until == "category":
        return msg
    msg = await r.press(msg, f"cat:{category}", ASK_DESCRIPTION)
    if until == "description":
        return msg
    msg = await r.text(description, ASK_PHOTOS)
    if until == "photos":
        return msg
    for i, data in enumerate(photos, 1):
        expect = (ASK_LOCATION, COMMUNITIES) if i == 3 else (f"Photo {i} of 3 received.",)
        msg = await r.photo(data, *expect)
    if len(photos) < 3:
        msg = await r.press(msg, "ph:done", ASK_LOCATION, COMMUNITIES)
    if until == "location":
        return msg
    kind, *value = where
    if kind == "point":
        msg = await r.location(value[0], ASK_CONTACT)
    elif kind == "outside":  # a point in no grid: the resident sends it to dispatch as it is
        msg = await r.location(value[0], OUTSIDE)
        msg = await r.press(msg, "lo", ASK_CONTACT)
    elif kind == "address":
        msg = await r.text(value[0], ASK_CONTACT)
    else:  # ("menu", community unit id, grid unit id)
        msg = await r.press(msg, f"lc:{value[0]}", CHOOSE_GRID)
        msg = await r.press(msg, f"lg:{value[1]}", ASK_CONTACT)
    if until == "contact":
        return msg
    if contact == "anonymous":
        return await r.text(ANONYMOUS, CHECK, SUMMARY)
    if contact == "name":
        return await r.text(FIRST_NAME, CHECK, SUMMARY)
    return await r.contact(contact, CHECK, SUMMARY)


async def confirm(r: Resident, summary: dict) -> str:
    """Press Confirm; the ticket number from the confirmation."""
    done = await r.press(summary, "cf", RECEIVED)
    return done["text"].split(RECEIVED)[1].split(".")[0]


async def report(r: Resident, **kwargs) -> str:
    return await confirm(r, await walk(r, **kwargs))


# ---- the database ----------------------------------------------------------------------------

async def dialogue_of(whistle, user_id: int) -> tuple[str | None, dict]:
    async def query(session):
        row = await session.scalar(select(Dialogue).join(
            Identity, (Identity.person_id == Dialogue.person_id)
            & (Identity.channel == Dialogue.channel)).where(
            Identity.channel == "telegram", Identity.external_id == str(user_id)))
        return (row.step, dict(row.draft)) if row else (None, {})
    return await whistle.db.run(query)


async def person_of(whistle, user_id: int) -> Person:
    return await whistle.db.run(lambda s: s.scalar(select(Person).join(
        Identity, Identity.person_id == Person.id).where(
        Identity.channel == "telegram", Identity.external_id == str(user_id))))


async def all_tickets(whistle) -> list[Ticket]:
    return await whistle.db.run(
        lambda s: _list(s.scalars(select(Ticket).order_by(Ticket.id))))


async def ticket_by_number(whistle, number: str) -> Ticket:
    return await whistle.db.run(lambda s: s.scalar(select(Ticket).where(Ticket.number == number)))


async def events_of(whistle, ticket_id: int) -> list[TicketEvent]:
    return await whistle.db.run(lambda s: _list(s.scalars(
        select(TicketEvent).where(TicketEvent.ticket_id == ticket_id).order_by(TicketEvent.id))))


async def all_media(whistle) -> list[Media]:
    return await whistle.db.run(lambda s: _list(s.scalars(select(Media).order_by(Media.id))))


async def count(whistle, table) -> int:
    return await whistle.db.run(lambda s: s.scalar(select(func.count()).select_from(table)))


async def unit_ids(whistle) -> dict[str, int]:
    rows = await whistle.db.run(lambda s: _list(s.execute(select(Unit.code, Unit.id))))
    return dict(rows)


async def group_outbox_chats(whistle) -> set[str]:
    """Group chats anything was queued for."""
    chats = await whistle.db.run(lambda s: _list(s.scalars(select(Outbox.chat_id).distinct())))
    return {c for c in chats if c.startswith("-")}


async def failed_outbox(whistle) -> list[tuple]:
    return await whistle.db.run(lambda s: _list(s.execute(
        select(Outbox.chat_id, Outbox.error).where(Outbox.state.in_(["failed", "uncertain"])))))


async def _list(awaitable) -> list:
    return list(await awaitable)


def card_actions(card: dict, ticket_id: int) -> set[str]:
    """The actions of a card's buttons; every button must be about that ticket."""
    datas = all_button_data(card)
    assert all(d.endswith(f":{ticket_id}") for d in datas), datas
    return {d.split(":")[0] for d in datas}


async def card_in(api, chat: int, number: str) -> dict:
    """The ticket card posted in a group chat (found by its number)."""
    return await api.wait_message(chat, contains=f"#{number}",
                                  predicate=lambda m: m.get("reply_markup"))


# ==== 1. wrong kinds of input: a hint, the step repeats, the draft keeps everything ===========

async def test_category_step_rejects_text_and_sticker(whistle, api, resident):
    r = resident()
    prompt = await walk(r, "category")
    assert all_button_data(prompt)[:2] == ["cat:garbage", "cat:road"]
    assert "Garbage and litter" in str(prompt["reply_markup"])

    again = await r.text("there is garbage everywhere", HINT_CATEGORY, ASK_CATEGORY)
    assert "cat:garbage" in all_button_data(again)
    again = await r.sticker(HINT_CATEGORY, ASK_CATEGORY)
    assert "cat:garbage" in all_button_data(again)
    assert await dialogue_of(whistle, r.id) == ("category", {})

    # the repeated question works
    await r.press(again, "cat:road", ASK_DESCRIPTION)
    assert await dialogue_of(whistle, r.id) == ("description", {"category": "road"})


async def test_description_step_rejects_non_text_and_bad_lengths(whistle, api, resident):
    r = resident()
    await walk(r, "description")
    before = await dialogue_of(whistle, r.id)
    assert before == ("description", {"category": "garbage"})

    await r.sticker(HINT_DESCRIPTION)
    await r.photo(JPEG, HINT_DESCRIPTION)
    await r.location(G05, HINT_DESCRIPTION)
    await r.text("   dirty   ", HINT_SHORT)
    await r.text("Too dirty", HINT_SHORT)  # 9 characters
    await r.text("x" * 1001,
                 "That is too long (1001 characters): please keep it under 1000.")
    assert await dialogue_of(whistle, r.id) == before
    assert await count(whistle, Media) == 0  # the photo sent at the wrong step is not kept

    longest = ((DESCRIPTION + " ") * 20)[:999] + "!"  # exactly the maximum
    await r.text(longest, ASK_PHOTOS)
    step, draft = await dialogue_of(whistle, r.id)
    assert step == "photos" and draft["description"] == longest and draft["category"] == "garbage"


async def test_description_of_exactly_min_length_is_accepted(whistle, api, resident):
    r = resident()
    await walk(r, "description")
    await r.text("Too dirty!", ASK_PHOTOS)  # 10 characters
    assert (await dialogue_of(whistle, r.id))[1]["description"] == "Too dirty!"


async def test_photos_step_rejects_wrong_input_and_oversized_photos(whistle, api, resident):
    r = resident()
    prompt = await walk(r, "photos")
    assert all_button_data(prompt) == ["ph:done"]
    before = await dialogue_of(whistle, r.id)
    assert before == ("photos", {"category": "garbage", "description": DESCRIPTION,
                                 "photos": []})

    hint = await r.text("here is the photo", HINT_FIRST_PHOTO)
    assert all_button_data(hint) == ["ph:done"]
    assert hint["reply_markup"]["inline_keyboard"][0][0]["text"] == "Skip"  # as the prompt had
    await r.sticker(HINT_FIRST_PHOTO)
    await r.document(b"%PDF-1.4 not an image", "report.pdf", "application/pdf", HINT_FIRST_PHOTO)
    await r.photo(b"\xff\xd8" + b"0" * 10_500_000,
                  "That photo is too large (10.5 MB; the limit is 10.0 MB). "
                  "Please send a smaller one.")
    await r.document(b"\xff\xd8" + b"1" * 12_000_000, "huge.jpg", "image/jpeg",
                     "That photo is too large (12.0 MB; the limit is 10.0 MB).")
    assert await dialogue_of(whistle, r.id) == before
    assert await count(whistle, Media) == 0

    # an image sent as a file is a photo; the step goes on counting
    await r.document(JPEG, "gate.jpg", "image/jpeg", "Photo 1 of 3 received.")
    step, draft = await dialogue_of(whistle, r.id)
    media = await all_media(whistle)
    assert step == "photos" and draft["photos"] == [media[0].id]
    assert draft["description"] == DESCRIPTION
    # wrong input after a photo keeps the photo; now the button is Done
    await r.sticker(HINT_PHOTO)
    hint = await r.text("that was it", HINT_PHOTO)
    assert hint["reply_markup"]["inline_keyboard"][0][0]["text"] == "Done"
    assert await dialogue_of(whistle, r.id) == (step, draft)


async def test_photo_over_the_configured_limit_is_refused(whistle, api, resident, config):
    config.intake.max_photo_bytes = 100_000
    r = resident()
    await walk(r, "photos")
    await r.photo(JPEG[:4] + b"2" * 250_000,
                  "That photo is too large (0.3 MB; the limit is 0.1 MB).")
    assert await count(whistle, Media) == 0
    await r.photo(JPEG, "Photo 1 of 3 received.")
    assert len((await dialogue_of(whistle, r.id))[1]["photos"]) == 1


async def test_location_step_rejects_wrong_input(whistle, api, resident):
    r = resident()
    await walk(r, "location", photos=(JPEG,))
    before = await dialogue_of(whistle, r.id)
    assert before[0] == "location" and len(before[1]["photos"]) == 1

    again = await r.sticker(HINT_LOCATION, ASK_LOCATION, COMMUNITIES)
    assert all_button_data(again)[0].startswith("lc:")
    assert "📍" in str(api.reply_keyboard(r.id))
    await r.photo(jpeg(2), HINT_LOCATION, ASK_LOCATION, COMMUNITIES)
    await r.text("abc", HINT_ADDRESS)
    await r.text("x" * 301, HINT_ADDRESS)
    await r.location((91.0, 116.4), "That location is not valid; please try again.")
    assert await dialogue_of(whistle, r.id) == before
    assert await count(whistle, Media) == 1  # the late photo is not kept

    await r.text(ADDRESS, ASK_CONTACT)
    step, draft = await dialogue_of(whistle, r.id)
    assert step == "contact" and draft["address"] == ADDRESS
    assert draft["photos"] == before[1]["photos"]


async def test_contact_step_rejects_wrong_input(whistle, api, resident):
    r = resident()
    await walk(r, "contact")
    before = await dialogue_of(whistle, r.id)
    assert before[0] == "contact" and before[1]["location"] == list(G05)

    await r.sticker(HINT_CONTACT, ASK_CONTACT)
    await r.contact("+8613900009999", HINT_OWN_CONTACT, owner=9999)   # someone else's card
    await r.contact("+8613900009999", HINT_OWN_CONTACT, owner=None)   # from the address book
    await r.text("call me maybe", HINT_CONTACT, ASK_CONTACT)
    assert await dialogue_of(whistle, r.id) == before
    assert ["📱 Share my phone number"] in [
        [b["text"] for b in row] for row in api.reply_keyboard(r.id)["keyboard"]]

    summary = await r.contact("+8613800001111", CHECK, SUMMARY)
    assert "Contact: phone shared with the handler" in summary["text"]
    step, draft = await dialogue_of(whistle, r.id)
    assert step == "confirm"
    assert draft["phone"] == "+8613800001111" and draft["anonymous"] is False


async def test_confirm_step_rejects_text(whistle, api, resident):
    r = resident()
    summary = await walk(r, "confirm")
    before = await dialogue_of(whistle, r.id)
    assert before[0] == "confirm"

    again = await r.text("yes please", HINT_CONFIRM, CHECK, SUMMARY)
    assert again["text"] == summary["text"]
    assert all_button_data(again) == ["cf", "ed", "cx"]
    await r.sticker(HINT_CONFIRM, CHECK, SUMMARY)
    assert await dialogue_of(whistle, r.id) == before
    assert await count(whistle, Ticket) == 0

    number = await confirm(r, again)
    assert (await ticket_by_number(whistle, number)).description == DESCRIPTION


# ==== 2. /cancel ==========================================================================

@pytest.mark.parametrize("step", ["category", "description", "photos", "location", "contact",
                                  "confirm"])
async def test_cancel_in_every_step(whistle, api, resident, step):
    r = resident()
    prompt = await walk(r, step)
    if step == "photos":
        await r.photo(JPEG, "Photo 1 of 3 received.")
    assert (await dialogue_of(whistle, r.id))[0] == step

    await r.text("/cancel", CANCELLED)
    assert await dialogue_of(whistle, r.id) == (None, {})
    assert REPORT_BUTTON in keyboard_labels(api, r.id)
    assert await count(whistle, Ticket) == 0
    assert await count(whistle, TicketEvent) == 0
    assert await group_outbox_chats(whistle) == set()

    await r.text("/cancel", NOTHING_TO_CANCEL)
    # the cancelled dialogue's buttons are dead now
    data = all_button_data(prompt)[0] if all_button_data(prompt) else "cf"
    after = r.last_id()
    assert await r.alert(prompt["message_id"], data) == STALE
    await r.stays_silent(after)
    assert await dialogue_of(whistle, r.id) == (None, {})
    assert await count(whistle, Ticket) == 0


async def test_cancel_when_idle(whistle, api, resident):
    r = resident()
    await r.text("/cancel", NOTHING_TO_CANCEL)
    assert await dialogue_of(whistle, r.id) == (None, {})


async def test_cancel_button_on_summary(whistle, api, resident):
    r = resident()
    summary = await walk(r, "confirm", photos=(JPEG,))
    await r.press(summary, "cx", CANCELLED)
    assert await dialogue_of(whistle, r.id) == (None, {})
    after = r.last_id()
    assert await r.alert(summary["message_id"], "cf") == STALE  # Confirm after Cancel
    await r.stays_silent(after)
    assert await count(whistle, Ticket) == 0
    assert await group_outbox_chats(whistle) == set()


# ==== 3. routing ==========================================================================

async def test_route_by_point_in_g05(whistle, api, resident):
    r = resident()
    ids = await unit_ids(whistle)
    summary = await walk(r, where=("point", G05))
    assert "Location: 📍 location 39.93072, 116.40087" in summary["text"]
    assert "Grid: Liuyin Grid 1" in summary["text"]
    number = await confirm(r, summary)
    assert "Status: sent to the grid — Liuyin Grid 1." in api.bot_messages(r.id)[-1]["text"]

    ticket = await ticket_by_number(whistle, number)
    assert (ticket.grid_id, ticket.unit_id, ticket.level) == (ids["g05"], ids["g05"], "grid")
    assert (ticket.state, ticket.route_reason) == ("routed", "point")
    assert (ticket.lat, ticket.lon, ticket.address) == (*G05, None)
    assert (ticket.category, ticket.anonymous, ticket.contact_phone) == ("garbage", True, None)

    card = await card_in(api, G05_CHAT, number)
    assert card_actions(card, ticket.id) >= {"claim", "return"}
    assert "route" not in card_actions(card, ticket.id)
    assert DESCRIPTION in card["text"]
    assert any(m.get("location") for m in api.bot_messages(G05_CHAT))
    assert await group_outbox_chats(whistle) == {str(G05_CHAT)}
    events = await events_of(whistle, ticket.id)
    assert [(e.kind, e.data) for e in events] == [("created", {"route_reason": "point"})]


async def test_route_by_menu_to_g10(whistle, api, resident):
    r = resident()
    ids = await unit_ids(whistle)
    communities = await walk(r, "location")
    assert all_button_data(communities) == [f"lc:{ids[c]}" for c in ("c1", "c2", "c3")]
    grids = await r.press(communities, f"lc:{ids['c3']}", CHOOSE_GRID)
    assert all_button_data(grids) == [f"lg:{ids[g]}" for g in ("g09", "g10", "g11", "g12")] + ["lb"]
    back = await r.press(grids, "lb", COMMUNITIES)  # « Back to the communities
    grids = await r.press(back, f"lc:{ids['c3']}", CHOOSE_GRID)
    await r.press(grids, f"lg:{ids['g10']}", ASK_CONTACT)
    summary = await r.text(ANONYMOUS, CHECK, SUMMARY)
    assert "Location: chosen from the list" in summary["text"]
    assert "Grid: Yinxing Grid 2" in summary["text"]

    number = await confirm(r, summary)
    ticket = await ticket_by_number(whistle, number)
    assert (ticket.grid_id, ticket.unit_id) == (ids["g10"], ids["g10"])
    assert (ticket.state, ticket.route_reason, ticket.lat, ticket.address) == (
        "routed", "menu", None, None)
    card = await card_in(api, G10_CHAT, number)
    assert "claim" in card_actions(card, ticket.id)
    assert not any(m.get("location") for m in api.bot_messages(G10_CHAT))
    assert await group_outbox_chats(whistle) == {str(G10_CHAT)}


async def test_a_point_outside_every_grid_is_said_and_the_grid_menu_offered(whistle, api, resident):
    """No silent fallback: the resident hears that the point is in no grid, and chooses the
    grid from the menu (or sends it to the dispatch centre, test below)."""
    r = resident()
    ids = await unit_ids(whistle)
    await walk(r, "location")
    outside = await r.location(LAKE, OUTSIDE)
    choices = all_button_data(outside)
    assert choices[-1] == "lo" and all(c.startswith("lc:") for c in choices[:-1]) and choices[:-1]
    step, draft = await dialogue_of(whistle, r.id)
    assert step == "location" and draft["location"] == list(LAKE)  # kept, not yet sent on
    grids = await r.press(outside, f"lc:{ids['c3']}", CHOOSE_GRID)
    await r.press(grids, f"lg:{ids['g10']}", ASK_CONTACT)
    number = await confirm(r, await r.text(ANONYMOUS, CHECK, SUMMARY))
    ticket = await ticket_by_number(whistle, number)
    assert (ticket.grid_id, ticket.route_reason) == (ids["g10"], "menu")
    assert await r.alert(outside["message_id"], "lo") == STALE  # that choice is over


async def test_point_in_the_lake_goes_to_the_street_chat(whistle, api, resident):
    r = resident()
    ids = await unit_ids(whistle)
    summary = await walk(r, where=("outside", LAKE))
    assert "Grid: to be decided by the dispatch centre" in summary["text"]
    number = await confirm(r, summary)
    assert "Status: waiting to be routed — Beiqiao Subdistrict." in api.bot_messages(r.id)[-1]["text"]

    ticket = await ticket_by_number(whistle, number)
    assert ticket.grid_id is None
    assert (ticket.state, ticket.route_reason, ticket.level) == ("reported", "outside", "street")
    assert ticket.unit_id == ids["s1"] and (ticket.lat, ticket.lon) == LAKE
    card = await card_in(api, STREET_CHAT, number)
    assert "route" in card_actions(card, ticket.id)
    assert "claim" not in card_actions(card, ticket.id)
    assert await group_outbox_chats(whistle) == {str(STREET_CHAT)}
    assert api.bot_messages(G06_CHAT) == []


async def test_typed_address_goes_to_the_street_chat(whistle, api, resident):
    r = resident()
    ids = await unit_ids(whistle)
    summary = await walk(r, where=("address", ADDRESS), contact="name")
    assert f"Location: 🏠 {ADDRESS}" in summary["text"]
    assert "Grid: to be decided by the dispatch centre" in summary["text"]
    assert "Contact: first name shown, no phone" in summary["text"]
    number = await confirm(r, summary)

    ticket = await ticket_by_number(whistle, number)
    assert (ticket.grid_id, ticket.lat, ticket.address) == (None, None, ADDRESS)
    assert (ticket.state, ticket.route_reason, ticket.unit_id) == ("reported", "none", ids["s1"])
    assert ticket.anonymous is False
    card = await card_in(api, STREET_CHAT, number)
    assert "route" in card_actions(card, ticket.id) and ADDRESS in card["text"]
    assert "Li" in card["text"]  # first name shown, as chosen
    assert await group_outbox_chats(whistle) == {str(STREET_CHAT)}


# ==== 4. editing from the summary =========================================================

async def test_edit_description_from_the_summary(whistle, api, resident):
    r = resident()
    summary = await walk(r)
    assert f"Description: {DESCRIPTION}" in summary["text"]
    menu = await r.press(summary, "ed", "What do you want to change?")
    assert all_button_data(menu) == ["ef:category", "ef:description", "ef:photos",
                                     "ef:location", "ef:contact"]
    await r.press(menu, "ef:description", ASK_DESCRIPTION)
    assert (await dialogue_of(whistle, r.id))[0] == "description"

    new = "Actually it is the broken bin lid; the bin itself was emptied today."
    summary = await r.text(new, CHECK, SUMMARY)   # straight back to the summary
    assert f"Description: {new}" in summary["text"] and DESCRIPTION not in summary["text"]
    assert "Grid: Liuyin Grid 1" in summary["text"]  # the rest is kept
    step, draft = await dialogue_of(whistle, r.id)
    assert step == "confirm" and draft["location"] == list(G05)

    number = await confirm(r, summary)
    ticket = await ticket_by_number(whistle, number)
    assert ticket.description == new and ticket.grid_id == (await unit_ids(whistle))["g05"]
    card = await card_in(api, G05_CHAT, number)
    assert new in card["text"] and DESCRIPTION not in card["text"]


async def test_edit_category_photos_and_location_from_the_summary(whistle, api, resident):
    r = resident()
    ids = await unit_ids(whistle)
    summary = await walk(r, photos=(JPEG,), where=("menu", ids["c3"], ids["g10"]))
    assert "Photos: 1" in summary["text"] and "Grid: Yinxing Grid 2" in summary["text"]

    menu = await r.press(summary, "ed", "What do you want to change?")
    categories = await r.press(menu, "ef:category", ASK_CATEGORY)
    summary = await r.press(categories, "cat:road", CHECK, SUMMARY)
    assert "Category: Damaged road or pavement" in summary["text"]

    menu = await r.press(summary, "ed", "What do you want to change?")
    await r.press(menu, "ef:photos", ASK_PHOTOS)
    new_photos = (jpeg(11), jpeg(12))
    await r.photo(new_photos[0], "Photo 1 of 3 received.")
    done = await r.photo(new_photos[1], "Photo 2 of 3 received.")
    summary = await r.press(done, "ph:done", CHECK, SUMMARY)
    assert "Photos: 2" in summary["text"]

    menu = await r.press(summary, "ed", "What do you want to change?")
    await r.press(menu, "ef:location", ASK_LOCATION, COMMUNITIES)
    summary = await r.location(G05, CHECK, SUMMARY)   # a pin replaces the menu choice
    assert "Grid: Liuyin Grid 1" in summary["text"]

    number = await confirm(r, summary)
    ticket = await ticket_by_number(whistle, number)
    assert (ticket.category, ticket.grid_id, ticket.route_reason) == ("road", ids["g05"], "point")
    attached = [m for m in await all_media(whistle) if m.ticket_id == ticket.id]
    assert sorted(m.sha256 for m in attached) == sorted(
        hashlib.sha256(clean_photo(d)[0]).hexdigest() for d in new_photos)
    card = await card_in(api, G05_CHAT, number)
    assert "claim" in card_actions(card, ticket.id)
    assert api.bot_messages(G10_CHAT) == []


# ==== 5. stale and forged buttons ==========================================================

async def test_old_category_button_is_no_longer_active(whistle, api, resident):
    r = resident()
    categories = await begin(r)
    await r.press(categories, "cat:garbage", ASK_DESCRIPTION)
    after = r.last_id()
    assert await r.alert(categories["message_id"], "cat:road") == STALE
    await r.stays_silent(after)
    assert await dialogue_of(whistle, r.id) == ("description", {"category": "garbage"})

    await r.text(DESCRIPTION, ASK_PHOTOS)
    before = await dialogue_of(whistle, r.id)
    after = r.last_id()
    assert await r.alert(categories["message_id"], "cat:road") == STALE
    await r.stays_silent(after)
    assert await dialogue_of(whistle, r.id) == before


async def test_forged_buttons_are_refused(whistle, api, resident):
    r = resident()
    ids = await unit_ids(whistle)
    categories = await begin(r)
    after = r.last_id()
    for data in ("cat:nonexistent", "cat:", "zz:1", "ph:done", "cf", "ef:description"):
        assert await r.alert(categories["message_id"], data) == STALE, data
    await r.stays_silent(after)
    assert await dialogue_of(whistle, r.id) == ("category", {})

    communities = await walk(r, "location")
    before = await dialogue_of(whistle, r.id)
    after = r.last_id()
    for data in ("lg:999999", f"lg:{ids['c3']}", f"lg:{ids['s1']}", "lg:abc",
                 f"lc:{ids['g10']}", "lc:999999", "lc:abc", "cat:garbage"):
        assert await r.alert(communities["message_id"], data) == STALE, data
    await r.stays_silent(after)
    assert await dialogue_of(whistle, r.id) == before
    assert "grid_id" not in before[1]
    assert await count(whistle, Ticket) == 0


async def test_double_click_on_confirm_creates_one_ticket(whistle, api, resident):
    r = resident()
    summary = await walk(r)
    first = api.user_presses(r.id, r.id, summary["message_id"], "cf")
    second = api.user_presses(r.id, r.id, summary["message_id"], "cf")
    await api.wait_for(lambda: first in api.callback_answers and second in api.callback_answers)
    assert sorted([api.callback_answers[q]["text"] or "" for q in (first, second)]) == ["", STALE]
    await api.wait_message(r.id, contains=RECEIVED)
    await api.wait_idle()

    tickets = await all_tickets(whistle)
    assert len(tickets) == 1
    assert [e.kind for e in await events_of(whistle, tickets[0].id)] == ["created"]
    assert sum(RECEIVED in (m.get("text") or "") for m in api.bot_messages(r.id)) == 1
    cards = [m for m in api.bot_messages(G05_CHAT) if m.get("reply_markup")]
    assert len(cards) == 1 and f"#{tickets[0].number}" in cards[0]["text"]
    assert await dialogue_of(whistle, r.id) == (None, {})


# ==== 6. three photos ======================================================================

async def test_three_photos_advance_and_are_stored(whistle, api, resident, config):
    r = resident()
    photos = tuple(jpeg(20 + i, camera="PhoneCam") for i in range(3))
    await walk(r, "photos")
    await r.photo(photos[0], "Photo 1 of 3 received.")
    await r.photo(photos[1], "Photo 2 of 3 received.")
    await r.photo(photos[2], ASK_LOCATION, COMMUNITIES)   # no Done needed after the third
    assert not any("Photo 3 of 3" in (m.get("text") or "") for m in api.bot_messages(r.id))
    step, draft = await dialogue_of(whistle, r.id)
    media = await all_media(whistle)
    assert step == "location" and draft["photos"] == [m.id for m in media] and len(media) == 3
    assert all(m.ticket_id is None for m in media)

    await r.location(G05, ASK_CONTACT)
    summary = await r.text(ANONYMOUS, CHECK, SUMMARY)
    assert "Photos: 3" in summary["text"]
    number = await confirm(r, summary)

    ticket = await ticket_by_number(whistle, number)
    person = await person_of(whistle, r.id)
    media = await all_media(whistle)
    assert [(m.kind, m.ticket_id, m.owner_id) for m in media] == [("report", ticket.id, person.id)] * 3
    for m, data in zip(media, photos):
        path = config.media_dir / m.path
        stored = clean_photo(data)[0]   # re-encoded without metadata
        assert path.is_file() and path.read_bytes() == stored and b"PhoneCam" not in stored
        assert m.sha256 == hashlib.sha256(stored).hexdigest() and m.size == len(stored)
    await card_in(api, G05_CHAT, number)
    album = [m for m in api.bot_messages(G05_CHAT) if m.get("photo")]
    assert len(album) == 3


# ==== 7. ticket numbers ====================================================================

async def test_ticket_numbers_count_per_local_day(whistle, api, resident, clock):
    r = resident()
    assert await report(r) == "20261123-0001"
    clock.advance(minutes=5)
    assert await report(r, where=("point", G01)) == "20261123-0002"
    clock.advance(hours=14, minutes=1)   # 00:06 on the 24th in Beijing, still the 23rd in UTC
    assert await report(r, where=("address", ADDRESS)) == "20261124-0001"
    assert [t.number for t in await all_tickets(whistle)] == [
        "20261123-0001", "20261123-0002", "20261124-0001"]
    assert await failed_outbox(whistle) == []


# ==== 8. /my ================================================================================

async def test_my_lists_reports_and_shows_the_timeline(whistle, api, resident):
    li, wang = resident(9001, "Li Si"), resident(9002, "Wang Wu")
    first = await report(li, where=("point", G05))
    second = await report(li, where=("outside", LAKE))
    other = await report(wang, where=("point", G01))
    t1, t2, t3 = [await ticket_by_number(whistle, n) for n in (first, second, other)]

    listing = await li.text("/my", "Your reports (newest first). Choose one to see its progress:")
    rows = listing["reply_markup"]["inline_keyboard"]
    assert [(b["text"], b["callback_data"]) for row in rows for b in row] == [
        (f"#{second} · waiting to be routed", f"my:{t2.id}"),
        (f"#{first} · sent to the grid", f"my:{t1.id}"),
    ]

    timeline = await li.press(listing, f"my:{t1.id}", f"#{first} · Garbage and litter")
    lines = timeline["text"].split("\n")
    assert lines[1] == DESCRIPTION
    assert "📌 Status: sent to the grid" in lines
    assert "11-23 10:00 reported" in lines

    # someone else's ticket cannot be opened with a forged button
    after = li.last_id()
    assert await li.alert(listing["message_id"], f"my:{t3.id}") == STALE
    assert await li.alert(listing["message_id"], "my:999999") == STALE
    await li.stays_silent(after)
    assert not any(other in (m.get("text") or "") for m in api.bot_messages(li.id))

    mine = await wang.text("/my", "Your reports")
    assert all_button_data(mine) == [f"my:{t3.id}"]
    newcomer = resident(9003, "Zhao Liu")
    await newcomer.text("/my", "You have no reports yet.")


# ==== 9. language ===========================================================================

async def test_lang_switches_to_chinese_and_back(whistle, api, resident):
    r = resident()
    choice = await r.text("/lang", "Choose your language:")
    assert all_button_data(choice) == ["lang:zh_Hans", "lang:en"]
    switched = await r.press(choice, "lang:zh_Hans", "")  # answered in Chinese
    assert switched["text"] != "Language set to Simplified Chinese."
    assert (await person_of(whistle, r.id)).locale == "zh_Hans"
    assert REPORT_BUTTON not in keyboard_labels(api, r.id)

    after = r.last_id()
    api.user_sends_text(r.id, r.id, "/start")
    question = await api.wait_message(r.id, after=after,
                                      predicate=lambda m: "cat:garbage" in str(m.get("reply_markup")))
    assert question["text"] != ASK_CATEGORY
    assert "Garbage and litter" not in str(question["reply_markup"])
    await r.text("/cancel", "")  # answered in Chinese
    assert await dialogue_of(whistle, r.id) == (None, {})

    after = r.last_id()
    api.user_sends_text(r.id, r.id, "/lang")
    choice = await api.wait_message(r.id, after=after,
                                    predicate=lambda m: "lang:en" in str(m.get("reply_markup")))
    await r.press(choice, "lang:en", "Language set to English.")
    assert (await person_of(whistle, r.id)).locale == "en"
    assert REPORT_BUTTON in keyboard_labels(api, r.id)
    await begin(r)


async def test_english_telegram_users_get_english_without_lang(whistle, api, resident):
    en = resident(9001, "Li Si", language="en")
    zh = resident(9002, "张三", language="zh-hans")
    question = await begin(en)
    assert "Garbage and litter" in str(question["reply_markup"])
    assert (await person_of(whistle, en.id)).locale is None

    after = zh.last_id()
    api.user_sends_text(zh.id, zh.id, "/start")
    question = await api.wait_message(zh.id, after=after,
                                      predicate=lambda m: "cat:garbage" in str(m.get("reply_markup")))
    assert question["text"] != ASK_CATEGORY


# ==== 10. a restart mid-dialogue: see test_intake_restart.py ===============================


# ==== 11. idle chatter ======================================================================

async def test_idle_text_gets_the_help_hint_and_the_report_keyboard(whistle, api, resident):
    r = resident()
    await r.text("hello, anyone there?", IDLE_HINT)
    assert keyboard_labels(api, r.id) == [REPORT_BUTTON, "📋 My reports"]
    assert await dialogue_of(whistle, r.id) == (None, {})
    await r.sticker(IDLE_HINT)

    # the keyboard's button starts a report
    await r.text(REPORT_BUTTON, ASK_CATEGORY)
    assert await dialogue_of(whistle, r.id) == ("category", {})


# ==== found while writing these tests ========================================================

async def test_lone_slash_gets_an_answer_and_keeps_the_step(whistle, api, resident):
    """A message of just "/" is a text like any other to Telegram; it must be answered."""
    r = resident()
    await walk(r, "description")
    before = await dialogue_of(whistle, r.id)
    after = r.last_id()
    api.user_sends_text(r.id, r.id, "/")
    await api.wait_message(r.id, after=after, timeout=3)
    assert await dialogue_of(whistle, r.id) == before


async def test_typed_address_replaces_a_grid_chosen_from_the_menu(whistle, api, resident):
    """Changing the location to a typed address drops the grid picked before, as sending
    a pin does: the summary and the routing follow the new answer."""
    r = resident()
    ids = await unit_ids(whistle)
    summary = await walk(r, where=("menu", ids["c3"], ids["g10"]))
    assert "Grid: Yinxing Grid 2" in summary["text"]
    menu = await r.press(summary, "ed", "What do you want to change?")
    await r.press(menu, "ef:location", ASK_LOCATION, COMMUNITIES)
    summary = await r.text(ADDRESS, CHECK, SUMMARY)
    assert f"Location: 🏠 {ADDRESS}" in summary["text"]
    assert "Grid: to be decided by the dispatch centre" in summary["text"]
    number = await confirm(r, summary)
    ticket = await ticket_by_number(whistle, number)
    assert (ticket.grid_id, ticket.route_reason, ticket.unit_id) == (None, "none", ids["s1"])
