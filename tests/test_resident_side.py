"""The resident's side of issue #4, end to end: "me too" (nearby suggestions during
intake, following a report), staff merging a duplicate, adding information from /my,
stopping to follow, /status, /forget, photos without metadata (and the offer to use a
photo's GPS position), the honest end states and photo retention.

The real Application polls the fake Bot API; residents are simulated English speakers
driving the dialogue by callback data, staff press buttons in their grid's group chat
(which speaks zh_Hans, so only structure, numbers and callback data are checked there,
and group texts are computed with the group translator). Every test also checks the
database."""
from __future__ import annotations

import asyncio
import io
import math
from datetime import timedelta

import pytest
from chat import Resident, all_button_data, body
from images import jpeg
from PIL import Image
from sqlalchemy import func, select, update

from models.messages.outbox import OutMessage, Target, enqueue
from models.intake.nearby import distance_m
from models.media.photos import clean as clean_photo
from models.figures.rates import three_rates
from models.store.tables import (Dialogue, Follower, Identity, Media, Outbox, Person, Ticket, TicketEvent, Timer, Unit, Vote)
from scheduler.jobs import run_retention

# ---- the sample district ---------------------------------------------------------------

G07 = (39.93085, 116.41298)       # inside grid g07 (Liuyin Grid 3), chief 赵磊 1007
G10 = (39.92627, 116.40697)       # inside grid g10 (Yinxing Grid 2)
G07_CHAT, G08_CHAT, G10_CHAT, STREET_CHAT = -100107, -100108, -100110, -100301
CHIEF_G07, CHIEF_G10 = 1007, 1010

DESCRIPTION = "Garbage has piled up by the gate for three days and it smells."
ADDRESS = "Beiqiao Road 12, next to the bus stop"
EARTH_RADIUS_M = 6_371_008.8

# ---- what the resident sees (msgids) -----------------------------------------------------

WELCOME = "Welcome to Whistle."
ASK_CATEGORY = "What kind of problem is it? Choose a category:"
ASK_DESCRIPTION = "Describe the problem in a few sentences"
ASK_PHOTOS = "Send up to 3 photos of the problem, or press Skip."
ASK_LOCATION = "Where is it? Press “📍 Send my location”"
COMMUNITIES = "Communities:"
CHOOSE_GRID = "Choose the grid:"
GPS_OFFER = "Your photo carries a location. Use it as the place of the problem?"
NEARBY = "These reports nearby may be the same problem."
NEARBY_HINT = "Please choose one of the reports above, or press “No, it's a new problem”."
ASK_CONTACT = "Can the grid contact you?"
CHECK = "Please check your report:"
SUMMARY = "Category: "
RECEIVED = "✅ Report received. Your ticket number is "
STALE = "This button is no longer active."
ANONYMOUS = "🙈 Stay anonymous"
FIRST_NAME = "👤 Show my first name, no phone"
NOT_A_PHOTO = "That file is not a photo I can read. Please send a photo."
NOW_FOLLOW = "👍 You now follow #{number}."
MY_LIST = "Your reports (newest first). Choose one to see its progress:"
NO_REPORTS = "You have no reports yet."
ADD_PROMPT = "Send a comment or a photo for #{number} (or /cancel)."
ADDED = "Added to #{number}. Thank you!"
CLOSED_NOTHING_ADDED = "#{number} is closed; nothing was added."
CLOSED_ALERT = "#{number} is closed."
UNFOLLOWED = "You no longer follow #{number}."
STATUS_USAGE = "No report with that number. Usage: /status 20261122-0007"
FORGET_QUESTION = "/forget erases your name, phone number and chat identity"
ERASED = "Your personal data has been erased. Goodbye."
NOTHING_ERASED = "Nothing was erased."
CLAIMED = "🙋 Your report {number} was claimed by grid chief 赵磊."
RESOLVED = "✅ Your report {number} was resolved by grid chief 赵磊: {note}"
VOTE_QUESTION = "Report {number} was marked resolved. Is the problem solved?"
HOW_SATISFIED = "How satisfied are you with how report {number} was handled?"
THANKS_FOR_VOTE = "Thank you for your vote."
MERGED = "🔗 Report {old} is the same problem as {number}; you now follow {number}."
CLOSED_NOT_FIXED = "Report {number} was closed without a fix ({kind}) — {reason}"
CLOSE_KINDS = {"not_fixable": "Cannot be fixed", "not_ours": "Not our responsibility",
               "referred": "Referred elsewhere"}


# ---- places --------------------------------------------------------------------------------

def offset(point: tuple[float, float], north: float = 0.0, east: float = 0.0) -> tuple[float, float]:
    """The point ``north`` and ``east`` metres away from ``point`` (small distances)."""
    lat, lon = point
    dlat = math.degrees(north / EARTH_RADIUS_M)
    dlon = math.degrees(east / (EARTH_RADIUS_M * math.cos(math.radians(lat))))
    return round(lat + dlat, 7), round(lon + dlon, 7)


def metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    return distance_m(a[0], a[1], b[0], b[1])


# ---- buttons ---------------------------------------------------------------------------------


def group_text(whistle, message: str, **params) -> str:
    """A text as the group chats (default locale) show it."""
    return whistle.i18n.get(None)._(message, **params)


def followers_line(whistle, n: int) -> str:
    return whistle.i18n.get(None).n_("👥 Also reported by {n} resident",
                                     "👥 Also reported by {n} residents", n)


# ---- a resident in a private chat ---------------------------------------------------------


@pytest.fixture
def resident(api, people):
    def make(user_id: int = 9001, name: str = "Li Si", language: str = "en") -> Resident:
        people(user_id, name, language=language)
        return Resident(api, user_id)
    return make


# ---- walking the dialogue ------------------------------------------------------------------

async def walk(r: Resident, until: str = "confirm", *, category: str = "garbage",
               description: str = DESCRIPTION, photos: tuple[bytes, ...] = (),
               where: tuple = ("point", G07), contact: str = "anonymous") -> dict:
    """Answer every step up to ``until``. At the nearby step, "No, it's a new problem" is
    pressed unless ``until`` is "nearby" (then the suggestions are returned; it is an
    error if none are shown). "location" returns the community list, "contact" the
    contact question, "confirm" the summary."""
    msg = await r.text("/start", WELCOME, ASK_CATEGORY)
    msg = await r.press(msg, f"cat:{category}", ASK_DESCRIPTION)
    msg = await r.text(description, ASK_PHOTOS)
    for i, data in enumerate(photos, 1):
        expect = (ASK_LOCATION, COMMUNITIES) if i == 3 else (f"Photo {i} of 3 received.",)
        msg = await r.photo(data, *expect)
    if len(photos) < 3:
        msg = await r.press(msg, "ph:done", ASK_LOCATION, COMMUNITIES)
    if until == "location":
        return msg
    kind, *value = where
    after = r.last_id()
    if kind == "point":
        r.api.user_sends_location(r.id, r.id, *value[0])
    elif kind == "address":
        r.api.user_sends_text(r.id, r.id, value[0])
    else:  # ("menu", community unit id, grid unit id)
        msg = await r.press(msg, f"lc:{value[0]}", CHOOSE_GRID)
        after = r.last_id()
        r.api.user_presses(r.id, r.id, msg["message_id"], f"lg:{value[1]}")
    msg = await r.expect_any(after, ASK_CONTACT, NEARBY)
    if until == "nearby":
        assert NEARBY in body(msg), "no nearby reports were suggested"
        return msg
    if NEARBY in body(msg):
        msg = await r.press(msg, "mn", ASK_CONTACT)
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


async def file(whistle, r: Resident, **kwargs) -> Ticket:
    """A confirmed report, as its row."""
    number = await confirm(r, await walk(r, **kwargs))
    return await ticket_by_number(whistle, number)


def nearby_lines(message: dict) -> list[str]:
    """The numbered suggestion lines of a nearby message."""
    return body(message).split("\n")[1:]


def album_before(api, chat: int, after: int, message: dict) -> list[dict]:
    """Photo messages the bot sent in ``chat`` between ``after`` and ``message``."""
    return [m for m in api.bot_messages(chat)
            if after < m["message_id"] < message["message_id"] and m.get("photo")]


