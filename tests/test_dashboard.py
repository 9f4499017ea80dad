"""The command-centre dashboard over real HTTP against the bot's own web server
(``whistle.web.origin``), with the real service and database: logins, sessions, CSRF,
throttling, scopes, the list's filters and pages, the ticket page, the actions (audited,
notifying like the chat), the live overview, the map, and escaping of residents' text.

Pages are read in English (the ``whistle_lang`` cookie), so assertions do not depend on
the Chinese wording, which is still being translated."""
from __future__ import annotations

import asyncio
import html
import io
import re
import sys
from datetime import timedelta

import aiohttp
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from dashboard import auth
from models.tickets import actions as core_tickets
from models.store.tables import (Assignment, Media, Outbox, Person, StaffUser, Ticket, TicketEvent, WebSession)
from tests.flows import (
    DUTY_CHAT, G01, G01_CHAT, G02, G02_CHAT, LAKE, claim, count, file_report,
    has_button, last_id, photo_bytes, reply_note, ask_note, ticket_row,
)

PASSWORD = "correct horse battery"
XSS = "<script>alert(1)</script><img src=x onerror=alert(2)>"
ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


# ---- helpers ------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def quick_hashes(monkeypatch):
    """argon2 with small costs: the default costs take most of a second per login on a
    busy test machine. test_user_rules checks the real hasher's output format."""
    monkeypatch.setattr(auth, "HASHER", PasswordHasher(time_cost=1, memory_cost=1024,
                                                       parallelism=1))


async def make_user(whistle, name: str, *, unit: str | None = None, admin: bool = False,
                    person: str | None = None, password: str = PASSWORD) -> StaffUser:
    return await whistle.db.run(lambda s: auth.create_user(
        s, whistle.core.now(), name, password, unit_code=unit, admin=admin, person_code=person))


async def make_ticket(whistle, *, point=G01, category: str = "garbage",
                      description: str = "Rubbish piling up by the gate", anonymous: bool = True,
                      name: str = "Zhang San", phone: str | None = None) -> Ticket:
    """A report filed through the core's own ``create`` (the chat's last step), faster than
    walking the whole dialogue when a test needs many tickets."""
    async def create(session):
        reporter = Person(name=name, phone=phone, created_at=whistle.core.now())
        session.add(reporter)
        await session.flush()
        draft = {"category": category, "description": description, "anonymous": anonymous,
                 "phone": phone, "location": list(point) if point else None}
        return await core_tickets.create(session, whistle.core, reporter, draft, "telegram")
    return await whistle.db.run(create)


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Client:
    """A browser stand-in: one cookie jar, English pages."""

    def __init__(self, whistle, headers: dict[str, str] | None = None):
        self.whistle = whistle
        self.base = whistle.web.origin + whistle.config.dashboard.path
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),
                                          timeout=aiohttp.ClientTimeout(total=30),
                                          headers=headers)
        self.http.cookie_jar.update_cookies({"whistle_lang": "en"})
        self.csrf: str | None = None

    async def close(self) -> None:
        await self.http.close()

    async def get(self, path: str, **kwargs) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.get(self.base + path, allow_redirects=False, **kwargs) as response:
            text = await response.text()
            found = CSRF.search(text)
            if found:
                self.csrf = found.group(1)
            return response.status, text, response

    async def post(self, path: str, data: dict | list, csrf: bool = True
                   ) -> tuple[int, str, aiohttp.ClientResponse]:
        fields = list(data.items()) if isinstance(data, dict) else list(data)
        if csrf:
            fields.append(("csrf", self.csrf))
        async with self.http.post(self.base + path, data=fields, allow_redirects=False) as response:
            text = await response.text()
            found = CSRF.search(text)
            if found:
                self.csrf = found.group(1)
            return response.status, text, response

    async def login(self, username: str, password: str = PASSWORD, **fields: str
                    ) -> tuple[int, str, aiohttp.ClientResponse]:
        status, text, _ = await self.get("/login")
        assert status == 200, text
        status, text, response = await self.post("/login", {"username": username,
                                                            "password": password, **fields})
        if status == 303:
            await self.get("/overview")  # picks up the session's CSRF token
        return status, text, response


@pytest.fixture
async def client(whistle):
    made = []

    def make():
        c = Client(whistle)
        made.append(c)
        return c
    yield make
    for c in made:
        await c.close()


async def logged_in(client, whistle, name: str, **user) -> Client:
    await make_user(whistle, name, **user)
    c = client()
    status, text, _ = await c.login(name)
    assert status == 303, text
    return c


async def events_of(whistle, ticket_id: int) -> list[TicketEvent]:
    return await whistle.db.run(lambda s: _all(s, select(TicketEvent).where(
        TicketEvent.ticket_id == ticket_id).order_by(TicketEvent.id)))


async def _all(session, query):
    return list(await session.scalars(query))


# ---- logging in -------------------------------------------------------------------------

PAGES = ["/overview", "/tickets", "/tickets?status=open", "/map"]
FRAGMENTS = ["/overview/live", "/map/grids/g01", "/media/1"]


async def test_nothing_without_a_login(whistle, client):
    ticket = await make_ticket(whistle, description="Secret pothole description")
    c = client()
    status, _, response = await c.get("")
    assert status == 302 and response.headers["Location"] == "/dashboard/overview"
    for path in [*PAGES, f"/tickets/{ticket.number}"]:
        status, text, response = await c.get(path)
        assert status == 303, path
        assert response.headers["Location"].startswith("/dashboard/login?next="), path
        assert "Secret pothole" not in text
    for path in FRAGMENTS:
        status, text, _ = await c.get(path)
        assert status == 401, path
        assert "Secret pothole" not in text
    c.csrf = "forged"
    for action, form in [("reroute", {"grid": "g02"}), ("retype", {"order_type": "key"}),
                         ("whistle", {"lead": "d-hw"}), ("duplicate", {"original": "x"}),
                         ("close", {"reason": "not_ours", "note": "no"})]:
        status, _, _ = await c.post(f"/tickets/{ticket.number}/{action}", form)
        assert status == 401, action
    status, _, _ = await c.post("/logout", {})
    assert status == 401
    after = await ticket_row(whistle, ticket.id)
    assert (after.state, after.order_type) == ("routed", "routine")
    assert [e.kind for e in await events_of(whistle, ticket.id)] == ["created"]


