"""The Bot API client on aiohttp (bot/telegram/http.py): errors map to python-telegram-bot's, and
the sender can tell a request that never left from one that may have arrived."""
import asyncio
import socket

import pytest
from aiohttp import web
from telegram.error import NetworkError, TimedOut
from telegram.request import RequestData

from bot.telegram.http import AiohttpRequest, never_sent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def server():
    """A small HTTP server: /slow answers after a second, anything else echoes the request."""
    seen = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((request.method, str(request.url), dict(await request.post())))
        if request.path.endswith("/slow"):
            await asyncio.sleep(1)
        return web.json_response({"ok": True, "result": True})
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


@pytest.fixture
async def client():
    request = AiohttpRequest(read_timeout=0.2, connect_timeout=1, verify=False)
    await request.initialize()
    yield request
    await request.shutdown()


async def test_a_request_is_a_form_and_its_answer_comes_back(client, server):
    url, seen = server
    code, body = await client.do_request(f"{url}/bot1:x/sendMessage", "POST",
                                         RequestData([]))
    assert code == 200 and b'"ok": true' in body
    assert seen[0][0] == "POST"


async def test_a_read_timeout_is_timed_out_and_may_have_arrived(client, server):
    url, seen = server
    with pytest.raises(TimedOut) as error:
        await client.do_request(f"{url}/bot1:x/slow", "POST")
    assert seen  # the server did get it: sending again could show it twice
    assert not never_sent(error.value)


async def test_a_refused_connection_never_left(client):
    with pytest.raises(NetworkError) as error:
        await client.do_request(f"http://127.0.0.1:{free_port()}/bot1:x/getMe", "POST")
    assert not isinstance(error.value, TimedOut)
    assert never_sent(error.value)


async def test_an_http_proxy_from_the_environment_is_used(server, monkeypatch):
    """HTTP(S)_PROXY apply as they did with httpx: a bot in mainland China reaches
    Telegram through one. Here the 'proxy' is the test server itself."""
    url, seen = server
    monkeypatch.setenv("HTTP_PROXY", url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    request = AiohttpRequest(verify=False)
    await request.initialize()
    try:
        code, _ = await request.do_request("http://api.telegram.invalid/bot1:x/getMe", "POST")
    finally:
        await request.shutdown()
    assert code == 200
    assert seen[-1][1].startswith("http://api.telegram.invalid/")  # asked of the proxy


async def test_not_initialized_is_an_error_not_a_hang():
    with pytest.raises(RuntimeError, match="not initialized"):
        await AiohttpRequest().do_request("http://127.0.0.1:9/x", "POST")


async def test_no_proxy_hosts_are_reached_directly(server, monkeypatch):
    """NO_PROXY names hosts reached without the proxy (a Bot API server on the LAN)."""
    url, seen = server
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("no_proxy", raising=False)
    request = AiohttpRequest(verify=False)
    await request.initialize()
    try:
        code, _ = await request.do_request(url + "/bot1:x/getMe", "POST")
    finally:
        await request.shutdown()
    assert code == 200
    assert seen[-1][1] == url + "/bot1:x/getMe"  # asked of the server itself, not of a proxy
