"""The one entry point for everything a person does, on any channel.

An adapter builds an ``Input`` and calls ``handle`` inside a transaction; this
decides whether it is a command, a resident's dialogue step, a staff member's
note or a button, and answers through the outbox."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models.figures import commands as group_commands
from models.intake.dialogue import DIALOGUE_ACTIONS, load, open_intake
from models.intake.scrub import scrub
from models.media.photos import PhotoError, require, store_photo
from models.messages.i18n import LOCALES, Translator
from models.messages.outbox import Button, OutMessage, enqueue
from models.org import limits, people
from models.org import tree as org
from models.org.names import category_name, unit_name
from models.org.people import is_admin
from models.residents import bans, privacy
from models.store.inbox import first_delivery
from models.store.tables import ChatBinding, Person, Ticket, Unit
from models.tickets import actions as tickets
from models.tickets import desk, follow, votes, whistle
from models.tickets.cards import REPORT_BUTTON, main_keyboard, timeline_text

from .context import Core
from .inputs import Input, Reply, parse_id
from .lifecycle import OPEN, STATE_LABELS, State, TransitionError

MY_BUTTON = "📋 My reports"


async def text_or_photo(session, core: Core, person: Person, t: Translator, inp: Input,
                        hint: str) -> tuple[str, int | None] | None:
    """A resident's reply that may be a text or a photo (with an optional caption);
    None, after telling them ``hint``, if it is neither."""
    text = (inp.text or "").strip()[:core.config.intake.max_note]
    if inp.kind == "photo":
        require(inp.photo)
    if inp.kind == "photo" and inp.photo.data is not None:
        try:
            return text, (await store_photo(session, core, person, inp, "report")).id
        except PhotoError:
            say(session, core, inp, t._("That file is not a photo I can read."))
            return None
    if inp.kind != "text" or not text:
        say(session, core, inp, hint)
        return None
    return text, None


async def answer(session, core: Core, person: Person, t: Translator, inp: Input,
                 pending: dict) -> None:
    """The resident's answer to a staff question; the ticket's timers resume."""
    reply = await text_or_photo(session, core, person, t, inp, t._(
        "Please answer the question with a text message or a photo."))
    if reply is None:
        return
    (await load(session, core, person, inp.sender.channel)).pending = None
    ticket = await session.get(Ticket, pending["ticket"])
    await tickets.answer_resident(session, core, person, ticket, *reply)
    say(session, core, inp, t._("Thank you, your answer was passed on."))


async def more_info(session, core: Core, person: Person, t: Translator, inp: Input,
                    pending: dict) -> None:
    """A reporter's or follower's comment or photo on an open ticket."""
    reply = await text_or_photo(session, core, person, t, inp, t._(
        "Please send a text or a photo (or /cancel)."))
    if reply is None:
        return
    (await load(session, core, person, inp.sender.channel)).pending = None
    ticket = await session.get(Ticket, pending["ticket"])
    try:
        await tickets.add_info(session, core, person, ticket, *reply)
    except TransitionError:
        say(session, core, inp, t._("#{number} is closed; nothing was added.", number=ticket.number))
        return
    say(session, core, inp, t._("Added to #{number}. Thank you!", number=ticket.number))


NOTE_TAKERS = {**{action: desk.on_note for action in desk.NOTE_ACTIONS},
               "answer": answer, "vote_comment": votes.comment,
               "rating_comment": whistle.rating_comment, "addinfo": more_info}
LANGUAGE_NAMES = {"zh_Hans": "简体中文", "en": "English"}


async def handle(session: AsyncSession, core: Core, inp: Input) -> Reply:
    inp = scrub(inp)  # lone surrogates and NULs from odd clients never reach a row
    if inp.dedupe_key is not None and not await first_delivery(
            session, inp.sender.channel, inp.dedupe_key, core.now()):
        return Reply(duplicate=True)
    # ``dialogue`` is held to the end, so every ``load`` of it below is answered by the session
    person, identity, dialogue = await people.resolve(session, inp.sender, core.now())
    t = core.i18n.get(core.i18n.pick(person.locale, identity.language_code))
    over, warning = await limits.too_fast(session, core, person, t)
    if over:  # nothing else happens; the first time in the minute they are told why
        if warning and inp.kind == "button":
            return Reply(alert=warning, show_alert=True)
        if warning and inp.private:
            say(session, core, inp, warning)
        return Reply()
    if inp.kind == "photo" and await limits.is_banned(session, person.id):
        if inp.private:  # a banned person's photo is not taken anywhere (nor downloaded)
            say(session, core, inp, limits.banned_text(t))
        return Reply()
    if inp.kind == "command":
        return await on_command(session, core, person, t, inp)
    if inp.kind == "button":
        return await on_button(session, core, person, t, inp)
    row = await load(session, core, person, inp.sender.channel)
    label = (inp.text or "").strip() if inp.kind == "text" else ""
    keyboard = label in core.i18n.labels(REPORT_BUTTON) or label in core.i18n.labels(MY_BUTTON)
    if row.pending and row.pending.get("action") in NOTE_TAKERS and not keyboard and (
            inp.private or inp.reply_to_bot):
        await NOTE_TAKERS[row.pending["action"]](session, core, person, t, inp, row.pending)
        return Reply()
    if not inp.private:
        return Reply()  # group chatter that is not an answer to us
    intake = await open_intake(session, core, person, t, inp)
    if inp.kind == "text" and (inp.text or "").strip() in core.i18n.labels(REPORT_BUTTON):
        if refusal := await limits.report_refusal(session, core, person, t):
            say(session, core, inp, refusal)
            return Reply()
        await intake.begin()
    elif inp.kind == "text" and (inp.text or "").strip() in core.i18n.labels(MY_BUTTON):
        await list_mine(session, core, person, t, inp)
    else:
        return await intake.on_input(inp)
    return Reply()


def say(session: AsyncSession, core: Core, inp: Input, text: str, **kwargs) -> None:
    enqueue(session, inp.chat, OutMessage(text=text, **kwargs), core.now())


async def on_command(session: AsyncSession, core: Core, person: Person, t: Translator,
                     inp: Input) -> Reply:
    command = inp.command
    if command == "bind":
        return await bind_menu(session, core, person, t, inp)
    if command in ("ban", "unban"):
        await bans.command(session, core, person, t, inp)
        return Reply()
    if not inp.private:
        if command == "cancel":
            await cancel(session, core, person, t, inp)
        elif command in ("start", "help"):
            say(session, core, inp, core.i18n.get(None)._(
                "I post this unit's tickets here. Press the buttons on a ticket to claim and "
                "handle it. An administrator binds this chat to a unit with /bind."))
        elif command in ("stats", "report"):
            return Reply(after=await group_commands.on_group_command(session, core, inp))
        return Reply()
    if command in ("start", "report"):
        # asked before anything is said, so that the messages reach the outbox in one insert
        refusal = await limits.report_refusal(session, core, person, t)
        if command == "start":
            say(session, core, inp, t._("Welcome to Whistle. Report a problem in your "
                                        "neighbourhood and follow it until it is fixed."),
                keyboard=main_keyboard(t))
        if refusal:
            say(session, core, inp, refusal)
            return Reply()
        intake = await open_intake(session, core, person, t, inp)
        await intake.begin()
    elif command == "cancel":
        await cancel(session, core, person, t, inp)
    elif command == "my":
        await list_mine(session, core, person, t, inp)
    elif command == "status":
        await status(session, core, t, inp)
    elif command == "forget":
        say(session, core, inp, t._("/forget erases your name, phone number and chat identity "
                                    "from Whistle. Your reports stay, without your personal "
                                    "data, and you will no longer be told about them. Continue?"),
            buttons=[[Button(t._("Erase my data"), "fg", "yes"), Button(t._("Keep"), "fg", "no")]])
    elif command == "lang":
        say(session, core, inp, t._("Choose your language:"), buttons=[[
            Button(name, "lang", code) for code, name in LANGUAGE_NAMES.items()]])
    elif command == "help":
        say(session, core, inp, t._("/start or “📝 Report a problem”: report a problem\n"
                                    "/my: your reports and their progress\n"
                                    "/status NUMBER: look a report up\n"
                                    "/lang: change the language\n/cancel: stop what you are doing\n"
                                    "/forget: erase your personal data"),
            keyboard=main_keyboard(t))
    else:
        say(session, core, inp, t._("I don't know that command. Try /help."))
    return Reply()


async def cancel(session, core: Core, person: Person, t: Translator, inp: Input) -> None:
    row = await load(session, core, person, inp.sender.channel)
    if row.pending:
        if row.pending.get("action") == "answer":  # the question stays unanswered: timers go on
            ticket = await session.get(Ticket, row.pending["ticket"])
            if ticket.waiting_since is not None:
                await tickets.stop_waiting(session, core, person, ticket)
        row.pending = None
        say(session, core, inp, t._("Cancelled. Nothing was recorded."))
        return
    if inp.private:
        intake = await open_intake(session, core, person, t, inp)
        await intake.cancel()


async def on_button(session: AsyncSession, core: Core, person: Person, t: Translator,
                    inp: Input) -> Reply:
    stale = Reply(alert=t._("This button is no longer active."))
    if inp.action in DIALOGUE_ACTIONS:
        if not inp.private:
            return stale
        if inp.action in ("cf", "mt") and (  # filing, or joining a report as "me too"
                refusal := await limits.report_refusal(session, core, person, t)):
            return Reply(alert=refusal, show_alert=True)
        intake = await open_intake(session, core, person, t, inp)
        return await intake.on_button(inp)
    if inp.action in desk.STAFF_ACTIONS:
        return await desk.on_button(session, core, person, t, inp)
    if inp.action in votes.VOTE_ACTIONS:
        return await votes.on_button(session, core, person, t, inp)
    if inp.action in whistle.WHISTLE_ACTIONS:
        return await whistle.on_button(session, core, person, t, inp)
    if inp.action in ("my", "ad", "uf") and parse_id(inp.arg):
        ticket = await session.get(Ticket, parse_id(inp.arg))
        if ticket is None or person.id not in await follow.audience(session, ticket):
            return stale
        return await my_ticket(session, core, person, t, inp, ticket)
    if inp.action == "fg" and inp.private:
        if inp.arg == "yes":
            pseudonyms = await privacy.forget(session, core, person)
            say(session, core, inp, t._("Your personal data has been erased. Goodbye."),
                remove_keyboard=True, then_rename=pseudonyms.get(inp.sender.channel))
        else:
            say(session, core, inp, t._("Nothing was erased."))
        return Reply()
    if inp.action == "lang" and inp.arg in LOCALES:
        person.locale = inp.arg
        t = core.i18n.get(inp.arg)
        say(session, core, inp, t._("Language set to English.") if t.is_en else t._(
            "Language set to Simplified Chinese."), keyboard=main_keyboard(t) if inp.private else None)
        return Reply()
    if inp.action == "bind" and parse_id(inp.arg):
        return await bind(session, core, person, t, inp, parse_id(inp.arg))
    if inp.action == "bindg" and parse_id(inp.arg):
        community = await session.get(Unit, parse_id(inp.arg))
        if inp.private or community is None or community.kind != "community":
            return stale
        if not await is_admin(session, core, person, inp):
            return Reply(alert=t._("Only an administrator can bind this chat."), show_alert=True)
        await _bind_choices(session, core, inp, community)
        return Reply()
    return stale


async def my_ticket(session, core: Core, person: Person, t: Translator, inp: Input,
                    ticket: Ticket) -> Reply:
    """One of the resident's tickets: its timeline, and adding to it or stopping to follow."""
    is_open = ticket.state in [s.value for s in OPEN]
    if inp.action == "ad":
        if not is_open:
            return Reply(alert=t._("#{number} is closed.", number=ticket.number))
        row = await load(session, core, person, inp.sender.channel)
        row.pending = {"action": "addinfo", "ticket": ticket.id}
        say(session, core, inp, t._("Send a comment or a photo for #{number} (or /cancel).",
                                    number=ticket.number), force_reply=True)
        return Reply()
    if inp.action == "uf":
        if not await follow.unfollow(session, ticket, person.id):
            return Reply(alert=t._("This button is no longer active."))
        await tickets.refresh_cards(session, core, ticket)
        say(session, core, inp, t._("You no longer follow #{number}.", number=ticket.number))
        return Reply()
    buttons = []
    if is_open:
        buttons.append(Button(t._("➕ Add a comment or photo"), "ad", str(ticket.id)))
    if ticket.reporter_id != person.id:
        buttons.append(Button(t._("🔕 Stop following"), "uf", str(ticket.id)))
    say(session, core, inp, await timeline_text(session, core, ticket, t, person.id),
        buttons=[buttons] if buttons else [])
    return Reply()


