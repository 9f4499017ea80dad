"""What an edit in place costs the send budgets (``[sender] edit_cost``).

Telegram documents its limits for messages sent (20 a minute in a group); for edits,
the Bot API's maintainers say they share that limit and count like a sent message
(tdlib/td#2592, #3034; docs/reliability.md). So an edit is charged ``edit_cost`` (1 by
default) instead of the two it once was, and a claim's card edit follows within
seconds. Driven through the real sender and the fake Bot API: a group's burst of four,
refilling at one a minute (the budgets use real time, so none refills during the test)."""
from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from models.messages.outbox import OutMessage, Target, enqueue
from models.store.tables import Outbox, RateCounter

from deadline_helpers import G01_CHAT, sent_requests

BURST = 4


@pytest.fixture
def edit_cost(request, config):
    config.sender.group_burst, config.sender.group_per_minute = BURST, 1
    if request.param is not None:
        config.sender.edit_cost = request.param
    return request.param or 1


def charged(api, chat: int) -> int:
    return len(sent_requests(api, "sendMessage", chat)) + len(
        sent_requests(api, "editMessageText", chat))


@pytest.mark.parametrize("edit_cost, edits_within_the_burst", [
    (None, BURST - 1),  # the default: an edit counts as one message
    (2, (BURST - 2) // 2),  # configured: two
], indirect=["edit_cost"])
async def test_the_budget_charges_the_configured_cost_for_an_edit(edit_cost, whistle, api, clock,
                                                                  edits_within_the_burst):
    # the fake answers 429 past BURST sends and edits together in any minute, as Telegram
    # does by its maintainers' word: the budget's count must never be below it
    api.enforce_limits(per_second=30, group_per_minute=BURST, private_per_second=1,
                       private_burst=1000)
    target = Target("telegram", str(G01_CHAT))
    async def first(session):
        enqueue(session, target, OutMessage(text="board v0", ref="probe", edit=True), clock())
    await whistle.db.run(first)
    await api.wait_for(lambda: sent_requests(api, "sendMessage", G01_CHAT),
                       description="the message to edit")

    async def edits(session):
        for version in range(1, 6):
            enqueue(session, target, OutMessage(text=f"board v{version}", ref="probe",
                                                edit=True), clock())
    await whistle.db.run(edits)
    await api.wait_for(lambda: len(sent_requests(api, "editMessageText", G01_CHAT))
                       == edits_within_the_burst, description="the edits the budget allows")
    await asyncio.wait_for(whistle.sender.idle.wait(), 5)  # the rest wait for the budget
    assert len(sent_requests(api, "editMessageText", G01_CHAT)) == edits_within_the_burst
    pending = await whistle.db.run(lambda s: s.scalar(select(func.count()).select_from(Outbox)
                                                      .where(Outbox.state == "pending")))
    assert pending == 5 - edits_within_the_burst
    # the budget counted each edit at its cost: what the chat's window holds
    counted = await whistle.db.run(lambda s: s.scalar(select(func.sum(RateCounter.count)).where(
        RateCounter.key == f"send:telegram:{G01_CHAT}")))
    assert counted == edit_cost * (1 + edits_within_the_burst)
    assert charged(api, G01_CHAT) == 1 + edits_within_the_burst
    assert api.rate_limited == 0
