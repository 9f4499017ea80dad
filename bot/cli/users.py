"""``python -m bot user add NAME (--unit CODE | --admin) [--person CODE] [--password-stdin]``,
``user list``, ``user unlock NAME`` (forget its failed logins) and ``user disable NAME``:
dashboard logins, managed on the server."""
from __future__ import annotations

import argparse
import getpass
import sys

from dashboard import auth


def add_parser(sub) -> None:
    user = sub.add_parser("user", help="dashboard logins").add_subparsers(
        dest="user_command", required=True)
    add = user.add_parser("add", help="create a login (asks for the password)")
    add.add_argument("name", help="user name (a-z, 0-9, '.', '_', '-')")
    scope = add.add_mutually_exclusive_group(required=True)
    scope.add_argument("--unit", help="unit code the login sees (grid, community, street, "
                                      "department or the district)")
    scope.add_argument("--admin", action="store_true", help="sees the whole district")
    add.add_argument("--person", help="person code from the org file: the staff member who acts "
                                      "(without one the login can only look)")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    user.add_parser("list", help="list the logins")
    user.add_parser("disable", help="disable a login and end its sessions").add_argument("name")
    user.add_parser("unlock", help="forget a login's failed attempts (no more waiting)"
                    ).add_argument("name")


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"Password for {args.name}: ")
    if getpass.getpass("Again: ") != first:
        raise auth.UserError("the two passwords differ")
    return first


async def run(config, args: argparse.Namespace) -> int:
    """Run one ``user`` command; prints what it did and returns the exit code."""
    from bot.app import Whistle

    service = Whistle(config)
    try:
        await service.prepare()  # the schema and the org file's units and people
        now = service.core.now()
        if args.user_command == "add":
            password = _password(args)
            user = await service.db.run(lambda s: auth.create_user(
                s, now, args.name, password, unit_code=args.unit, admin=args.admin,
                person_code=args.person))
            print(f"created dashboard user {user.username}"
                  + ("" if user.person_id else " (no person: it can look but not act)"))
        elif args.user_command == "unlock":
            user = await service.db.run(lambda s: auth.unlock_user(s, args.name))
            print(f"unlocked {user.username}: its failed logins are forgotten")
        elif args.user_command == "disable":
            user = await service.db.run(lambda s: auth.disable_user(s, args.name))
            print(f"disabled {user.username}; its sessions are ended")
        else:
            rows = await service.db.run(auth.list_users)
            if not rows:
                print("no dashboard users")
            for user, unit, person in rows:
                scope = "admin" if user.is_admin else (unit.code if unit else "-")
                state = "disabled" if user.disabled else (
                    "waiting" if user.locked_until and user.locked_until > now else "active")
                if user.failed_logins and not user.disabled:
                    state += f" ({user.failed_logins} failed logins)"
                last = f"{user.last_login_at:%Y-%m-%d %H:%M}Z" if user.last_login_at else "never"
                print(f"{user.username}\t{scope}\t{person.code if person and person.code else '-'}"
                      f"\t{state}\tlast login {last}")
    except auth.UserError as exc:
        print(f"user {args.user_command}: {exc}", file=sys.stderr)
        return 1
    finally:
        await service.db.dispose()
    return 0
