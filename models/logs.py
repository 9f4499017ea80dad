"""What every log line carries: the ids of the work in hand (update, chat, job, and the
ticket an action touched), bound with structlog's context variables. Channel adapters
and jobs open a ``log_context``; ticket actions add the ticket (``tickets.audit``)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

TICKET_KEYS = ("ticket_id", "ticket")


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
