"""Masking speed: personal numbers and e-mail addresses masked in free text
(models/messages/masking.py), as GET requests does for every record it returns (up
to 1,000 a page) and the "me too" list for each suggestion.

Run: .venv/bin/python bench/masking.py [--texts 20000]"""
import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import header, load_now  # noqa: E402
from models.messages.masking import mask  # noqa: E402

WORDS = ["垃圾", "堆放", "门口", "三天", "了", "气味", "很大", "，", "。", "请", "尽快", "处理",
         "Rubbish", "at", "gate", "3", "smells", "3号楼", "2单元", "2026-11-23", "10:00"]
PERSONAL = ["电话13655556666", "138 - 0013 - 8000", "一三八零零一三八零零零", "zw＠mail.cn",
            "(010)6655-4433", "11010519491231002X"]


def text(rng: random.Random, length: int, personal: int) -> str:
    parts = []
    while sum(map(len, parts)) < length:
        parts.append(rng.choice(WORDS))
    for _ in range(personal):
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(PERSONAL))
    return "".join(parts)[:length + 40]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=20000)
    args = parser.parse_args()
    header()
    rng = random.Random(7)
    for length, personal in [(60, 0), (200, 1), (1000, 2), (4000, 4)]:
        texts = [text(rng, length, personal) for _ in range(args.texts // (1 + length // 200))]
        start = time.perf_counter()
        for item in texts:
            mask(item)
        took = time.perf_counter() - start
        print(f"{length:5d} characters, {personal} personal items: {len(texts):6d} texts in "
              f"{took * 1000:7.1f} ms = {took / len(texts) * 1e6:7.1f} µs each")
    print(load_now())


if __name__ == "__main__":
    main()
