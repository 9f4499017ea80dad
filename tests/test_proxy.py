"""The reverse proxy of docs/deploy.md, tested as written: nginx (Debian's package; `make
test` installs it) runs as a plain process with the documentation's own server block —
only the addresses, the certificate and two timeouts are replaced — in front of the
bot's web server, over TLS on a free 127.0.0.1 port.

Checked: pages and APIs pass through; with ``[web] trusted_proxies`` the dashboard sees
each client's own address (clients connect from different loopback addresses,
127.0.0.2 and 127.0.0.3), so one guesser slows only itself and cannot choose its
address by sending X-Forwarded-For; nginx refuses a body over the largest route limit,
and Whistle a body over its route's own; a client that sends its request too slowly is
cut off by nginx without Whistle waiting for it."""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import re
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.test_dashboard import CSRF, PASSWORD, make_user, quick_hashes  # noqa: F401 (autouse)

ROOT = Path(__file__).resolve().parent.parent
HANG = 30  # seconds: a guard against a hang, never reached when things work
SLOW = 2  # the test's client_header_timeout and client_body_timeout (the docs say 10 s)


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None)
    if found is None:
        pytest.fail("nginx is not installed: `make test` installs it (Debian's nginx package)")
    return found


def documented_server_block() -> str:
    """The nginx file of docs/deploy.md, exactly as the documentation shows it."""
    text = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```nginx\n(.*?)```", text, re.S)
    found = [b for b in blocks if b.startswith("# /etc/nginx/conf.d/whistle.conf")]
    assert len(found) == 1, "docs/deploy.md must show the nginx file once"
    return found[0]


def replace(text: str, old: str, new: str) -> str:
    assert old in text, f"the documented nginx file no longer has {old!r}: update this test"
    return text.replace(old, new)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "whistle.example.org")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def config(config):
    config.web.trusted_proxies = ["127.0.0.1"]  # nginx reaches Whistle from 127.0.0.1
    config.dashboard.max_failed_logins_per_ip = 2
    return config


