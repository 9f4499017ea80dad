"""The running service: database, core, Telegram application and sender, wired together."""
from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from sqlalchemy import delete, select
from telegram import Update
from telegram.ext import Application, ApplicationBuilder

from bot.config import Config
from bot.delivery.sender import Sender
from bot.faces import build_app
from bot.migrate import upgrade
from bot.observability import REDACT, Metrics, secrets_of
from bot.telegram import webhook
from bot.telegram.channel import TelegramChannel
from bot.telegram.http import AiohttpRequest
from bot.telegram.journal import UpdateJournal
from bot.telegram.updates import PerChatUpdateProcessor, TolerantUpdatesRequest
from bot.web import WebServer, WhistleRef
from handlers.telegram import register
from models import inbound
from models.context import Core, utcnow
from models.deadlines.calendar import quiet_hours, working_calendar
from models.figures.commands import HEAVY_COMMANDS
from models.inputs import Input, PhotoIn, Reply
from models.media.photos import PhotoError, PhotoNeeded, PhotoTooLarge, limit_pixels
from models.media.photos import clean as clean_photo
from models.media.store import MediaStore
from models.messages.i18n import I18n, normalise
from models.org.file import load_org_file
from models.org.routing import Router
from models.org.tree import import_org
from models.store.db import Database
from models.store.tables import JobRun, Unit
from reports import bundle as report_outputs
from scheduler.jobs import claim_run
from scheduler.runner import Scheduler

log = logging.getLogger(__name__)
ALLOWED_UPDATES = ["message", "callback_query"]
PHOTO_WORKERS = 2  # photos decoded at once in one process