async def test_login_cookie_logout(whistle, client):
    await make_user(whistle, "chief1", unit="g01", person="p-wangjianguo")
    c = client()
    await c.get("/login")
    whistle.config.dashboard.secure_cookies = True  # (the login form's cookie is plain http)
    status, _, response = await c.post("/login", {"username": "Chief1", "password": PASSWORD,
                                                  "next": "/dashboard/map"})
    assert status == 303
    assert response.headers["Location"] == "/dashboard/map"
    cookie = response.cookies["whistle_session"]
    assert cookie["httponly"] and cookie["secure"] and cookie["samesite"] == "Lax"
    assert cookie["path"] == "/dashboard"
    token = cookie.value
    stored = await whistle.db.run(lambda s: _all(s, select(WebSession)))
    assert [row.id for row in stored] == [auth.token_hash(token)]  # only the hash is kept
    assert token not in {row.id for row in stored} and stored[0].csrf_token != token
    # the Secure cookie would not come back over plain http: send it by hand
    c.http.cookie_jar.update_cookies({"whistle_session": token})
    status, text, _ = await c.get("/overview")
    assert status == 200 and "chief1" in text
    status, _, _ = await c.post("/logout", {})
    assert status == 303
    assert await count(whistle, WebSession) == 0
    c.http.cookie_jar.update_cookies({"whistle_session": token})
    status, _, _ = await c.get("/overview")
    assert status == 303  # the old cookie is worth nothing now
    user = await whistle.db.run(lambda s: s.scalar(select(StaffUser)))
    assert user.last_login_at == whistle.core.now()


async def test_login_rejects_open_redirects_and_bad_forms(whistle, client):
    await make_user(whistle, "chief1", unit="g01")
    c = client()
    await c.get("/login")
    for bad in ["https://evil.example/", "//evil.example/x", "/sandbox", "/dashboard\\..\\x"]:
        await c.get("/login")
        status, _, response = await c.post("/login", {"username": "chief1",
                                                      "password": PASSWORD, "next": bad})
        assert status == 303
        assert response.headers["Location"] == "/dashboard/overview", bad
    await c.get("/login")
    status, text, _ = await c.post("/login", {"username": "chief1"})
    assert status == 400 and "Enter your user name and password" in text
    status, text, _ = await c.post("/login", {"username": "x" * 5000, "password": "y"})
    assert status == 400


async def test_csrf_token_required_on_every_post(whistle, client, clock):
    ticket = await make_ticket(whistle)
    await make_user(whistle, "admin", admin=True, person="p-handong")
    # the login form itself: its token must match the cookie set with the form
    c = client()
    await c.get("/login")
    status, text, _ = await c.post("/login", {"username": "admin", "password": PASSWORD},
                                   csrf=False)
    assert status == 403 and "expired" in text
    c.csrf = "not-the-token"
    status, _, _ = await c.post("/login", {"username": "admin", "password": PASSWORD})
    assert status == 403
    assert await count(whistle, WebSession) == 0
    status, _, _ = await c.login("admin")
    assert status == 303
    good = c.csrf
    forms = [("reroute", {"grid": "g02"}), ("retype", {"order_type": "key"}),
             ("whistle", {"lead": "d-hw"}), ("duplicate", {"original": ticket.number}),
             ("close", {"reason": "not_ours", "note": "elsewhere"})]
    for token in (None, "", "wrong", good + "x"):
        for action, form in forms:
            c.csrf = token
            status, _, _ = await c.post(f"/tickets/{ticket.number}/{action}", form,
                                        csrf=token is not None)
            assert status == 403, (action, token)
        status, _, _ = await c.post("/logout", {}, csrf=token is not None)
        assert status == 403
    # another session's token is no good either
    other = client()
    await other.login("admin")
    c.csrf = other.csrf
    status, _, _ = await c.post(f"/tickets/{ticket.number}/retype", {"order_type": "key"})
    assert status == 403
    after = await ticket_row(whistle, ticket.id)
    assert (after.state, after.order_type) == ("routed", "routine")
    assert await count(whistle, WebSession) == 2  # nobody was logged out
    c.csrf = good
    status, _, _ = await c.post(f"/tickets/{ticket.number}/retype", {"order_type": "key"})
    assert status == 303
    assert (await ticket_row(whistle, ticket.id)).order_type == "key"


async def user_row(whistle, name: str) -> StaffUser:
    return await whistle.db.run(lambda s: s.scalar(select(StaffUser).where(
        StaffUser.username == name)))


async def wait_out(clock, user: StaffUser) -> None:
    """Let the clock pass the account's wait."""
    clock.advance(seconds=(user.locked_until - clock.now).total_seconds() + 1)


async def test_failed_logins_delay_the_account_more_each_time(whistle, client, clock):
    """Not a lock anyone can trigger for anyone: after max_failed_logins failures each
    further try waits (login_delay_seconds, doubling with each failure, at most
    lockout_minutes); an attempt during the wait is not checked at all."""
    settings = whistle.config.dashboard
    settings.max_failed_logins_per_ip = 1000  # the address's own limit has its own test
    await make_user(whistle, "chief1", unit="g01")
    c = client()
    for attempt in range(settings.max_failed_logins):
        status, text, _ = await c.login("chief1", "wrong password")
        assert status == 401 and "Wrong user name or password" in text
    first = timedelta(seconds=settings.login_delay_seconds)
    user = await user_row(whistle, "chief1")
    assert user.locked_until == clock.now + first
    status, text, _ = await c.login("chief1")  # the right password, but within the wait
    assert status == 401 and "locked" in text
    assert await count(whistle, WebSession) == 0
    assert (await user_row(whistle, "chief1")).failed_logins == settings.max_failed_logins
    await wait_out(clock, user)
    status, _, _ = await c.login("chief1", "wrong again")
    assert status == 401
    user = await user_row(whistle, "chief1")
    assert user.locked_until == clock.now + 2 * first  # each failure doubles the wait
    for _ in range(12):
        await wait_out(clock, user)
        await c.login("chief1", "still wrong")
        user = await user_row(whistle, "chief1")
    assert user.locked_until == clock.now + timedelta(minutes=settings.lockout_minutes)
    await wait_out(clock, user)
    status, _, _ = await c.login("chief1")
    assert status == 303
    user = await user_row(whistle, "chief1")
    assert user.failed_logins == 0 and user.locked_until is None