@pytest.fixture
async def nginx(whistle, tmp_path):
    """nginx with the documented file in front of ``whistle``; yields its https origin."""
    binary = nginx_binary()
    port = free_port()
    cert, key = self_signed(tmp_path)
    block = documented_server_block()
    block = replace(block, "server 127.0.0.1:8081;", f"server 127.0.0.1:{whistle.web.port};")
    block = replace(block, "server 127.0.0.1:8082;", f"server 127.0.0.1:{whistle.web.port};")
    block = replace(block, "listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
    block = replace(block, "/etc/ssl/whistle/fullchain.pem", str(cert))
    block = replace(block, "/etc/ssl/whistle/privkey.pem", str(key))
    block = replace(block, "client_header_timeout 10s;", f"client_header_timeout {SLOW}s;")
    block = replace(block, "client_body_timeout   10s;", f"client_body_timeout {SLOW}s;")
    (tmp_path / "whistle.conf").write_text(block)
    temp = {name: tmp_path / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir()
    # a plain foreground process of the invoking user (no master, no daemon, no user switch)
    (tmp_path / "nginx.conf").write_text(f"""
daemon off;
master_process off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log warn;
events {{ worker_connections 128; }}
http {{
    log_format upstream '$request_method $request_uri $status upstream=$upstream_addr';
    access_log {tmp_path}/access.log upstream;
    client_body_temp_path {temp['body']};
    proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']};
    scgi_temp_path {temp['scgi']};
    include {tmp_path}/whistle.conf;
}}
""")
    check = subprocess.run([binary, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"),
                            "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen([binary, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"),
                                "-c", str(tmp_path / "nginx.conf")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(HANG * 20):  # until it listens (or has died)
            assert process.poll() is None, process.stderr.read().decode()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                await asyncio.sleep(0.05)
        yield f"https://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=HANG)
        if process.stderr:
            process.stderr.close()


class Browser:
    """A client of the proxy from its own loopback address (nginx sees it as the client)."""

    def __init__(self, origin: str, source: str, headers: dict[str, str] | None = None):
        self.origin = origin
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=False, local_addr=(source, 0)),
            cookie_jar=aiohttp.CookieJar(unsafe=True), headers=headers,
            timeout=aiohttp.ClientTimeout(total=HANG))
        self.http.cookie_jar.update_cookies({"whistle_lang": "en"})

    async def login(self, base: str, username: str, password: str) -> int:
        async with self.http.get(self.origin + base + "/login") as response:
            assert response.status == 200
            csrf = CSRF.search(await response.text()).group(1)
        async with self.http.post(self.origin + base + "/login", allow_redirects=False, data={
                "csrf": csrf, "username": username, "password": password}) as response:
            return response.status

    async def close(self) -> None:
        await self.http.close()


async def test_pages_and_apis_pass_through(whistle, nginx):
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as http:
        async with http.get(nginx + whistle.config.dashboard.path + "/login") as response:
            assert response.status == 200
            assert "Log in" in await response.text() or "登录" in await response.text()
        url = nginx + whistle.config.open311.path + "/services.json"
        async with http.get(url) as response:
            assert response.status == 200
            assert any(s["service_code"] == "garbage" for s in await response.json())
        async with http.get(nginx + "/healthz") as response:
            assert response.status == 404  # stays internal: no location for it


async def test_each_client_is_slowed_by_its_own_failures_only(whistle, nginx):
    base = whistle.config.dashboard.path
    await make_user(whistle, "chief1", unit="g01")
    # the guesser also names another address itself: nginx appends the real one
    guesser = Browser(nginx, "127.0.0.2", {"X-Forwarded-For": "198.51.100.7"})
    colleague = Browser(nginx, "127.0.0.3")
    try:
        for attempt in range(2):
            assert await guesser.login(base, "chief1", f"guess {attempt}") == 401
        assert await guesser.login(base, "chief1", PASSWORD) == 429
        assert await colleague.login(base, "chief1", PASSWORD) == 303
    finally:
        await guesser.close()
        await colleague.close()


async def test_bodies_over_the_limits_are_refused(whistle, nginx):
    url = nginx + whistle.config.open311.path + "/requests.json"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as http:
        async with http.post(url, data=b"a" * (2 * 1024 * 1024), headers={
                "Content-Type": "application/x-www-form-urlencoded"}) as response:
            assert response.status == 413
            assert "nginx" in await response.text()  # refused at the proxy
        async with http.post(url, data=b"a" * (100 * 1024), headers={
                "Content-Type": "application/x-www-form-urlencoded"}) as response:
            assert response.status == 413  # under nginx's limit, over Open311's own
            assert "nginx" not in await response.text()


async def read_all(reader: asyncio.StreamReader) -> bytes:
    data = b""
    while chunk := await reader.read(4096):
        data += chunk
    return data


async def test_a_slow_client_is_cut_off_by_the_proxy(whistle, nginx, tmp_path):
    """A request whose head, or body, stops arriving is closed by nginx after its timeout;
    Whistle never sees it (nginx's log names no upstream for it)."""
    host, port = nginx.removeprefix("https://").split(":")
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    path = whistle.config.open311.path + "/requests.json"

    reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\n".encode())  # the head never ends
    await writer.drain()
    answer = await asyncio.wait_for(read_all(reader), HANG)
    writer.close()
    assert b" 200 " not in answer

    reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
    writer.write(f"POST {path}?slow=body HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                 "Content-Type: application/x-www-form-urlencoded\r\n\r\nservice_code=".encode())
    await writer.drain()  # ... and the other 987 bytes never come
    answer = await asyncio.wait_for(read_all(reader), HANG)
    writer.close()
    assert b" 200 " not in answer  # closed (nginx logs a 408 and sends nothing)
    log = (tmp_path / "access.log").read_text()
    assert f"POST {path}?slow=body 408 upstream=-" in log, log
    assert "upstream=127.0.0.1" not in log  # nothing of either reached Whistle
