"""What every log line carries: the ids of the work in hand (update, chat, job, and the
ticket an action touched), bound with structlog's context variables. Channel adapters
and jobs open a ``log_context``; ticket actions add the ticket (``tickets.audit``).

And what no log line may carry: the secrets a request brings (a dashboard password or
session cookie, an Open311 API key) are named with ``keep_out_of_logs``; the log's
redaction (``bot.observability``) masks them in every line the same task writes."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import structlog

TICKET_KEYS = ("ticket_id", "ticket")
MIN_SECRET = 6  # shorter values would mask ordinary words; no secret of ours is that short

_IN_HAND: ContextVar[frozenset[str]] = ContextVar("whistle_secrets_in_hand", default=frozenset())


def keep_out_of_logs(*values: object) -> None:
    """Mask these values in every log line the current task writes from now on (each web
    request and each update is its own task, so they go with it)."""
    known = _IN_HAND.get()
    new = {v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET} - known
    if new:
        _IN_HAND.set(known | new)


def secrets_in_hand() -> frozenset[str]:
    """What ``keep_out_of_logs`` named in this task."""
    return _IN_HAND.get()


@contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Bind ids (update, chat, user) to every log line of the work inside; on the way out
    also forget the ticket the work touched, so the next update does not inherit it."""
    tokens = structlog.contextvars.bind_contextvars(
        **{key: value for key, value in ids.items() if value is not None})
    try:
        yield
    finally:
        structlog.contextvars.unbind_contextvars(*TICKET_KEYS)
        structlog.contextvars.reset_contextvars(**tokens)
