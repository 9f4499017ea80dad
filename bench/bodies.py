"""Request bodies: RSS of a real bot process (``python -m bot --config … run``, a
subprocess with its web server on a free port, SQLite) while ``--parallel`` clients at
once post ``--mib`` MiB bodies to each of its body-taking faces (the dashboard's login,
Open311's POST requests, an unknown path), with and without a length (chunked).
psutil samples the process's RSS every 20 ms; the script prints the idle RSS, the peak
per face and what each client was answered.

Run: .venv/bin/python bench/bodies.py [--parallel 8] [--mib 24]"""
import argparse
import asyncio
import socket
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
import psutil  # noqa: E402
from common import BotProcess, fake_telegram, header, load_now, raw_config, temp_database, write_toml  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def sample(pid: int, stop: asyncio.Event) -> int:
    process, peak = psutil.Process(pid), 0
    while not stop.is_set():
        peak = max(peak, process.memory_info().rss)
        await asyncio.sleep(0.02)
    return peak


async def post(url: str, size: int, chunked: bool) -> str:
    piece = b"a" * (1024 * 1024)

    async def chunks():
        for _ in range(size // len(piece)):
            yield piece
    data = chunks() if chunked else b"a" * size
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
            async with http.post(url, data=data, headers={
                    "Content-Type": "application/x-www-form-urlencoded"}) as response:
                await response.read()
                return str(response.status)
    except aiohttp.ClientError as exc:  # the server answered early and closed
        return type(exc).__name__


async def main(parallel: int, mib: int) -> None:
    header(f"{parallel} clients at once, {mib} MiB each")
    api = await fake_telegram()
    try:
        async with temp_database("sqlite") as url:
            with tempfile.TemporaryDirectory(prefix="whistle-bench-") as folder:
                folder = Path(folder)
                raw = raw_config(url, api, folder)
                port = free_port()
                raw["web"] = {"enabled": True, "host": "127.0.0.1", "port": port}
                config = write_toml(raw, folder / "config.toml")
                bot = BotProcess(config, folder / "bot.log", api)
                await bot.start()
                try:
                    origin = f"http://127.0.0.1:{port}"
                    await asyncio.sleep(1)
                    idle = psutil.Process(bot.pid).memory_info().rss
                    print(f"idle RSS {idle / 2**20:.0f} MiB")
                    for name, path in [("dashboard login", "/dashboard/login"),
                                       ("Open311 POST", "/open311/v2/requests.json"),
                                       ("unknown path", "/nowhere")]:
                        for chunked in (False, True):
                            stop = asyncio.Event()
                            sampler = asyncio.create_task(sample(bot.pid, stop))
                            answers = await asyncio.gather(*[
                                post(origin + path, mib * 2**20, chunked) for _ in range(parallel)])
                            stop.set()
                            peak = await sampler
                            how = "chunked" if chunked else "with length"
                            print(f"{name:16} {how:12} peak RSS {peak / 2**20:5.0f} MiB "
                                  f"(+{(peak - idle) / 2**20:4.0f})  answers "
                                  + ", ".join(f"{k} ×{v}" for k, v in Counter(answers).items()))
                    print(load_now())
                finally:
                    await bot.stop()
    finally:
        await api.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--mib", type=int, default=24)
    args = parser.parse_args()
    asyncio.run(main(args.parallel, args.mib))