async def test_the_owners_browser_is_not_slowed_by_an_attackers_failures(whistle, client, clock):
    """A browser that has logged in as a user before (its signed ``whistle_device``
    cookie) is not held up by the account's wait nor by its address's limit: someone
    guessing cannot lock the owner out, even from the same address (one office, one
    proxy). The owner's own mistakes are counted on that browser."""
    settings = whistle.config.dashboard
    settings.max_failed_logins_per_ip = 8
    await make_user(whistle, "chief2", unit="g02")
    owner = await logged_in(client, whistle, "chief1", unit="g01")
    status, _, _ = await owner.post("/logout", {})
    assert status == 303
    attacker = client()
    for attempt in range(8):
        status, _, _ = await attacker.login("chief1", f"guess {attempt}")
        assert status == 401
    assert (await user_row(whistle, "chief1")).locked_until > clock.now
    status, text, _ = await attacker.login("chief1")  # even the right password, from here
    assert status == 429 and "Too many failed logins" in text
    status, _, _ = await owner.login("chief1")  # same address, within the account's wait
    assert status == 303
    assert (await user_row(whistle, "chief1")).failed_logins >= settings.max_failed_logins
    # the cookie speaks for chief1 only
    status, _, _ = await owner.login("chief2")
    assert status == 429
    # the owner's own mistakes: max_failed_logins of them, then the browser is a stranger
    for attempt in range(settings.max_failed_logins):
        status, _, _ = await owner.login("chief1", f"typo {attempt}")
        assert status == 401
    status, _, _ = await owner.login("chief1")
    assert status == 429
    # a forged cookie is a stranger's
    forger = client()
    user = await user_row(whistle, "chief1")
    forger.http.cookie_jar.update_cookies({"whistle_device": f"{user.id}.{int(clock.now.timestamp())}.{'0' * 32}"})
    status, _, _ = await forger.login("chief1")
    assert status == 429


async def test_the_address_is_taken_from_a_trusted_proxy_only(config, clock):
    """Behind the reverse proxy every request comes from the proxy: its X-Forwarded-For
    names the client, so one guesser slows only its own address. A client cannot choose
    its address by sending the header itself."""
    from bot.app import Whistle
    config.web.trusted_proxies = ["127.0.0.1"]
    config.dashboard.max_failed_logins_per_ip = 2
    service = Whistle(config, clock=clock)
    await service.start()
    clients = []

    def browser(forwarded: str) -> Client:
        clients.append(Client(service, {"X-Forwarded-For": forwarded}))
        return clients[-1]
    try:
        await make_user(service, "chief1", unit="g01")
        attacker = browser("203.0.113.5")
        for attempt in range(2):
            status, _, _ = await attacker.login("chief1", f"guess {attempt}")
            assert status == 401
        status, _, _ = await attacker.login("chief1")
        assert status == 429
        # a spoofed hop in front of the real one changes nothing: the proxy's is believed
        status, _, _ = await browser("198.51.100.7, 203.0.113.5").login("chief1")
        assert status == 429
        status, _, _ = await browser("198.51.100.7").login("chief1")  # a colleague
        assert status == 303
    finally:
        for c in clients:
            await c.close()
        await service.stop()


async def test_x_forwarded_for_is_ignored_without_a_trusted_proxy(whistle, client):
    whistle.config.dashboard.max_failed_logins_per_ip = 2
    await make_user(whistle, "chief1", unit="g01")
    for attempt in range(2):
        c = Client(whistle, {"X-Forwarded-For": f"203.0.113.{attempt}"})
        try:
            status, _, _ = await c.login("chief1", "guess")
        finally:
            await c.close()
        assert status == 401
    c = Client(whistle, {"X-Forwarded-For": "198.51.100.7"})
    try:
        status, _, _ = await c.login("chief1")
    finally:
        await c.close()
    assert status == 429


async def test_logging_in_can_end_the_other_sessions(whistle, client):
    first = await logged_in(client, whistle, "chief1", unit="g01")
    second = client()
    assert (await second.login("chief1"))[0] == 303
    status, text, _ = await second.get("/login")
    assert "end_others" in text  # the choice is on the form
    assert (await first.get("/overview"))[0] == 200  # without the choice: both stay
    third = client()
    assert (await third.login("chief1", end_others="1"))[0] == 303
    for other in (first, second):
        status, _, response = await other.get("/overview")
        assert status == 303 and "/login" in response.headers["Location"]
    assert (await third.get("/overview"))[0] == 200
    assert await count(whistle, WebSession) == 1


async def test_failed_logins_slow_down_an_address(whistle, client, clock):
    whistle.config.dashboard.max_failed_logins_per_ip = 3
    await make_user(whistle, "chief1", unit="g01")
    c = client()
    for name in ("nobody", "someone", "chief1"):  # unknown names count too
        status, _, _ = await c.login(name, "guess")
        assert status == 401
    status, text, _ = await c.login("chief1")  # even the right password is not checked now
    assert status == 429 and "Too many failed logins" in text
    user = await whistle.db.run(lambda s: s.scalar(select(StaffUser)))
    assert user.failed_logins == 1  # the refused attempt did not count against the user
    clock.advance(minutes=whistle.config.dashboard.lockout_minutes)
    status, _, _ = await c.login("chief1")
    assert status == 303


async def test_session_expires(whistle, client, clock):
    c = await logged_in(client, whistle, "chief1", unit="g01")
    clock.advance(hours=whistle.config.dashboard.session_hours, minutes=-1)
    status, _, _ = await c.get("/tickets")
    assert status == 200
    clock.advance(minutes=1)
    status, _, response = await c.get("/tickets")
    assert status == 303 and "/login" in response.headers["Location"]
    assert await count(whistle, WebSession) == 0  # the expired row is gone
    status, _, _ = await c.get("/overview/live")
    assert status == 401


