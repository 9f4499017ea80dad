"""Dashboard logins: argon2 password hashes, sessions, CSRF tokens and login throttling.

A session cookie holds a random token; the database keeps only its SHA-256, so a copy
of the database cannot be replayed as a login. Every session carries its own CSRF
token, which every form posts back. Failed logins lock the account for a while
(per user) and slow down the address they come from (per IP, a shared counter)."""
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
from sqlalchemy import delete, select
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

@dataclass
class LoginResult:
    user: StaffUser | None  # set when the password was right and the login is open
    throttled: bool = False  # too many failures from this address: not even checked


async def check_login(session: AsyncSession, settings, now: datetime, username: str,
                      password: str, address: str) -> LoginResult:
    """Check a password, counting failures per user (lockout) and per address."""
    window = timedelta(minutes=settings.lockout_minutes)
    ip_key = f"dash-login:{address}"[:96]
    if await _count(session, ip_key, now, window) >= settings.max_failed_logins_per_ip:
        return LoginResult(None, throttled=True)
    user = await session.scalar(select(StaffUser).where(
        StaffUser.username == username.strip().lower()))
    usable = user is not None and not user.disabled and not (
        user.locked_until is not None and user.locked_until > now)
    # verify even when the answer is known, so timing does not tell which names exist
    correct = await _verify(user.password_hash if user is not None else None, password)
    if usable and correct:
        user.failed_logins, user.locked_until, user.last_login_at = 0, None, now
        if HASHER.check_needs_rehash(user.password_hash):
            user.password_hash = await hash_password(password)
        return LoginResult(user)
    await _bump(session, ip_key, now, window)
    if user is not None and usable:
        user.failed_logins += 1
        if user.failed_logins >= settings.max_failed_logins:
            user.failed_logins, user.locked_until = 0, now + window
    return LoginResult(None)


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
    """Add one to the address's counter of this window (an upsert, safe across processes)."""
    period, expires = _period(now, window)
    insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    await session.execute(
        insert(RateCounter).values(key=key, period=period, count=1, expires_at=expires)
        .on_conflict_do_update(index_elements=["key", "period"],
                               set_={"count": RateCounter.count + 1}))
    await session.execute(delete(RateCounter).where(RateCounter.key.like("dash-login:%"),
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
                       hours: float) -> str:
    """A new session for ``user``; returns the cookie token (stored only as its hash).
    The user's expired sessions are cleared on the way."""
    await session.execute(delete(WebSession).where(WebSession.user_id == user.id,
                                                   WebSession.expires_at <= now))
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
