"""The intake dialogue: category → description → photos → location → contact → confirm.

Written once for every channel. The step and the draft live in the ``dialogue``
row, so a restart (or another process) continues where the resident was. Each
step accepts only its kind of input; anything else gets a short hint and the
step is asked again."""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.context import Core
from models.inputs import Input, Reply, parse_id
from models.lifecycle import STATE_LABELS, State
from models.media.photos import PhotoError, require, store_photo
from models.messages.i18n import Translator
from models.messages.masking import mask
from models.messages.outbox import Button, KeyButton, OutMessage, Target, enqueue
from models.org import tree as org
from models.org.names import category_name, unit_name
from models.org.people import load_dialogue
from models.store.db import among
from models.store.tables import Dialogue, Media, Person, Ticket, Unit
from models.tickets import actions as tickets
from models.tickets.cards import NO_DESCRIPTION, main_keyboard

from . import nearby

STEPS = ("category", "description", "photos", "location", "nearby", "contact", "confirm")
EDITABLE = ("category", "description", "photos", "location", "contact")
# channels whose clients show a "📍 Send my location" button for a location request; on
# the others (WeCom) the prompt names no button and the channel adds how to send one
LOCATION_BUTTON = frozenset({"telegram"})
DIALOGUE_ACTIONS = {"cat", "ph", "lc", "lg", "lb", "lx", "lo", "cf", "ed", "ef", "cx", "mt", "mn"}