# ---- staff in a group chat -------------------------------------------------------------------

class Staff:
    """A staff member pressing buttons in their unit's group chat and replying to prompts."""

    def __init__(self, api, whistle, user_id: int, chat: int):
        self.api, self.whistle, self.id, self.chat = api, whistle, user_id, chat

    def last_id(self) -> int:
        msgs = self.api.messages(self.chat)
        return msgs[-1]["message_id"] if msgs else 0

    async def card(self, ticket: Ticket, needs: str | None = None) -> dict:
        """The ticket's card in this chat once it shows the ``needs`` button.

        By default the claim or route button of a fresh card. Card edits go through the sender,
        so a step after a claim waits for the button it is about to press.
        """
        wanted = (f"{needs}:{ticket.id}",) if needs else (f"claim:{ticket.id}", f"route:{ticket.id}")
        return await self.api.wait_message(self.chat, contains=f"#{ticket.number}",
                                           predicate=lambda m: any(
                                               d in wanted for d in all_button_data(m)))

    async def press(self, message_id: int, data: str) -> dict:
        query = self.api.user_presses(self.id, self.chat, message_id, data)
        return await self.api.wait_for(lambda: self.api.callback_answers.get(query),
                                       description=f"an answer to {data!r}")

    async def claim(self, ticket: Ticket) -> None:
        card = await self.card(ticket)
        answer = await self.press(card["message_id"], f"claim:{ticket.id}")
        assert not answer["show_alert"], answer

    async def prompt(self, message_id: int, data: str, number: str) -> dict:
        """Press a note button; the bot's ForceReply prompt that names the ticket."""
        after = self.last_id()
        answer = await self.press(message_id, data)
        assert not answer["show_alert"], answer
        prompt = await self.api.wait_message(self.chat, contains=number, after=after)
        sent = [p for name, p in self.api.requests if name == "sendMessage"
                and str(p.get("chat_id")) == str(self.chat) and p.get("text") == prompt["text"]]
        assert sent and (sent[-1].get("reply_markup") or {}).get("force_reply") is True
        return prompt

    async def reply(self, prompt: dict, text: str, contains: str | None = None) -> dict:
        after = self.last_id()
        self.api.user_sends_text(self.id, self.chat, text, reply_to_message_id=prompt["message_id"])
        return await self.api.wait_message(self.chat, after=after, contains=contains)

    def recorded(self, number: str) -> str:
        return group_text(self.whistle, "Recorded for #{number}.", number=number)

    async def note(self, ticket: Ticket, action: str, text: str) -> None:
        card = await self.card(ticket, needs=action)
        prompt = await self.prompt(card["message_id"], f"{action}:{ticket.id}", ticket.number)
        await self.reply(prompt, text, self.recorded(ticket.number))

    async def close(self, ticket: Ticket, reason: str, text: str) -> None:
        """Close… → the reason menu → cr:<id>.<reason> → the note."""
        card = await self.card(ticket, needs="close")
        after = self.last_id()
        answer = await self.press(card["message_id"], f"close:{ticket.id}")
        assert not answer["show_alert"], answer
        menu = await self.api.wait_message(self.chat, after=after,
                                           predicate=lambda m: f"cr:{ticket.id}.{reason}"
                                           in all_button_data(m))
        assert all_button_data(menu) == [f"cr:{ticket.id}.not_fixable", f"cr:{ticket.id}.not_ours",
                                         f"cr:{ticket.id}.referred"]
        prompt = await self.prompt(menu["message_id"], f"cr:{ticket.id}.{reason}", ticket.number)
        await self.reply(prompt, text, self.recorded(ticket.number))

    async def merge(self, duplicate: Ticket, original: Ticket) -> None:
        card = await self.card(duplicate, needs="dup")
        prompt = await self.prompt(card["message_id"], f"dup:{duplicate.id}", duplicate.number)
        await self.reply(prompt, original.number, self.recorded(duplicate.number))


@pytest.fixture
def chief(api, whistle, people):
    """赵磊, chief of grid g07, in the g07 chat."""
    people(CHIEF_G07, "赵磊")
    return Staff(api, whistle, CHIEF_G07, G07_CHAT)


@pytest.fixture
def chief_g10(api, whistle, people):
    """吴静, chief of grid g10, in the g10 chat."""
    people(CHIEF_G10, "吴静")
    return Staff(api, whistle, CHIEF_G10, G10_CHAT)


# ---- the database ----------------------------------------------------------------------------

async def _list(awaitable) -> list:
    return list(await awaitable)


async def ticket_by_number(whistle, number: str) -> Ticket:
    return await whistle.db.run(lambda s: s.scalar(select(Ticket).where(Ticket.number == number)))


async def ticket_row(whistle, ticket_id: int) -> Ticket:
    return await whistle.db.run(lambda s: s.get(Ticket, ticket_id))


async def rows(whistle, model, *where) -> list:
    return await whistle.db.run(lambda s: _list(s.scalars(
        select(model).where(*where).order_by(model.id))))


async def count(whistle, model, *where) -> int:
    return await whistle.db.run(lambda s: s.scalar(
        select(func.count()).select_from(model).where(*where)))


async def person_of(whistle, user_id: int) -> Person | None:
    return await whistle.db.run(lambda s: s.scalar(select(Person).join(
        Identity, Identity.person_id == Person.id).where(
        Identity.channel == "telegram", Identity.external_id == str(user_id))))


async def dialogue_of(whistle, person_id: int) -> tuple[str | None, dict, dict | None]:
    async def query(session):
        row = await session.get(Dialogue, (person_id, "telegram"))
        return (row.step, dict(row.draft), row.pending) if row else (None, {}, None)
    return await whistle.db.run(query)


async def unit_ids(whistle) -> dict[str, int]:
    return dict(await whistle.db.run(lambda s: _list(s.execute(select(Unit.code, Unit.id)))))


async def follower_ids(whistle, ticket_id: int) -> list[int]:
    return [f.person_id for f in await rows(whistle, Follower, Follower.ticket_id == ticket_id)]


async def event_kinds(whistle, ticket_id: int) -> list[str]:
    return [e.kind for e in await rows(whistle, TicketEvent, TicketEvent.ticket_id == ticket_id)]


def stored(config, media: Media) -> bytes:
    return (config.media_dir / media.path).read_bytes()


async def card_shows(api, chat: int, card: dict, text: str) -> dict:
    """Wait until the card (edited in place) contains ``text``."""
    return await api.wait_for(
        lambda: (m := api.message(chat, card["message_id"])) and text in body(m) and m,
        description=f"the card to show {text!r}")


# ==== 1. nearby suggestions =====================================================================

async def test_nearby_reports_inside_the_radius_nearest_first_with_details_and_album(
        whistle, api, resident, chief, clock, config):
    here = G07
    a, b, c, d = resident(9101, "Zhou A"), resident(9102, "Qian B"), resident(9103, "Sun C"), \
        resident(9104, "Wu D")
    far_point, near_point, mid_point = (offset(here, north=200), offset(here, east=40),
                                        offset(here, north=-120))
    out_point, road_point = offset(here, east=-256), offset(here, north=15)
    assert 199 < metres(here, far_point) < 201 and 255 < metres(here, out_point) < 257

    far = await file(whistle, a, where=("point", far_point), photos=(jpeg(31),),
                     description="Far: bins overflowing at the corner of the lane")
    clock.advance(days=1)
    near = await file(whistle, b, where=("point", near_point), photos=(jpeg(32), jpeg(33)),
                      description="Near: rubbish bags dumped right next to the gate, " * 2)
    await chief.claim(near)
    clock.advance(days=1)
    mid = await file(whistle, c, where=("point", mid_point),
                     description="Mid: a broken sofa left on the pavement")
    outside = await file(whistle, d, where=("point", out_point),
                         description="Outside: litter along the fence line")
    road = await file(whistle, d, category="road", where=("point", road_point),
                      description="Road: a pothole in front of the gate")
    clock.advance(days=1)

    r = resident(9001)
    after = r.last_id()
    suggestions = await walk(r, "nearby", where=("point", here))
    lines = nearby_lines(suggestions)
    assert len(lines) == 3, lines
    expected = [(near, near_point, 2, "claimed"), (mid, mid_point, 1, "sent to the grid"),
                (far, far_point, 3, "sent to the grid")]
    for n, (line, (ticket, point, age, status)) in enumerate(zip(lines, expected), 1):
        assert line == (f"{n}. #{ticket.number} — {ticket.description[:60]} — "
                        f"{round(metres(here, point))} m away, {age} days ago, {status}")
    assert all_button_data(suggestions) == [f"mt:{near.id}", f"mt:{mid.id}", f"mt:{far.id}", "mn"]
    assert outside.number not in body(suggestions) and road.number not in body(suggestions)

    # the album: the first photo of each suggestion that has one, nearest first
    album = album_before(api, r.id, after, suggestions)
    firsts = []
    for ticket in (near, far):
        media = await rows(whistle, Media, Media.ticket_id == ticket.id)
        firsts.append(stored(config, media[0]))
    assert [api.file_bytes(m["photo"][-1]["file_id"]) for m in album] == firsts
    assert len({m.get("media_group_id") for m in album}) == 1  # one album

    step, draft, _ = await dialogue_of(whistle, (await person_of(whistle, r.id)).id)
    assert step == "nearby" and draft["location"] == list(here)


