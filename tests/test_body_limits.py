"""Request bodies over raw HTTP against the bot's own web server: each route reads at most
its own limit (the dashboard's forms a few KB, JSON and form APIs 64 KB, the Telegram
webhook and the WeCom callback 1 MB, photo uploads the photo limit), a declared length
over it is refused with 413 before any of the body is read, and a chunked body (no
length) is cut off at the limit. The login form is refused without its cookie before
the body is read.

The raw client sends the head and perhaps never the body: a server that waited for the
body would never answer, so every read is bounded by ``HANG`` (a guard against a hang,
not a timing assertion)."""
from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import aiohttp

from bot.web import DEFAULT_BODY_BYTES, FORM_BODY_BYTES

HANG = 20  # seconds: far more than any answer takes; reaching it means the server waited


async def raw(origin: str, method: str, path: str, headers: dict[str, str],
              body: bytes = b"", chunks: list[bytes] | None = None) -> tuple[int, str]:
    """Send one request by hand; returns the status and the answer's head and start."""
    url = urlsplit(origin)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        head = [f"{method} {path} HTTP/1.1", f"Host: {url.netloc}",
                *(f"{k}: {v}" for k, v in headers.items())]
        if chunks is not None:
            head.append("Transfer-Encoding: chunked")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        try:
            for chunk in chunks or []:
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                await writer.drain()
            if chunks is not None:
                writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:  # the server answered and closed while we were still sending
            pass
        status_line = await asyncio.wait_for(reader.readline(), HANG)
        rest = await asyncio.wait_for(reader.read(2000), HANG)
        return int(status_line.split()[1]), (status_line + rest).decode("utf-8", "replace")
    finally:
        writer.close()


def pieces(total: int, size: int = 16 * 1024) -> list[bytes]:
    return [b"a" * min(size, total - start) for start in range(0, total, size)]


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_a_declared_length_over_the_routes_limit_is_refused_before_the_body(whistle):
    """The head alone gets 413: nothing of the body is waited for or read."""
    origin, base = whistle.web.origin, whistle.config.dashboard.path
    open311 = whistle.config.open311.path
    cases = [
        (f"{base}/login", FORM_BODY_BYTES + 1),
        (f"{base}/tickets/1/close", FORM_BODY_BYTES + 1),
        (f"{base}/logout", FORM_BODY_BYTES + 1),
        (f"{open311}/requests.json", DEFAULT_BODY_BYTES + 1),
        ("/healthz", DEFAULT_BODY_BYTES + 1),
    ]
    for path, length in cases:
        method = "GET" if path == "/healthz" else "POST"
        status, answer = await raw(origin, method, path, {**FORM, "Content-Length": str(length)})
        assert status == 413, (path, answer)
        assert "Connection: close" in answer, answer


async def test_a_chunked_body_is_cut_off_at_the_limit(whistle):
    origin, base = whistle.web.origin, whistle.config.dashboard.path
    open311 = whistle.config.open311.path
    status, answer = await raw(origin, "POST", f"{open311}/requests.json", FORM,
                               chunks=pieces(DEFAULT_BODY_BYTES + 4096))
    assert status == 413, answer
    status, answer = await raw(origin, "POST", f"{base}/login",
                               {**FORM, "Cookie": "whistle_login_csrf=x"},
                               chunks=pieces(FORM_BODY_BYTES + 4096))
    assert status == 413, answer
    # under the limit, the same route reads the body and answers as always
    status, answer = await raw(origin, "POST", f"{open311}/requests.json", FORM,
                               chunks=[b"service_code=garbage"])
    assert status == 403 and "api_key" in answer, answer


async def test_open311_answers_a_body_too_large_in_its_own_format(whistle):
    """Open311's 413 is the spec's error document, in the format the URL names, both for
    a declared length (answered before the body) and for a chunked body."""
    open311 = whistle.config.open311.path
    status, answer = await raw(whistle.web.origin, "POST", f"{open311}/requests.json",
                               {**FORM, "Content-Length": str(24 * 1024 * 1024)})
    assert status == 413 and "application/json" in answer, answer
    assert '[{"code": 413, "description": ' in answer, answer
    status, answer = await raw(whistle.web.origin, "POST", f"{open311}/requests.xml", FORM,
                               chunks=pieces(DEFAULT_BODY_BYTES + 4096))
    assert status == 413 and "<errors><error><code>413</code>" in answer, answer


async def test_the_login_form_without_its_cookie_is_refused_before_the_body(whistle):
    """A login POST without the form's CSRF cookie cannot be right: 403 at once, without
    reading (or waiting for) its body."""
    base = whistle.config.dashboard.path
    status, answer = await raw(whistle.web.origin, "POST", f"{base}/login",
                               {**FORM, "Content-Length": "4000"})
    assert status == 403, answer


async def test_bodies_within_the_limits_still_work(whistle):
    """A form of a few KB logs in; an Open311 post under 64 KB is read (and refused for
    its missing key, as before)."""
    base = whistle.web.origin + whistle.config.dashboard.path
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(base + "/login") as response:
            assert response.status == 200
            text = await response.text()
        csrf = text.split('name="csrf" value="')[1].split('"')[0]
        padding = "x" * (FORM_BODY_BYTES - 1024)  # a long (ignored) field, under the limit
        async with http.post(base + "/login", data={"csrf": csrf, "username": "nobody",
                                                    "password": "wrong password",
                                                    "pad": padding}) as response:
            assert response.status == 401
    url = whistle.web.origin + whistle.config.open311.path + "/requests.json"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data={"service_code": "garbage",
                                        "description": "x" * 40_000}) as response:
            assert response.status == 403
            assert "api_key" in await response.text()
