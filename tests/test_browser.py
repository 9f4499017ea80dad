"""What a person sees in a real browser: headless Chromium (Debian's /usr/bin/chromium)
driven by Playwright, against the real server — the dashboard on the bot's web server, and
the sandbox page with its fake Telegram. Screenshots of the key pages go to
``test-artifacts/`` (not committed).

One browser per test, and few tests, so the module stays well under a minute."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect
from sqlalchemy import select

from dashboard import auth
from models.store.tables import Ticket
from sandbox.server import Sandbox
from tests.flows import G01, G01_CHAT, ask_note, claim, file_report, reply_note

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "correct horse battery"
TIMEOUT = 15_000  # ms: a busy test machine
expect.set_options(timeout=TIMEOUT)


@pytest.fixture
async def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package "
                    f"(`make browser`, which `make test` runs, does it)", pytrace=False)
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield browser
        finally:
            await browser.close()


def shot(name: str) -> str:
    return str(ARTIFACTS / f"{name}.png")


async def new_page(browser, **options):
    context = await browser.new_context(locale="en-GB", **options)
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT)
    return page


async def log_in(page, base: str, username: str, password: str = PASSWORD) -> None:
    await page.goto(f"{base}/login")
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("#login")
    await expect(page.locator("#user")).to_have_text(username)


async def test_dashboard_in_a_browser(whistle, api, people, browser):
    whistle.config.dashboard.live_seconds = 0.3
    now = whistle.core.now()
    for name, unit, person in [("chief1", "g01", "p-wangjianguo"),
                               ("chief2", "g02", "p-lixiuying")]:
        await whistle.db.run(lambda s: auth.create_user(s, now, name, PASSWORD, unit_code=unit,
                                                        person_code=person))
    await whistle.db.run(lambda s: auth.create_user(s, now, "admin", PASSWORD, admin=True,
                                                    person_code="p-handong"))
    resident = people(9001, "Alice Smith", language="en")
    people(1001, "王建国")
    filed = await file_report(api, whistle, resident, description="Overflowing bins at the north gate")
    base = whistle.web.origin + whistle.config.dashboard.path

    page = await new_page(browser)
    await page.goto(f"{base}/tickets")  # not logged in: the login page, then back here
    await expect(page.locator("#username")).to_be_visible()
    await page.fill("#username", "chief1")
    await page.fill("#password", "wrong password")
    await page.click("#login")
    await expect(page.locator("#login-error")).to_contain_text("Wrong user name or password")
    await page.fill("#username", "chief1")
    await page.fill("#password", PASSWORD)
    await page.click("#login")
    await expect(page).to_have_url(re.compile(r"/dashboard/tickets$"))

    # the ticket the resident filed through the bot is in the list
    row = page.locator(f'tr[data-number="{filed.number}"]')
    await expect(row).to_contain_text("Overflowing bins at the north gate")
    await page.screenshot(path=shot("dashboard-tickets"), full_page=True)
    # filters: another category hides it, its own shows it, free text finds it
    await page.select_option("#f-category", "road")
    await page.click("#f-apply")
    await expect(page.locator("#no-tickets")).to_be_visible()
    await page.select_option("#f-category", "garbage")
    await page.fill("#f-q", "north gate")
    await page.click("#f-apply")
    await expect(row).to_be_visible()
    await expect(page.locator("#summary")).to_have_text("1 ticket")

    # on the map: a pin, and the grid's panel lists it when the grid is clicked
    await page.click("nav >> text=Map")
    await expect(page.locator("circle.pin")).to_have_count(1)
    await page.locator('a.grid-link[data-code="g01"] path').click(position={"x": 30, "y": 30},
                                                                   force=True)
    await expect(page.locator("#grid-panel")).to_contain_text(filed.number)
    await expect(page).to_have_url(re.compile(r"/dashboard/map$"))  # no navigation: in place
    await page.screenshot(path=shot("dashboard-map"), full_page=True)

    # the chief claims and resolves in the chat; the timeline shows both
    await claim(api, 1001, filed)
    prompt = await ask_note(api, 1001, G01_CHAT, filed.card["message_id"],
                            f"resolve:{filed.id}", filed.number)
    await reply_note(api, 1001, G01_CHAT, prompt, "Bins emptied and washed")
    await page.goto(f"{base}/tickets/{filed.number}")
    timeline = page.locator("#timeline")
    await expect(timeline.locator('[data-kind="claimed"]')).to_contain_text("王建国")
    await expect(timeline.locator('[data-kind="resolved"]')).to_contain_text("Bins emptied")
    await expect(page.locator("#ticket-pin")).to_have_count(1)
    await page.screenshot(path=shot("dashboard-ticket"), full_page=True)

    # the overview updates itself when a new report comes in
    await page.goto(f"{base}/overview")
    created = page.locator("#stat-created-today")
    await expect(created).to_have_text("1")
    await file_report(api, whistle, resident, description="A second pile of rubbish here")
    await expect(created).to_have_text("2")  # no reload: the page fetched it
    await page.screenshot(path=shot("dashboard-overview"), full_page=True)

    # another grid's chief cannot open this ticket, not even by its URL
    other = await new_page(browser)
    await log_in(other, base, "chief2")
    response = await other.goto(f"{base}/tickets/{filed.number}")
    assert response.status == 404
    await expect(other.locator("body")).not_to_contain_text("Overflowing bins")
    await other.goto(f"{base}/tickets")
    await expect(other.locator("#no-tickets")).to_be_visible()

    # on a phone screen
    phone = await new_page(browser, viewport={"width": 390, "height": 844}, is_mobile=True)
    await log_in(phone, base, "admin")
    await phone.goto(f"{base}/tickets")
    await expect(phone.locator(f'tr[data-number="{filed.number}"]')).to_be_visible()
    await phone.screenshot(path=shot("dashboard-phone"), full_page=True)
    wide = await phone.evaluate("""() => [...document.querySelectorAll('body *')]
        .filter((e) => e.getBoundingClientRect().right > 400 && !e.closest('.table-wrap'))
        .map((e) => e.tagName + '.' + e.className + '#' + e.id)""")
    width = await phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 420, wide  # nothing forces the page sideways (the table scrolls in its box)
    await phone.screenshot(path=shot("dashboard-phone"), full_page=True)


@pytest.fixture
def sandbox_config(tmp_path):
    from bot.config import load_config
    config = load_config(ROOT / "config.example.toml", env={})
    config.database.url = f"sqlite+aiosqlite:///{tmp_path / 'whistle.db'}"
    config.media_dir = tmp_path / "media"
    config.telegram.poll_timeout = 1
    config.sender.private_burst = 1000
    config.sender.group_burst = 1000
    config.sender.per_second = 1000
    config.dashboard.live_seconds = 0.3
    return config


async def test_sandbox_report_by_clicking_and_claim(sandbox_config, browser):
    sandbox = Sandbox(sandbox_config, port=0)
    await sandbox.start()
    try:
        await _sandbox_flow(sandbox, browser)
    finally:
        await sandbox.stop()


async def _sandbox_flow(sandbox: Sandbox, browser) -> None:
    page = await new_page(browser, viewport={"width": 1280, "height": 900})
    await page.goto(sandbox.url)
    await expect(page.locator(".badge")).to_contain_text("SANDBOX")

    # a resident (Alice, English) reports a problem by clicking
    await page.select_option("#who", "9003")
    messages = page.locator("#messages")
    await page.fill("#text", "/start")
    await page.click("#send")
    await messages.locator('button[data-callback="cat:garbage"]').last.click()
    await expect(messages.locator(".msg", has_text="escri").last).to_be_visible()  # describe it
    await page.fill("#text", "Broken glass all over the playground")
    await page.click("#send")
    await messages.locator('button[data-callback="ph:done"]').last.click()
    await expect(messages.locator('button[data-callback^="lc:"]').last).to_be_visible()
    await page.click("#loc-btn")
    point = await page.evaluate("""([lat, lon]) => {
        const map = document.getElementById("map");
        const d = map.dataset;
        const pt = map.createSVGPoint();
        pt.x = (lon - Number(d.originLon)) * Number(d.kx) * Number(d.scale);
        pt.y = (Number(d.originLat) - lat) * Number(d.scale);
        const p = pt.matrixTransform(map.getScreenCTM());
        return [p.x, p.y];
    }""", list(G01))
    await page.mouse.click(*point)
    await expect(page.locator("#map-coords")).to_contain_text("39.93")
    await page.screenshot(path=shot("sandbox-map"))
    await page.click("#map-send")
    anonymous = page.locator("#keyboard button", has_text="Stay anonymous")
    await anonymous.click()
    await messages.locator('button[data-callback="cf"]').last.click()
    confirmation = messages.locator(".msg", has_text="ticket number is").last
    await expect(confirmation).to_be_visible()
    number = re.search(r"\d{8}-\d{4}", await confirmation.inner_text()).group(0)
    await page.screenshot(path=shot("sandbox-resident"))

    # the grid's chief claims it in the grid's group; the card changes live
    await page.select_option("#who", "1001")
    await page.locator("#chats button", has_text="槐树社区第一网格").click()
    claimable = messages.locator(".msg", has_text=number).filter(
        has=page.locator('button[data-callback^="claim:"]')).last
    card = messages.locator(f'.msg[data-id="{await claimable.get_attribute("data-id")}"]')
    await card.locator('button[data-callback^="claim:"]').click()
    await expect(card).to_contain_text("王建国")  # edited in place, pushed by the server
    await expect(card.locator('button[data-callback^="resolve:"]')).to_be_visible()
    await page.screenshot(path=shot("sandbox-chief"))
    ticket = await sandbox.whistle.db.run(lambda s: s.scalar(select(Ticket).where(
        Ticket.number == number)))
    assert ticket.state == "claimed" and ticket.grid_id is not None

    # the resident's private chat tells them, live
    await page.select_option("#who", "9003")
    await expect(messages).to_contain_text("was claimed by")

    # the sandbox links the dashboard on the same server, with its demo logins
    link = page.locator("#dashboard-link")
    password = await page.locator("#dashboard-password").inner_text()
    href = await link.get_attribute("href")
    dashboard = await new_page(browser)
    base = sandbox.origin + href
    await log_in(dashboard, base, "admin", password)
    await dashboard.goto(f"{base}/tickets")
    await expect(dashboard.locator(f'tr[data-number="{number}"]')).to_contain_text(
        "Broken glass")
    await dashboard.goto(f"{base}/map")
    await expect(dashboard.locator("circle.pin")).to_have_count(1)
    await dashboard.screenshot(path=shot("sandbox-dashboard-map"), full_page=True)