async def test_disabled_user_is_out_at_once(whistle, client):
    c = await logged_in(client, whistle, "chief1", unit="g01")
    await whistle.db.run(lambda s: auth.disable_user(s, "chief1"))
    status, _, _ = await c.get("/overview")
    assert status == 303
    status, _, _ = await c.login("chief1")
    assert status == 401


async def test_a_logged_in_user_can_log_out_the_other_sessions(whistle, client):
    here = await logged_in(client, whistle, "chief1", unit="g01")
    there = client()
    assert (await there.login("chief1"))[0] == 303
    elsewhere = await logged_in(client, whistle, "chief2", unit="g02")  # another user's
    status, text, _ = await here.get("/overview")
    assert 'action="/dashboard/logout-others"' in text
    status, _, _ = await here.post("/logout-others", {}, csrf=False)
    assert status == 403  # a POST like any other: the CSRF token is required
    status, _, response = await here.post("/logout-others", {})
    assert status == 303 and response.headers["Location"].endswith("/overview")
    assert (await here.get("/overview"))[0] == 200
    status, _, response = await there.get("/overview")
    assert status == 303 and "/login" in response.headers["Location"]
    assert (await elsewhere.get("/overview"))[0] == 200
    assert await count(whistle, WebSession) == 2


async def test_user_rules(whistle):
    now = whistle.core.now()
    bad = [dict(name="x", password="short", unit="g01"),
           dict(name="bad name!", password=PASSWORD, unit="g01"),
           dict(name="ok", password=PASSWORD),  # neither a unit nor admin
           dict(name="ok", password=PASSWORD, unit="g01", admin=True),
           dict(name="ok", password=PASSWORD, unit="nowhere"),
           dict(name="ok", password=PASSWORD, unit="g01", person="p-nobody")]
    for case in bad:
        with pytest.raises(auth.UserError):
            await whistle.db.run(lambda s: auth.create_user(
                s, now, case["name"], case["password"], unit_code=case.get("unit"),
                admin=case.get("admin", False), person_code=case.get("person")))
    await make_user(whistle, "chief1", unit="g01")
    with pytest.raises(auth.UserError):
        await make_user(whistle, "CHIEF1", unit="g02")
    with pytest.raises(auth.UserError):
        await whistle.db.run(lambda s: auth.disable_user(s, "nobody"))
    user = await whistle.db.run(lambda s: s.scalar(select(StaffUser)))
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    assert PasswordHasher().verify(user.password_hash, PASSWORD)


