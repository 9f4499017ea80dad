"""The WeCom channel end to end: the bot's real web server receives encrypted callbacks
over HTTP, the real service handles them, and its WeCom API client talks to a fake
WeCom server on 127.0.0.1 (tests/fake_wecom.py). Telegram runs beside it (FakeBotApi)."""
from __future__ import annotations

import itertools
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest
from sqlalchemy import func, select

from bot.app import Whistle
from bot.config import WecomConfig
from bot.wecom.api import WecomApi, WecomError
from bot.wecom.channel import split_bytes
from bot.wecom.crypto import MsgCrypt
from models.geo import wgs_to_gcj
from models.figures.digest import send_digests
from models.messages.outbox import OutMessage, Target, enqueue
from models.store.tables import ChatBinding, Identity, Inbox, Media, Outbox, Ticket, Unit
from tests.fake_wecom import CORP_ID, SECRET, FakeWecom
from tests.flows import has_button, photo_bytes

TOKEN = "whistletoken"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
AGENT_ID = 1000002
G07_WGS = (39.93085, 116.41298)  # samples/district/README.md
G07_CHAT = -100107
CHIEF = "zhaolei"  # 赵磊, g07's chief: Telegram 1007 and WeCom
RESIDENT = "liming"
DESCRIPTION = "The street light at the corner has been broken for a week"


@pytest.fixture
async def wecom_api():
    fake = FakeWecom()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def wecom_config(config, wecom_api):
    config.wecom = WecomConfig(
        enabled=True, corp_id=CORP_ID, agent_id=AGENT_ID, secret=SECRET, token=TOKEN,
        encoding_aes_key=AES_KEY, api_base_url=wecom_api.base_url,
        digest_webhooks={"g07": wecom_api.robot_url("robot-g07")})
    return config


@pytest.fixture
async def service(wecom_config, clock):
    whistle = Whistle(wecom_config, clock=clock)
    await whistle.start()
    yield whistle
    await whistle.stop()


