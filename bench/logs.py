"""Log cost: what one log line costs through the service's formatter (structlog, JSON or
console), with the redaction of secrets and phone numbers (bot/observability.py) and
with it switched off, for a plain line (the "update handled" line with its ids), a line
whose message holds a secret and a phone number, and an error with a traceback.

Run: .venv/bin/python bench/logs.py [--lines 20000] [--secrets 10]"""
import argparse
import io
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import header  # noqa: E402

import structlog  # noqa: E402

from bot import observability  # noqa: E402
from bot.config import LoggingConfig  # noqa: E402

TOKEN = "7012345678:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"


def deep(n: int) -> None:
    if n:
        deep(n - 1)
    raise ConnectionError(f"cannot reach https://api.telegram.org/bot{TOKEN}/sendMessage")


def lines(log: logging.Logger, kind: str, count: int) -> None:
    if kind == "plain":
        for i in range(count):
            log.info("update handled in %.1f ms", 12.5, extra={
                "update_id": i, "chat_id": 9301, "user_id": 9301, "ticket": "20261123-0001"})
    elif kind == "secret":
        for i in range(count):
            log.warning("send to %s failed: token %s, resident wrote %r", -100101, TOKEN,
                        "call me on 13812345678")
    else:
        for i in range(count // 20):  # tracebacks are rarer and dearer
            try:
                deep(8)
            except ConnectionError:
                log.exception("outbox %s raised", i)


def measure(fmt: str, kind: str, count: int, redact: bool) -> float:
    stream = io.StringIO()
    handler = observability.configure_logging(LoggingConfig(format=fmt, level="INFO"),
                                              stream=stream)
    if not redact:  # the same chain without the redaction processor
        formatter = handler.formatter
        formatter.processors = [p for p in formatter.processors if p is not observability.REDACT]
    log = logging.getLogger("bench.logs")
    lines(log, kind, 200)  # warm up
    n = count if kind != "traceback" else count // 20
    start = time.perf_counter()
    lines(log, kind, count)
    elapsed = time.perf_counter() - start
    logging.getLogger().removeHandler(handler)
    if redact:
        assert TOKEN not in stream.getvalue() and "13812345678" not in stream.getvalue()
    return elapsed / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20000)
    parser.add_argument("--secrets", type=int, default=10, help="configured secrets known")
    args = parser.parse_args()
    header(f"{args.lines} lines per figure ({args.lines // 20} for tracebacks), "
           f"{args.secrets} configured secrets")
    for other in list(logging.getLogger().handlers):  # header's basicConfig: only ours counts
        logging.getLogger().removeHandler(other)
    observability.REDACT.add([TOKEN] + [f"configured-secret-{i:04d}-xyz" for i in range(args.secrets)])
    structlog.contextvars.clear_contextvars()
    for fmt in ("json", "console"):
        for kind in ("plain", "secret", "traceback"):
            off = measure(fmt, kind, args.lines, False)
            on = measure(fmt, kind, args.lines, True)
            print(f"{fmt:8} {kind:10} without redaction {off:8.1f} µs/line, "
                  f"with {on:8.1f} µs/line ({on - off:+.1f} µs)")


if __name__ == "__main__":
    main()
