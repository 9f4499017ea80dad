"""Open311 API keys: a random secret shown once, stored only as its SHA-256.

A key is 32 random bytes, so a plain hash is enough (no password stretching needed):
nobody can guess a key from its hash. ``python -m bot apikey add|list|revoke``
manages them."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models.store.tables import ApiKey

PREFIX = "w311_"
MAX_NAME = 100


class KeyCommandError(Exception):
    """A key command that cannot be done (a name in use, an unknown name)."""


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def add(session: AsyncSession, name: str, now: datetime) -> str:
    """Create a key for client ``name`` and return the secret (shown once, never stored)."""
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise KeyCommandError(f"the name must be 1 to {MAX_NAME} characters")
    if await session.scalar(select(ApiKey.id).where(ApiKey.name == name,
                                                    ApiKey.revoked_at.is_(None))) is not None:
        raise KeyCommandError(f"an active key named {name!r} exists; revoke it first")
    secret = new_secret()
    session.add(ApiKey(name=name, key_hash=digest(secret), created_at=now))
    await session.flush()
    return secret


async def listing(session: AsyncSession) -> list[ApiKey]:
    return list(await session.scalars(select(ApiKey).order_by(ApiKey.name, ApiKey.id)))


async def revoke(session: AsyncSession, name: str, now: datetime) -> int:
    """Revoke every active key named ``name``; how many were revoked."""
    rows = list(await session.scalars(select(ApiKey).where(ApiKey.name == name.strip(),
                                                           ApiKey.revoked_at.is_(None))))
    if not rows:
        raise KeyCommandError(f"no active key named {name!r}")
    for row in rows:
        row.revoked_at = now
    return len(rows)


async def verify(session: AsyncSession, secret: str, now: datetime) -> ApiKey | None:
    """The active key with this secret, its use recorded; None for an unknown or revoked one."""
    if not secret or len(secret) > 200:
        return None
    row = await session.scalar(select(ApiKey).where(ApiKey.key_hash == digest(secret),
                                                    ApiKey.revoked_at.is_(None)))
    if row is not None:
        row.last_used_at = now
    return row


async def cli(config, command: str, name: str | None) -> int:
    """``python -m bot apikey add NAME | list | revoke NAME``; prints, returns the exit code."""
    import sys

    from bot.migrate import upgrade
    from models.context import utcnow
    from models.store.db import Database

    await upgrade(config.database.url)
    db = Database(config.database.url)
    try:
        if command == "add":
            secret = await db.run(lambda s: add(s, name, utcnow()))
            print(f"API key for {name.strip()} (shown only now; give it to the client):")
            print(secret)
        elif command == "revoke":
            count = await db.run(lambda s: revoke(s, name, utcnow()))
            print(f"revoked {count} key(s) named {name.strip()}")
        else:
            rows = await db.run(listing)
            if not rows:
                print("no API keys")
            for row in rows:
                state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}Z" if row.revoked_at else "active"
                used = f"{row.last_used_at:%Y-%m-%d %H:%M}Z" if row.last_used_at else "never"
                print(f"{row.name}\t{state}\tcreated {row.created_at:%Y-%m-%d %H:%M}Z\tlast used {used}")
    except KeyCommandError as exc:
        print(f"apikey {command}: {exc}", file=sys.stderr)
        return 1
    finally:
        await db.dispose()
    return 0
