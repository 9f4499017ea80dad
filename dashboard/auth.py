"""Dashboard logins: argon2 password hashes, sessions, CSRF tokens and login throttling.

A session cookie holds a random token; the database keeps only its SHA-256, so a copy
of the database cannot be replayed as a login. Every session carries its own CSRF
token, which every form posts back. Failed logins slow the guesser, not the owner:
the account waits longer after each failure, a browser that has logged in as the user
before is not held up, and an address is refused only for its own failures (see
"logging in" below)."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from models.org import tree as org
from models.store.tables import Person, RateCounter, StaffUser, Unit, WebSession

HASHER = PasswordHasher()
MIN_PASSWORD = 8
USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-")
_DUMMY_HASH: str | None = None


class UserError(Exception):
    """A user cannot be created or changed as asked (the CLI prints the message)."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two tokens (None never matches)."""
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


# ---- users --------------------------------------------------------------------------------

async def create_user(session: AsyncSession, now: datetime, username: str, password: str, *,
                      unit_code: str | None = None, admin: bool = False,
                      person_code: str | None = None, hashed: str | None = None) -> StaffUser:
    """A new login. ``unit_code`` scopes it (admins see everything); ``person_code`` links
    it to a staff member of the org file, who is then the actor of its actions.
    ``hashed``: the password's hash, already computed (several users, one password)."""
    username = username.strip().lower()
    if not username or len(username) > 64 or not set(username) <= USERNAME_CHARS:
        raise UserError("user names are 1-64 characters: a-z, 0-9, '.', '_' or '-'")
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password must have at least {MIN_PASSWORD} characters")
    if admin == (unit_code is not None):
        raise UserError("give either a unit (--unit CODE) or --admin")
    if await session.scalar(select(StaffUser.id).where(StaffUser.username == username)):
        raise UserError(f"the user {username!r} exists already")
    unit_id = person_id = None
    if unit_code is not None:
        unit = await org.unit_by_code(session, unit_code)
        if unit is None:
            raise UserError(f"no unit with the code {unit_code!r}")
        unit_id = unit.id
    if person_code is not None:
        person_id = await session.scalar(select(Person.id).where(Person.code == person_code))
        if person_id is None:
            raise UserError(f"no person with the code {person_code!r} (see the org file)")
    user = StaffUser(username=username, password_hash=hashed or await hash_password(password),
                     person_id=person_id, unit_id=unit_id, is_admin=admin, disabled=False,
                     failed_logins=0, created_at=now)
    session.add(user)
    await session.flush()
    return user


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(HASHER.hash, password)


async def list_users(session: AsyncSession) -> list[tuple[StaffUser, Unit | None, Person | None]]:
    rows = await session.execute(
        select(StaffUser, Unit, Person).outerjoin(Unit, Unit.id == StaffUser.unit_id)
        .outerjoin(Person, Person.id == StaffUser.person_id).order_by(StaffUser.username))
    return [tuple(row) for row in rows]


async def disable_user(session: AsyncSession, username: str) -> StaffUser:
    """Disable a login and end its sessions at once."""
    user = await session.scalar(select(StaffUser).where(StaffUser.username == username.lower()))
    if user is None:
        raise UserError(f"no user {username!r}")
    user.disabled = True
    await session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    return user


# ---- logging in ---------------------------------------------------------------------------
#
# Failed logins slow the guesser, not the owner.
# * Per account: after ``max_failed_logins`` failures, each further try must wait
#   (``login_delay_seconds``, doubled with each failure, at most ``lockout_minutes``);
#   a try within the wait is not checked. It is a delay, not a lock: nobody can shut an
#   account for longer than the longest wait.
# * Per browser: a browser that has logged in as the user carries a device cookie,
#   signed with the user's password hash (so it cannot be forged without the database,
#   and a new password voids it). With it, the user is held up by neither the account's
#   wait nor the address's limit: a guesser cannot lock the owner out. Its own failures
#   are counted on it; after ``max_failed_logins`` in a window it is a stranger again.
# * Per address: ``max_failed_logins_per_ip`` failures in a window, then that address
#   (only) is refused until the window ends. The address is the client's, as the
#   trusted proxy names it (``[web] trusted_proxies``).