async def test_nearby_just_outside_the_radius_or_another_category_is_not_suggested(
        whistle, api, resident):
    here = G07
    other = resident(9101)
    await file(whistle, other, where=("point", offset(here, north=-255)))
    await file(whistle, other, where=("point", offset(here, east=254)))
    await file(whistle, other, category="road", where=("point", offset(here, north=5)))
    await file(whistle, other, category="noise", where=("point", here))

    r = resident(9001)
    contact = await walk(r, "contact", where=("point", here))
    assert NEARBY not in body(contact)
    assert not any(NEARBY in t for t in r.texts_after(0))
    step, _, _ = await dialogue_of(whistle, (await person_of(whistle, r.id)).id)
    assert step == "contact"


async def test_nearby_leaves_out_closed_reports(whistle, api, resident, chief):
    here = G07
    a, b, c = resident(9101, "Zhou A"), resident(9102, "Qian B"), resident(9103, "Sun C")
    open_one = await file(whistle, a, where=("point", offset(here, north=30)))
    not_fixed = await file(whistle, b, where=("point", offset(here, east=20)))
    duplicate = await file(whistle, c, where=("point", offset(here, east=-10)))
    await chief.close(not_fixed, "not_fixable", "The bins belong to a private courtyard.")
    await chief.merge(duplicate, open_one)
    assert (await ticket_row(whistle, not_fixed.id)).state == "closed_not_fixed"
    assert (await ticket_row(whistle, duplicate.id)).state == "closed_duplicate"

    r = resident(9001)
    suggestions = await walk(r, "nearby", where=("point", here))
    assert all_button_data(suggestions) == [f"mt:{open_one.id}", "mn"]
    assert not_fixed.number not in body(suggestions) and duplicate.number not in body(suggestions)


async def test_nearby_leaves_out_reports_older_than_30_days(whistle, api, resident, clock):
    here = G07
    other = resident(9101)
    old = await file(whistle, other, where=("point", offset(here, north=20)))
    clock.advance(days=2)
    younger = await file(whistle, other, where=("point", offset(here, north=-20)))
    clock.advance(days=28, hours=1)   # old: 30 days 1 hour; younger: 28 days 1 hour

    r = resident(9001)
    suggestions = await walk(r, "nearby", where=("point", here))
    assert all_button_data(suggestions) == [f"mt:{younger.id}", "mn"]
    assert "28 days ago" in nearby_lines(suggestions)[0]
    assert old.number not in body(suggestions)

    clock.advance(days=2)  # now the younger one is too old as well
    late = resident(9002)
    contact = await walk(late, "contact", where=("point", here))
    assert NEARBY not in body(contact)


async def test_more_than_five_nearby_reports_show_the_five_nearest(whistle, api, resident):
    here = G07
    other = resident(9101)
    spots = {150: offset(here, north=150), 30: offset(here, east=30), 210: offset(here, east=-210),
             90: offset(here, north=-90), 60: offset(here, north=60), 180: offset(here, east=180),
             120: offset(here, north=-120)}
    filed = {}
    for metres_away, point in spots.items():   # filed in a shuffled order of distance
        filed[metres_away] = await file(whistle, other, where=("point", point),
                                        description=f"Overflowing bin number {metres_away}")

    r = resident(9001)
    suggestions = await walk(r, "nearby", where=("point", here))
    nearest = [filed[m] for m in (30, 60, 90, 120, 150)]
    assert all_button_data(suggestions) == [f"mt:{t.id}" for t in nearest] + ["mn"]
    lines = nearby_lines(suggestions)
    assert [line.split(" — ")[0] for line in lines] == [
        f"{n}. #{t.number}" for n, t in enumerate(nearest, 1)]
    assert [line.split(" — ")[2].split(",")[0] for line in lines] == [
        "30 m away", "60 m away", "90 m away", "120 m away", "150 m away"]


async def test_grid_chosen_from_the_menu_shows_that_grids_open_reports(whistle, api, resident,
                                                                       chief, clock):
    ids = await unit_ids(whistle)
    other = resident(9101)
    g08_point = (39.93093, 116.41899)
    first = await file(whistle, other, where=("point", offset(G07, north=-150)))
    clock.advance(days=1)
    second = await file(whistle, other, where=("point", offset(G07, east=150)))
    road = await file(whistle, other, category="road", where=("point", G07))
    in_g08 = await file(whistle, other, where=("point", g08_point))
    closed = await file(whistle, other, where=("point", offset(G07, north=100)))
    await chief.close(closed, "not_ours", "This is the property company's yard.")
    typed = await file(whistle, other, where=("address", ADDRESS))   # no grid yet
    clock.advance(hours=2)

    r = resident(9001)
    suggestions = await walk(r, "nearby", where=("menu", ids["c2"], ids["g07"]))
    assert all_button_data(suggestions) == [f"mt:{second.id}", f"mt:{first.id}", "mn"]
    lines = nearby_lines(suggestions)
    assert lines[0] == (f"1. #{second.number} — {second.description[:60]} — same grid, "
                        "0 days ago, sent to the grid")
    assert lines[1].endswith("— same grid, 1 days ago, sent to the grid")
    for absent in (road, in_g08, closed, typed):
        assert absent.number not in body(suggestions)

    # a new problem after all: the contact step, then a ticket routed by the menu choice
    await r.press(suggestions, "mn", ASK_CONTACT)
    number = await confirm(r, await r.text(ANONYMOUS, CHECK, SUMMARY))
    ticket = await ticket_by_number(whistle, number)
    assert (ticket.grid_id, ticket.route_reason, ticket.lat) == (ids["g07"], "menu", None)


# ==== 2. me too ===============================================================================