async def test_cli_user_commands(database_url, monkeypatch, capsys):
    """``python -m bot user …`` through the real entry point (run in a thread: it starts
    its own event loop, as on the command line)."""
    from bot.__main__ import main
    monkeypatch.setenv("WHISTLE_DATABASE_URL", database_url)

    async def cli(*args: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            code = await asyncio.to_thread(
                main, ["--config", str(ROOT / "config.example.toml"), "user", *args])
        except SystemExit as exc:  # argparse refuses the arguments
            code = exc.code
        out = capsys.readouterr()
        return code, out.out, out.err
    code, out, err = await cli("add", "chief1", "--unit", "g01", "--person", "p-wangjianguo",
                               "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 0, err
    assert "created dashboard user chief1" in out
    code, out, _ = await cli("add", "viewer", "--admin", "--password-stdin", stdin=PASSWORD)
    assert code == 0 and "can look but not act" in out
    code, _, err = await cli("add", "chief2", "--unit", "g02", "--password-stdin", stdin="short\n")
    assert code == 1 and "at least" in err
    code, _, err = await cli("add", "chief3", "--unit", "nowhere", "--password-stdin",
                             stdin=PASSWORD)
    assert code == 1 and "no unit" in err
    code, _, _ = await cli("add", "x", "--unit", "g02", "--admin", "--password-stdin")
    assert code == 2  # argparse: --unit and --admin exclude each other
    code, out, _ = await cli("list")
    assert code == 0 and "chief1\tg01\tp-wangjianguo\tactive" in out
    assert "viewer\tadmin\t-\tactive" in out
    code, out, _ = await cli("disable", "chief1")
    assert code == 0 and "disabled chief1" in out
    assert "chief1\tg01\tp-wangjianguo\tdisabled" in (await cli("list"))[1]
    assert (await cli("disable", "nobody"))[0] == 1


async def test_an_admin_unlocks_an_account_from_the_cli(whistle, client, database_url,
                                                       monkeypatch, capsys):
    from bot.__main__ import main
    monkeypatch.setenv("WHISTLE_DATABASE_URL", database_url)
    settings = whistle.config.dashboard
    settings.max_failed_logins_per_ip = 1000
    await make_user(whistle, "chief1", unit="g01")
    c = client()
    for attempt in range(settings.max_failed_logins + 1):
        await c.login("chief1", "wrong password")
    assert (await c.login("chief1"))[0] == 401  # within the wait

    async def cli(*args: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(
            main, ["--config", str(ROOT / "config.example.toml"), "user", *args])
        out = capsys.readouterr()
        return code, out.out, out.err
    code, out, _ = await cli("list")
    assert code == 0 and f"chief1\tg01\t-\tactive ({settings.max_failed_logins} failed logins)" in out
    code, out, err = await cli("unlock", "chief1")
    assert code == 0 and "unlocked chief1" in out, err
    user = await user_row(whistle, "chief1")
    assert user.failed_logins == 0 and user.locked_until is None
    assert (await c.login("chief1"))[0] == 303
    code, _, err = await cli("unlock", "nobody")
    assert code == 1 and "no user" in err


# ---- scope ----------------------------------------------------------------------------------

async def test_scopes_by_role(whistle, client):
    g01 = await make_ticket(whistle, point=G01, description="Bins overflowing in grid one")
    g02 = await make_ticket(whistle, point=G02, description="Broken bench in grid two",
                            category="road")
    lake = await make_ticket(whistle, point=LAKE, description="Something by the lake")
    grid = await logged_in(client, whistle, "chief1", unit="g01", person="p-wangjianguo")
    community = await logged_in(client, whistle, "sec1", unit="c1", person="p-heshuzhen")
    street = await logged_in(client, whistle, "street", unit="s1")
    admin = await logged_in(client, whistle, "admin", admin=True)
    department = await logged_in(client, whistle, "dept", unit="d-hw")

    async def listed(c) -> set[str]:
        status, text, _ = await c.get("/tickets")
        assert status == 200
        return set(re.findall(r'data-number="([^"]+)"', text))
    assert await listed(grid) == {g01.number}
    assert await listed(community) == {g01.number, g02.number}
    assert await listed(street) == {g01.number, g02.number, lake.number}
    assert await listed(admin) == {g01.number, g02.number, lake.number}
    assert await listed(department) == set()

    status, missing, _ = await grid.get(f"/tickets/{g02.number}")  # another grid's, by URL
    assert status == 404 and "Broken bench" not in missing
    status, nonexistent, _ = await grid.get("/tickets/20261123-9999")
    # the same answer as for a ticket that does not exist: nothing leaks
    assert status == 404 and nonexistent.replace("20261123-9999", g02.number) == missing
    for bad in ["not-a-number", "1' OR '1'='1", g01.number + "x"]:
        assert (await grid.get(f"/tickets/{bad}"))[0] == 404
    status, text, _ = await grid.get(f"/tickets/{g01.number}")
    assert status == 200 and "Bins overflowing" in text
    # filtering by another unit shows nothing of it
    status, text, _ = await grid.get("/tickets?unit=g02")
    assert status == 200 and g02.number not in text and "No tickets match" in text
    # nor its photos
    data = photo_bytes(3)

    async def add_photo(session):
        path, digest = whistle.media.save(data)
        media = Media(ticket_id=g02.id, owner_id=g02.reporter_id, kind="report", path=path,
                      sha256=digest, size=len(data), created_at=whistle.core.now())
        session.add(media)
        await session.flush()
        return media.id
    media_id = await whistle.db.run(add_photo)
    async with grid.http.get(f"{grid.base}/media/{media_id}") as response:
        assert response.status == 404
    async with community.http.get(f"{community.base}/media/{media_id}") as response:
        assert response.status == 200 and await response.read() == data
    # the map panel of another grid lists none of its tickets
    status, text, _ = await grid.get("/map/grids/g02")
    assert status == 200 and "Broken bench" not in text
    status, text, _ = await community.get("/map/grids/g02")
    assert "Broken bench" in text
    assert (await grid.get("/map/grids/nowhere"))[0] == 404
    # acting on it by URL is the same 404
    status, _, _ = await grid.post(f"/tickets/{g02.number}/retype", {"order_type": "key"})
    assert status == 404
    # the department sees a ticket once it is whistled to it
    async def escalate_and_whistle(session):
        ticket = await session.get(Ticket, g01.id)
        secretary = await session.scalar(select(Person).where(Person.code == "p-heshuzhen"))
        await core_tickets.escalate(session, whistle.core, secretary, ticket, "too big")
    await whistle.db.run(escalate_and_whistle)
    status, _, _ = await community.post(f"/tickets/{g01.number}/whistle", {"lead": "d-hw"})
    assert status == 303
    assert await listed(department) == {g01.number}
    assert (await department.get(f"/tickets/{g02.number}"))[0] == 404


async def test_ticket_page_shows_everything_but_the_phone(whistle, api, people, client):
    resident = people(9001, "Alice Smith", language="en")
    people(1001, "王建国")
    filed = await file_report(api, whistle, resident, photos=1, contact="phone",
                              phone="+8613812345678")
    await claim(api, 1001, filed)
    prompt = await ask_note(api, 1001, G01_CHAT, filed.card["message_id"],
                            f"resolve:{filed.id}", filed.number)
    await reply_note(api, 1001, G01_CHAT, prompt, "Swept and washed")
    question = await api.wait_message(resident.id, predicate=has_button(f"vs:{filed.id}."))
    after = last_id(api, resident.id)
    api.user_presses(resident.id, resident.id, question["message_id"], f"vs:{filed.id}.1")
    satisfaction = await api.wait_message(resident.id, after=after,
                                          predicate=has_button(f"vq:{filed.id}."))
    after = last_id(api, resident.id)
    api.user_presses(resident.id, resident.id, satisfaction["message_id"], f"vq:{filed.id}.s")
    await api.wait_message(resident.id, after=after)  # the thanks: the vote is stored
    c = await logged_in(client, whistle, "chief1", unit="g01", person="p-wangjianguo")

    async def page():
        status, text, _ = await c.get(f"/tickets/{filed.number}")
        assert status == 200
        return text
    text = await page()
    timeline = text[text.index('id="timeline"'):]
    kinds = re.findall(r'data-kind="([^"]+)"', timeline)
    assert kinds[:3] == ["created", "claimed", "resolved"]
    assert "Swept and washed" in timeline and "王建国" in timeline
    assert '<dd id="reporter">Alice</dd>' in text  # first name only: they chose to be named
    assert "Smith" not in text and "13812345678" not in text and "+86" not in text
    media = re.findall(r'/dashboard/media/(\d+)', text)
    assert media
    async with c.http.get(f"{c.base}/media/{media[0]}") as response:
        assert response.status == 200 and response.content_type == "image/jpeg"
        assert (await response.read())[:2] == b"\xff\xd8"
    deadlines = text[text.index('id="deadlines"'):text.index('id="timeline"')]
    assert "met" in deadlines  # claimed and resolved in time
    assert 'id="ticket-pin"' in text and 'class="grid plain here"' in text
    text = await page()
    votes = text[text.index('id="votes"'):]
    assert "solved" in votes and "Satisfied" in votes
    # a photo of someone else's ticket, or none, is not found
    other = await make_ticket(whistle, point=G02)
    async with c.http.get(f"{c.base}/media/999999") as response:
        assert response.status == 404
    async with c.http.get(f"{c.base}/media/abc") as response:
        assert response.status == 404
    status, _, _ = await c.get(f"/tickets/{other.number}")
    assert status == 404


# ---- the list -------------------------------------------------------------------------------

async def test_filters_sorting_and_pages(whistle, client, clock):
    whistle.config.dashboard.page_size = 5
    made = []
    for i in range(7):  # garbage in g01, one a minute
        made.append(await make_ticket(whistle, description=f"Garbage pile number {i}"))
        clock.advance(minutes=1)
    road = await make_ticket(whistle, point=G02, category="road", description="Pothole 50% deep_")
    water = await make_ticket(whistle, point=G02, category="water",  # an emergency order
                              description="Burst pipe flooding the lane")
    parking = await make_ticket(whistle, point=G01, category="parking",  # enforcement
                                description="Van parked on the pavement")
    clock.advance(days=1)
    tomorrow = await make_ticket(whistle, point=G01, description="Next day's garbage")
    c = await logged_in(client, whistle, "admin", admin=True, person="p-handong")

    async def numbers(query: str) -> list[str]:
        status, text, _ = await c.get("/tickets" + query)
        assert status == 200, text
        return re.findall(r'data-number="([^"]+)"', text)
    everything = await numbers("?sort=number")
    assert len(everything) == 5  # one page
    status, text, _ = await c.get("/tickets?sort=number")
    assert "11 tickets" in text and "Page 1 of 3" in text
    page2 = await numbers("?sort=number&page=2")
    page3 = await numbers("?sort=number&page=3")
    assert len(page2) == 5 and len(page3) == 1
    all_numbers = everything + page2 + page3
    assert all_numbers == sorted(all_numbers) and len(set(all_numbers)) == 11
    assert await numbers("?page=4") == []  # past the end: an empty page, not an error
    newest = await numbers("")
    assert newest[0] == tomorrow.number and newest[1] == parking.number
    oldest = await numbers("?sort=old")
    assert oldest[:2] == [made[0].number, made[1].number]
    # each filter
    assert await numbers("?category=road") == [road.number]
    assert await numbers("?type=emergency") == [water.number]
    assert await numbers("?class=enforcement") == [parking.number]
    assert set(await numbers("?unit=g02")) == {road.number, water.number}
    assert set(await numbers("?unit=c1&category=road")) == {road.number}
    assert await numbers("?q=burst+PIPE") == [water.number]
    assert await numbers("?q=50%25+deep_") == [road.number]  # % and _ are literal
    assert await numbers("?q=%25") == [road.number]
    assert await numbers(f"?q={water.number}") == [water.number]
    day = clock.now.astimezone(whistle.config.tz).date()
    assert await numbers(f"?from={day.isoformat()}") == [tomorrow.number]
    yesterday = (day - timedelta(days=1)).isoformat()
    assert len(await numbers(f"?to={yesterday}&sort=number&page=2")) == 5
    assert await numbers(f"?from={day.isoformat()}&to={yesterday}") == []
    # status: claim one, close another
    async def act(session):
        chief = await session.scalar(select(Person).where(Person.code == "p-wangjianguo"))
        await core_tickets.claim(session, whistle.core, chief, await session.get(Ticket, made[0].id))
        dispatcher = await session.scalar(select(Person).where(Person.code == "p-handong"))
        await core_tickets.close_not_fixed(session, whistle.core, dispatcher,
                                           await session.get(Ticket, made[1].id), "not_ours", "no")
    await whistle.db.run(act)
    assert await numbers("?status=claimed") == [made[0].number]
    assert await numbers("?status=closed_not_fixed") == [made[1].number]
    assert await numbers("?status=closed") == [made[1].number]  # the group of finished states
    assert made[1].number not in await numbers("?status=open&sort=number&page=2") + \
        await numbers("?status=open&sort=number")
    # overdue: the claim deadlines of the first day have passed by now
    overdue = await numbers("?overdue=1&sort=number") + await numbers("?overdue=1&sort=number&page=2")
    assert tomorrow.number not in overdue and made[0].number not in overdue  # claimed in time
    assert made[2].number in overdue and made[1].number not in overdue  # closed: not late
    status, text, _ = await c.get("/tickets?overdue=1")
    assert 'class="overdue"' in text
    # links keep the filters
    status, text, _ = await c.get("/tickets?category=garbage&sort=old")
    assert html.escape("?category=garbage&sort=old&page=2") in text
    # bad values are refused, not guessed
    for query in ["?status=bogus", "?type=huge", "?class=x", "?category=nope", "?sort=id;drop",
                  "?page=0", "?page=-1", "?page=abc", "?from=2026-13-01", "?to=yesterday",
                  "?overdue=maybe", "?q=" + "x" * 201, "?unit=" + "u" * 65]:
        status, text, _ = await c.get("/tickets" + query)
        assert status == 400, query
        assert "not valid" in text


# ---- acting -----------------------------------------------------------------------------------

async def outbox_rows(whistle, after_id: int) -> list[Outbox]:
    return await whistle.db.run(lambda s: _all(s, select(Outbox).where(Outbox.id > after_id)
                                               .order_by(Outbox.id)))


async def last_outbox(whistle) -> int:
    rows = await whistle.db.run(lambda s: _all(s, select(Outbox.id).order_by(Outbox.id.desc())
                                               .limit(1)))
    return rows[0] if rows else 0


async def test_actions_go_through_the_core_audited_and_notified(whistle, api, people, client):
    people(9001, "Li Si", language="en")
    lake = await file_report(api, whistle, 9001, point=LAKE, card_chat=DUTY_CHAT)
    street = await logged_in(client, whistle, "dispatch", unit="s1", person="p-luozhigang")
    dispatcher_id = await whistle.db.run(lambda s: s.scalar(select(Person.id).where(
        Person.code == "p-luozhigang")))

    # re-route from the dispatch to grid g02: the grid's chat gets the card, the resident is told
    after = await last_outbox(whistle)
    before = last_id(api, G02_CHAT)
    status, _, response = await street.post(f"/tickets/{lake.number}/reroute", {"grid": "g02"})
    assert status == 303
    assert response.headers["Location"] == f"/dashboard/tickets/{lake.number}?done=reroute"
    ticket = await ticket_row(whistle, lake.id)
    assert (ticket.state, ticket.grid_id is not None) == ("routed", True)
    event = (await events_of(whistle, lake.id))[-1]
    assert (event.kind, event.actor_id, event.data) == ("routed", dispatcher_id, {"grid": "g02"})
    assert {row.chat_id for row in await outbox_rows(whistle, after)} >= {str(G02_CHAT), "9001"}
    await api.wait_message(G02_CHAT, after=before, predicate=has_button(f"claim:{lake.id}"))
    await api.wait_message(9001, contains="was sent to")
    status, text, _ = await street.get(f"/tickets/{lake.number}?done=reroute")
    assert "The ticket was routed to the grid." in text

    # change the order type: deadlines are re-timed, the card is edited
    status, _, _ = await street.post(f"/tickets/{lake.number}/retype", {"order_type": "key"})
    assert status == 303
    assert (await ticket_row(whistle, lake.id)).order_type == "key"
    event = (await events_of(whistle, lake.id))[-1]
    assert (event.kind, event.actor_id, event.data) == (
        "retyped", dispatcher_id, {"from": "routine", "to": "key"})

    # close as a duplicate of another open ticket: the reporter now follows the original
    original = await make_ticket(whistle, point=G02)  # someone else's report
    after = await last_outbox(whistle)
    status, _, _ = await street.post(f"/tickets/{lake.number}/duplicate",
                                     {"original": "#" + original.number})
    assert status == 303
    ticket = await ticket_row(whistle, lake.id)
    assert (ticket.state, ticket.duplicate_of_id) == ("closed_duplicate", original.id)
    kinds = [(e.kind, e.actor_id) for e in await events_of(whistle, original.id)]
    assert ("merged", dispatcher_id) in kinds
    assert any(row.chat_id == "9001" for row in await outbox_rows(whistle, after))

    # close without a fix: the resident gets the reason
    status, _, _ = await street.post(f"/tickets/{original.number}/close",
                                     {"reason": "not_ours", "note": "This is the railway's land"})
    assert status == 303
    ticket = await ticket_row(whistle, original.id)
    assert (ticket.state, ticket.close_reason) == ("closed_not_fixed", "not_ours")
    event = (await events_of(whistle, original.id))[-1]
    assert (event.kind, event.actor_id, event.note) == (
        "closed_not_fixed", dispatcher_id, "This is the railway's land")
    await api.wait_message(9001, contains="This is the railway's land")  # now a follower

    # whistle: an escalated ticket at the community goes to departments, whose chats get it
    third = await make_ticket(whistle)
    secretary = await logged_in(client, whistle, "sec1", unit="c1", person="p-heshuzhen")
    status, text, _ = await secretary.get(f"/tickets/{third.number}")
    assert 'id="act-whistle"' not in text  # a grid's ticket: not whistled from here
    async def escalate(session):
        actor = await session.scalar(select(Person).where(Person.code == "p-heshuzhen"))
        await core_tickets.escalate(session, whistle.core, actor,
                                    await session.get(Ticket, third.id), "needs departments")
    await whistle.db.run(escalate)
    status, text, _ = await secretary.get(f"/tickets/{third.number}")
    assert 'id="act-whistle"' in text
    before = last_id(api, -100404)
    status, _, _ = await secretary.post(f"/tickets/{third.number}/whistle",
                                        [("lead", "d-hw"), ("coop", "d-cg"), ("coop", "d-hw")])
    assert status == 303
    assignments = await whistle.db.run(lambda s: _all(s, select(Assignment).where(
        Assignment.ticket_id == third.id).order_by(Assignment.id)))
    assert [(a.role, a.state) for a in assignments] == [("lead", "waiting"), ("coop", "waiting")]
    event = (await events_of(whistle, third.id))[-1]
    assert event.kind == "whistled" and event.data["lead"] == "d-hw"
    await api.wait_message(-100404, after=before, predicate=has_button(f"claim:{third.id}"))
    status, text, _ = await secretary.get(f"/tickets/{third.number}")
    assert 'id="assignments"' in text


async def test_actions_refused_with_reasons(whistle, client):
    ticket = await make_ticket(whistle, point=G02)
    other = await make_ticket(whistle, point=G02)
    looker = await logged_in(client, whistle, "looker", unit="c1")  # no staff member
    status, text, _ = await looker.get(f"/tickets/{ticket.number}")
    assert 'id="no-person"' in text and 'id="act-retype"' not in text
    status, text, _ = await looker.post(f"/tickets/{ticket.number}/retype", {"order_type": "key"})
    assert status == 403 and "not linked to a staff member" in text
    # scope c1, but the staff member is grid g01's chief: the core refuses on g02
    wrong = await logged_in(client, whistle, "mixed", unit="c1", person="p-wangjianguo")
    status, text, _ = await wrong.post(f"/tickets/{ticket.number}/retype", {"order_type": "key"})
    assert status == 403 and "Only staff of this unit or above" in text
    c = await logged_in(client, whistle, "sec1", unit="c1", person="p-heshuzhen")
    cases = [
        ("retype", {"order_type": "bogus"}, 400, "listed order types"),
        ("retype", {"order_type": "routine"}, 400, "already has this order type"),
        ("retype", {}, 400, "fill in every field"),
        ("reroute", {"grid": "c1"}, 400, "listed units"),
        ("reroute", {"grid": "g01"}, 409, "not possible in the ticket"),  # routed already
        ("whistle", {"lead": "d-hw"}, 409, "not possible"),  # a grid holds it
        ("duplicate", {"original": "20261123-9999"}, 400, "that you can see"),
        ("duplicate", {"original": ticket.number}, 403, "cannot be the original"),
        ("close", {"reason": "bored", "note": "x"}, 400, "listed reasons"),
        ("close", {"reason": "not_ours", "note": "   "}, 400, "fill in every field"),
        ("close", {"reason": "not_ours", "note": "x" * 5000}, 400, "too long"),
    ]
    for action, form, status_wanted, message in cases:
        status, text, _ = await c.post(f"/tickets/{ticket.number}/{action}", form)
        assert status == status_wanted, (action, form, status)
        assert message in text, (action, form)
        assert 'id="action-error"' in text
    status, _, _ = await c.post(f"/tickets/{ticket.number}/explode", {})
    assert status == 404
    after = await ticket_row(whistle, ticket.id)
    assert (after.state, after.order_type) == ("routed", "routine")
    assert [e.kind for e in await events_of(whistle, ticket.id)] == ["created"]
    # a duplicate of a ticket outside the scope is refused the same way as a missing one
    elsewhere = await make_ticket(whistle, point=(39.92618, 116.40107))  # g09, community c3
    status, text, _ = await c.post(f"/tickets/{other.number}/duplicate",
                                   {"original": elsewhere.number})
    assert status == 400 and "that you can see" in text


# ---- what every page shows ------------------------------------------------------------------

async def test_resident_text_is_escaped_everywhere(whistle, client, clock):
    ticket = await make_ticket(whistle, description=XSS, anonymous=False, name=XSS)
    clock.advance(days=3)  # overdue, so the overview lists it too
    c = await logged_in(client, whistle, "admin", admin=True, person="p-handong")
    pages = ["/tickets", f"/tickets/{ticket.number}", "/map", "/map/grids/g01", "/overview",
             "/overview/live", f"/tickets?q={XSS}"]
    for path in pages:
        status, text, response = await c.get(path)
        assert status == 200, path
        assert "<script>alert" not in text and "<img src=x" not in text, path
        assert "&lt;script&gt;alert(1)" in text or "&lt;script&gt;" in text, path
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"
    status, text, _ = await c.get(f"/tickets/{ticket.number}")
    assert html.escape(XSS, quote=False) in text  # the whole description, escaped
    # the reporter's "first name" is escaped as well
    assert '<dd id="reporter">&lt;script&gt;alert(1)&lt;/script&gt;&lt;img</dd>' in text
    # an action's error page too
    status, text, _ = await c.post(f"/tickets/{ticket.number}/duplicate", {"original": XSS[:20]})
    assert status == 400 and "<script>alert" not in text


async def test_overview_counts_and_live_updates(whistle, client, clock):
    c = await logged_in(client, whistle, "chief1", unit="g01", person="p-wangjianguo")
    await make_ticket(whistle, point=G02)  # another grid's: not counted for chief1

    async def stat(name: str) -> str:
        status, text, _ = await c.get("/overview/live")
        assert status == 200
        return re.search(rf'id="{name}">([^<]*)<', text).group(1)
    status, text, _ = await c.get("/overview")
    assert 'data-live-url="/dashboard/overview/live"' in text and 'id="stat-open">0<' in text
    assert await stat("stat-created-today") == "0"
    first = await make_ticket(whistle, point=G01)
    assert await stat("stat-created-today") == "1" and await stat("stat-open") == "1"
    assert await stat("stat-overdue") == "0"
    assert await stat("rate-response") == "—"
    clock.advance(hours=4)  # past the claim deadline (two working hours)
    assert await stat("stat-overdue") == "1"
    assert await stat("stat-created-today") == "1" and await stat("stat-created-month") == "1"
    status, text, _ = await c.get("/overview/live")
    assert f"#{first.number}" in text[text.index('id="overdue"'):]
    assert await stat("rate-response") == "0.0%"  # one claim deadline fell, missed


async def test_map_colours_grids_by_load(whistle, client, clock):
    await make_ticket(whistle, point=G01)
    for _ in range(3):
        await make_ticket(whistle, point=G02)
    c = await logged_in(client, whistle, "admin", admin=True)
    status, text, _ = await c.get("/map")
    assert status == 200
    assert text.count('class="grid-link"') == 12  # every grid, drawn from its polygon
    assert re.search(r'class="grid some" d="M[\d.,]+ L', text)
    assert 'class="grid busy"' in text and 'class="grid calm"' in text
    assert text.count('class="pin"') == 4
    assert 'data-panel="/dashboard/map/grids/g02"' in text
    clock.advance(hours=4)  # past the claim deadlines
    status, text, _ = await c.get("/map")
    assert text.count('class="grid late"') == 2 and text.count('class="pin late"') == 4
    status, text, _ = await c.get("/map/grids/g02")
    assert status == 200 and text.count("<li") == 3
    # a grid's chief sees the load of their own grid only
    chief = await logged_in(client, whistle, "chief1", unit="g01")
    status, text, _ = await chief.get("/map")
    assert text.count('class="grid late"') == 1 and text.count('class="grid plain"') == 11
    assert text.count('class="pin late"') == 1


async def test_language_from_cookie_or_browser(whistle, client):
    c = await logged_in(client, whistle, "admin", admin=True)
    status, text, _ = await c.get("/overview")
    assert '<html lang="en">' in text and "Reported today" in text
    c.http.cookie_jar.clear()  # no language cookie (and logged out)
    status, text, _ = await c.get("/login", headers={"Accept-Language": "en-GB,en;q=0.8"})
    assert '<html lang="en">' in text
    status, text, _ = await c.get("/login", headers={"Accept-Language": "fr, zh-CN;q=0.5"})
    assert '<html lang="zh-Hans">' in text
    status, text, _ = await c.get("/login", headers={"Accept-Language": "zh;q=0.3, en;q=0.9"})
    assert '<html lang="en">' in text  # the most wanted one
    status, text, _ = await c.get("/login", headers={"Accept-Language": "en;q=0, de"})
    assert '<html lang="zh-Hans">' in text  # "not English", then nothing we have: the default
    status, text, _ = await c.get("/login")
    assert '<html lang="zh-Hans">' in text  # the deployment's default
    status, _, response = await c.get("/lang/en?next=/dashboard/map")
    assert status == 303 and response.headers["Location"] == "/dashboard/map"
    assert response.cookies["whistle_lang"].value == "en"
    status, _, response = await c.get("/lang/en?next=https://evil.example/")
    assert response.headers["Location"] == "/dashboard/overview"
    assert (await c.get("/lang/fr"))[0] == 404
