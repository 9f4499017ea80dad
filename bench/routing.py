"""Routing speed: point-in-polygon lookups against N square grids (shapely STRtree).

Run: .venv/bin/python bench/routing.py [--grids 100 1000 10000] [--lookups 20000]"""
import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shapely.geometry import box  # noqa: E402

from models.org.routing import Router  # noqa: E402


def build(n: int) -> Router:
    side = int(n ** 0.5) + 1
    size = 0.005
    grids = []
    for i in range(n):
        x, y = 116.0 + (i % side) * size, 39.0 + (i // side) * size
        grids.append((i + 1, f"g{i:06d}", box(x, y, x + size, y + size)))
    return Router(grids)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grids", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--lookups", type=int, default=20000)
    args = parser.parse_args()
    print("command:", " ".join(sys.argv))
    rng = random.Random(1)
    for n in args.grids:
        started = time.perf_counter()
        router = build(n)
        built = time.perf_counter() - started
        side = int(n ** 0.5) + 1
        points = [(39.0 + rng.random() * side * 0.005, 116.0 + rng.random() * side * 0.005)
                  for _ in range(args.lookups)]
        started = time.perf_counter()
        found = sum(router.locate(lat, lon) is not None for lat, lon in points)
        elapsed = time.perf_counter() - started
        print(f"{n:>6} grids: build {built * 1000:7.1f} ms, {args.lookups} lookups in "
              f"{elapsed * 1000:7.1f} ms = {elapsed / args.lookups * 1e6:6.1f} µs each "
              f"({found} inside a grid)")


if __name__ == "__main__":
    main()
