"""Logins for the sandbox, so ``make run`` without a token shows the dashboard too: an
administrator and a few scoped users, all with one random password printed at start
(the sandbox's database is fresh on every start, and it listens on 127.0.0.1)."""
from __future__ import annotations

import secrets

from sqlalchemy import select

from models.store.tables import Person

from . import auth

# user name, unit (None: admin), person code in the sample district
DEMO_USERS = (
    ("admin", None, "p-handong"),  # the commander: sees and may act on everything
    ("g01", "g01", "p-wangjianguo"),  # grid chief of g01
    ("c1", "c1", "p-heshuzhen"),  # community secretary of c1
    ("s1", "s1", "p-luozhigang"),  # street dispatcher
    ("d-hw", "d-hw", "p-xiechunmei"),  # sanitation department
)


async def create_demo_users(db, now) -> tuple[str, list[str]]:
    """Create the demo logins that fit the org file; returns (password, user names)."""
    password = secrets.token_urlsafe(9)
    hashed = await auth.hash_password(password)  # once: hashing is slow on purpose

    async def create(session):
        made = []
        for username, unit, person in DEMO_USERS:
            known = await session.scalar(select(Person.id).where(Person.code == person))
            try:
                await auth.create_user(session, now, username, password, unit_code=unit,
                                       admin=unit is None, person_code=person if known else None,
                                       hashed=hashed)
            except auth.UserError:
                continue  # this org file has no such unit, or the user exists
            made.append(username)
        return made
    return password, await db.run(create)
