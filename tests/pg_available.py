"""Exit 0 if the PostgreSQL server for the test suite answers, else 1 (used by `make test`)."""
import asyncio
import sys

import asyncpg


async def main(url: str) -> int:
    try:
        conn = await asyncio.wait_for(asyncpg.connect(url.replace("+asyncpg", "")), timeout=5)
    except Exception as exc:  # any failure means "not available"; the reason is printed
        print(f"PostgreSQL at {url} is not available: {exc}", file=sys.stderr)
        return 1
    await conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))