async def status(session, core: Core, t: Translator, inp: Input) -> None:
    """/status 20261122-0007: public facts only, never who reported it."""
    number = (inp.args[0] if inp.args else "").lstrip("#")
    ticket = await session.scalar(select(Ticket).where(Ticket.number == number)) if number else None
    if ticket is None:
        say(session, core, inp, t._("No report with that number. Usage: /status 20261122-0007"))
        return
    grid = await session.get(Unit, ticket.grid_id) if ticket.grid_id else None
    say(session, core, inp, "\n".join([
        f"#{ticket.number} · {category_name(core, ticket.category, t)}",
        t._("📌 Status: {status}", status=t._(STATE_LABELS[State(ticket.state)])),
        t._("📍 Grid: {grid}", grid=unit_name(grid, t)),
        t._("🕒 Reported: {time}", time=core.local(ticket.created_at).strftime("%Y-%m-%d %H:%M")),
        t._("Last change: {time}", time=core.local(ticket.updated_at).strftime("%Y-%m-%d %H:%M")),
    ]))


async def list_mine(session, core: Core, person: Person, t: Translator, inp: Input) -> None:
    followed = await follow.followed_by(session, person.id)
    rows = list(await session.scalars(select(Ticket).where(
        (Ticket.reporter_id == person.id) | Ticket.id.in_(followed))
        .order_by(Ticket.id.desc()).limit(10)))
    if not rows:
        say(session, core, inp, t._("You have no reports yet."), keyboard=main_keyboard(t))
        return
    buttons = [[Button(f"#{r.number} · {t._(STATE_LABELS[State(r.state)])}", "my", str(r.id))]
               for r in rows]
    say(session, core, inp, t._("Your reports (newest first). Choose one to see its progress:"),
        buttons=buttons)