DEVICE_PREFIX = "dash-device:"
IP_PREFIX = "dash-login:"


@dataclass
class LoginResult:
    user: StaffUser | None  # set when the password was right and the login is open
    throttled: bool = False  # too many failures from this address: not even checked
    device: str | None = None  # on success: the browser's new device cookie


async def check_login(session: AsyncSession, settings, now: datetime, username: str,
                      password: str, address: str, device: str | None = None) -> LoginResult:
    """Check a password, with the throttling above. ``device``: the browser's device
    cookie, if it sent one."""
    window = timedelta(minutes=settings.lockout_minutes)
    ip_key = f"{IP_PREFIX}{address}"[:96]
    user = await session.scalar(select(StaffUser).where(
        StaffUser.username == username.strip().lower()))
    device_key = None
    if user is not None and device_valid(user, device, now, settings.known_device_days):
        device_key = f"{DEVICE_PREFIX}{device.rsplit('.', 1)[1]}"[:96]
        if await _count(session, device_key, now, window) >= settings.max_failed_logins:
            device_key = None  # its own failures used up: a stranger until the window ends
    known = device_key is not None
    if not known and await _count(session, ip_key, now, window) >= settings.max_failed_logins_per_ip:
        return LoginResult(None, throttled=True)
    waiting = user is not None and user.locked_until is not None and user.locked_until > now
    usable = user is not None and not user.disabled and (known or not waiting)
    # verify even when the answer is known, so timing does not tell which names exist
    correct = await _verify(user.password_hash if user is not None else None, password)
    if usable and correct:
        if not known:  # a stranger who knew the password: the account's count starts over
            user.failed_logins, user.locked_until = 0, None
        user.last_login_at = now
        if HASHER.check_needs_rehash(user.password_hash):
            user.password_hash = await hash_password(password)
        return LoginResult(user, device=device_token(user, now))
    if known:  # the owner's own typo: counted on the browser, not the account or address
        await _bump(session, device_key, now, window)
        return LoginResult(None)
    await _bump(session, ip_key, now, window)
    if user is not None and not user.disabled and not waiting:
        user.failed_logins += 1
        if user.failed_logins >= settings.max_failed_logins:
            user.locked_until = now + login_delay(settings, user.failed_logins)
    return LoginResult(None)


def login_delay(settings, failures: int) -> timedelta:
    """The wait after the ``failures``-th failure in a row (from max_failed_logins on)."""
    doublings = min(failures - settings.max_failed_logins, 40)
    seconds = settings.login_delay_seconds * 2 ** doublings
    return min(timedelta(seconds=seconds), timedelta(minutes=settings.lockout_minutes))


def device_token(user: StaffUser, now: datetime) -> str:
    """The device cookie for a browser that has just logged in as ``user``."""
    issued = int(now.timestamp())
    return f"{user.id}.{issued}.{_device_mac(user, issued)}"


def device_valid(user: StaffUser, token: str | None, now: datetime, days: float) -> bool:
    """Whether ``token`` is a device cookie this user's browser was given (and still fresh)."""
    if not token or len(token) > 100 or token.count(".") != 2:
        return False
    user_id, issued, mac = token.split(".")
    if user_id != str(user.id) or not issued.isdigit() or len(issued) > 12:
        return False
    age = now.timestamp() - int(issued)
    if not -60 <= age <= days * 86400:
        return False
    return same(mac, _device_mac(user, int(issued)))


def _device_mac(user: StaffUser, issued: int) -> str:
    key = hashlib.sha256(b"whistle-device\0" + user.password_hash.encode()).digest()
    return hmac.new(key, f"{user.id}:{issued}".encode(), hashlib.sha256).hexdigest()[:32]


