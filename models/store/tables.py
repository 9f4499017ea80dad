"""Database tables. The database is the truth: deadlines, dialogue state and
outgoing messages all live in rows, so a restart or a second process loses nothing."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes on every backend (SQLite has no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: UTCDateTime}


class Unit(Base):
    """A node of the org tree: district, street, community, grid, or a department."""

    __tablename__ = "unit"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str | None] = mapped_column(String(200))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("unit.id"), index=True)
    boundary: Mapped[str | None] = mapped_column(Text)  # GeoJSON geometry, WGS-84


class Person(Base):
    """Anyone who talks to Whistle: a resident or a staff member."""

    __tablename__ = "person"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str | None] = mapped_column(String(64), unique=True)  # staff from the org file
    name: Mapped[str] = mapped_column(String(200), default="")
    phone: Mapped[str | None] = mapped_column(String(32))
    locale: Mapped[str | None] = mapped_column(String(16))  # set by /lang
    created_at: Mapped[datetime]
    forgotten_at: Mapped[datetime | None]  # /forget: personal data erased


class Identity(Base):
    """A person's address on one channel (Telegram user id, WeCom userid)."""

    __tablename__ = "identity"
    __table_args__ = (UniqueConstraint("channel", "external_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(64))
    language_code: Mapped[str | None] = mapped_column(String(16))
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)


class Role(Base):
    __tablename__ = "role"
    __table_args__ = (UniqueConstraint("person_id", "unit_id", "role"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id"), index=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("unit.id"), index=True)
    role: Mapped[str] = mapped_column(String(32))


class ChatBinding(Base):
    """A group chat that speaks for a unit on one channel."""

    __tablename__ = "chat_binding"
    __table_args__ = (UniqueConstraint("channel", "chat_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("unit.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    chat_id: Mapped[str] = mapped_column(String(64))


class Ticket(Base):
    __tablename__ = "ticket"
    __table_args__ = (Index("ix_ticket_state_unit", "state", "unit_id"),
                      Index("ix_ticket_category_lat", "category", "lat"),
                      Index("ix_ticket_created_at", "created_at"))  # period queries (Open311, reports)
    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    category: Mapped[str] = mapped_column(String(64), index=True)
    klass: Mapped[str] = mapped_column(String(16))  # enforcement | request
    order_type: Mapped[str] = mapped_column(String(16))  # emergency | routine | key
    state: Mapped[str] = mapped_column(String(24))
    description: Mapped[str] = mapped_column(Text)
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    address: Mapped[str | None] = mapped_column(String(500))
    channel: Mapped[str] = mapped_column(String(16))
    reporter_id: Mapped[int] = mapped_column(ForeignKey("person.id"), index=True)
    anonymous: Mapped[bool] = mapped_column(Boolean, default=True)
    contact_phone: Mapped[str | None] = mapped_column(String(32))
    grid_id: Mapped[int | None] = mapped_column(ForeignKey("unit.id"))
    unit_id: Mapped[int] = mapped_column(ForeignKey("unit.id"), index=True)  # who holds it now
    level: Mapped[str] = mapped_column(String(16))  # grid | community | street | department
    route_reason: Mapped[str] = mapped_column(String(32))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("person.id"), index=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    claimed_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    claim_due_at: Mapped[datetime | None]  # the first claim deadline (response rate)
    resolve_due_at: Mapped[datetime | None]  # the current resolve deadline
    resolution_note: Mapped[str | None] = mapped_column(Text)
    resolved_level: Mapped[str | None] = mapped_column(String(16))  # where it was finally solved
    reopens: Mapped[int] = mapped_column(Integer, default=0)
    escalations: Mapped[int] = mapped_column(Integer, default=0)
    waiting_since: Mapped[datetime | None]  # waiting on the resident: timers paused
    unrated: Mapped[bool] = mapped_column(Boolean, default=False)
    whistler_unit_id: Mapped[int | None] = mapped_column(ForeignKey("unit.id"))
    followers: Mapped[int] = mapped_column(Integer, default=0)  # "also reported by N residents"
    duplicate_of_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"))
    close_reason: Mapped[str | None] = mapped_column(String(16))  # not_fixable | not_ours | referred
    close_note: Mapped[str | None] = mapped_column(Text)
    media_url: Mapped[str | None] = mapped_column(String(1000))  # a photo link given by Open311
    address_id: Mapped[str | None] = mapped_column(String(64))  # an address-register id given by Open311


class Follower(Base):
    """A resident who follows a ticket ("me too", or moved from a duplicate): told of
    every change and asked for their own vote."""

    __tablename__ = "follower"
    __table_args__ = (UniqueConstraint("ticket_id", "person_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id"), index=True)
    created_at: Mapped[datetime]


class Timer(Base):
    """One deadline of one ticket. The sweep reads rows whose ``next_at`` has come
    (an index), so deadlines survive restarts and scale with the number due, not open."""

    __tablename__ = "timer"
    __table_args__ = (Index("ix_timer_unit_stage", "unit_id", "stage"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # claim | onsite | resolve | progress | vote
    unit_id: Mapped[int] = mapped_column(ForeignKey("unit.id"))  # who must act
    working: Mapped[bool] = mapped_column(Boolean)  # measured in working time?
    starts_at: Mapped[datetime]
    warn_at: Mapped[datetime]
    due_at: Mapped[datetime]
    stage: Mapped[str] = mapped_column(String(12))  # running | warned | breached | done
    next_at: Mapped[datetime | None] = mapped_column(index=True)  # None: nothing more to do
    met: Mapped[bool | None] = mapped_column(Boolean)  # done before due_at?
    done_at: Mapped[datetime | None]
    paused_at: Mapped[datetime | None]


class Vote(Base):
    """The resident's verdict: solved or not, and how satisfied; changeable for a while."""

    __tablename__ = "vote"
    __table_args__ = (UniqueConstraint("ticket_id", "person_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id"))
    solved: Mapped[bool | None] = mapped_column(Boolean)
    satisfaction: Mapped[str | None] = mapped_column(String(12))  # satisfied | basic | unsatisfied
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Assignment(Base):
    """A department whistled to a ticket (吹哨报到): the lead or a cooperating department."""

    __tablename__ = "assignment"
    __table_args__ = (UniqueConstraint("ticket_id", "unit_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("unit.id"), index=True)
    role: Mapped[str] = mapped_column(String(8))  # lead | coop
    whistler_unit_id: Mapped[int] = mapped_column(ForeignKey("unit.id"))
    whistled_by: Mapped[int | None] = mapped_column(ForeignKey("person.id"))
    state: Mapped[str] = mapped_column(String(12))  # waiting | reported | resolved
    reported_by: Mapped[int | None] = mapped_column(ForeignKey("person.id"))
    reported_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class DepartmentRating(Base):
    """One whistle, one rating (一哨一评): the whistling unit rates the department."""

    __tablename__ = "department_rating"
    __table_args__ = (UniqueConstraint("ticket_id", "department_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("unit.id"), index=True)
    rater_unit_id: Mapped[int] = mapped_column(ForeignKey("unit.id"))
    rater_id: Mapped[int] = mapped_column(ForeignKey("person.id"))
    score: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]


class JobRun(Base):
    """A periodic job claims its (job, period) once, so no restart or second
    process runs it twice."""

    __tablename__ = "job_run"
    job: Mapped[str] = mapped_column(String(32), primary_key=True)
    period: Mapped[str] = mapped_column(String(32), primary_key=True)
    started_at: Mapped[datetime]


class TicketEvent(Base):
    """The audit trail: one row per state change or note, written in the same transaction."""

    __tablename__ = "ticket_event"
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id"), index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("person.id"))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(24))
    from_state: Mapped[str | None] = mapped_column(String(24))
    to_state: Mapped[str | None] = mapped_column(String(24))
    note: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None]


class Media(Base):
    """A stored photo: kept on our disk so it outlives Telegram's file expiry."""

    __tablename__ = "media"
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("ticket.id"), index=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("person.id"))
    kind: Mapped[str] = mapped_column(String(16))  # report | proof
    path: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    telegram_file_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]


class Dialogue(Base):
    """Where a person is in a conversation, so any process can continue it after a restart."""

    __tablename__ = "dialogue"
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)
    step: Mapped[str | None] = mapped_column(String(24))
    draft: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    pending: Mapped[dict[str, Any] | None]  # a staff note being collected (progress, resolve …)
    updated_at: Mapped[datetime]


class Outbox(Base):
    """A message to deliver, written in the transaction of the change it reports."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_pending", "state", "id"),
        # the rows in flight, which every sender pass reads (few, wherever they are queued)
        Index("ix_outbox_leased", "lease_owner", postgresql_where=text("lease_owner IS NOT NULL"),
              sqlite_where=text("lease_owner IS NOT NULL")),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    chat_id: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(12), default="pending")  # pending|sent|failed|uncertain
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime]
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    # the sender process delivering this row now (one per chat at a time), and until when;
    # a lease that ran out unsettled means that process died mid-send
    lease_owner: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None]
    # why this message may have reached the chat twice: its sender died mid-send and it was
    # sent again (a gap is worse than a repeat); counted with the uncertain ones
    doubt: Mapped[str | None] = mapped_column(String(200))


class MessageRef(Base):
    """Which channel message shows a thing (a ticket card), so it can be edited in place."""

    __tablename__ = "message_ref"
    __table_args__ = (UniqueConstraint("ref", "channel", "chat_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    chat_id: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str | None] = mapped_column(String(64))  # filled in by the sender
    created_at: Mapped[datetime | None]  # when the message was first posted


class TicketCounter(Base):
    """Per-day sequence behind human-readable ticket numbers (20261122-0007)."""

    __tablename__ = "ticket_counter"
    day: Mapped[str] = mapped_column(String(8), primary_key=True)
    last: Mapped[int] = mapped_column(BigInteger)


class Inbox(Base):
    """An update already handled (a Telegram update id, a WeCom MsgId), written in the
    transaction of its effects: a redelivered update is recognised and dropped."""

    __tablename__ = "inbox"
    __table_args__ = (UniqueConstraint("channel", "key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(128))
    received_at: Mapped[datetime] = mapped_column(index=True)


class ReceivedUpdate(Base):
    """A Telegram update fetched by long polling and not yet handled. Polling confirms a
    batch to Telegram when it asks for the next one, which may be before the batch was
    handled: each batch is written here first, so a process killed in between leaves
    its updates for the next start instead of losing them (bot/telegram/journal.py)."""

    __tablename__ = "received_update"
    bot_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    update_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    payload: Mapped[dict[str, Any]]
    received_at: Mapped[datetime]


class StaffUser(Base):
    """A command-centre dashboard login. ``unit_id`` scopes what the user sees (None with
    ``is_admin``: the whole district)."""

    __tablename__ = "staff_user"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2
    person_id: Mapped[int | None] = mapped_column(ForeignKey("person.id"))
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("unit.id"))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class WebSession(Base):
    """A dashboard session; the cookie holds a random token, the row only its hash."""

    __tablename__ = "web_session"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie token
    user_id: Mapped[int] = mapped_column(ForeignKey("staff_user.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class ApiKey(Base):
    """An Open311 client's key; only its hash is stored."""

    __tablename__ = "api_key"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class Ban(Base):
    """A person staff have banned from reporting (abuse)."""

    __tablename__ = "ban"
    person_id: Mapped[int] = mapped_column(ForeignKey("person.id"), primary_key=True)
    reason: Mapped[str | None] = mapped_column(Text)
    banned_by: Mapped[int | None] = mapped_column(ForeignKey("person.id"))
    created_at: Mapped[datetime]


class WecomCard(Base):
    """An interactive WeCom card we sent: who got it, and the latest response code
    (from the send or from a button press), which ``update_template_card`` needs once."""

    __tablename__ = "wecom_card"
    task_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    chat_id: Mapped[str] = mapped_column(String(64))
    userids: Mapped[str] = mapped_column(Text)  # "|"-joined, as sent
    response_code: Mapped[str | None] = mapped_column(Text)
    code_at: Mapped[datetime | None]
    more: Mapped[dict[str, Any] | None]  # buttons beyond a card's six, behind "More…"
    created_at: Mapped[datetime]


class RateCounter(Base):
    """A fixed-window counter shared by every process (per-resident limits, send budgets)."""

    __tablename__ = "rate_counter"
    key: Mapped[str] = mapped_column(String(96), primary_key=True)
    period: Mapped[str] = mapped_column(String(24), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime] = mapped_column(index=True)
