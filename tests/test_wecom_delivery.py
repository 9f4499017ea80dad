"""WeCom deliveries that must not be lost: what happens when WeCom cannot be reached,
and the monthly report's pictures and workbook. The real service sends through its
sender to the fake WeCom API over HTTP (tests/fake_wecom.py)."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.delivery.sender import Retry
from bot.wecom.api import WecomApi, WecomError
from bot.wecom.robot import RobotChannel
from models.messages.outbox import OutMessage, Target, enqueue
from models.store.tables import Outbox
from tests import test_wecom as end_to_end
from tests.fake_wecom import CORP_ID, SECRET
from tests.test_wecom import AGENT_ID, CHIEF, says

# the WeCom fixtures of the end-to-end tests: a fake WeCom API, the config and the service
wecom_api, wecom_config = end_to_end.wecom_api, end_to_end.wecom_config
service = end_to_end.service


async def _queue(session, target: Target, message: OutMessage, now) -> None:
    enqueue(session, target, message, now)


async def _rows(whistle, chat_id: str) -> list[Outbox]:
    return list(await whistle.db.run(lambda s: s.scalars(
        select(Outbox).where(Outbox.chat_id == chat_id).order_by(Outbox.id))))


# ---- WeCom out of reach ----------------------------------------------------------------

async def _trouble(whistle, fake, how: str) -> None:
    if how == "connection refused":
        await fake.stop()
    elif how == "connection refused, token at hand":
        await whistle.wecom.api.token()  # message/send itself cannot connect
        await fake.stop()
    elif how == "gettoken HTTP 502":
        fake.fail_http(502, "/gettoken")
    elif how == "gettoken answer lost":
        fake.drop_next("/gettoken", times=2)
    elif how == "gettoken system error":
        fake.fail_next(-1, "/gettoken")
    elif how == "message/send HTTP 503":
        fake.fail_http(503, "/message/send")
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["connection refused", "connection refused, token at hand",
                                 "gettoken HTTP 502",
                                 "gettoken answer lost", "gettoken system error",
                                 "message/send HTTP 503"])
async def test_a_message_wecom_never_took_is_sent_again_later(service, wecom_api, clock, how):
    """Nothing reached WeCom's message API (or WeCom said it did not take it): the row
    is retried with backoff, not marked uncertain, and arrives once WeCom is back."""
    await service.sender.stop()
    await service.db.run(lambda s: _queue(s, Target("wecom", CHIEF),
                                          OutMessage(text="the lamp is fixed"), clock()))
    port = wecom_api.port
    await _trouble(service, wecom_api, how)
    await service.sender.flush()  # one pass: WeCom cannot be reached
    [row] = await _rows(service, CHIEF)
    assert (row.state, row.attempts) == ("pending", 1), row.error
    assert row.next_try_at > clock() and row.error
    assert wecom_api.to(CHIEF) == []
    if how.startswith("connection refused"):
        await wecom_api.start(port)  # WeCom is back, where it was
    clock.advance(seconds=5)
    service.sender.start()
    await wecom_api.wait_sent(CHIEF, says("the lamp is fixed"))
    await service.sender.stop()
    assert [r.state for r in await _rows(service, CHIEF)] == ["sent"]
    assert len(wecom_api.to(CHIEF)) == 1


async def test_a_message_whose_answer_was_lost_is_uncertain_not_sent_twice(
        service, wecom_api, clock):
    """The request reached message/send and the connection broke before the answer:
    WeCom may show it, so it is not sent again (as on Telegram)."""
    await service.sender.stop()
    await service.db.run(lambda s: _queue(s, Target("wecom", CHIEF),
                                          OutMessage(text="maybe shown"), clock()))
    wecom_api.drop_next("/message/send")
    await service.sender.flush()
    [row] = await _rows(service, CHIEF)
    assert row.state == "uncertain"
    clock.advance(seconds=600)
    await service.sender.flush()
    assert [m["text"]["content"] for m in wecom_api.to(CHIEF)] == ["maybe shown"]


@pytest.fixture
async def quick_api(wecom_api):
    api = WecomApi(wecom_api.base_url, CORP_ID, SECRET, AGENT_ID, timeout=1)
    yield api
    await api.close()


async def test_only_a_send_that_may_have_arrived_is_uncertain(quick_api, wecom_api):
    """The client tells a call that may have been carried out (its answer lost) from one
    that never reached WeCom's message API."""
    wecom_api.hang_next("/gettoken")  # a token that never comes: no message went anywhere
    with pytest.raises(WecomError) as caught:
        await quick_api.send_text(["a"], "x")
    assert caught.value.path == "/gettoken" and not caught.value.uncertain
    wecom_api.hang_next("/message/send")  # the send went out; no answer
    with pytest.raises(WecomError) as caught:
        await quick_api.send_text(["a"], "y")
    assert caught.value.path == "/message/send" and caught.value.uncertain
    wecom_api.fail_http(502, "/message/send")  # a gateway answered: WeCom did not take it
    with pytest.raises(WecomError) as caught:
        await quick_api.send_text(["a"], "z")
    assert not caught.value.uncertain and caught.value.code is None
    wecom_api.drop_next("/media/upload")  # an upload's lost answer: sending it again is harmless
    with pytest.raises(WecomError) as caught:
        await quick_api.upload_image(b"\xff\xd8 a jpeg")
    assert not caught.value.uncertain
    gone = WecomApi("http://127.0.0.1:9/cgi-bin", CORP_ID, SECRET, AGENT_ID, timeout=2)
    with pytest.raises(WecomError) as caught:
        await gone.send_text(["a"], "x")
    assert not caught.value.uncertain
    await gone.close()
    assert [m["text"]["content"] for m in wecom_api.sent] == ["y"]