async def unlock_user(session: AsyncSession, username: str) -> StaffUser:
    """Forget an account's failed logins, so it need not wait (the CLI's ``user unlock``)."""
    user = await session.scalar(select(StaffUser).where(StaffUser.username == username.lower()))
    if user is None:
        raise UserError(f"no user {username!r}")
    user.failed_logins, user.locked_until = 0, None
    return user


async def _verify(stored: str | None, password: str) -> bool:
    global _DUMMY_HASH
    if stored is None:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = await hash_password(secrets.token_hex(16))
        stored = _DUMMY_HASH
    try:
        return await asyncio.to_thread(HASHER.verify, stored, password)
    except (VerificationError, InvalidHashError):
        return False


def _period(now: datetime, window: timedelta) -> tuple[str, datetime]:
    seconds = window.total_seconds()
    start = math.floor(now.timestamp() / seconds)
    return str(start), now + window


async def _count(session: AsyncSession, key: str, now: datetime, window: timedelta) -> int:
    period, _ = _period(now, window)
    return await session.scalar(select(RateCounter.count).where(
        RateCounter.key == key, RateCounter.period == period)) or 0


async def _bump(session: AsyncSession, key: str, now: datetime, window: timedelta) -> None:
    """Add one to an address's or a browser's counter of this window (an upsert, safe across processes)."""
    period, expires = _period(now, window)
    insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    await session.execute(
        insert(RateCounter).values(key=key, period=period, count=1, expires_at=expires)
        .on_conflict_do_update(index_elements=["key", "period"],
                               set_={"count": RateCounter.count + 1}))
    await session.execute(delete(RateCounter).where(
        or_(RateCounter.key.like(f"{IP_PREFIX}%"), RateCounter.key.like(f"{DEVICE_PREFIX}%")),
        RateCounter.expires_at < now))


# ---- sessions -----------------------------------------------------------------------------

@dataclass
class Viewer:
    """The logged-in user of one request."""

    user_id: int
    username: str
    person_id: int | None
    unit_id: int | None
    is_admin: bool
    csrf: str
    session_id: str


async def open_session(session: AsyncSession, user: StaffUser, now: datetime,
                       hours: float, end_others: bool = False) -> str:
    """A new session for ``user``; returns the cookie token (stored only as its hash).
    The user's expired sessions are cleared on the way, and with ``end_others`` all
    the others too (the login form's "log out my other sessions")."""
    ended = WebSession.user_id == user.id
    await session.execute(delete(WebSession).where(
        ended if end_others else (ended & (WebSession.expires_at <= now))))
    token = secrets.token_urlsafe(32)
    session.add(WebSession(id=token_hash(token), user_id=user.id,
                           csrf_token=secrets.token_urlsafe(32), created_at=now,
                           expires_at=now + timedelta(hours=hours)))
    return token


async def viewer_of(session: AsyncSession, token: str | None, now: datetime) -> Viewer | None:
    """The user behind a session cookie, or None (no, unknown or expired session,
    disabled user)."""
    if not token or len(token) > 200:
        return None
    row = await session.execute(select(WebSession, StaffUser)
                                .join(StaffUser, StaffUser.id == WebSession.user_id)
                                .where(WebSession.id == token_hash(token)))
    found = row.first()
    if found is None:
        return None
    web_session, user = found
    if web_session.expires_at <= now or user.disabled:
        await session.delete(web_session)
        return None
    return Viewer(user.id, user.username, user.person_id, user.unit_id, user.is_admin,
                  web_session.csrf_token, web_session.id)


async def close_session(session: AsyncSession, session_id: str) -> None:
    await session.execute(delete(WebSession).where(WebSession.id == session_id))


async def close_other_sessions(session: AsyncSession, user_id: int, keep: str) -> None:
    """End every session of the user but ``keep`` (the dashboard's "log out other sessions")."""
    await session.execute(delete(WebSession).where(WebSession.user_id == user_id,
                                                   WebSession.id != keep))