async def test_me_too_follows_the_report_and_the_follower_hears_every_step_and_votes(
        whistle, api, resident, chief):
    reporter = resident(9101, "Zhou A")
    original = await file(whistle, reporter, where=("point", G07))
    card = await chief.card(original)
    assert followers_line(whistle, 1) not in body(card)

    f = resident(9001)
    my_photo = jpeg(44)
    suggestions = await walk(f, "nearby", where=("point", offset(G07, north=25)),
                             photos=(my_photo,),
                             description="Same here: the pile by the gate is getting bigger.")
    done = await f.press(suggestions, f"mt:{original.id}", NOW_FOLLOW.format(number=original.number))
    assert "asked for your vote at the end" in done["text"]
    follower = await person_of(whistle, f.id)
    assert await dialogue_of(whistle, follower.id) == (None, {}, None)
    assert await count(whistle, Ticket) == 1           # no new ticket
    assert await follower_ids(whistle, original.id) == [follower.id]
    assert (await ticket_row(whistle, original.id)).followers == 1
    followed = [e for e in await rows(whistle, TicketEvent, TicketEvent.ticket_id == original.id)
                if e.kind == "followed"]
    assert len(followed) == 1 and followed[0].actor_id == follower.id
    assert followed[0].note == "Same here: the pile by the gate is getting bigger."
    attached = await rows(whistle, Media, Media.owner_id == follower.id)
    assert [m.ticket_id for m in attached] == [original.id]  # the follower's photo joins it

    # the grid card is edited in place to show the count
    edited = await card_shows(api, G07_CHAT, card, followers_line(whistle, 1))
    assert f"claim:{original.id}" in all_button_data(edited)

    # a second press changes nothing
    assert await f.alert(suggestions["message_id"], f"mt:{original.id}") == STALE
    assert (await ticket_row(whistle, original.id)).followers == 1

    # /my lists the followed ticket
    listing = await f.text("/my", MY_LIST)
    assert all_button_data(listing) == [f"my:{original.id}"]
    timeline = await f.press(listing, f"my:{original.id}", f"#{original.number}")
    assert all_button_data(timeline) == [f"ad:{original.id}", f"uf:{original.id}"]

    # the follower is told of the claim and the resolution, and votes
    after = f.last_id()
    await chief.claim(original)
    await f.expect(after, CLAIMED.format(number=original.number))
    await reporter.expect(0, CLAIMED.format(number=original.number))
    after_f, after_r = f.last_id(), reporter.last_id()
    await chief.note(original, "resolve", "清运完毕")
    await f.expect(after_f, RESOLVED.format(number=original.number, note="清运完毕"))
    question_f = await f.expect(after_f, VOTE_QUESTION.format(number=original.number))
    question_r = await reporter.expect(after_r, VOTE_QUESTION.format(number=original.number))
    assert all_button_data(question_f) == [f"vs:{original.id}.1", f"vs:{original.id}.0"]

    satisfaction = await f.press(question_f, f"vs:{original.id}.1",
                                 HOW_SATISFIED.format(number=original.number))
    await f.press(satisfaction, f"vq:{original.id}.s", THANKS_FOR_VOTE)
    satisfaction = await reporter.press(question_r, f"vs:{original.id}.1",
                                        HOW_SATISFIED.format(number=original.number))
    await reporter.press(satisfaction, f"vq:{original.id}.b", THANKS_FOR_VOTE)
    votes = await rows(whistle, Vote, Vote.ticket_id == original.id)
    reporter_person = await person_of(whistle, reporter.id)
    assert sorted((v.person_id, v.solved, v.satisfaction) for v in votes) == sorted([
        (follower.id, True, "satisfied"), (reporter_person.id, True, "basic")])


async def test_no_its_a_new_problem_continues_to_the_contact_step(whistle, api, resident):
    other = resident(9101)
    existing = await file(whistle, other, where=("point", G07))

    r = resident(9001)
    await walk(r, "nearby", where=("point", offset(G07, east=60)))
    me = await person_of(whistle, r.id)
    # anything but a button at this step: a hint, and the suggestions again
    again = await r.text("it is the same one I think", NEARBY_HINT, NEARBY)
    assert all_button_data(again) == [f"mt:{existing.id}", "mn"]
    assert (await dialogue_of(whistle, me.id))[0] == "nearby"

    await r.press(again, "mn", ASK_CONTACT)
    assert (await dialogue_of(whistle, me.id))[0] == "contact"
    assert await r.alert(again["message_id"], f"mt:{existing.id}") == STALE
    number = await confirm(r, await r.text(ANONYMOUS, CHECK, SUMMARY))

    assert number != existing.number
    assert await count(whistle, Ticket) == 2
    assert await count(whistle, Follower) == 0
    assert (await ticket_row(whistle, existing.id)).followers == 0


# ==== 3. duplicates merged by staff ===========================================================

async def test_staff_merge_a_duplicate_into_the_original(whistle, api, resident, chief):
    r1, r2, f = resident(9101, "Zhou A"), resident(9102, "Qian B"), resident(9001, "Li Si")
    original = await file(whistle, r1, where=("point", G07))
    duplicate = await file(whistle, r2, where=("point", offset(G07, north=30)))  # "new problem"
    suggestions = await walk(f, "nearby", where=("point", offset(G07, north=30)))
    assert all_button_data(suggestions)[:2] == [f"mt:{duplicate.id}", f"mt:{original.id}"]
    await f.press(suggestions, f"mt:{duplicate.id}", NOW_FOLLOW.format(number=duplicate.number))
    p1, p2, pf = [await person_of(whistle, x.id) for x in (r1, r2, f)]
    original_card, duplicate_card = await chief.card(original), await chief.card(duplicate)

    prompt = await chief.prompt(duplicate_card["message_id"], f"dup:{duplicate.id}",
                                duplicate.number)
    # a number that does not exist: asked again, nothing changes
    wrong = await chief.reply(prompt, "20991231-0001", "20991231-0001")
    assert wrong["text"] == group_text(
        whistle, "No ticket {number}. Reply with a ticket number such as 20261122-0007 (or /cancel).",
        number="20991231-0001")
    assert (await ticket_row(whistle, duplicate.id)).state == "routed"
    assert (await dialogue_of(whistle, (await person_of(whistle, CHIEF_G07)).id))[2]["action"] == "dup"

    after = {x.id: x.last_id() for x in (r1, r2, f)}
    await chief.reply(prompt, f"#{original.number}", chief.recorded(duplicate.number))

    dup_row, orig_row = await ticket_row(whistle, duplicate.id), await ticket_row(whistle, original.id)
    assert (dup_row.state, dup_row.duplicate_of_id) == ("closed_duplicate", original.id)
    assert dup_row.closed_at is not None
    assert sorted(await follower_ids(whistle, original.id)) == sorted([p2.id, pf.id])
    assert orig_row.followers == 2 and orig_row.state == "routed"
    dup_events = await rows(whistle, TicketEvent, TicketEvent.ticket_id == duplicate.id,
                            TicketEvent.kind == "closed_duplicate")
    assert dup_events[0].data == {"original": original.number}
    merged = await rows(whistle, TicketEvent, TicketEvent.ticket_id == original.id,
                        TicketEvent.kind == "merged")
    assert merged[0].data == {"duplicate": duplicate.number, "followers": 2}
    assert [t.stage for t in await rows(whistle, Timer, Timer.ticket_id == duplicate.id)
            if t.next_at is not None] == []

    told = MERGED.format(old=duplicate.number, number=original.number)
    await r2.expect(after[r2.id], told)
    await f.expect(after[f.id], told)
    await api.wait_idle()
    assert not any(told in t for t in r1.texts_after(after[r1.id]))

    # the cards: the duplicate points to the original and has no buttons; the original counts
    dup_card = await card_shows(api, G07_CHAT, duplicate_card, group_text(
        whistle, "🔗 Duplicate of #{number}", number=original.number))
    assert all_button_data(dup_card) == []
    await card_shows(api, G07_CHAT, original_card, followers_line(whistle, 2))

    # from now on they hear about the original
    marks = {x.id: x.last_id() for x in (r1, r2, f)}
    await chief.claim(original)
    for x in (r1, r2, f):
        await x.expect(marks[x.id], CLAIMED.format(number=original.number))


@pytest.mark.parametrize("target", ["itself", "closed"])
async def test_duplicate_of_itself_or_of_a_closed_ticket_is_refused_and_asked_again(
        whistle, api, resident, chief, chief_g10, target):
    """The core refuses with "#N cannot be the original: choose an open ticket." — the
    staff member must see that reason and be asked again, like for an unknown number."""
    r = resident(9101)
    duplicate = await file(whistle, r, where=("point", G07))
    closed = await file(whistle, r, where=("point", G10))
    if target == "closed":
        await chief_g10.close(closed, "referred", "Sent to the water company.")
    original = duplicate if target == "itself" else closed
    card = await chief.card(duplicate)
    prompt = await chief.prompt(card["message_id"], f"dup:{duplicate.id}", duplicate.number)
    answer = await chief.reply(prompt, original.number)

    assert (await ticket_row(whistle, duplicate.id)).state == "routed"
    assert await count(whistle, Follower) == 0
    assert answer["text"] == group_text(
        whistle, "#{number} cannot be the original: choose an open ticket.", number=original.number)
    pending = (await dialogue_of(whistle, (await person_of(whistle, CHIEF_G07)).id))[2]
    assert pending and pending["action"] == "dup", "the prompt was dropped instead of asked again"


# ==== 4. adding information and stopping to follow ===============================================