async def test_a_digest_the_robot_never_took_is_pushed_again_later(service, wecom_api, clock):
    """The group robot's webhook refused the connection: nothing was pushed, so the
    digest is retried, not left uncertain."""
    await service.sender.stop()
    await service.db.run(lambda s: _queue(s, Target("wecom_robot", "g07"),
                                          OutMessage(text="**digest**"), clock()))
    port = wecom_api.port
    await wecom_api.stop()
    await service.sender.flush()
    [row] = await _rows(service, "g07")
    assert (row.state, row.attempts) == ("pending", 1), row.error
    await wecom_api.start(port)
    clock.advance(seconds=5)
    service.sender.start()
    await wecom_api.wait_for(lambda: wecom_api.robot, description="the digest pushed")
    assert [r["content"] for r in wecom_api.robot] == ["**digest**"]


# ---- the monthly report: pictures and a workbook -------------------------------------------

CENTRE_MEMBER = "handong"  # the command centre's member on WeCom (samples/district)


async def test_the_monthly_report_reaches_wecom_as_text_images_and_a_file(
        service, wecom_api, clock):
    """The command centre's members on WeCom get the summary, each chart as an image and
    the workbook as a file, uploaded with ``media/upload`` (type image / file)."""
    from scheduler.jobs import run_monthly_report
    month = await run_monthly_report(service.db, service.core, clock())
    assert month
    file = await wecom_api.wait_sent(CENTRE_MEMBER, lambda m: m["msgtype"] == "file",
                                     description="the workbook")
    sent = wecom_api.to(CENTRE_MEMBER)
    assert sent[0]["msgtype"] == "text" and month in sent[0]["text"]["content"]
    images = [m for m in sent if m["msgtype"] == "image"]
    assert images and sent.index(file) == len(sent) - 1  # summary, charts, then the workbook
    for image in images:
        media_id = image["image"]["media_id"]
        assert wecom_api.upload_info[media_id]["type"] == "image"
        assert wecom_api.uploads[media_id].startswith(b"\x89PNG")
    info = wecom_api.upload_info[file["file"]["media_id"]]
    assert info == {"type": "file", "filename": f"whistle-report-demo-{month}.xlsx"}
    assert wecom_api.uploads[file["file"]["media_id"]].startswith(b"PK")  # an xlsx is a zip
    await service.sender.stop()
    states = {r.state for r in await _rows(service, "unit:demo")}
    assert states == {"sent"}


