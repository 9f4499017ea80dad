"""The fake Bot API server, driven by the real python-telegram-bot over HTTP.

These tests pin down the behaviour other tests rely on: Telegram's answers and errors
must reach PTB exactly as the real service would send them.
"""

import asyncio

import pytest
import pytest_asyncio
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    KeyboardButton,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
)
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, RetryAfter
from telegram.ext import ApplicationBuilder, ContextTypes, MessageHandler, filters

from sandbox.botapi import NOT_MODIFIED, FakeBotApi

pytestmark = pytest.mark.asyncio

ALICE = 1001
GROUP = -100


@pytest_asyncio.fixture
async def api():
    async with FakeBotApi() as server:
        server.add_user(ALICE, "Alice", username="alice")
        server.add_group(GROUP, "Neighbourhood")
        yield server


@pytest_asyncio.fixture
async def bot(api):
    async with Bot(api.token, base_url=api.base_url, base_file_url=api.base_file_url) as client:
        yield client


def keyboard(*callback_data: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(data, callback_data=data)] for data in callback_data])


async def test_get_me_and_request_log(api, bot):
    assert bot.username == "whistle_test_bot"
    assert api.requests[0][0] == "getMe"


async def test_send_edit_and_not_modified(api, bot):
    sent = await bot.send_message(ALICE, "hello", reply_markup=keyboard("a"))
    assert sent.message_id == 1 and sent.text == "hello"
    assert sent.reply_markup.inline_keyboard[0][0].callback_data == "a"

    edited = await bot.edit_message_text("bye", chat_id=ALICE, message_id=sent.message_id)
    assert edited.text == "bye" and edited.edit_date is not None
    stored = api.message(ALICE, sent.message_id)
    assert stored["text"] == "bye" and "reply_markup" not in stored  # an edit without markup drops it

    with pytest.raises(BadRequest) as error:
        await bot.edit_message_text("bye", chat_id=ALICE, message_id=sent.message_id)
    assert error.value.message.lower() == NOT_MODIFIED.lower()

    await bot.edit_message_reply_markup(ALICE, sent.message_id, reply_markup=keyboard("b"))
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await bot.edit_message_text("x", chat_id=ALICE, message_id=99)
    assert await bot.delete_message(ALICE, sent.message_id)
    assert api.message(ALICE, sent.message_id) is None and api.bot_messages(ALICE) == []


async def test_text_limits_count_utf16(bot):
    await bot.send_message(ALICE, "😀" * 2048)  # 4096 UTF-16 code units
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(ALICE, "😀" * 2049)
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(ALICE, "x" * 4097)
    with pytest.raises(BadRequest, match="Message text is empty"):
        await bot.send_message(ALICE, "   ")
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(424242, "hi")


async def test_callback_data_limit(bot):
    await bot.send_message(ALICE, "ok", reply_markup=keyboard("x" * 64))
    with pytest.raises(BadRequest, match="Button_data_invalid"):
        await bot.send_message(ALICE, "too long", reply_markup=keyboard("x" * 65))
    with pytest.raises(BadRequest, match="Button_data_invalid"):  # 22 × 3 UTF-8 bytes = 66
        await bot.send_message(ALICE, "too long", reply_markup=keyboard("举" * 22))


async def test_html_parse_mode(api, bot):
    html = "<b>bold</b> &amp; <a href='https://x.org'>link</a>"
    sent = await bot.send_message(ALICE, html, parse_mode="HTML")
    assert sent.text == "bold & link"
    assert [(e.type, e.offset, e.length) for e in sent.entities] == [("bold", 0, 4), ("text_link", 7, 4)]
    with pytest.raises(BadRequest, match="Can't parse entities"):
        await bot.send_message(ALICE, "<b>open", parse_mode="HTML")
    with pytest.raises(BadRequest, match='nsupported start tag "br"'):
        await bot.send_message(ALICE, "a<br>b", parse_mode="HTML")


async def test_media_group_upload_round_trip(api, bot):
    first, second = b"\x89PNG first", b"\xff\xd8 second"
    messages = await bot.send_media_group(
        GROUP, [InputMediaPhoto(first, caption="two photos"), InputMediaPhoto(second)])
    assert len(messages) == 2
    assert messages[0].media_group_id and messages[0].media_group_id == messages[1].media_group_id
    assert messages[0].caption == "two photos"
    for message, data in zip(messages, (first, second)):
        file = await bot.get_file(message.photo[-1].file_id)
        assert bytes(await file.download_as_bytearray()) == data
        assert api.file_bytes(message.photo[-1].file_id) == data
    resent = await bot.send_photo(ALICE, messages[0].photo[-1].file_id)
    assert resent.photo[-1].file_id == messages[0].photo[-1].file_id
    with pytest.raises(BadRequest, match="Wrong file identifier"):
        await bot.send_photo(ALICE, "no-such-file")