class Intake:
    """One resident's dialogue, for the duration of one input."""

    def __init__(self, session: AsyncSession, core: Core, person: Person, row: Dialogue,
                 t: Translator, chat: Target):
        self.session, self.core, self.person, self.row, self.t, self.chat = (
            session, core, person, row, t, chat)
        self._candidates: tuple[tuple, list] | None = None  # (place, reports near it)

    # -- plumbing ------------------------------------------------------------------------

    @property
    def draft(self) -> dict:
        return self.row.draft

    def update(self, **changes) -> None:
        self.row.draft = {**self.row.draft, **changes}  # reassign: JSON columns track identity

    def say(self, text: str, **kwargs) -> None:
        enqueue(self.session, self.chat, OutMessage(text=text, **kwargs), self.core.now())

    def goto(self, step: str | None) -> None:
        self.row.step = step
        self.row.updated_at = self.core.now()

    async def advance(self) -> None:
        step = self.row.step
        if step == "location" and await self.candidates():
            self.goto("nearby")  # even when editing: the new place may already be reported
        elif self.draft.get("editing") or step == "contact":
            self.goto("confirm")
        elif step == "location":
            self.goto("contact")
        else:
            self.goto(STEPS[STEPS.index(step) + 1])
        await self.prompt()

    async def candidates(self) -> list:
        """Open reports of the same category near the chosen place ("me too"); asked once
        per place while this input is handled (choosing the step, then showing them)."""
        d = self.draft
        place = (d.get("category"), tuple(d.get("location") or ()), d.get("grid_id"))
        if self._candidates is None or self._candidates[0] != place:
            with self.session.no_autoflush:  # tickets only: the draft's changes can wait
                self._candidates = place, await self._search()
        return self._candidates[1]

    async def _search(self) -> list:
        d, cfg, now = self.draft, self.core.config.nearby, self.core.now()
        if not d.get("category"):
            return []
        if d.get("location"):
            return await nearby.nearby(self.session, d["category"], d["location"][0],
                                       d["location"][1], now, cfg.radius_m, cfg.days, cfg.limit)
        if d.get("grid_id"):
            return await nearby.in_grid(self.session, d["category"], d["grid_id"], now, cfg.days,
                                        cfg.limit)
        return []

    # -- entering and leaving ------------------------------------------------------------

    async def begin(self) -> None:
        self.row.draft = {}
        self.goto("category")
        await self.prompt()

    async def cancel(self) -> None:
        was_active = self.row.step is not None
        self.row.draft = {}
        self.goto(None)
        t = self.t
        text = t._("Cancelled. Nothing was sent.") if was_active else t._("There is nothing to cancel.")
        self.say(text, keyboard=main_keyboard(t))

    # -- prompts -------------------------------------------------------------------------

    async def prompt(self) -> None:
        t, step = self.t, self.row.step
        if step == "category":
            cats = [Button(category_name(self.core, c.code, t), "cat", c.code)
                    for c in self.core.config.categories]
            self.say(t._("What kind of problem is it? Choose a category:"),
                     buttons=[cats[i:i + 2] for i in range(0, len(cats), 2)])
        elif step == "description":
            limits = self.core.config.intake
            self.say(t._("Describe the problem in a few sentences ({min}–{max} characters).",
                         min=limits.min_description, max=limits.max_description),
                     remove_keyboard=True)
        elif step == "photos":
            # new photos: the location the old ones carried goes with them
            self.row.draft = {**{k: v for k, v in self.draft.items() if k != "gps"}, "photos": []}
            self.say(t._("Send up to {n} photos of the problem, or press Skip.",
                         n=self.core.config.intake.max_photos),
                     buttons=[[Button(t._("Skip"), "ph", "done")]])
        elif step == "location":
            communities = await self.community_buttons()  # read first: one insert for both
            if self.chat.channel in LOCATION_BUTTON:
                ask = t._("Where is it? Press “📍 Send my location”, choose the community "
                          "below, or type the address.")
            else:  # the channel says how a location is sent there (WeCom: "+" → Location)
                ask = t._("Where is it? Send your location, choose the community below, or "
                          "type the address.")
            self.say(ask, keyboard=[[KeyButton(t._("📍 Send my location"), "location")]])
            self.say(t._("Communities:"), buttons=communities)
            if self.draft.get("gps"):
                self.say(t._("Your photo carries a location. Use it as the place of the problem?"),
                         buttons=[[Button(t._("📷 Use the photo's location"), "lx")]])
        elif step == "nearby":
            await self.prompt_nearby()
        elif step == "contact":
            self.say(t._("Can the grid contact you? Share your phone number, or stay anonymous. "
                         "Your number is shown only to the person who handles the report."),
                     keyboard=[[KeyButton(t._("📱 Share my phone number"), "contact")],
                               [KeyButton(t._("👤 Show my first name, no phone"))],
                               [KeyButton(t._("🙈 Stay anonymous"))]])
        elif step == "confirm":
            summary = await self.summary()  # read first: one insert for both messages
            self.say(t._("Please check your report:"), keyboard=main_keyboard(t))
            self.say(summary, buttons=[[
                Button(t._("✅ Confirm"), "cf"), Button(t._("✏️ Edit"), "ed"),
                Button(t._("❌ Cancel"), "cx")]])

    async def prompt_nearby(self) -> None:
        t, now = self.t, self.core.now()
        found = await self.candidates()
        firsts = await first_photos(self.session, [ticket.id for ticket, _ in found])
        photos = []
        lines = [t._("These reports nearby may be the same problem. If one of them is, press "
                     "“That's it — me too” and follow it instead of filing a new report:")]
        buttons = []
        for n, (ticket, distance) in enumerate(found, 1):
            if ticket.id in firsts:
                photos.append(firsts[ticket.id])
            age = max(0, (now - ticket.created_at).days)
            where = t._("{m} m away", m=round(distance)) if distance is not None else t._("same grid")
            lines.append(t._("{n}. #{number} — {text} — {where}, {age} days ago, {status}",
                             n=n, number=ticket.number, text=mask(ticket.description)[:60] or t._(NO_DESCRIPTION),
                             where=where,
                             age=age, status=t._(STATE_LABELS[State(ticket.state)])))
            buttons.append([Button(t._("{n}. That's it — me too", n=n), "mt", str(ticket.id))])
        buttons.append([Button(t._("No, it's a new problem"), "mn")])
        enqueue(self.session, self.chat, OutMessage(text="\n".join(lines), photos=photos[:10],
                                                    buttons=buttons), now)

    async def community_buttons(self) -> list[list[Button]]:
        communities = await org.units_of_kind(self.session, "community")
        buttons = [Button(org.display_name(c, self.t.locale), "lc", str(c.id)) for c in communities]
        return [buttons[i:i + 2] for i in range(0, len(buttons), 2)]

    async def summary(self) -> str:
        t, d = self.t, self.draft
        grid_id, _reason = tickets.route_draft(self.core, d)
        grid_unit = await self.session.get(Unit, grid_id) if grid_id else None
        if d.get("location"):
            where = t._("📍 location {lat:.5f}, {lon:.5f}", lat=d["location"][0], lon=d["location"][1])
        elif d.get("address"):
            where = t._("🏠 {address}", address=d["address"])
        else:
            where = t._("chosen from the list")
        grid = unit_name(grid_unit, t) if grid_unit else t._(
            "to be decided by the dispatch centre")
        if d.get("phone"):
            contact = t._("phone shared with the handler")
        elif d.get("anonymous", True):
            contact = t._("anonymous")
        else:
            contact = t._("first name shown, no phone")
        return "\n".join([
            t._("Category: {value}", value=category_name(self.core, d.get("category", ""), t)),
            t._("Description: {value}", value=d.get("description", "")),
            t._("Photos: {value}", value=len(d.get("photos", []))),
            t._("Location: {value}", value=where),
            t._("Grid: {value}", value=grid),
            t._("Contact: {value}", value=contact),
        ])

    # -- inputs --------------------------------------------------------------------------

    async def on_input(self, inp: Input) -> Reply:
        """Feed one input to the current step."""
        step = self.row.step
        if inp.kind == "button":
            return await self.on_button(inp)
        if step is None:
            self.say(self.t._("Press “📝 Report a problem” to report something, or /my to see "
                              "your reports."), keyboard=main_keyboard(self.t))
            return Reply()
        handler = getattr(self, f"on_{step}")
        await handler(inp)
        return Reply()

    async def on_category(self, inp: Input) -> None:
        self.say(self.t._("Please choose a category with the buttons."))
        await self.prompt()

    async def on_description(self, inp: Input) -> None:
        t, limits = self.t, self.core.config.intake
        if inp.kind != "text" or not (inp.text or "").strip():
            self.say(t._("Please describe the problem in words, as a text message."))
            return
        text = inp.text.strip()
        if len(text) < limits.min_description:
            self.say(t._("That is a bit short: please write at least {min} characters.",
                         min=limits.min_description))
        elif len(text) > limits.max_description:
            self.say(t._("That is too long ({n} characters): please keep it under {max}.",
                         n=len(text), max=limits.max_description))
        else:
            self.update(description=text)
            await self.advance()

    async def on_photos(self, inp: Input) -> None:
        t, limits = self.t, self.core.config.intake
        if inp.kind != "photo":
            if self.draft.get("photos"):
                self.say(t._("Please send a photo, or press Done."),
                         buttons=[[Button(t._("Done"), "ph", "done")]])
            else:  # the button the step offered before any photo
                self.say(t._("Please send a photo, or press Skip."),
                         buttons=[[Button(t._("Skip"), "ph", "done")]])
            return
        require(inp.photo)  # downloaded only now that a step takes it
        if inp.photo.too_many_pixels:
            self.say(t._("That picture has too many pixels (the limit is {max} megapixels). "
                         "Please send a smaller one.",
                         max=round(limits.max_photo_pixels / 1e6)))
            return
        if inp.photo.data is None or inp.photo.size > limits.max_photo_bytes:
            self.say(t._("That photo is too large ({size} MB; the limit is {max} MB). "
                         "Please send a smaller one.",
                         size=round(inp.photo.size / 1e6, 1), max=round(limits.max_photo_bytes / 1e6, 1)))
            return
        try:
            media = await store_photo(self.session, self.core, self.person, inp, "report")
        except PhotoError:
            self.say(t._("That file is not a photo I can read. Please send a photo."))
            return
        photos = [*self.draft.get("photos", []), media.id]
        self.update(photos=photos)
        if media.gps and not self.draft.get("gps"):
            self.update(gps=list(media.gps))
        if len(photos) >= limits.max_photos:
            await self.advance()
        else:
            self.say(t._("Photo {i} of {n} received. Send another, or press Done.",
                         i=len(photos), n=limits.max_photos),
                     buttons=[[Button(t._("Done"), "ph", "done")]])

    async def on_location(self, inp: Input) -> None:
        t = self.t
        if inp.kind == "location":
            lat, lon = inp.location
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                self.say(t._("That location is not valid; please try again."))
                return
            await self.take_point([lat, lon])
        elif inp.kind == "text" and inp.text and not inp.text.startswith("/"):
            address = inp.text.strip()
            if len(address) < 4 or len(address) > 300:
                self.say(t._("Please type the address in 4 to 300 characters."))
                return
            self.update(address=address, location=None, grid_id=None)
            await self.advance()
        else:
            if self.chat.channel in LOCATION_BUTTON:
                self.say(t._("Please send your location with the button, choose a community, "
                             "or type the address."))
            else:
                self.say(t._("Please send your location, choose a community, or type the "
                             "address."))
            await self.prompt()

    async def take_point(self, point: list[float]) -> None:
        """A point inside a grid goes on; one outside every grid is kept, and the resident
        is told so and offered the grid menu, or the dispatch centre as it is ("lo")."""
        self.update(location=point, grid_id=None, address=None)
        if self.core.router.locate(point[0], point[1]) is not None:
            await self.advance()
            return
        t = self.t
        rows = await self.community_buttons()
        rows.append([Button(t._("Send it to the dispatch centre"), "lo")])
        self.say(t._("That point is outside the district's grids. Choose the community and "
                     "grid below, or send the report to the dispatch centre, which will pass "
                     "it on."), buttons=rows)

    async def on_contact(self, inp: Input) -> None:
        t = self.t
        if inp.kind == "contact":
            if not inp.contact_is_own:
                self.say(t._("Please share your own number with the button below."))
                return
            self.update(phone=inp.contact_phone, anonymous=False)
            await self.advance()
            return
        label = (inp.text or "").strip() if inp.kind == "text" else ""
        if label in self.core.i18n.labels("🙈 Stay anonymous"):
            self.update(phone=None, anonymous=True)
            await self.advance()
        elif label in self.core.i18n.labels("👤 Show my first name, no phone"):
            self.update(phone=None, anonymous=False)
            await self.advance()
        else:
            self.say(t._("Please use the buttons below: share your phone number, show your "
                         "first name only, or stay anonymous."))
            await self.prompt()

    async def on_nearby(self, inp: Input) -> None:
        self.say(self.t._("Please choose one of the reports above, or press “No, it's a new "
                          "problem”."))
        await self.prompt()

    async def on_confirm(self, inp: Input) -> None:
        self.say(self.t._("Please press Confirm, Edit or Cancel."))
        await self.prompt()

    async def on_button(self, inp: Input) -> Reply:
        """Dialogue buttons are valid only in the step that showed them."""
        action, arg, step, t = inp.action, inp.arg, self.row.step, self.t
        expected = {"cat": "category", "ph": "photos", "lc": "location", "lg": "location",
                    "lb": "location", "cf": "confirm", "ed": "confirm", "ef": "confirm",
                    "cx": "confirm", "mt": "nearby", "mn": "nearby", "lx": "location",
                    "lo": "location"}
        if step != expected.get(action):
            return Reply(alert=t._("This button is no longer active."))
        if action == "cat":
            if self.core.config.category(arg) is None:
                return Reply(alert=t._("This button is no longer active."))
            self.update(category=arg)
            await self.advance()
        elif action == "ph":
            await self.advance()
        elif action == "lc":
            grids = await org.children(self.session, parse_id(arg), kind="grid") if parse_id(arg) else []
            if not grids:
                return Reply(alert=t._("This button is no longer active."))
            buttons = [Button(org.display_name(g, t.locale), "lg", str(g.id)) for g in grids]
            rows = [buttons[i:i + 2] for i in range(0, len(buttons), 2)]
            rows.append([Button(t._("« Back"), "lb")])
            self.say(t._("Choose the grid:"), buttons=rows)
        elif action == "lx":
            if not self.draft.get("gps"):
                return Reply(alert=t._("This button is no longer active."))
            await self.take_point(list(self.draft["gps"]))
        elif action == "lo":
            if not self.draft.get("location"):
                return Reply(alert=t._("This button is no longer active."))
            await self.advance()
        elif action == "lb":
            self.say(t._("Communities:"), buttons=await self.community_buttons())
        elif action == "lg":
            grid = await self.session.get(Unit, parse_id(arg)) if parse_id(arg) else None
            if grid is None or grid.kind != "grid":
                return Reply(alert=t._("This button is no longer active."))
            self.update(grid_id=grid.id, location=None, address=None)
            await self.advance()
        elif action == "mn":
            self.goto("confirm" if self.draft.get("editing") else "contact")
            await self.prompt()
        elif action == "mt":
            ticket = await self.session.get(Ticket, parse_id(arg)) if parse_id(arg) else None
            if ticket is None or ticket.id not in [c.id for c, _ in await self.candidates()]:
                return Reply(alert=t._("This button is no longer active."))
            draft = dict(self.draft)
            self.row.draft = {}
            self.goto(None)
            if await tickets.me_too(self.session, self.core, self.person, ticket, draft):
                self.say(t._("👍 You now follow #{number}. You will be told of every change and "
                             "asked for your vote at the end.", number=ticket.number),
                         keyboard=main_keyboard(t))
            else:
                self.say(t._("You already follow #{number}.", number=ticket.number),
                         keyboard=main_keyboard(t))
        elif action == "cx":
            await self.cancel()
        elif action == "ed":
            labels = {"category": t._("Category"), "description": t._("Description"),
                      "photos": t._("Photos"), "location": t._("Location"),
                      "contact": t._("Contact")}
            buttons = [Button(labels[f], "ef", f) for f in EDITABLE]
            self.say(t._("What do you want to change?"), buttons=[buttons[:3], buttons[3:]])
        elif action == "ef":
            if arg not in EDITABLE:
                return Reply(alert=t._("This button is no longer active."))
            self.update(editing=True)
            self.goto(arg)
            await self.prompt()
        elif action == "cf":
            draft = dict(self.draft)
            self.row.draft = {}
            self.goto(None)
            await tickets.create(self.session, self.core, self.person, draft, inp.sender.channel)
        return Reply()


async def first_photos(session: AsyncSession, ticket_ids: list[int]) -> dict[int, int]:
    """Ticket id → its first report photo, for those that have one (one query for all)."""
    if not ticket_ids:
        return {}
    return dict((await session.execute(
        select(Media.ticket_id, func.min(Media.id))
        .where(among(session, Media.ticket_id, ticket_ids), Media.kind == "report")
        .group_by(Media.ticket_id))).all())


async def load(session: AsyncSession, core: Core, person: Person, channel: str) -> Dialogue:
    return await load_dialogue(session, person.id, channel, core.now())


async def open_intake(session: AsyncSession, core: Core, person: Person, t: Translator,
                      inp: Input) -> Intake:
    row = await load(session, core, person, inp.sender.channel)
    return Intake(session, core, person, row, t, inp.chat)
