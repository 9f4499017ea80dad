"""The whole vertical slice through the real Application and the fake Bot API:
a resident reports, the grid chat gets the card, the chief claims, notes progress
and resolves, and the resident is told at each step."""
from images import jpeg
from sqlalchemy import select

from models.store.tables import Media, Ticket, TicketEvent


G01 = (39.93524, 116.40107)
G01_CHAT = -100101


async def report(api, resident, *, photos=1, location=G01, contact="anonymous"):
    """Walk one resident through the intake dialogue and confirm; returns the confirmation."""
    msg = await resident.say("/start", contains="类别")
    msg = await resident.press_and_wait(msg, "垃圾", contains="描述")
    msg = await resident.say("楼下垃圾堆了三天没人清理，气味很大", contains="照片")
    for i in range(photos):
        after = resident.last_id()
        api.user_sends_photo(resident.id, resident.id, jpeg(i))
        msg = await api.wait_message(resident.id, after=after)
    if photos < 3:
        msg = await resident.press_and_wait(msg, "跳过" if photos == 0 else "完成", contains="社区")
    after = resident.last_id()
    api.user_sends_location(resident.id, resident.id, *location)
    msg = await api.wait_message(resident.id, after=after, contains="电话")
    msg = await resident.say("🙈 保持匿名" if contact == "anonymous" else contact, contains="类别")
    return await resident.press_and_wait(msg, "确认", contains="编号")


async def test_report_claim_progress_resolve(whistle, api, people):
    resident = people(9001, "李四")
    chief = people(1001, "王建国")
    done = await report(api, resident)
    number = done["text"].split("编号是 ")[1].split("。")[0]
    assert number.startswith("20261123-")

    card = await api.wait_message(G01_CHAT, contains=number)
    assert "匿名" in card["text"] and "垃圾" in card["text"]
    kinds = [m for m in api.bot_messages(G01_CHAT)]
    assert any(m.get("photo") for m in kinds) and any(m.get("location") for m in kinds)

    query = await chief.press(card, "接单", chat=G01_CHAT)
    await api.wait_for(lambda: query in api.callback_answers)
    assert number in api.callback_answers[query]["text"]
    claimed = await api.wait_for(lambda: "王建国" in (api.message(G01_CHAT, card["message_id"])["text"]) and api.message(G01_CHAT, card["message_id"]))
    assert "进展" in str(claimed["reply_markup"])
    await api.wait_message(resident.id, contains="网格长 王建国")

    prompt_after = chief.last_id(G01_CHAT)
    chief_card = api.message(G01_CHAT, card["message_id"])
    await chief.press(chief_card, "进展", chat=G01_CHAT)
    prompt = await api.wait_message(G01_CHAT, after=prompt_after, contains="回复")
    sent = [params for method, params in api.requests
            if method == "sendMessage" and params.get("text") == prompt["text"]]
    assert sent and sent[-1]["reply_markup"].get("force_reply") is True
    await chief.say("已联系环卫，今天下午清运", chat=G01_CHAT, reply_to_message_id=prompt["message_id"],
                    contains="已记录")
    await api.wait_message(resident.id, contains="已联系环卫")

    prompt_after = chief.last_id(G01_CHAT)
    await chief.press(api.message(G01_CHAT, card["message_id"]), "办结", chat=G01_CHAT)
    prompt = await api.wait_message(G01_CHAT, after=prompt_after, contains="回复")
    api.user_sends_photo(chief.id, G01_CHAT, jpeg(99), caption="已清理完毕",
                         reply_to_message_id=prompt["message_id"])
    await api.wait_message(resident.id, contains="已清理完毕")
    await api.wait_for(lambda: any(m.get("photo") for m in api.bot_messages(resident.id)))

    async def check(session):
        ticket = await session.scalar(select(Ticket).where(Ticket.number == number))
        kinds = list(await session.scalars(select(TicketEvent.kind).where(
            TicketEvent.ticket_id == ticket.id).order_by(TicketEvent.id)))
        media = list(await session.scalars(select(Media.kind).where(Media.ticket_id == ticket.id)))
        return ticket.state, kinds, sorted(media)
    state, kinds, media = await whistle.db.run(check)
    assert state == "resolved"
    assert kinds == ["created", "claimed", "progress", "resolved"]
    assert media == ["proof", "report"]
    assert "13800" not in str(api.messages(G01_CHAT))