async def test_a_row_of_pictures_goes_on_where_it_stopped(service, wecom_api, clock):
    """Two pictures, the second's upload fails: the retry sends only the second."""
    pictures = [service.media.save(png(n), ".png")[0] for n in (1, 2)]
    await service.sender.stop()
    await service.db.run(lambda s: _queue(s, Target("wecom", CHIEF),
                                          OutMessage(text="", pictures=pictures), clock()))
    wecom_api.fail_http(502, "/media/upload", after=1)
    await service.sender.flush()  # the first picture goes, then the second's upload fails
    [row] = await _rows(service, CHIEF)
    assert (row.state, row.attempts) == ("pending", 1)
    assert row.payload["pictures"] == pictures[1:]  # what is left to send
    clock.advance(seconds=5)
    await service.sender.flush()
    images = [wecom_api.uploads[m["image"]["media_id"]] for m in wecom_api.to(CHIEF)]
    assert images == [png(1), png(2)]  # each once, in order
    assert [r.state for r in await _rows(service, CHIEF)] == ["sent"]


def png(seed: int) -> bytes:
    from io import BytesIO

    from PIL import Image
    out = BytesIO()
    Image.new("RGB", (8, 8), (seed * 40 % 256, 90, 160)).save(out, "PNG")
    return out.getvalue()


async def test_a_long_text_goes_on_where_it_stopped(service, wecom_api, clock):
    """A text in three parts, the second refused by a gateway: the retry sends the
    second and third only, so every part shows once."""
    text = "\n".join(f"line {n} " + "字" * 300 for n in range(6))  # ~5.5 kB: three parts
    await service.sender.stop()
    await service.db.run(lambda s: _queue(s, Target("wecom", CHIEF), OutMessage(text=text),
                                          clock()))
    wecom_api.fail_http(502, "/message/send", after=1)
    await service.sender.flush()
    assert len(wecom_api.to(CHIEF)) == 1
    clock.advance(seconds=5)
    await service.sender.flush()
    parts = [m["text"]["content"] for m in wecom_api.to(CHIEF)]
    assert len(parts) == 3 and "\n".join(parts) == text
    assert [r.state for r in await _rows(service, CHIEF)] == ["sent"]


async def test_a_timeout_while_connecting_is_retried_and_names_no_secret(caplog):
    """A server that never completes the connection (its backlog full): the call never
    left, so it is not uncertain; aiohttp names the whole URL in the error, so the
    secret in gettoken's query must not reach the outbox row, the log or the alert."""
    import socket

    import aiohttp
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)  # accepts nothing: once the queue is full, connections hang
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    api = WecomApi(f"http://127.0.0.1:{port}/cgi-bin", CORP_ID, SECRET, AGENT_ID, timeout=1)
    robot = RobotChannel({"g07": f"http://127.0.0.1:{port}/cgi-bin/webhook/send?key=robot-key"},
                         timeout=1)
    try:
        with pytest.raises(WecomError) as caught:
            await api.send_text(["a"], "x")
        with pytest.raises(Retry) as pushed:
            await robot.push(robot.webhooks["g07"], "**digest**")
    finally:
        await api.close()
        await robot.close()
        for sock in [*fillers, server]:
            sock.close()
    assert isinstance(caught.value.__cause__, aiohttp.ConnectionTimeoutError)
    assert caught.value.path == "/gettoken" and not caught.value.uncertain
    assert SECRET not in str(caught.value) and "corpsecret=…" in str(caught.value)
    assert isinstance(pushed.value.__cause__, aiohttp.ConnectionTimeoutError)
    assert not pushed.value.uncertain
    assert "robot-key" not in str(pushed.value) and "key=…" in str(pushed.value)
