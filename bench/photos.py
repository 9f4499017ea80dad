"""Photos: peak memory and CPU per photo, whatever is sent. Each case runs in a fresh
process (so its peak is its own): the file is read, the process's RSS noted, then the
photo cleaned (``models/media/photos.clean``, with the limit the bot sets at start), and
the peak RSS (VmHWM) above that printed with the CPU time and the outcome. The
same file through the pipeline before issue #19 (open, decode in full, turn, convert,
thumbnail) is printed beside it. Last, three photos at once through the running
service's path (``Whistle._clean``: a worker thread each, at most two decoding at once)
against three threads of the old pipeline.

Inputs are made here first and written to a temporary folder: the bomb of the outside
check (a 161 KB greyscale PNG of 13,000 × 13,000 pixels), JPEGs of 12, 24 and 40
megapixels (photos from phones, sent as files), a PNG at the pixel limit, a JPEG whose
header claims 10,000 × 10,000, a truncated 24-megapixel JPEG, a GIF of 3,000 frames and
a ZIP named .jpg.

Run: .venv/bin/python bench/photos.py [--only NAME ...]"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common import ROOT, header  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

MiB = 1024 * 1024


def _jpeg(width: int, height: int) -> bytes:
    """A photo-like JPEG (a gradient with noise, so it is not trivially compressible)."""
    base = Image.linear_gradient("L").resize((width, height))
    noise = Image.effect_noise((width, height), 40)
    image = Image.merge("RGB", (base, noise, Image.blend(base, noise, 0.5)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=88)
    return out.getvalue()


def _png(width: int, height: int) -> bytes:
    base = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", (base, base.transpose(Image.Transpose.ROTATE_180), base))
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)
    return out.getvalue()


def make_inputs(folder: Path) -> dict[str, Path]:
    from images import gif_with_frames, jpeg_declaring, png_bomb, zip_file
    made = {
        "bomb PNG 13,000 x 13,000": png_bomb,
        "JPEG 12 MP (4,000 x 3,000)": lambda: _jpeg(4000, 3000),
        "JPEG 24 MP (6,000 x 4,000)": lambda: _jpeg(6000, 4000),
        "JPEG 40 MP (7,300 x 5,475)": lambda: _jpeg(7300, 5475),
        "PNG 40 MP (7,300 x 5,475)": lambda: _png(7300, 5475),
        "JPEG claiming 10,000 x 10,000": lambda: jpeg_declaring(10_000, 10_000),
        "truncated JPEG 24 MP": lambda: _jpeg(6000, 4000)[:400_000],
        "GIF of 3,000 frames": lambda: gif_with_frames(3000),
        "ZIP named .jpg": zip_file,
    }
    paths = {}
    for i, (name, make) in enumerate(made.items()):
        path = folder / f"{i}.bin"
        path.write_bytes(make())
        paths[name] = path
    return paths


# ---- in the child process ---------------------------------------------------------------------

def old_clean(data: bytes, max_side: int = 2048) -> bytes:
    """The pipeline before issue #19, for comparison."""
    from models.media.photos import gps_of
    image = Image.open(io.BytesIO(data))
    image.load()
    gps_of(image)
    image = ImageOps.exif_transpose(image)
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    image.thumbnail((max_side, max_side))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85, optimize=True)
    return out.getvalue()


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def peak() -> int:
    """This process's peak RSS (VmHWM; ``ru_maxrss`` would carry the parent's over exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak() -> None:
    """The peak starts again from the current RSS (Linux: 5 > /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")


def child(pipeline: str, paths: list[str]) -> dict:
    import warnings
    warnings.simplefilter("ignore")
    from models.media.photos import DEFAULT_MAX_PIXELS, clean, limit_pixels
    datas = [Path(p).read_bytes() for p in paths]
    if pipeline == "new":
        limit_pixels(DEFAULT_MAX_PIXELS)  # as the bot does at start
    else:
        old_clean(_tiny())  # the same modules loaded before the baseline
    clean(_tiny())
    if len(datas) == 1:
        reset_peak()
        before, cpu = rss(), time.process_time()
        outcome = _one(pipeline, datas[0], clean)
    else:
        outcome, before, cpu = asyncio.run(_together(pipeline, datas))
    return {"peak": peak() - before, "cpu": time.process_time() - cpu, "outcome": outcome}


def _tiny() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "JPEG")
    return out.getvalue()