async def test_add_a_comment_and_a_photo_from_my_while_open(whistle, api, resident, chief, config):
    r = resident(9001)
    ticket = await file(whistle, r, where=("point", G07))
    me = await person_of(whistle, r.id)
    listing = await r.text("/my", MY_LIST)
    timeline = await r.press(listing, f"my:{ticket.id}", f"#{ticket.number}")
    assert all_button_data(timeline) == [f"ad:{ticket.id}"]   # the reporter cannot unfollow

    # unassigned: the grid chat hears it
    prompt = await r.press(timeline, f"ad:{ticket.id}", ADD_PROMPT.format(number=ticket.number))
    sent = [p for name, p in api.requests if name == "sendMessage"
            and str(p.get("chat_id")) == str(r.id) and p.get("text") == prompt["text"]]
    assert (sent[-1].get("reply_markup") or {}).get("force_reply") is True
    assert (await dialogue_of(whistle, me.id))[2] == {"action": "addinfo", "ticket": ticket.id}
    group_after = chief.last_id()
    comment = "The pile now blocks the entrance to building 3."
    await r.text(comment, ADDED.format(number=ticket.number))
    told = group_text(whistle, "💬 More information on #{number}: {note}",
                      number=ticket.number, note=comment)
    await api.wait_message(G07_CHAT, contains=told, after=group_after)
    events = await rows(whistle, TicketEvent, TicketEvent.ticket_id == ticket.id,
                        TicketEvent.kind == "comment")
    assert [(e.actor_id, e.note, e.data) for e in events] == [(me.id, comment, None)]
    assert (await dialogue_of(whistle, me.id))[2] is None

    # assigned: the assignee hears it privately, with the photo
    await chief.claim(ticket)
    group_after, private_after = chief.last_id(), (api.messages(CHIEF_G07) or [{"message_id": 0}])[-1][
        "message_id"]
    await r.press(timeline, f"ad:{ticket.id}", ADD_PROMPT.format(number=ticket.number))
    photo = jpeg(55, camera="PhoneCam")
    await r.photo(photo, ADDED.format(number=ticket.number))
    events = await rows(whistle, TicketEvent, TicketEvent.ticket_id == ticket.id,
                        TicketEvent.kind == "comment")
    media = await rows(whistle, Media, Media.ticket_id == ticket.id)
    assert len(events) == 2 and len(media) == 1
    assert events[1].data == {"photo": media[0].id} and media[0].kind == "report"
    assert b"PhoneCam" not in stored(config, media[0])
    note = await api.wait_message(CHIEF_G07, after=private_after, contains=f"#{ticket.number}")
    photos = [m for m in api.bot_messages(CHIEF_G07)
              if private_after < m["message_id"] < note["message_id"] and m.get("photo")]
    assert [api.file_bytes(m["photo"][-1]["file_id"]) for m in photos] == [stored(config, media[0])]
    await api.wait_idle()
    assert not any(ticket.number in body(m) for m in api.bot_messages(G07_CHAT)
                   if m["message_id"] > group_after)


async def test_adding_information_is_refused_when_closed(whistle, api, resident, chief):
    r = resident(9001)
    ticket = await file(whistle, r, where=("point", G07))
    me = await person_of(whistle, r.id)
    listing = await r.text("/my", MY_LIST)
    timeline = await r.press(listing, f"my:{ticket.id}", f"#{ticket.number}")
    await r.press(timeline, f"ad:{ticket.id}", ADD_PROMPT.format(number=ticket.number))

    # closed while the resident was typing
    await chief.close(ticket, "not_fixable", "The wall belongs to the railway.")
    await r.text("Here is more: it also smells at night.",
                 CLOSED_NOTHING_ADDED.format(number=ticket.number))
    assert await count(whistle, TicketEvent, TicketEvent.ticket_id == ticket.id,
                       TicketEvent.kind == "comment") == 0
    assert (await dialogue_of(whistle, me.id))[2] is None

    # the old button, and the timeline now has no button to add
    assert await r.alert(timeline["message_id"], f"ad:{ticket.id}") == CLOSED_ALERT.format(
        number=ticket.number)
    timeline = await r.press(await r.text("/my", MY_LIST), f"my:{ticket.id}", f"#{ticket.number}")
    assert all_button_data(timeline) == []


async def test_stop_following(whistle, api, resident, chief):
    reporter = resident(9101)
    ticket = await file(whistle, reporter, where=("point", G07))
    f = resident(9001)
    await f.press(await walk(f, "nearby", where=("point", G07)), f"mt:{ticket.id}",
                  NOW_FOLLOW.format(number=ticket.number))
    timeline = await f.press(await f.text("/my", MY_LIST), f"my:{ticket.id}", f"#{ticket.number}")

    await f.press(timeline, f"uf:{ticket.id}", UNFOLLOWED.format(number=ticket.number))
    assert await count(whistle, Follower) == 0
    assert (await ticket_row(whistle, ticket.id)).followers == 0
    await f.text("/my", NO_REPORTS)
    assert await f.alert(timeline["message_id"], f"uf:{ticket.id}") == STALE
    assert await f.alert(timeline["message_id"], f"ad:{ticket.id}") == STALE

    after = f.last_id()
    await chief.claim(ticket)
    await reporter.expect(0, CLAIMED.format(number=ticket.number))
    await f.stays_silent(after)


async def test_the_reporter_cannot_be_forged_into_unfollowing(whistle, api, resident):
    r = resident(9001)
    ticket = await file(whistle, r, where=("point", G07))
    listing = await r.text("/my", MY_LIST)
    after = r.last_id()
    api.user_presses(r.id, r.id, listing["message_id"], f"uf:{ticket.id}")
    await api.wait_idle()
    assert not any(UNFOLLOWED.format(number=ticket.number) in t for t in r.texts_after(after)), \
        "the reporter was told they no longer follow their own report"


# ==== 5. /status =================================================================================

async def test_status_shows_public_facts_only(whistle, api, resident):
    reporter = resident(9101, "Qiao Mei")
    summary = await walk(reporter, where=("point", G07), contact="+8613912345678")
    number = await confirm(reporter, summary)
    ticket = await ticket_by_number(whistle, number)
    assert ticket.contact_phone == "+8613912345678"

    other = resident(9001)
    shown = await other.text(f"/status {number}", f"#{number}")
    lines = shown["text"].split("\n")
    assert lines[0] == f"#{number} · Garbage and litter"
    assert "📌 Status: sent to the grid" in lines
    assert "📍 Grid: Liuyin Grid 3" in lines
    assert "🕒 Reported: 2026-11-23 10:00" in lines
    for secret in ("Qiao", "Mei", "+8613912345678", "13912345678"):
        assert secret not in shown["text"]

    assert (await other.text(f"/status #{number}", f"#{number}"))["text"] == shown["text"]
    await other.text("/status 20991231-0001", STATUS_USAGE)
    await other.text("/status", STATUS_USAGE)


# ==== 6. /forget =================================================================================

async def _reporter_with_history(whistle, api, resident, chief):
    """Qiao Mei: a report with her phone and first name (resolved and voted), a second
    open report, and a followed report of someone else."""
    r = resident(9001, "Qiao Mei")
    phone = "+8613912345678"
    first = await file(whistle, r, where=("point", G07), contact=phone)
    second = await file(whistle, r, where=("point", G10), contact="name")
    other = resident(9101)
    followed = await file(whistle, other, category="road", where=("point", offset(G07, east=90)))
    await r.press(await walk(r, "nearby", category="road", where=("point", G07)),
                  f"mt:{followed.id}", NOW_FOLLOW.format(number=followed.number))

    await chief.claim(first)
    await chief.note(first, "resolve", "已清运")
    question = await r.expect(0, VOTE_QUESTION.format(number=first.number))
    satisfaction = await r.press(question, f"vs:{first.id}.1",
                                 HOW_SATISFIED.format(number=first.number))
    await r.press(satisfaction, f"vq:{first.id}.s", THANKS_FOR_VOTE)
    me = await person_of(whistle, r.id)

    async def set_phone(session):   # as if the core had kept the number on the person
        (await session.get(Person, me.id)).phone = phone
    await whistle.db.run(set_phone)
    return r, me, phone, first, second, followed