async def bind_menu(session, core: Core, person: Person, t: Translator, inp: Input) -> Reply:
    if inp.private:
        say(session, core, inp, t._("Send /bind in the group chat you want to bind."))
        return Reply()
    if not await is_admin(session, core, person, inp):
        say(session, core, inp, core.i18n.get(None)._("Only an administrator can bind this chat."))
        return Reply()
    await _bind_choices(session, core, inp, None)
    return Reply()


async def _bind_choices(session, core: Core, inp: Input, community: Unit | None) -> None:
    """Two levels, so a district with hundreds of grids stays within Telegram's keyboard
    limits: first the district, streets, communities and departments (and "grids of …"
    for each community), then one community's grids."""
    group_t = core.i18n.get(None)
    name = lambda u: org.display_name(u, group_t.locale)  # noqa: E731
    if community is None:
        units = []
        for kind in ("district", "street", "community", "department"):
            units += await org.units_of_kind(session, kind)
        buttons = [Button(name(u), "bind", str(u.id)) for u in units]
        buttons += [Button(group_t._("Grids of {community}…", community=name(c)), "bindg", str(c.id))
                    for c in await org.units_of_kind(session, "community")]
    else:
        buttons = [Button(name(g), "bind", str(g.id))
                   for g in await org.children(session, community.id, kind="grid")]
    say(session, core, inp, group_t._("Which unit does this chat speak for?"),
        buttons=[buttons[i:i + 2] for i in range(0, len(buttons), 2)])


async def bind(session, core: Core, person: Person, t: Translator, inp: Input,
               unit_id: int) -> Reply:
    if inp.private or not await is_admin(session, core, person, inp):
        return Reply(alert=t._("Only an administrator can bind this chat."), show_alert=True)
    unit = await session.get(Unit, unit_id)
    if unit is None:
        return Reply(alert=t._("This button is no longer active."))
    binding = await session.scalar(select(ChatBinding).where(
        ChatBinding.channel == inp.chat.channel, ChatBinding.chat_id == inp.chat.chat_id))
    if binding is None:
        session.add(ChatBinding(unit_id=unit.id, channel=inp.chat.channel,
                                chat_id=inp.chat.chat_id))
    else:
        binding.unit_id = unit.id
    group_t = core.i18n.get(None)
    say(session, core, inp, group_t._("This chat now speaks for {unit}.",
                                      unit=org.display_name(unit, group_t.locale)))
    return Reply(alert=t._("Bound."))