class Whistle:
    """One process of the service. ``start``/``stop`` bracket its life; ``handle`` is
    what every channel adapter calls."""

    def __init__(self, config: Config, clock: Callable[[], datetime] = utcnow, *,
                 web_ref: WhistleRef | None = None):
        """``web_ref``: a web server someone else runs (the sandbox) serves this service's
        faces; without it the service runs its own when ``[web] enabled``."""
        self.config = config
        REDACT.add(secrets_of(config))  # masked in every log line (bot/observability.py)
        self.db = Database(config.database.url, config.database.pool_size,
                           config.database.max_overflow)
        self.i18n = I18n(config.default_locale)
        self.media = MediaStore(config.media_dir)
        self.core = Core(config=config, i18n=self.i18n, router=Router([]), media=self.media,
                         calendar=working_calendar(config), quiet=quiet_hours(config),
                         reports=report_outputs, clock=clock)
        self.application: Application | None = None
        self.sender: Sender | None = None
        self.scheduler: Scheduler | None = None
        self.web_ref = web_ref if web_ref is not None else WhistleRef()
        self.web: WebServer | None = None
        self._own_web = web_ref is None
        self.metrics = Metrics()
        self.wecom = None  # the WeCom channel (bot/wecom/service.py) when [wecom] enabled
        self.journal: UpdateJournal | None = None  # long polling's fetched updates
        # photos decoded at once: each costs up to a few tens of MB (a PNG near the pixel
        # limit more), and two cores gain nothing from more
        self._photo_turns = asyncio.Semaphore(PHOTO_WORKERS)
        limit_pixels(config.intake.max_photo_pixels)

    async def prepare(self) -> None:
        """Migrate the schema, import the org file if it changed, build the router."""
        await upgrade(self.config.database.url)
        spec = load_org_file(self.config.org_file)
        digest = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:32]

        async def import_if_changed(session):
            if not await claim_run(session, "org_import", digest, self.core.now()):
                return None  # this exact org file is in the database already
            await session.execute(delete(JobRun).where(JobRun.job == "org_import",
                                                       JobRun.period != digest))
            return await import_org(session, spec, self.core.now())
        report = await self.db.run(import_if_changed)
        if report is not None:
            log.info("org file %s imported: %s", self.config.org_file, report)
        await self.reload_router()

    async def reload_router(self) -> None:
        grids = await self.db.run(lambda s: _grids(s))
        self.core.router = Router.from_units(grids)

    def build_telegram(self) -> Application:
        tg = self.config.telegram
        if tg.mode == "polling":
            bot_id = tg.token.split(":", 1)[0]  # a token starts with its bot's id
            self.journal = UpdateJournal(self.db, int(bot_id) if bot_id.isdigit() else 0,
                                         self.core.now)
        builder = (ApplicationBuilder().token(tg.token).base_url(tg.base_url)
                   .base_file_url(tg.base_file_url)
                   .concurrent_updates(PerChatUpdateProcessor(
                       on_done=self.journal.handled if self.journal else None)))
        # aiohttp, not PTB's httpx (bot/telegram/http.py); a local Bot API server (or the sandbox)
        # over plain HTTP needs no TLS and so no CA bundle
        verify = not tg.base_url.startswith("http://")
        builder = (builder.request(AiohttpRequest(verify=verify))
                   .get_updates_request(TolerantUpdatesRequest(
                       connection_pool_size=1, read_timeout=tg.poll_timeout + 10, verify=verify,
                       journal=self.journal)))
        application = builder.build()
        application.bot_data["whistle"] = self
        register(application)
        return application

    async def start(self) -> None:
        await self.prepare()
        self.application = self.build_telegram()
        channel = TelegramChannel(self.application.bot, self.db, self.media, self.core.now,
                                  edit_cost=self.config.sender.edit_cost)
        channels = {channel.name: channel}
        if self.config.wecom.enabled:  # WeCom runs beside Telegram (docs/wecom.md)
            from bot.wecom.service import WecomService
            self.wecom = WecomService(self)
            await self.wecom.start()
            channels.update({c.name: c for c in self.wecom.channels})
            self.core.channels = self.core.channels | {"wecom"}
        self.sender = Sender(self.db, channels, self.config.sender, self.core.now,
                             core=self.core)
        self.db.on_commit(self.sender.wake)
        await self.application.initialize()
        await self.application.start()
        if self.journal is not None:
            await self._replay(self.journal)
        if self.config.telegram.mode == "polling":
            await self.application.updater.start_polling(
                poll_interval=0, timeout=self.config.telegram.poll_timeout,
                allowed_updates=ALLOWED_UPDATES)
        self.sender.start()
        if self.config.schedule.enabled:
            self.scheduler = Scheduler(self.db, self.core, on_sweep=self.metrics.observe_sweep)
            self.scheduler.start()
        self.web_ref.whistle = self
        if self._own_web and self.config.web.enabled:
            self.web = WebServer(build_app(self.web_ref, self.config),
                                 self.config.web.host, self.config.web.port)
            await self.web.start()
        if self.config.telegram.mode == "webhook":  # updates now arrive on our web server
            await webhook.register(self.application.bot, self.config.telegram, ALLOWED_UPDATES)
        log.info("Whistle is running as @%s", self.application.bot.username)

    async def _replay(self, journal: UpdateJournal) -> None:
        """The updates a killed process had fetched and not handled, before any new one."""
        left = await journal.left_over()
        for payload in left:
            try:
                update = Update.de_json(payload, self.application.bot)
            except Exception:  # it parsed when it was fetched; nothing to do with it now
                log.exception("journalled update %s cannot be read", payload.get("update_id"))
                journal.handled(payload.get("update_id"))
                continue
            await self.application.update_queue.put(update)
        if left:
            log.warning("handling %d updates a previous process fetched and did not finish",
                        len(left))

    async def stop(self) -> None:
        """Stop taking updates, let handlers finish, drain the sender, then close the
        Bot API client — never the other way round, or a message Telegram accepted
        could stay "pending" and be sent again after a restart."""
        if self.web is not None:
            await self.web.stop()
            self.web = None
        self.web_ref.whistle = None
        if self.wecom is not None:
            await self.wecom.drain()  # callbacks being handled finish and queue their answers
        if self.scheduler is not None:
            self.scheduler.stop()
            await self.scheduler.drain()
        if self.application is not None:
            if self.application.updater.running:
                if self.journal is not None:
                    self.journal.stopping = True
                await self.application.updater.stop()
            if self.application.running:
                await self.application.stop()
        if self.journal is not None:
            await self.journal.flush()
        if self.sender is not None:
            await self.sender.stop()
        if self.application is not None:
            await self.application.shutdown()
        if self.wecom is not None:
            await self.wecom.close()
            self.wecom = None
        await self.db.dispose()

    async def handle(self, inp: Input) -> Reply:
        if inp.photo is not None and inp.photo.data is not None and not inp.photo.cleaned:
            inp = replace(inp, photo=await self._clean(inp.photo))
        try:
            try:
                reply = await self._handle(inp)
            except PhotoNeeded:
                # the core takes this photo (nothing was committed): download and clean it
                # now, outside any transaction, and hand the input in again
                inp = replace(inp, photo=await self._fetch(inp.photo))
                reply = await self._handle(inp)
        except Exception:
            self.metrics.update_handled(inp.sender.channel, None)
            raise
        self.metrics.update_handled(inp.sender.channel, reply)
        if reply.after is not None:
            try:
                await reply.after(self.db)
            except Exception:  # the update itself was handled; its slow follow-up failed
                log.exception("follow-up of %s %r failed", inp.kind, inp.command or inp.action)
        return reply

    async def _handle(self, inp: Input) -> Reply:
        # short, so on SQLite it calls SQLite on the loop's thread (models/store/db.py)
        heavy = inp.kind == "command" and inp.command in HEAVY_COMMANDS
        return await self.db.run(lambda session: inbound.handle(session, self.core, inp),
                                 inline=not heavy)

    async def _fetch(self, photo: PhotoIn) -> PhotoIn:
        """The photo downloaded by its adapter and cleaned; never one to fetch again."""
        fetched = replace(await photo.fetch(), fetch=None)
        if fetched.data is not None and not fetched.unreadable and not fetched.cleaned:
            fetched = await self._clean(fetched)
        return fetched

    async def _clean(self, photo: PhotoIn) -> PhotoIn:
        """Re-encode in a worker thread, before the transaction: on SQLite the write lock
        is held for the whole transaction, and image work must not hold up other chats.
        A picture with more pixels than the limit is refused from its header."""
        try:
            async with self._photo_turns:
                data, gps = await asyncio.to_thread(clean_photo, photo.data,
                                                    self.config.privacy.photo_max_side,
                                                    self.config.intake.max_photo_pixels)
        except PhotoTooLarge:
            return replace(photo, data=None, too_many_pixels=True)
        except PhotoError:
            return replace(photo, unreadable=True)
        return replace(photo, data=data, gps=gps, cleaned=True)

    def failure_text(self, language_code: str | None) -> str:
        return self.i18n.get(normalise(language_code))._(
            "Sorry, that did not work. Please try again in a moment.")

    def stale_text(self, language_code: str | None) -> str:
        return self.i18n.get(normalise(language_code))._("This button is no longer active.")


async def _grids(session) -> list[Unit]:
    return list(await session.scalars(select(Unit).where(Unit.kind == "grid")))