async def test_forget_erases_personal_data_and_keeps_the_tickets(whistle, api, resident, chief,
                                                                 chief_g10, clock):
    r, me, phone, first, second, followed = await _reporter_with_history(whistle, api, resident,
                                                                         chief)
    identity_before = (await rows(whistle, Identity, Identity.person_id == me.id))[0]
    clock.advance(minutes=5)
    question = await r.text("/forget", FORGET_QUESTION)
    assert all_button_data(question) == ["fg:yes", "fg:no"]
    await r.press(question, "fg:yes", ERASED)

    person = await whistle.db.run(lambda s: s.get(Person, me.id))
    assert person.name == f"resident-{me.id}" and "Qiao" not in person.name
    assert (person.phone, person.locale, person.forgotten_at) == (None, None, clock.now)
    identities = await rows(whistle, Identity, Identity.person_id == me.id)
    assert [(i.external_id, i.blocked) for i in identities] == [
        (f"forgotten-{identity_before.id}", True)]
    assert await count(whistle, Follower, Follower.person_id == me.id) == 0
    assert await count(whistle, Dialogue, Dialogue.person_id == me.id) == 0

    # the tickets stay, with their description and statistics, but no contact
    for ticket in (first, second):
        row = await ticket_row(whistle, ticket.id)
        assert (row.reporter_id, row.description, row.category) == (me.id, DESCRIPTION, "garbage")
        assert (row.contact_phone, row.anonymous) == (None, True)
    assert (await ticket_row(whistle, first.id)).state == "closed"
    assert [(v.person_id, v.solved, v.satisfaction) for v in await rows(
        whistle, Vote, Vote.ticket_id == first.id)] == [(me.id, True, "satisfied")]
    rates = await whistle.db.run(lambda s: three_rates(
        s, Ticket.id == first.id, clock.now - timedelta(days=1), clock.now + timedelta(minutes=1)))
    assert (rates.votes, rates.solved, rates.resolution) == (1, 1, 1.0)

    # she is no longer told about her reports
    after = r.last_id()
    await chief_g10.claim(second)
    await r.stays_silent(after)

    # the same Telegram user is a new person now
    await r.text("/start", WELCOME, ASK_CATEGORY)
    newcomer = await person_of(whistle, r.id)
    assert newcomer.id != me.id and newcomer.name == "Qiao Mei"
    await r.text("/cancel", "Cancelled.")
    await r.text("/my", NO_REPORTS)


async def test_forget_drops_what_still_waits_for_the_resident(whistle, api, resident, clock):
    """Messages to the resident still waiting in the outbox when they use /forget go
    nowhere: their rows take the pseudonym and are dropped as failed — not tried later
    against a chat that does not exist, nor reported to the admins as failures. That
    covers a row waiting for its retry and one whose sender died holding it (its lease
    ran out); a row a live sender holds is left to that sender's outcome. The goodbye,
    queued after the erasure, still reaches them, and then its row keeps no trace of
    their chat either."""
    r = resident(9001, "Qiao Mei")
    await r.text("/start", WELCOME, ASK_CATEGORY)
    await r.text("/cancel", "Cancelled.")
    leases = {"retry": dict(attempts=1, next_try_at=clock.now + timedelta(hours=1)),
              "dead": dict(lease_owner="dead:1", lease_until=clock.now - timedelta(minutes=1)),
              "live": dict(lease_owner="other:1", lease_until=clock.now + timedelta(minutes=1))}

    async def waiting(session):
        for name in leases:
            enqueue(session, Target("telegram", str(r.id)), OutMessage(text=name), clock.now)
        for name, values in leases.items():
            await session.execute(update(Outbox).where(
                Outbox.payload["text"].as_string() == name).values(**values))
    question = await r.text("/forget", FORGET_QUESTION)
    await whistle.db.run(waiting)
    await r.press(question, "fg:yes", ERASED)

    left = {o.payload.get("text"): (o.chat_id, o.state, o.error) for o in await rows(
        whistle, Outbox) if o.payload.get("text") in leases}
    assert {chat.startswith("forgotten-") for chat, _, _ in left.values()} == {True}
    dropped = ("failed", "dropped: the resident erased their data (/forget)")
    assert left["retry"][1:] == dropped and left["dead"][1:] == dropped
    assert left["live"][1:] == ("pending", None)

    async def waiting_for_them() -> int:  # the goodbye, until its answer is recorded
        return await count(whistle, Outbox, Outbox.chat_id == str(r.id),
                           Outbox.state == "pending")
    for _ in range(250):
        if not await waiting_for_them():
            break
        await asyncio.sleep(0.02)
    assert await waiting_for_them() == 0
    # the goodbye went to their chat, and then its row took the pseudonym too
    goodbye = [o for o in await rows(whistle, Outbox) if o.payload.get("text", "").startswith(
        "Your personal data has been erased")]
    assert [(o.chat_id, o.state) for o in goodbye] == [(left["retry"][0], "sent")]
    assert await count(whistle, Outbox, Outbox.chat_id == str(r.id)) == 0

    # the live sender dies holding its row: once the lease runs out, the row is dropped
    # as the others were, never sent to the pseudonym nor reported as a failure
    clock.advance(minutes=2)
    whistle.sender.wake()
    live = Outbox.payload["text"].as_string() == "live"
    for _ in range(250):
        if not await count(whistle, Outbox, live, Outbox.state == "pending"):
            break
        await asyncio.sleep(0.02)
    [row] = [o for o in await rows(whistle, Outbox) if o.payload.get("text") == "live"]
    assert (row.chat_id, row.state, row.error, row.lease_owner) == (
        left["live"][0], *dropped, None)
    await api.wait_idle()
    assert not [p for name, p in api.requests if str(p.get("chat_id", "")).startswith("forgotten-")]
    assert whistle.sender.stats["alerts"] == 0


async def test_forget_no_erases_nothing(whistle, api, resident):
    r = resident(9001, "Qiao Mei")
    summary = await walk(r, where=("point", G07), contact="+8613912345678")
    ticket = await ticket_by_number(whistle, await confirm(r, summary))
    me = await person_of(whistle, r.id)
    question = await r.text("/forget", FORGET_QUESTION)
    await r.press(question, "fg:no", NOTHING_ERASED)

    person = await whistle.db.run(lambda s: s.get(Person, me.id))
    assert (person.name, person.forgotten_at) == ("Qiao Mei", None)
    assert [(i.external_id, i.blocked) for i in await rows(
        whistle, Identity, Identity.person_id == me.id)] == [(str(r.id), False)]
    assert (await ticket_row(whistle, ticket.id)).contact_phone == "+8613912345678"
    await r.text("/my", MY_LIST)


async def test_forget_leaves_no_copy_of_the_phone_number(whistle, api, resident, chief):
    """The phone the resident shared went to the claimer in a private message; that
    message's row (the outbox keeps every message) still holds the number after /forget."""
    r = resident(9001, "Qiao Mei")
    phone = "+8613912345678"
    ticket = await file(whistle, r, where=("point", G07), contact=phone)
    await chief.claim(ticket)
    await api.wait_message(CHIEF_G07, contains=phone)
    await r.press(await r.text("/forget", FORGET_QUESTION), "fg:yes", ERASED)

    assert (await ticket_row(whistle, ticket.id)).contact_phone is None
    holders = [f"outbox {o.id} to {o.chat_id}" for o in await rows(whistle, Outbox)
               if phone in str(o.payload)]
    assert holders == [], f"the phone number is still stored in {holders}"


async def test_forget_removes_the_first_name_from_the_grid_card(whistle, api, resident, chief):
    """/forget makes the tickets anonymous; the posted card still shows the first name
    unless it is refreshed."""
    r = resident(9001, "Qiao Mei")
    ticket = await file(whistle, r, where=("point", G07), contact="name")
    card = await chief.card(ticket)
    assert "Qiao" in body(card)
    await r.press(await r.text("/forget", FORGET_QUESTION), "fg:yes", ERASED)
    # the card edit is queued in the same transaction and sent by the sender soon after
    edited = await api.wait_for(
        lambda: "Qiao" not in body(api.message(G07_CHAT, card["message_id"])),
        description="the grid card edited without the first name")
    assert edited is True


# ==== 7. photos: no metadata, the GPS offer ======================================================