async def test_user_photo_can_be_downloaded(api, bot):
    data = bytes(range(256)) * 10
    message = api.user_sends_photo(ALICE, ALICE, data, caption="pothole")
    thumbnail, full = message["photo"]
    assert thumbnail["width"] < full["width"] == 800 and full["file_size"] == len(data)
    file = await bot.get_file(full["file_id"])
    assert file.file_size == len(data)
    assert bytes(await file.download_as_bytearray()) == data
    assert await (await bot.get_file(thumbnail["file_id"])).download_as_bytearray()


async def test_get_updates_long_poll_message_and_callback(api, bot):
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await api.wait_for(lambda: api.requests[-1][0] == "getUpdates")
    api.user_sends_text(ALICE, ALICE, "/start@whistle_test_bot now")
    (update,) = await asyncio.wait_for(poll, 2)  # returns at once, not after 5 s
    assert update.message.text.startswith("/start")
    entity = update.message.entities[0]
    assert (entity.type, entity.offset, entity.length) == ("bot_command", 0, len("/start@whistle_test_bot"))

    sent = await bot.send_message(ALICE, "choose", reply_markup=keyboard("yes"))
    query_id = api.user_presses(ALICE, ALICE, sent.message_id, "yes")
    (update,) = await bot.get_updates(offset=update.update_id + 1, timeout=1)
    query = update.callback_query
    assert (query.id, query.data, query.message.text) == (query_id, "yes", "choose")
    assert query.from_user.id == ALICE and query.chat_instance

    await query.answer("done", show_alert=True)
    assert api.callback_answers[query_id]["text"] == "done"
    assert api.callback_answers[query_id]["show_alert"] is True
    with pytest.raises(BadRequest, match="Query is too old"):
        await query.answer("again")

    forged = api.user_presses(ALICE, ALICE, 77, "forged")
    (update,) = await bot.get_updates(offset=update.update_id + 1)
    assert update.callback_query.id == forged and update.callback_query.message.message_id == 77


# PTB itself warns while building RetryAfter from the integer Telegram sends.
@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_fault_injection_and_chat_errors(api, bot):
    api.fail_next("sendmessage", 429, "Too Many Requests: retry after 3", retry_after=3)
    with pytest.raises(RetryAfter, match="Retry in 3"):
        await bot.send_message(ALICE, "hi")
    await bot.send_message(ALICE, "hi")  # only the next call failed

    api.block_user(ALICE)
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(ALICE, "hi")

    api.group_migrates(GROUP, -1009, by_user_id=ALICE)
    with pytest.raises(ChatMigrated) as migrated:
        await bot.send_message(GROUP, "hi")
    assert migrated.value.new_chat_id == -1009
    assert (await bot.send_message(-1009, "hi")).chat.type == "supergroup"
    assert api.messages(GROUP)[-1]["migrate_to_chat_id"] == -1009

    wrong = Bot("999:WRONG", base_url=api.base_url, base_file_url=api.base_file_url)
    with pytest.raises(InvalidToken):
        await wrong.get_me()
    await wrong.shutdown()


async def test_reply_keyboard_is_tracked(api, bot):
    await bot.send_message(ALICE, "share?", reply_markup=ReplyKeyboardMarkup(
        [[KeyboardButton("Location", request_location=True)]], one_time_keyboard=True))
    assert api.reply_keyboard(ALICE)["keyboard"][0][0]["text"] == "Location"
    api.user_sends_location(ALICE, ALICE, 39.9, 116.4)
    assert api.reply_keyboard(ALICE) is None  # one-time keyboards close after use

    await bot.send_message(ALICE, "menu", reply_markup=ReplyKeyboardMarkup([["A", "B"]]))
    api.user_sends_text(ALICE, ALICE, "A")
    assert api.reply_keyboard(ALICE) is not None
    await bot.send_message(ALICE, "bye", reply_markup=ReplyKeyboardRemove())
    assert api.reply_keyboard(ALICE) is None


async def test_wait_message_and_events(api, bot):
    events = api.subscribe()
    earlier = await bot.send_message(ALICE, "first reply")

    async def answer_later():
        await asyncio.sleep(0.05)
        await bot.send_message(ALICE, "second reply")

    task = asyncio.create_task(answer_later())
    message = await api.wait_message(ALICE, contains="reply", after=earlier.message_id, timeout=2)
    await task
    assert message["text"] == "second reply"
    assert (await events.get())["type"] == "message"

    with pytest.raises(AssertionError, match="first reply"):  # the dump lists recent bot messages
        await api.wait_message(ALICE, contains="never", timeout=0.1)
    api.unsubscribe(events)


async def test_application_polling_echo(api):
    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.message.reply_text(f"echo: {update.message.text}")

    app = (ApplicationBuilder().token(api.token)
           .base_url(api.base_url).base_file_url(api.base_file_url).build())
    app.add_handler(MessageHandler(filters.TEXT, echo))
    await app.initialize()
    await app.start()
    await app.updater.start_polling(poll_interval=0, timeout=1)
    try:
        api.user_sends_text(ALICE, ALICE, "你好")
        reply = await api.wait_message(ALICE, contains="echo: 你好")
        assert reply["from"]["is_bot"]
        await api.wait_idle()
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()