def _one(pipeline: str, data: bytes, clean) -> str:
    try:
        out = clean(data)[0] if pipeline == "new" else old_clean(data)
    except Exception as exc:  # what each pipeline does with it is the figure
        return type(exc).__name__
    return f"JPEG {len(out) // 1024} KB"


async def _together(pipeline: str, datas: list[bytes]) -> tuple[str, int, float]:
    """(outcome, RSS before, CPU before): three at once, the service's way or the old."""
    from bot.app import Whistle
    from bot.config import load_config
    from models.inputs import PhotoIn
    config = load_config(ROOT / "config.example.toml", env={})
    config.database.url = "sqlite+aiosqlite:///:memory:"
    # not started: only its photo path is used (and not made for the old pipeline, as it
    # sets Pillow's limit)
    whistle = Whistle(config) if pipeline == "new" else None
    await asyncio.to_thread(old_clean, _tiny())  # the worker threads exist before the baseline
    if whistle is not None:
        await whistle._clean(PhotoIn(data=_tiny(), size=1))
    reset_peak()
    before, cpu = rss(), time.process_time()
    if pipeline == "old":
        results = await asyncio.gather(*(asyncio.to_thread(old_clean, d) for d in datas),
                                       return_exceptions=True)
        outcome = ", ".join(type(r).__name__ if isinstance(r, Exception) else "JPEG"
                            for r in results)
    else:
        photos = await asyncio.gather(*(whistle._clean(PhotoIn(data=d, size=len(d)))
                                        for d in datas))
        outcome = ", ".join("too many pixels" if p.too_many_pixels else "unreadable"
                            if p.unreadable else "JPEG" for p in photos)
        await whistle.db.dispose()
    return outcome, before, cpu


# ---- the parent -------------------------------------------------------------------------------

def run(pipeline: str, paths: list[Path]) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", pipeline, *map(str, paths)],
                          capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="cases whose name contains one of these")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1:])))
        return
    header("Photos: peak RSS above the process's own while one photo is cleaned; "
           "each run in a fresh process")
    with tempfile.TemporaryDirectory(prefix="whistle-bench-photos-") as folder:
        paths = make_inputs(Path(folder))
        print(f"{'file':32} {'size':>9} | {'now: peak':>10} {'CPU':>6}  outcome"
              f"{'':18}| {'before: peak':>12} {'CPU':>6}  outcome")
        for name, path in paths.items():
            if args.only and not any(part.lower() in name.lower() for part in args.only):
                continue
            new, old = run("new", [path]), run("old", [path])
            print(f"{name:32} {path.stat().st_size / 1024:7.0f} KB | "
                  f"{new['peak'] / MiB:6.1f} MiB {new['cpu']:5.2f}s  {new['outcome']:24}| "
                  f"{old['peak'] / MiB:8.1f} MiB {old['cpu']:5.2f}s  {old['outcome']}")
        for name in ("bomb PNG 13,000 x 13,000", "JPEG 40 MP (7,300 x 5,475)",
                     "PNG 40 MP (7,300 x 5,475)"):
            if args.only and not any(part.lower() in name.lower() for part in args.only):
                continue
            three = [paths[name]] * 3
            new, old = run("new", three), run("old", three)
            print(f"three at once: {name:17} | {new['peak'] / MiB:6.1f} MiB {new['cpu']:5.2f}s  "
                  f"{new['outcome']:24}| {old['peak'] / MiB:8.1f} MiB {old['cpu']:5.2f}s  "
                  f"{old['outcome']}")


if __name__ == "__main__":
    main()
