"""How one sender pass reads the queue (``bot.delivery.sender.Plan``): heads, runs, leases."""
from datetime import datetime, timedelta, timezone

from bot.delivery.sender import RUN, Plan

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
DUE, LATER = NOW - timedelta(seconds=1), NOW + timedelta(minutes=5)
LIVE, EXPIRED = NOW + timedelta(seconds=30), NOW - timedelta(seconds=1)


def row(row_id, chat, due=DUE, owner=None, until=None):
    return (row_id, "telegram", chat, due, owner, until)


def test_each_chat_runs_from_its_head_in_order():
    plan = Plan.of([row(1, "a"), row(2, "b"), row(3, "a"), row(4, "c"), row(5, "b")], NOW, "me")
    assert plan.runs == [[1, 3], [2, 5], [4]]
    assert (plan.flying, plan.more) == ([], False)


def test_a_chat_being_sent_is_left_alone_and_looked_at_again_when_done():
    queue = [row(1, "a", owner="other", until=LIVE), row(2, "a"), row(3, "b")]
    plan = Plan.of(queue, NOW, "me")
    assert (plan.runs, plan.flying, plan.more) == ([[3]], [1], True)


def test_own_sends_are_in_flight_however_late_the_clock():
    plan = Plan.of([row(1, "a", owner="me", until=EXPIRED), row(2, "b")], NOW, "me", mine={1})
    assert (plan.runs, plan.flying, plan.more) == ([[2]], [1], False)


def test_an_own_lease_nobody_here_is_sending_is_an_orphan_at_once():
    """Left from a send whose outcome could not be recorded (a database outage, a stop)."""
    plan = Plan.of([row(1, "a", owner="me", until=LIVE), row(2, "a")], NOW, "me", mine=())
    assert (plan.runs, plan.flying) == ([[1, 2]], [])


def test_an_expired_lease_of_another_process_is_a_head_again():
    queue = [row(1, "a", owner="dead", until=EXPIRED), row(2, "a", owner="dead", until=EXPIRED)]
    plan = Plan.of(queue, NOW, "me")
    assert (plan.runs, plan.flying) == ([[1, 2]], [])


def test_a_row_waiting_for_its_retry_holds_back_its_chat_only():
    queue = [row(1, "a", due=LATER), row(2, "a"), row(3, "b"), row(4, "b", due=LATER), row(5, "b")]
    plan = Plan.of(queue, NOW, "me")
    assert (plan.runs, plan.more) == ([[3]], False)  # the timer, not a finished send, looks again


def test_runs_are_bounded_and_what_is_left_asks_for_another_pass():
    long = [row(i, "a") for i in range(1, RUN + 3)]
    plan = Plan.of(long, NOW, "me")
    assert plan.runs == [list(range(1, RUN + 1))] and plan.more