async def test_stored_photo_has_no_exif_and_is_scaled_down(whistle, api, resident, config):
    r = resident(9001)
    original = jpeg(40, size=(3000, 2000), gps=G10, camera="SpyCam 9000")
    assert b"Exif" in original and b"SpyCam 9000" in original
    await walk(r, "location", photos=(original,))
    media = await rows(whistle, Media)
    assert len(media) == 1
    data = stored(config, media[0])
    assert b"Exif" not in data and b"SpyCam" not in data
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and image.size == (2048, 1365)
    assert dict(image.getexif()) == {}
    assert media[0].size == len(data) and media[0].telegram_file_id is None

    # what the grid chat receives is the cleaned photo
    await r.press(await r.expect(0, GPS_OFFER), "lx", ASK_CONTACT)
    number = await confirm(r, await r.text(ANONYMOUS, CHECK, SUMMARY))
    await api.wait_message(G10_CHAT, contains=f"#{number}")
    album = [m for m in api.bot_messages(G10_CHAT) if m.get("photo")]
    assert [api.file_bytes(m["photo"][-1]["file_id"]) for m in album] == [data]


async def test_photo_max_side_is_configurable(whistle, api, resident, config):
    config.privacy.photo_max_side = 512
    r = resident(9001)
    await walk(r, "location", photos=(jpeg(41, size=(1600, 900)),))
    image = Image.open(io.BytesIO(stored(config, (await rows(whistle, Media))[0])))
    assert image.size == (512, 288)


async def test_photo_file_with_gps_offers_its_location(whistle, api, resident):
    r = resident(9001)
    ids = await unit_ids(whistle)
    msg = await r.text("/start", WELCOME, ASK_CATEGORY)
    msg = await r.press(msg, "cat:garbage", ASK_DESCRIPTION)
    msg = await r.text(DESCRIPTION, ASK_PHOTOS)
    gps = offset(G10, north=12, east=-7)
    done = await r.document(jpeg(42, gps=gps, camera="PhoneCam"), "IMG_0042.jpg", "image/jpeg",
                            "Photo 1 of 3 received.")
    after = r.last_id()
    await r.press(done, "ph:done", ASK_LOCATION, COMMUNITIES)
    offer = await r.expect(after, GPS_OFFER)
    assert all_button_data(offer) == ["lx"]
    me = await person_of(whistle, r.id)
    step, draft, _ = await dialogue_of(whistle, me.id)
    assert step == "location" and draft.get("location") is None   # offered, not assumed
    assert draft["gps"] == pytest.approx(list(gps), abs=1e-5)

    await r.press(offer, "lx", ASK_CONTACT)
    summary = await r.text(ANONYMOUS, CHECK, SUMMARY)
    assert "Grid: Yinxing Grid 2" in summary["text"]
    ticket = await ticket_by_number(whistle, await confirm(r, summary))
    assert (ticket.lat, ticket.lon) == pytest.approx(gps, abs=1e-5)
    assert (ticket.grid_id, ticket.route_reason) == (ids["g10"], "point")
    await api.wait_message(G10_CHAT, contains=f"#{ticket.number}")


@pytest.mark.parametrize("answer", ["address", "menu"])
async def test_photo_location_is_not_assumed_without_pressing(whistle, api, resident, answer):
    r = resident(9001)
    ids = await unit_ids(whistle)
    gps_photo = jpeg(43, gps=offset(G10, north=10))
    msg = await r.text("/start", WELCOME, ASK_CATEGORY)
    msg = await r.press(msg, "cat:garbage", ASK_DESCRIPTION)
    msg = await r.text(DESCRIPTION, ASK_PHOTOS)
    done = await r.document(gps_photo, "IMG_0043.jpg", "image/jpeg", "Photo 1 of 3 received.")
    communities = await r.press(done, "ph:done", ASK_LOCATION, COMMUNITIES)
    offer = await r.expect(0, GPS_OFFER)
    if answer == "address":
        await r.text(ADDRESS, ASK_CONTACT)
    else:
        grids = await r.press(communities, f"lc:{ids['c2']}", CHOOSE_GRID)
        await r.press(grids, f"lg:{ids['g05']}", ASK_CONTACT)
    summary = await r.text(ANONYMOUS, CHECK, SUMMARY)
    assert "Yinxing" not in summary["text"]
    assert await r.alert(offer["message_id"], "lx") == STALE   # the offer is gone with the step
    ticket = await ticket_by_number(whistle, await confirm(r, summary))
    assert (ticket.lat, ticket.lon) == (None, None)
    if answer == "address":
        assert (ticket.address, ticket.grid_id, ticket.route_reason) == (ADDRESS, None, "none")
    else:
        assert (ticket.grid_id, ticket.route_reason) == (ids["g05"], "menu")


async def test_no_gps_offer_for_a_photo_without_gps(whistle, api, resident):
    r = resident(9001)
    after = r.last_id()
    communities = await walk(r, "location", photos=(jpeg(45, camera="PhoneCam"),))
    await api.wait_idle()
    assert not any(GPS_OFFER in t for t in r.texts_after(after))
    assert await r.alert(communities["message_id"], "lx") == STALE


async def test_replacing_the_photos_drops_the_old_photos_gps_offer(whistle, api, resident):
    """The offer is about "your photo"; once the GPS photo was replaced by another one,
    its position must not be offered (or used) any more."""
    r = resident(9001)
    summary = await walk(r, photos=(jpeg(46, gps=G10),), where=("address", ADDRESS))
    me = await person_of(whistle, r.id)
    menu = await r.press(summary, "ed", "What do you want to change?")
    await r.press(menu, "ef:photos", ASK_PHOTOS)
    done = await r.photo(jpeg(47), "Photo 1 of 3 received.")
    summary = await r.press(done, "ph:done", CHECK, SUMMARY)
    draft = (await dialogue_of(whistle, me.id))[1]
    assert len(draft["photos"]) == 1
    menu = await r.press(summary, "ed", "What do you want to change?")
    after = r.last_id()
    await r.press(menu, "ef:location", ASK_LOCATION, COMMUNITIES)
    await api.wait_idle()
    assert not any(GPS_OFFER in t for t in r.texts_after(after)), \
        "the replaced photo's location is still offered"
    assert "gps" not in (await dialogue_of(whistle, me.id))[1]


@pytest.mark.parametrize("data", [b"this is a text file, not a JPEG at all",
                                  jpeg(48, size=(400, 300))[:300]],
                         ids=["text", "truncated-jpeg"])
async def test_a_non_image_sent_as_a_photo_file_gets_a_clear_hint(whistle, api, resident, data):
    r = resident(9001)
    msg = await r.text("/start", WELCOME, ASK_CATEGORY)
    msg = await r.press(msg, "cat:garbage", ASK_DESCRIPTION)
    await r.text(DESCRIPTION, ASK_PHOTOS)
    me = await person_of(whistle, r.id)
    before = await dialogue_of(whistle, me.id)
    await r.document(data, "photo.jpg", "image/jpeg", NOT_A_PHOTO)
    assert await dialogue_of(whistle, me.id) == before
    assert await count(whistle, Media) == 0
    await r.document(jpeg(49), "photo.jpg", "image/jpeg", "Photo 1 of 3 received.")


# ==== 8. the honest end states ===================================================================

