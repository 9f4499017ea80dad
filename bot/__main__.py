"""Command line: ``python -m bot run --config config.toml`` and friends."""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from bot.config import ConfigError, load_config
from bot.observability import REDACT, configure_logging, secrets_of

NO_TOKEN = """\
No Telegram bot token is configured, so Whistle cannot connect to Telegram.

  1. In Telegram, talk to @BotFather, send /newbot and copy the token it gives you.
  2. Either put it in config.toml under [telegram] token = "...",
     or set the environment variable WHISTLE_TELEGRAM_TOKEN.
  3. Run this command again.

README.md ("Running it on Telegram") explains the rest: group privacy, adding the bot to grid groups, /bind.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Whistle service")
    parser.add_argument("--config", default="config.toml",
                        help="config file (TOML); before or after the command")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the bot (long polling); without a token, the local sandbox")
    run.add_argument("--sandbox", action="store_true",
                     help="run the local chat sandbox (fake Telegram) even if a token is configured")
    run.add_argument("--host", default="127.0.0.1", help="sandbox address (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=8080, help="sandbox port (default 8080)")
    sub.add_parser("check-config", help="validate the config and exit")
    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply Alembic migrations")
    org = sub.add_parser("org", help="org structure").add_subparsers(dest="org_command", required=True)
    org.add_parser("import", help="import the org file named in the config")
    apikey = sub.add_parser("apikey", help="Open311 API keys").add_subparsers(
        dest="apikey_command", required=True)
    apikey.add_parser("add", help="create a key for a client (printed once)").add_argument("name")
    apikey.add_parser("list", help="list the keys (names and dates, never the keys)")
    apikey.add_parser("revoke", help="revoke a client's key").add_argument("name")
    report = sub.add_parser("report", help="write a period's report (workbook, charts, summary)")
    report.add_argument("--month", help="2026-11 (default: last month), or 2026-Q4, 2026-H2, 2026")
    report.add_argument("--scope", help="unit code (default: the district)")
    report.add_argument("--out", type=Path, default=Path("."), help="folder to write into")
    report.add_argument("--lang", choices=["zh_Hans", "en"], help="language of the texts")
    from bot.cli.users import add_parser as add_user_parser
    from bot.cli.users import run as user_cli
    add_user_parser(sub)  # user add|list|disable: dashboard logins
    args = _parse(parser, argv)
    try:
        config = load_config(Path(args.config))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(config.logging, verbose=args.verbose)  # structlog: JSON lines or console
    REDACT.add(secrets_of(config))  # masked in every log line, whatever the command
    if args.command == "check-config":
        print(f"config file {args.config} is valid")
        return 0
    if args.command == "db":
        from bot.migrate import upgrade
        asyncio.run(upgrade(config.database.url))
        print("database is up to date")
        return 0
    if args.command == "apikey":
        from bot.open311.keys import cli as apikey_cli
        return asyncio.run(apikey_cli(config, args.apikey_command, getattr(args, "name", None)))
    if args.command == "user":
        return asyncio.run(user_cli(config, args))
    if args.command == "org":
        from bot.app import Whistle
        asyncio.run(_prepare(Whistle(config)))
        print(f"imported {config.org_file}")
        return 0
    if args.command == "report":
        from bot.cli.report import run as report
        return asyncio.run(report(config, args.month, args.scope, args.out, args.lang))
    if args.sandbox or not config.telegram.token:
        if not config.telegram.token:
            print("Note: " + NO_TOKEN, file=sys.stderr)
        print("Starting the local sandbox instead: Whistle with a fake Telegram, in your browser.",
              file=sys.stderr)
        return asyncio.run(_run_sandbox(config, args.host, args.port))
    return asyncio.run(_run(config))


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``--config`` and ``-v`` are taken before the command (``--config FILE run``) and
    after it (``run --config FILE``), at any depth (``db upgrade --config FILE``)."""
    args, extra = parser.parse_known_args(argv)
    late = argparse.ArgumentParser(prog=parser.prog, add_help=False)
    late.add_argument("--config")
    late.add_argument("-v", "--verbose", action="store_true")
    options, unknown = late.parse_known_args(extra)
    if unknown:
        parser.error("unrecognized arguments: " + " ".join(unknown))
    if options.config is not None:
        args.config = options.config
    args.verbose = args.verbose or options.verbose
    return args


async def _prepare(whistle) -> None:
    try:
        await whistle.prepare()
    finally:
        await whistle.db.dispose()


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _run(config) -> int:
    from bot.app import Whistle
    whistle = Whistle(config)
    await whistle.start()
    try:
        await _until_signal()
    finally:
        await whistle.stop()
    return 0


async def _run_sandbox(config, host: str, port: int) -> int:
    from sandbox.server import run_sandbox
    stop = asyncio.Event()
    waiter = asyncio.create_task(_until_signal())
    waiter.add_done_callback(lambda _: stop.set())
    try:
        await run_sandbox(config, host, port, stop)
    finally:
        waiter.cancel()
    return 0

if __name__ == "__main__":
    sys.exit(main())
