"""The send budget's arithmetic: when a message fits as counted messages age out."""
import math

from bot.delivery.budget import PREFIX, Ledger, Window, _period

SLOT = Window(3, 1.0).slot  # counts are kept per slot of a hundredth of the window


def ledger(now: float, slots: dict[float, int], spent: int = 0, limit: int = 3) -> Ledger:
    """A ledger as ``Ledger.load`` leaves it: the slots that still count at ``now``."""
    book = Ledger(session=None, now=now, margin=0.02)
    window = book.windows[PREFIX + "k"] = Window(limit, 1.0)
    book.slots[PREFIX + "k"] = {start: n for start, n in slots.items()
                                if start >= book._first(window) - 1e-9}
    if spent:
        book.spend("k", spent)
    return book


def test_room_now_means_ready_now():
    book = ledger(10.0, {9.5: 1})
    assert book.room("k") == 2 and book.ready_at("k", 2) == 10.0


def test_ready_when_enough_counted_messages_have_aged_out():
    book = ledger(10.0, {9.1: 1, 9.3: 2})  # full: 3 counted in the last second
    assert book.room("k") == 0
    assert book.ready_at("k", 1) == 9.1 + SLOT + 1.0 + 0.02  # the oldest slot frees one
    assert book.ready_at("k", 2) == 9.3 + SLOT + 1.0 + 0.02  # the next frees two more
    assert book.ready_at("k", 3) == 9.3 + SLOT + 1.0 + 0.02


def test_messages_in_flight_are_never_projected_away():
    """An unanswered message holds its share until its answer is counted: only the
    answer's own window frees it, so no time can be promised."""
    book = ledger(10.0, {9.1: 1}, spent=2)
    assert book.room("k") == 0
    assert book.ready_at("k", 1) == 9.1 + SLOT + 1.0 + 0.02
    assert book.ready_at("k", 2) is None


def test_a_later_ledger_agrees_with_the_promise():
    """At the promised moment a fresh ledger counts the slot no more."""
    book = ledger(10.0, {9.1: 1, 9.3: 2})
    at = book.ready_at("k", 1)
    later = ledger(at + 1e-6, {9.1: 1, 9.3: 2})
    assert later.room("k") == 1


def test_a_slot_counts_for_its_whole_window_at_todays_timestamps():
    """Slots are stored in whole milliseconds; at timestamps of 1.8e9 s a float comparison
    dropped about one slot in six up to a slot early. An answer recorded at ``t`` counts
    until ``t + window + margin`` at least, whatever ``t``."""
    window, margin = Window(30, 1.0), 0.005
    for i in range(20_000):
        t = 1_795_000_000 + i * 0.0037
        period = _period(math.floor(t / window.slot) * window.slot)  # as ``record`` stores it
        book = Ledger(session=None, now=t + window.seconds + margin, margin=margin)
        assert book.counts(period, window), f"answer at {t!r} dropped early"
        later = Ledger(session=None, now=t + window.seconds + margin + 2 * window.slot, margin=margin)
        assert not later.counts(period, window)  # and it does stop counting