class Member:
    """A WeCom member writing to the app: builds the callbacks WeCom would post."""

    ids = itertools.count(7_000_000_000_000_000_000)

    def __init__(self, whistle, fake: FakeWecom, clock, userid: str,
                 crypt: MsgCrypt | None = None):
        self.whistle, self.fake, self.clock, self.userid = whistle, fake, clock, userid
        self.crypt = crypt or MsgCrypt(TOKEN, AES_KEY, CORP_ID)
        self.nonces = itertools.count(1000)

    @property
    def url(self) -> str:
        return self.whistle.web.origin + self.whistle.config.wecom.callback_path

    def plaintext(self, msgtype: str, **fields) -> str:
        fields = {"ToUserName": CORP_ID, "FromUserName": self.userid,
                  "CreateTime": str(int(self.clock().timestamp())), "MsgType": msgtype,
                  **fields, "AgentID": str(AGENT_ID)}
        if msgtype != "event":
            fields.setdefault("MsgId", str(next(self.ids)))
        body = "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items())
        return f"<xml>{body}</xml>"

    def request(self, plaintext: str, *, timestamp: int | None = None) -> tuple[str, str]:
        """(query string, body) of the encrypted POST WeCom would make."""
        ts = str(timestamp if timestamp is not None else int(self.clock().timestamp()))
        nonce = str(next(self.nonces))
        encrypted = self.crypt.encrypt(plaintext)
        query = urlencode({"msg_signature": self.crypt.sign(ts, nonce, encrypted),
                           "timestamp": ts, "nonce": nonce})
        body = (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><Encrypt><![CDATA["
                f"{encrypted}]]></Encrypt><AgentID><![CDATA[{AGENT_ID}]]></AgentID></xml>")
        return query, body

    async def post(self, query: str, body: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{self.url}?{query}", data=body.encode()) as response:
                return response.status, await response.text()

    async def send(self, msgtype: str, **fields) -> int:
        """Post one message; returns how many messages this member had been sent before."""
        before = len(self.fake.to(self.userid))
        status, text = await self.post(*self.request(self.plaintext(msgtype, **fields)))
        assert (status, text) == (200, "")
        return before

    async def text(self, content: str) -> int:
        return await self.send("text", Content=content)

    async def event(self, event: str, key: str = "", **fields) -> int:
        return await self.send("event", Event=event, EventKey=key, **fields)

    async def press(self, card: dict, key: str) -> int:
        """Press the card button whose key is (or starts with) ``key``."""
        task_id = card["template_card"]["task_id"]
        keys = [b["key"] for b in card["template_card"]["button_list"]]
        chosen = next((k for k in keys if k == key), None) or next(
            (k for k in keys if k.startswith(key)), None)
        assert chosen, f"no button {key!r} in {keys}"
        return await self.event("template_card_event", chosen, TaskId=task_id,
                                CardType="button_interaction",
                                ResponseCode=self.fake.issue_code())

    async def expect(self, after: int, predicate, what: str) -> dict:
        return await self.fake.wait_sent(self.userid, predicate, after=after, description=what)


def text_of(message: dict) -> str:
    if message["msgtype"] == "text":
        return message["text"]["content"]
    if message["msgtype"] == "template_card":
        card = message["template_card"]
        return card["main_title"]["title"] + "\n" + card.get("sub_title_text", "")
    return ""


def keys(message: dict) -> list[str]:
    return [b["key"] for b in (message.get("template_card") or {}).get("button_list", [])]


def card_with(prefix: str):
    return lambda m: any(k.startswith(prefix) for k in keys(m))


def says(part: str):
    return lambda m: part in text_of(m)


async def walk_to_confirm(member: Member, point=G07_WGS) -> dict:
    """enter_agent → category → description → a photo → location (sent in GCJ-02) →
    a typed phone number; returns the summary card with Confirm."""
    fake = member.fake
    after = await member.text("/lang")  # WeCom tells no language: the app speaks Chinese first
    after = await member.press(await member.expect(after, card_with("lang:"), "languages"),
                               "lang:en")
    await member.expect(after, says("Language set to English"), "English")
    after = await member.event("enter_agent")
    await member.expect(after, says("Welcome"), "the welcome")
    categories = await member.expect(after, card_with("cat:"), "the category card")
    if "cat:streetlight" not in keys(categories):
        categories = await member.expect(fake.to(member.userid).index(categories) + 1,
                                         card_with("cat:streetlight"), "the second category card")
    after = await member.press(categories, "cat:streetlight")
    await member.expect(after, says("Describe the problem"), "the description prompt")
    after = await member.text(DESCRIPTION)
    await member.expect(after, card_with("ph:done"), "the photo prompt")
    after = await member.send("image", PicUrl="http://example.invalid/p.jpg",
                              MediaId=fake.add_media(photo_bytes(3)))
    photo_ack = await member.expect(after, card_with("ph:done"), "photo 1 received")
    assert "1" in text_of(photo_ack)
    after = await member.press(photo_ack, "ph:done")
    prompt = await member.expect(after, says("Where is it?"), "the location prompt")
    assert "“+”" in text_of(prompt)  # WeCom's way to send a location, instead of a button
    assert "Send my location" not in text_of(prompt)  # Telegram's button is not there
    await member.expect(after, card_with("lc:"), "the community card")
    lat, lon = wgs_to_gcj(*point)  # what WeCom sends: GCJ-02
    after = await member.send("location", Location_X=f"{lat:.6f}", Location_Y=f"{lon:.6f}",
                              Scale="15", Label="路口")
    contact = await member.expect(after, card_with("kb:"), "the contact card")
    assert "type it" in text_of(contact)
    after = await member.text("138 0013 8000")
    return await member.expect(after, card_with("cf"), "the summary with Confirm")


async def tickets(whistle) -> list[Ticket]:
    return list(await whistle.db.run(lambda s: s.scalars(select(Ticket).order_by(Ticket.id))))


# ---- the callback --------------------------------------------------------------------

async def test_url_verification_answers_the_decrypted_echostr(service, wecom_api, clock):
    member = Member(service, wecom_api, clock, RESIDENT)
    ts, nonce = str(int(clock().timestamp())), "4242"
    echostr = member.crypt.encrypt("5927301265430816")
    query = urlencode({"msg_signature": member.crypt.sign(ts, nonce, echostr), "timestamp": ts,
                       "nonce": nonce, "echostr": echostr})
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{member.url}?{query}") as response:
            assert (response.status, await response.text()) == (200, "5927301265430816")
        forged = query.replace("msg_signature=", "msg_signature=0")
        async with http.get(f"{member.url}?{forged}") as response:
            assert response.status == 403
        async with http.get(f"{member.url}?timestamp={ts}&nonce=1") as response:
            assert response.status == 400


async def test_url_verification_is_answered_like_wecom_whatever_its_timestamp(
        service, wecom_api, clock, caplog):
    """WeCom's own WXBizMsgCrypt VerifyURL checks the signature only: a verification
    changes nothing, so an old (replayed) one is answered too, and a timestamp far from
    our clock is logged as a warning (the messages after it would be refused)."""
    member = Member(service, wecom_api, clock, RESIDENT)
    ts, nonce = str(int(clock().timestamp()) - 3600), "4343"
    echostr = member.crypt.encrypt("1122334455")
    query = urlencode({"msg_signature": member.crypt.sign(ts, nonce, echostr), "timestamp": ts,
                       "nonce": nonce, "echostr": echostr})
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{member.url}?{query}") as response:
            assert (response.status, await response.text()) == (200, "1122334455")
        forged = query.replace("msg_signature=", "msg_signature=0")
        async with http.get(f"{member.url}?{forged}") as response:
            assert response.status == 403
    assert "3600 s" in caplog.text and "timestamp_window" in caplog.text


async def test_a_report_from_wecom_reaches_the_chief_on_telegram_and_wecom(
        service, wecom_api, api, clock, people):
    people(1007, "赵磊")  # the chief has a private chat with the bot on Telegram too
    resident = Member(service, wecom_api, clock, RESIDENT)
    summary = await walk_to_confirm(resident)
    assert "Grid: Liuyin Grid 3" in text_of(summary)  # routed after the GCJ-02 conversion
    after = await resident.press(summary, "cf")
    done = await resident.expect(after, says("ticket number is"), "the ticket number")
    number = text_of(done).split("ticket number is ")[1].split(".")[0]

    [ticket] = await tickets(service)
    g07 = await service.db.run(lambda s: s.scalar(select(Unit.id).where(Unit.code == "g07")))
    assert (ticket.number, ticket.grid_id, ticket.channel) == (number, g07, "wecom")
    assert abs(ticket.lat - G07_WGS[0]) < 1e-5 and abs(ticket.lon - G07_WGS[1]) < 1e-5
    assert service.core.router.locate(*wgs_to_gcj(*G07_WGS)) != g07  # unconverted: wrong grid
    assert ticket.contact_phone == "13800138000" and not ticket.anonymous
    photos = await service.db.run(lambda s: s.scalar(select(func.count()).select_from(Media).where(
        Media.ticket_id == ticket.id)))
    assert photos == 1

    # the chief's card: in the grid's Telegram group, and in WeCom as an interactive card
    tg_card = await api.wait_message(G07_CHAT, predicate=has_button(f"claim:{ticket.id}"))
    assert number in tg_card["text"]
    wecom_card = await wecom_api.wait_sent(CHIEF, card_with(f"claim:{ticket.id}"),
                                           description="the chief's WeCom card")
    assert wecom_card["template_card"]["card_type"] == "button_interaction"
    assert number in text_of(wecom_card) and f"return:{ticket.id}" in keys(wecom_card)
    assert any(m["msgtype"] == "image" for m in wecom_api.to(CHIEF))  # the photo came first
    assert wecom_api.uploads  # uploaded from our own store (metadata stripped)

    # the chief claims on WeCom: the card is updated with the press's response code
    chief = Member(service, wecom_api, clock, CHIEF)
    after = await chief.press(wecom_card, f"claim:{ticket.id}")
    update = await wecom_api.wait_for(lambda: wecom_api.updates and wecom_api.updates[-1],
                                      description="the card update")
    assert update["userids"] == [CHIEF] and update["agentid"] == AGENT_ID
    assert update["template_card"]["task_id"] == wecom_card["template_card"]["task_id"]
    updated = update["template_card"]["button_list"]
    assert f"progress:{ticket.id}" in [b["key"] for b in updated]
    assert len(updated) == 6 and updated[-1]["key"].startswith("more:")  # 7 buttons: "More…"
    more = await chief.press({"template_card": update["template_card"]}, "more:")
    rest = await chief.expect(more, card_with(f"close:{ticket.id}"), "the other buttons")
    assert f"progress:{ticket.id}" not in keys(rest)
    await chief.expect(after, says(service.i18n.get(None)._("You claimed #{number}.",
                                                             number=number)), "the confirmation")
    await chief.expect(after, says("13800138000"), "the reporter's phone, to the claimer only")
    await api.wait_message(1007, contains="13800138000")  # on each channel the chief uses
    await resident.expect(0, says("claimed by"), "the resident told of the claim")
    assert (await tickets(service))[0].state == "claimed"
    edited = await api.wait_for(lambda: (m := api.message(G07_CHAT, tg_card["message_id"]))
                                and any("progress:" in (d or "") for d in _tg_buttons(m)) and m,
                                description="the Telegram card edited")
    assert number in edited["text"]

    # a progress note: the prompt and the note in the chief's own chat with the app
    after = await chief.press({"template_card": update["template_card"]}, f"progress:{ticket.id}")
    await chief.expect(after, says(number), "the note prompt")
    after = await chief.text("A new lamp is ordered for tomorrow")
    await resident.expect(0, says("A new lamp is ordered for tomorrow"), "the progress note")

    # a second press of the old card's Claim is refused with a message, nothing changes
    clock.advance(seconds=5)
    after = await chief.press(wecom_card, f"claim:{ticket.id}")
    await chief.expect(after, lambda m: m["msgtype"] == "text", "an answer to the stale press")
    assert not any(m["msgtype"] == "template_card" for m in wecom_api.to(CHIEF)[after:])
    assert (await tickets(service))[0].state == "in_progress"


def _tg_buttons(message: dict) -> list[str]:
    markup = message.get("reply_markup") or {}
    return [b.get("callback_data") for row in markup.get("inline_keyboard", []) for b in row]


async def test_the_location_prompt_on_wecom_names_no_telegram_button(service, wecom_api, clock):
    """WeCom has no "📍 Send my location" button: the prompt says to send a location
    (the channel adds how: "+" → Location), and so does the hint after a wrong input."""
    member = Member(service, wecom_api, clock, RESIDENT)  # the deployment's Chinese
    t = service.i18n.get(None)
    after = await member.event("enter_agent")
    categories = await member.expect(after, card_with("cat:"), "the category card")
    if "cat:streetlight" not in keys(categories):
        categories = await member.expect(wecom_api.to(RESIDENT).index(categories) + 1,
                                         card_with("cat:streetlight"), "the second card")
    after = await member.press(categories, "cat:streetlight")
    await member.expect(after, lambda m: m["msgtype"] == "text", "the description prompt")
    after = await member.text(DESCRIPTION)
    photos = await member.expect(after, card_with("ph:done"), "the photo prompt")
    after = await member.press(photos, "ph:done")
    prompt = await member.expect(after, says("“+”"), "the location prompt")
    button = t._("📍 Send my location")
    assert button not in text_of(prompt) and "按钮" not in text_of(prompt)
    assert t._("📍 To send a location: tap “+” next to the input box, then “Location”.") \
        in text_of(prompt)
    after = await member.send("voice", MediaId="voice-2", Format="amr")  # not a location
    hint = await member.expect(after, says("地址"), "the hint")
    assert button not in text_of(hint) and "按钮" not in text_of(hint)


async def test_card_button_texts_keep_within_wecom_recommended_length(service):
    """WeCom recommends at most 10 characters (字) for a card button: a Chinese character
    counts one, a half-width letter half. Longer labels are shortened with "…"; the
    button's key, what a press sends back, stays whole."""
    from bot.wecom.channel import BUTTON_WIDTH, label_width
    from models.messages.outbox import Button
    labels = ["就是这个，我也遇到了同样的问题", "柳荫社区第三网格", "👤 Show my first name, no phone",
              "✏️ 修改", "#20261123-0007 · 处理中"]
    card = service.wecom.channel.card("t1", "title", [Button(label, "x", str(i))
                                                      for i, label in enumerate(labels)])
    texts = [b["text"] for b in card["button_list"]]
    assert BUTTON_WIDTH == 20 and all(label_width(text) <= 20 for text in texts)
    assert texts[1] == "柳荫社区第三网格" and texts[3] == "✏️ 修改"  # short enough: whole
    assert texts[0] == "就是这个，我也遇到…" and texts[2].startswith("👤 Show my first")
    assert texts[4].startswith("#20261123-0007") and texts[4].endswith("…")
    assert [b["key"] for b in card["button_list"]] == [f"x:{i}" for i in range(5)]


def test_the_chinese_button_labels_fit_a_wecom_button():
    """Every label the core puts on a button reads whole on WeCom in Chinese, the
    deployment's language (placeholders filled with a one-digit number)."""
    import re

    from babel.messages.pofile import read_po

    from bot.wecom.channel import BUTTON_WIDTH, label_width
    from models.lifecycle import STATE_LABELS
    from models.tickets.cards import CLOSE_LABELS, ORDER_LABELS
    from models.tickets.votes import SATISFACTION_LABELS
    root = Path(__file__).resolve().parent.parent
    labels = {*CLOSE_LABELS.values(), *ORDER_LABELS.values(), *SATISFACTION_LABELS.values(),
              *STATE_LABELS.values()}
    literal = re.compile(r'Button\(\s*(?:[\w.]*_|N_)\(\s*"((?:[^"\\]|\\.)*)"')
    for path in [*(root / "models").rglob("*.py"), *(root / "bot").rglob("*.py")]:
        labels |= set(literal.findall(path.read_text(encoding="utf-8")))
    assert {"📍 Send my location", "👤 Show my first name, no phone", "Claim"} <= labels
    with (root / "locale/zh_Hans/LC_MESSAGES/whistle.po").open("rb") as fp:
        chinese = {m.id: m.string for m in read_po(fp) if m.id}
    too_long = {label: chinese[label] for label in labels
                if label_width(re.sub(r"\{\w*\}", "3", chinese[label])) > BUTTON_WIDTH}
    assert too_long == {}


async def test_menu_clicks_and_unsupported_messages(service, wecom_api, clock):
    member = Member(service, wecom_api, clock, RESIDENT)
    t = service.i18n.get(None)
    after = await member.event("click", "my")  # the app menu's "My reports"
    await member.expect(after, says(t._("You have no reports yet.")), "the empty list")
    after = await member.send("voice", MediaId="voice-1", Format="amr")
    await member.expect(after, lambda m: m["msgtype"] == "text", "a hint")
    after = await member.event("click", "no-such-menu-key")
    clock.advance(seconds=1)
    after2 = await member.event("click", "help")
    help_text = await member.expect(after2, lambda m: m["msgtype"] == "text", "the help")
    assert "/my" in text_of(help_text)
    assert len(wecom_api.to(RESIDENT)) == after2 + 1  # the unknown key said nothing
    assert after == after2


async def test_an_image_wecom_will_not_give_us_gets_a_hint(service, wecom_api, clock):
    member = Member(service, wecom_api, clock, RESIDENT)
    after = await member.text("/start")
    categories = await member.expect(after, card_with("cat:garbage"), "categories")
    after = await member.press(categories, "cat:garbage")
    after = await member.text(DESCRIPTION)
    await member.expect(after, card_with("ph:done"), "the photo prompt")
    after = await member.send("image", MediaId="expired-media")
    hint = await member.expect(after, lambda m: m["msgtype"] == "text", "the hint")
    assert text_of(hint) == service.i18n.get(None)._(
        "That file is not a photo I can read. Please send a photo.")


async def test_an_image_is_downloaded_only_at_the_photo_step(service, wecom_api, clock):
    member = Member(service, wecom_api, clock, RESIDENT)
    after = await member.text("/start")
    categories = await member.expect(after, card_with("cat:garbage"), "categories")
    after = await member.press(categories, "cat:garbage")
    await member.expect(after, says(service.i18n.get(None)._(
        "Describe the problem in a few sentences ({min}–{max} characters).", min=10, max=1000)),
        "the description prompt")
    after = await member.send("image", MediaId=wecom_api.add_media(photo_bytes(4)))
    hint = await member.expect(after, lambda m: m["msgtype"] == "text", "the hint")
    assert text_of(hint) == service.i18n.get(None)._(
        "Please describe the problem in words, as a text message.")
    assert "/media/get" not in wecom_api.calls
    after = await member.text(DESCRIPTION)
    await member.expect(after, card_with("ph:done"), "the photo prompt")
    after = await member.send("image", MediaId=wecom_api.add_media(photo_bytes(5)))
    await member.expect(after, card_with("ph:done"), "photo 1 received")
    assert wecom_api.calls.count("/media/get") == 1


async def test_a_telegram_report_reaches_the_chief_on_wecom(service, wecom_api, api, people):
    from tests.flows import file_report
    resident = people(9101, "Alice", language="en")
    filed = await file_report(api, service, resident, point=G07_WGS, card_chat=G07_CHAT)
    card = await wecom_api.wait_sent(CHIEF, card_with(f"claim:{filed.id}"),
                                     description="the WeCom card of a Telegram report")
    assert filed.number in text_of(card)


async def test_the_same_callback_three_times_makes_one_ticket(service, wecom_api, clock):
    resident = Member(service, wecom_api, clock, RESIDENT)
    summary = await walk_to_confirm(resident)
    confirm = resident.plaintext("event", Event="template_card_event", EventKey="cf",
                                 TaskId=summary["template_card"]["task_id"],
                                 CardType="button_interaction",
                                 ResponseCode=wecom_api.issue_code())
    query, body = resident.request(confirm)
    before = len(wecom_api.to(RESIDENT))
    for _ in range(3):  # WeCom's retries carry the very same request
        assert await resident.post(query, body) == (200, "")
    await resident.expect(before, says("ticket number is"), "the ticket number")
    await service.wecom.drain()
    await service.sender.flush()
    assert len(await tickets(service)) == 1
    numbers = [m for m in wecom_api.to(RESIDENT)[before:] if "ticket number" in text_of(m)]
    assert len(numbers) == 1
    inbox = await service.db.run(lambda s: s.scalar(select(func.count()).select_from(Inbox).where(
        Inbox.channel == "wecom", Inbox.key.like("ev:%:cf:%"))))
    assert inbox == 1


def forged(member: Member, kind: str, clock) -> tuple[str, str]:
    plain = member.plaintext("text", Content="forged report text")
    if kind == "bad signature":
        query, body = member.request(plain)
        return query.replace("msg_signature=", "msg_signature=1"), body
    if kind == "wrong corp id":
        other = MsgCrypt(TOKEN, AES_KEY, "wwanothercorp")
        return Member(member.whistle, member.fake, clock, member.userid, other).request(plain)
    if kind == "malformed outer XML":
        query, _ = member.request(plain)
        return query, "<xml><Encrypt>"
    if kind == "malformed inner XML":
        return member.request("<xml><FromUserName>x</Content>")
    if kind == "no Encrypt":
        query, _ = member.request(plain)
        return query, "<xml><ToUserName>x</ToUserName></xml>"
    if kind == "entity expansion":
        query, _ = member.request(plain)
        return query, ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]>'
                       "<xml><Encrypt>&a;</Encrypt></xml>")
    if kind == "stale timestamp":
        return member.request(plain, timestamp=int(clock().timestamp()) - 301)
    if kind == "future timestamp":
        return member.request(plain, timestamp=int(clock().timestamp()) + 301)
    if kind == "missing signature":
        query, body = member.request(plain)
        return "&".join(p for p in query.split("&") if not p.startswith("msg_signature")), body
    if kind == "missing nonce":
        query, body = member.request(plain)
        return "&".join(p for p in query.split("&") if not p.startswith("nonce")), body
    if kind == "another app":
        return member.request(plain.replace(f"[{AGENT_ID}]", "[999]"))
    raise AssertionError(kind)


@pytest.mark.parametrize("kind,status", [
    ("bad signature", 403), ("wrong corp id", 403), ("malformed outer XML", 400),
    ("malformed inner XML", 400), ("no Encrypt", 400), ("entity expansion", 400),
    ("stale timestamp", 403), ("future timestamp", 403), ("missing signature", 400),
    ("missing nonce", 400), ("another app", 403)])
async def test_forged_or_malformed_callbacks_are_rejected(service, wecom_api, clock, kind, status,
                                                         caplog):
    member = Member(service, wecom_api, clock, "mallory")
    answer = await member.post(*forged(member, kind, clock))
    assert answer[0] == status
    assert not service.wecom._tasks  # nothing was scheduled
    assert "rejected" in caplog.text
    await service.wecom.drain()
    identities = await service.db.run(lambda s: s.scalar(select(func.count()).select_from(
        Identity).where(Identity.channel == "wecom", Identity.external_id == "mallory")))
    inbox = await service.db.run(lambda s: s.scalar(select(func.count()).select_from(Inbox)))
    assert (identities, inbox, wecom_api.to("mallory")) == (0, 0, [])


async def test_a_callback_body_over_the_limit_is_cut_off_and_rejected(service, wecom_api, clock,
                                                                      caplog):
    """A body without a length (chunked) is read only up to the callback's limit (1 MB),
    then refused with 413, logged, and nothing is processed."""
    from bot.wecom.callback import MAX_BODY
    member = Member(service, wecom_api, clock, "mallory")
    query, body = member.request(member.plaintext("text", Content="a report"))

    async def chunks():
        yield body.encode()[:-6]  # everything but "</xml>", then padding
        for _ in range(MAX_BODY // 65536 + 1):
            yield b" " * 65536
        yield b"</xml>"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{member.url}?{query}", data=chunks()) as response:
            assert response.status == 413
    assert "rejected" in caplog.text and "too large" in caplog.text
    assert not service.wecom._tasks
    inbox = await service.db.run(lambda s: s.scalar(select(func.count()).select_from(Inbox)))
    assert inbox == 0


async def test_units_with_wecom_staff_are_bound_to_their_members(service):
    async def bound(session):
        rows = await session.execute(select(Unit.code, ChatBinding.chat_id).join(
            ChatBinding, ChatBinding.unit_id == Unit.id).where(ChatBinding.channel == "wecom"))
        return sorted(rows.all())
    assert await service.db.run(bound) == [("demo", "unit:demo"), ("g01", "unit:g01"),
                                           ("g07", "unit:g07")]
    assert service.core.channels == {"telegram", "wecom"}


# ---- the API client ------------------------------------------------------------------

class Ticks:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def client(wecom_api):
    ticks = Ticks()
    api = WecomApi(wecom_api.base_url, CORP_ID, SECRET, AGENT_ID, clock=ticks)
    api.ticks = ticks
    yield api
    await api.close()


async def test_the_token_is_cached_and_fetched_again_before_it_expires(client, wecom_api):
    await client.send_text(["a"], "one")
    await client.send_text(["a"], "two")
    assert wecom_api.token_calls == 1
    client.ticks.now += 7200 - 301  # just before the margin: still good
    await client.send_text(["a"], "three")
    assert wecom_api.token_calls == 1
    client.ticks.now += 2
    await client.send_text(["a"], "four")
    assert wecom_api.token_calls == 2
    assert [m["text"]["content"] for m in wecom_api.sent] == ["one", "two", "three", "four"]


@pytest.mark.parametrize("how", ["expired", "40014", "42001"])
async def test_a_rejected_token_is_fetched_again_once(client, wecom_api, how):
    await client.send_text(["a"], "first")
    if how == "expired":
        wecom_api.expire_tokens()
    else:
        wecom_api.fail_next(int(how), "/message/send")
    await client.send_text(["a"], "second")
    assert wecom_api.token_calls == 2
    assert [m["text"]["content"] for m in wecom_api.sent] == ["first", "second"]


async def test_a_token_rejected_twice_is_an_error_not_a_loop(client, wecom_api):
    wecom_api.fail_next(40014, "/message/send", times=2)
    with pytest.raises(WecomError) as caught:
        await client.send_text(["a"], "x")
    assert caught.value.code == 40014 and wecom_api.token_calls == 2 and wecom_api.sent == []


@pytest.mark.parametrize("code,retryable", [(60020, False), (45009, True), (81013, False)])
async def test_api_errors_are_surfaced_with_code_and_text(client, wecom_api, code, retryable):
    wecom_api.fail_next(code, "/message/send")
    with pytest.raises(WecomError) as caught:
        await client.send_markdown(["a"], "**x**")
    assert caught.value.code == code and str(code) in str(caught.value)
    assert f"injected {code}" in str(caught.value) and caught.value.retryable is retryable


async def test_wrong_credentials_and_an_unreachable_server_are_errors(wecom_api):
    wrong = WecomApi(wecom_api.base_url, CORP_ID, "not-the-secret", AGENT_ID)
    with pytest.raises(WecomError) as caught:
        await wrong.send_text(["a"], "x")
    assert caught.value.code == 40001
    await wrong.close()
    gone = WecomApi("http://127.0.0.1:9/cgi-bin", CORP_ID, SECRET, AGENT_ID, timeout=2)
    with pytest.raises(WecomError) as caught:
        await gone.send_text(["a"], "x")
    assert caught.value.code is None and caught.value.retryable
    await gone.close()


async def test_media_is_downloaded_and_unknown_media_is_an_error(client, wecom_api):
    media_id = wecom_api.add_media(b"\xff\xd8jpeg bytes")
    assert await client.download_media(media_id) == b"\xff\xd8jpeg bytes"
    with pytest.raises(WecomError) as caught:
        await client.download_media("nope")
    assert caught.value.code == 40007


async def test_card_updates_need_a_fresh_response_code(client, wecom_api):
    answer = await client.send_card(["a"], {"card_type": "button_interaction", "task_id": "t1",
                                            "main_title": {"title": "x"},
                                            "button_list": [{"text": "ok", "key": "k"}]})
    await client.update_card(["a"], answer["response_code"], {"card_type": "button_interaction"})
    with pytest.raises(WecomError):  # a response code works once
        await client.update_card(["a"], answer["response_code"], {})
    assert len(wecom_api.updates) == 1


# ---- the channel's limits --------------------------------------------------------------

async def test_a_member_gets_at_most_the_minute_limit_and_the_rest_later(
        wecom_config, wecom_api, clock):
    wecom_config.wecom.member_per_minute = 3
    whistle = Whistle(wecom_config, clock=clock)
    await whistle.start()
    try:
        async def queue(session):
            for n in range(5):
                enqueue(session, Target("wecom", CHIEF), OutMessage(text=f"note {n}"), clock())
        await whistle.db.run(queue)
        await wecom_api.wait_for(lambda: len(wecom_api.to(CHIEF)) == 3, description="3 sent")
        await whistle.sender.stop()  # let the sends in flight settle …
        await whistle.sender.flush()  # … and make one more pass ourselves: no room yet
        assert len(wecom_api.to(CHIEF)) == 3
        rows = list(await whistle.db.run(lambda s: s.scalars(select(Outbox).where(
            Outbox.chat_id == CHIEF).order_by(Outbox.id))))
        assert [r.state for r in rows] == ["sent"] * 3 + ["pending"] * 2
        assert clock() < rows[3].next_try_at <= clock() + timedelta(seconds=61)
        assert rows[3].attempts == 0  # waiting for room is not a failed attempt
        clock.advance(seconds=61)
        whistle.sender.start()
        await wecom_api.wait_for(lambda: len(wecom_api.to(CHIEF)) == 5, description="5 sent")
        assert [m["text"]["content"] for m in wecom_api.to(CHIEF)] == [f"note {n}" for n in range(5)]
        await whistle.sender.stop()  # the last send settles
        states = await whistle.db.run(lambda s: s.scalars(select(Outbox.state).where(
            Outbox.chat_id == CHIEF)))
        assert set(states) == {"sent"}
    finally:
        await whistle.stop()


async def test_rate_limited_by_wecom_is_retried_later_not_dropped(service, wecom_api, clock):
    wecom_api.fail_next(45009, "/message/send")
    await service.sender.stop()
    await service.db.run(lambda s: _queue(s, Target("wecom", CHIEF), "after the limit", clock()))
    await service.sender.flush()  # one pass: WeCom says 45009
    row = await service.db.run(lambda s: s.scalar(select(Outbox).where(Outbox.chat_id == CHIEF)))
    assert (row.state, row.attempts) == ("pending", 0) and row.next_try_at > clock()
    assert "45009" in row.error and wecom_api.to(CHIEF) == []
    clock.advance(seconds=61)
    service.sender.start()
    message = await wecom_api.wait_sent(CHIEF, says("after the limit"))
    assert message["msgtype"] == "text"


async def _queue(session, target: Target, text: str, now) -> None:
    enqueue(session, target, OutMessage(text=text), now)


# ---- digests to group robots -------------------------------------------------------------

async def test_the_digest_of_a_unit_goes_to_its_group_robot(service, wecom_api, clock):
    count = await service.db.run(lambda s: send_digests(s, service.core, clock()))
    robot = await wecom_api.wait_for(lambda: wecom_api.robot, description="a robot push")
    assert robot[0]["key"] == "robot-g07" and "柳荫社区第三网格" in robot[0]["content"]
    queued = await service.db.run(lambda s: s.scalar(select(func.count()).select_from(Outbox).where(
        Outbox.channel == "wecom")))
    assert queued == 0  # WeCom members get no digest one by one
    assert count >= 1


async def test_a_long_digest_is_split_within_the_robots_limit(service, wecom_api, clock):
    page = "\n".join(f"❗ #20261123-{n:04d} — 某某某 — 11-23 10:00 超时未办结" for n in range(200))
    await service.db.run(lambda s: _queue(s, Target("wecom_robot", "g07"), page, clock()))
    await wecom_api.wait_for(lambda: "\n".join(r["content"] for r in wecom_api.robot) == page,
                             description="all parts pushed")
    assert len(wecom_api.robot) > 1
    assert all(len(r["content"].encode()) <= 4096 for r in wecom_api.robot)


def test_split_bytes_keeps_every_character():
    text = "字" * 3000 + "\n" + "short line"
    parts = split_bytes(text, 4096)
    assert "".join(parts).replace("\n", "") == text.replace("\n", "")
    assert all(len(p.encode()) <= 4096 for p in parts)


# ---- configuration ---------------------------------------------------------------------

@pytest.mark.parametrize("section,problem", [
    ('enabled = true\ncorp_id = "ww1"\nagent_id = 2\ntoken = "t"\nencoding_aes_key = "' + AES_KEY
     + '"', "secret"),
    ('enabled = true\ncorp_id = "ww1"\nagent_id = 2\nsecret = "s"\ntoken = "t"\n'
     'encoding_aes_key = "short"', "43 characters"),
    ('enabled = true\ncorp_id = "ww1"\nsecret = "s"\ntoken = "t"\nencoding_aes_key = "' + AES_KEY
     + '"', "agent_id"),
])
def test_an_enabled_app_without_its_credentials_is_a_config_error(tmp_path, section, problem):
    from bot.config import ConfigError, load_config
    text = (Path(__file__).resolve().parent.parent / "config.example.toml").read_text(encoding="utf-8")
    start = text.index("[wecom]")
    end = text.index("\n[", start + 1)
    path = tmp_path / "config.toml"
    path.write_text(text[:start] + "[wecom]\n" + section + "\n" + text[end:], encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert "wecom" in str(caught.value) and problem in str(caught.value)


async def test_a_long_text_with_many_buttons_becomes_text_then_a_card_with_more(
        service, wecom_api, clock):
    from models.messages.outbox import Button
    text = "#1 title\n" + "描述" * 400
    buttons = [[Button(f"b{i}", "claim", str(i)) for i in range(8)]]
    await service.db.run(lambda s: _queue_message(s, Target("wecom", CHIEF),
                                                  OutMessage(text=text, buttons=buttons), clock()))
    card = await wecom_api.wait_sent(CHIEF, lambda m: m["msgtype"] == "template_card")
    texts = [m["text"]["content"] for m in wecom_api.to(CHIEF) if m["msgtype"] == "text"]
    assert "".join(texts) == text.replace("\n", "")  # the whole text first, in parts …
    assert len(texts) > 1 and all(len(t.encode()) <= 2048 for t in texts)  # … of ≤ 2,048 bytes
    body = card["template_card"]
    assert body["main_title"]["title"] == "#1 title" and len(body["sub_title_text"]) <= 512
    assert keys(card)[:5] == [f"claim:{i}" for i in range(5)]
    assert keys(card)[5] == "more:" + body["task_id"]
    member = Member(service, wecom_api, clock, CHIEF)
    after = await member.press(card, "more:")
    rest = await member.expect(after, card_with("claim:5"), "the other buttons")
    assert keys(rest) == ["claim:5", "claim:6", "claim:7"]


async def _queue_message(session, target: Target, message: OutMessage, now) -> None:
    enqueue(session, target, message, now)