@pytest.mark.parametrize("reason", ["not_fixable", "not_ours", "referred"])
async def test_close_without_a_fix(whistle, api, resident, chief, clock, reason):
    r = resident(9101)
    ticket = await file(whistle, r, where=("point", G07))
    f = resident(9001)
    await f.press(await walk(f, "nearby", where=("point", G07)), f"mt:{ticket.id}",
                  NOW_FOLLOW.format(number=ticket.number))
    await chief.claim(ticket)
    card = await chief.card(ticket)
    marks = {x.id: x.last_id() for x in (r, f)}
    note = {"not_fixable": "The wall belongs to the railway; we cannot repair it.",
            "not_ours": "This is inside a private compound; ask the property company.",
            "referred": "Passed to the sanitation company, hotline 12345."}[reason]
    await chief.close(ticket, reason, note)

    row = await ticket_row(whistle, ticket.id)
    assert (row.state, row.close_reason, row.close_note) == ("closed_not_fixed", reason, note)
    assert row.closed_at == clock.now and row.resolved_at is None and row.resolved_level is None
    events = await rows(whistle, TicketEvent, TicketEvent.ticket_id == ticket.id,
                        TicketEvent.kind == "closed_not_fixed")
    assert [(e.note, e.data) for e in events] == [(note, {"reason": reason})]
    for x in (r, f):
        await x.expect(marks[x.id], CLOSED_NOT_FIXED.format(
            number=ticket.number, kind=CLOSE_KINDS[reason], reason=note))
    await api.wait_idle()
    for x in (r, f):   # no verdict is asked: only "resolved" asks
        assert not any(d.startswith("vs:") for m in api.bot_messages(x.id)
                       if m["message_id"] > marks[x.id] for d in all_button_data(m))
    assert await count(whistle, Timer, Timer.ticket_id == ticket.id, Timer.kind == "vote") == 0
    assert await count(whistle, Timer, Timer.ticket_id == ticket.id, Timer.next_at.is_not(None)) == 0
    edited = await card_shows(api, G07_CHAT, card, group_text(whistle, "🚫 Closed: {reason}",
                                                              reason=note))
    assert all_button_data(edited) == []

    # a forged vote is refused, and the rates count nothing as resolved
    assert await r.alert(marks[r.id], f"vs:{ticket.id}.1") == STALE
    assert await count(whistle, Vote) == 0
    rates = await whistle.db.run(lambda s: three_rates(
        s, Ticket.id == ticket.id, clock.now - timedelta(days=1), clock.now + timedelta(days=1)))
    assert (rates.votes, rates.solved, rates.resolution, rates.satisfaction) == (0, 0, None, None)

    timeline = await r.press(await r.text("/my", MY_LIST), f"my:{ticket.id}", f"#{ticket.number}")
    assert "📌 Status: closed, not fixed" in timeline["text"] and note in timeline["text"]


async def test_closed_not_fixed_is_not_counted_as_resolved_in_the_rates(whistle, api, resident,
                                                                        chief, clock):
    r = resident(9001)
    fixed = await file(whistle, r, where=("point", G07))
    not_fixed = await file(whistle, r, where=("point", offset(G07, north=-200)))
    await chief.claim(fixed)
    await chief.note(fixed, "resolve", "已修复")
    question = await r.expect(0, VOTE_QUESTION.format(number=fixed.number))
    satisfaction = await r.press(question, f"vs:{fixed.id}.1", HOW_SATISFIED.format(
        number=fixed.number))
    await r.press(satisfaction, f"vq:{fixed.id}.s", THANKS_FOR_VOTE)
    await chief.close(not_fixed, "not_fixable", "Beyond our means.")

    ids = await unit_ids(whistle)
    rates = await whistle.db.run(lambda s: three_rates(
        s, Ticket.grid_id == ids["g07"], clock.now - timedelta(days=1),
        clock.now + timedelta(days=1)))
    assert (rates.votes, rates.solved, rates.satisfied) == (1, 1, 1)
    assert (rates.resolution, rates.satisfaction) == (1.0, 1.0)
    assert await count(whistle, Ticket, Ticket.resolved_at.is_not(None)) == 1


# ==== 9. photo retention =========================================================================

@pytest.fixture
def retention_30_days(config):
    config.privacy.photo_retention_days = 30
    return config


async def test_retention_deletes_photos_of_tickets_closed_31_days_ago(
        retention_30_days, whistle, api, resident, chief, clock, config):
    r = resident(9001)
    old = await file(whistle, r, where=("point", G07), photos=(jpeg(61), jpeg(62)))
    recent = await file(whistle, r, where=("point", offset(G07, north=-200)), photos=(jpeg(63),))
    still_open = await file(whistle, r, where=("point", G10), photos=(jpeg(64),))
    await chief.close(old, "not_fixable", "Nothing to be done.")
    clock.advance(days=2)
    await chief.close(recent, "referred", "Passed to the district.")
    media = {t.id: await rows(whistle, Media, Media.ticket_id == t.id)
             for t in (old, recent, still_open)}
    assert [len(media[t.id]) for t in (old, recent, still_open)] == [2, 1, 1]
    paths = {t.id: [config.media_dir / m.path for m in media[t.id]] for t in (old, recent, still_open)}
    assert all(p.is_file() for ps in paths.values() for p in ps)

    clock.advance(days=29, hours=1)   # old: closed 31 days ago; recent: 29 days ago
    assert await run_retention(whistle.db, whistle.core, clock.now) == 2
    assert await count(whistle, Media, Media.ticket_id == old.id) == 0
    assert not any(p.exists() for p in paths[old.id])
    for kept in (recent, still_open):
        assert [m.id for m in await rows(whistle, Media, Media.ticket_id == kept.id)] == [
            m.id for m in media[kept.id]]
        assert all(p.is_file() for p in paths[kept.id])
    old_row = await ticket_row(whistle, old.id)
    assert (old_row.state, old_row.description) == ("closed_not_fixed", DESCRIPTION)

    # once a day
    assert await run_retention(whistle.db, whistle.core, clock.now) is None
    clock.advance(days=1)   # recent: closed 30 days 1 hour ago
    assert await run_retention(whistle.db, whistle.core, clock.now) == 1
    assert await count(whistle, Media, Media.ticket_id == recent.id) == 0
    assert await count(whistle, Media, Media.ticket_id == still_open.id) == 1


async def test_retention_keeps_a_file_that_an_open_ticket_still_uses(
        retention_30_days, whistle, api, resident, chief, clock, config):
    r = resident(9001)
    same = jpeg(65)
    closed = await file(whistle, r, where=("point", G07), photos=(same,))
    still_open = await file(whistle, r, where=("point", G10), photos=(same,))
    await chief.close(closed, "not_ours", "Railway property.")
    shared = (await rows(whistle, Media, Media.ticket_id == closed.id))[0]
    assert (await rows(whistle, Media, Media.ticket_id == still_open.id))[0].path == shared.path

    clock.advance(days=31)
    assert await run_retention(whistle.db, whistle.core, clock.now) == 0
    assert await count(whistle, Media, Media.ticket_id == closed.id) == 0
    assert (config.media_dir / shared.path).read_bytes() == clean_photo(same)[0]


async def test_retention_off_keeps_every_photo(whistle, api, resident, chief, clock, config):
    assert config.privacy.photo_retention_days == 0
    r = resident(9001)
    closed = await file(whistle, r, where=("point", G07), photos=(jpeg(66),))
    await chief.close(closed, "not_fixable", "Nothing to be done.")
    clock.advance(days=400)
    assert await run_retention(whistle.db, whistle.core, clock.now) == 0
    assert await count(whistle, Media, Media.ticket_id == closed.id) == 1


async def test_photos_of_drafts_never_filed_are_deleted(
        retention_30_days, whistle, api, resident, clock, config):
    """A cancelled report leaves a stored photo with no ticket: retention deletes it once
    it is older than the retention period, and /forget deletes its owner's at once."""
    r = resident(9001)
    await to_photos(r)
    await r.photo(jpeg(71), "Photo 1 of 3 received.")
    await r.text("/cancel", "Cancelled.")
    draft = (await rows(whistle, Media, Media.ticket_id.is_(None)))[0]
    assert (config.media_dir / draft.path).is_file()

    clock.advance(days=29)
    assert await run_retention(whistle.db, whistle.core, clock.now) == 0
    clock.advance(days=2)
    assert await run_retention(whistle.db, whistle.core, clock.now) == 1
    assert await count(whistle, Media, Media.id == draft.id) == 0
    assert not (config.media_dir / draft.path).exists()

    other = resident(9002)
    await to_photos(other)
    await other.photo(jpeg(72), "Photo 1 of 3 received.")
    await other.text("/cancel", "Cancelled.")
    unfiled = (await rows(whistle, Media, Media.ticket_id.is_(None)))[0]
    await other.press(await other.text("/forget", FORGET_QUESTION), "fg:yes", ERASED)
    assert await count(whistle, Media, Media.id == unfiled.id) == 0
    assert not (config.media_dir / unfiled.path).exists()


async def to_photos(r: Resident) -> None:
    msg = await r.text("/start", WELCOME, ASK_CATEGORY)
    msg = await r.press(msg, "cat:garbage", ASK_DESCRIPTION)
    await r.text(DESCRIPTION, ASK_PHOTOS)
