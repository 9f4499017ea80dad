"""Photos as we store them: re-encoded as JPEG with every metadata block (EXIF, GPS,
maker notes) dropped and the long side limited, so what residents send never leaks
where or with what they took it. The GPS position is read first, so intake can
offer it as the report's location (asked, never assumed).

Memory stays bounded whatever is sent: only the formats phones send are opened, the
header is read first and a picture declaring more pixels than the limit is refused
before anything is decoded (a 161 KB PNG can declare 13,000 × 13,000 pixels), a JPEG
is decoded at the smallest scale that still covers the stored size (DCT scaling), and
of an animation only the first frame is decoded.

A photo reaches the core either downloaded or with only a way to download it
(``PhotoIn.fetch``): the core calls ``require`` where it takes one, and the wiring
downloads it then (outside the transaction) and hands the input in again. So a photo
from a banned or rate-limited person, or at a step that takes none, is never
downloaded."""
from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING

from PIL import Image, ImageOps, UnidentifiedImageError
from sqlalchemy.ext.asyncio import AsyncSession

from models.store.tables import Media, Person

if TYPE_CHECKING:
    from models.context import Core
    from models.inputs import Input, PhotoIn

GPS_IFD = 0x8825
DEFAULT_MAX_PIXELS = 40_000_000  # about a 7,300 × 5,500 picture; config: intake.max_photo_pixels
# what phones and messengers send; others (EPS runs Ghostscript, PSD, ICO, …) are refused
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")  # JPEG includes MPO (phones' 3D/depth)


class PhotoError(ValueError):
    """The bytes are not an image we can read."""


class PhotoTooLarge(PhotoError):
    """The image declares more pixels than the limit; nothing of it was decoded."""


class PhotoNeeded(Exception):
    """The core takes a photo that is not downloaded yet. The transaction is rolled back;
    the wiring downloads and cleans the photo and hands the input in again."""


def require(photo: PhotoIn) -> None:
    """Called where a photo is taken, before its bytes or size are looked at."""
    if photo.fetch is not None:
        raise PhotoNeeded()


def limit_pixels(max_pixels: int) -> None:
    """Pillow's own decompression-bomb guard, set to the same limit (process-wide). It
    raises at twice its limit when a file is opened and warns above it; ``decode``
    refuses above the limit itself, so the warning says nothing new."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def gps_of(image: Image.Image) -> tuple[float, float] | None:
    """(lat, lon) from EXIF GPS tags, or None."""
    try:
        gps = image.getexif().get_ifd(GPS_IFD)
    except Exception:  # broken EXIF is common and never fatal
        return None
    try:
        lat = _degrees(gps[2]) * (-1 if gps.get(1) in ("S", b"S") else 1)
        lon = _degrees(gps[4]) * (-1 if gps.get(3) in ("W", b"W") else 1)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat, lon) == (0, 0):
        return None
    return round(lat, 7), round(lon, 7)


def _degrees(value) -> float:
    d, m, s = (float(part) for part in value)
    return d + m / 60 + s / 3600


def fitted(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``size`` scaled down so its long side is at most ``max_side`` (never enlarged)."""
    width, height = size
    if max(width, height) <= max_side:
        return size
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def decode(data: bytes, max_side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The picture decoded (its first frame), at the smallest scale the format allows that
    still covers ``max_side``; raises PhotoTooLarge from the header alone, PhotoError for
    anything that is not a complete picture in a format we take."""
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)  # the header only
    except Image.DecompressionBombError:  # over twice Pillow's limit (``limit_pixels``)
        raise PhotoTooLarge("too many pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise PhotoError(str(exc)) from None
    width, height = image.size
    if width * height > max_pixels:
        raise PhotoTooLarge(f"{width} × {height} pixels") from None
    if image.format in ("JPEG", "MPO"):
        image.draft("RGB" if image.mode == "RGB" else None, fitted(image.size, max_side))
    try:
        image.load()
    except Image.DecompressionBombError:  # a frame larger than the picture's header said
        raise PhotoTooLarge("too many pixels") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise PhotoError(str(exc)) from None
    return image


def clean(data: bytes, max_side: int = 2048, max_pixels: int = DEFAULT_MAX_PIXELS,
          ) -> tuple[bytes, tuple[float, float] | None]:
    """(JPEG bytes without metadata, GPS position found in the original or None)."""
    image = decode(data, max_side, max_pixels)
    gps = gps_of(image)
    # scaled first (the decoded picture may still be a few times the stored size), then
    # turned the way the EXIF tag asked
    target = fitted(image.size, max_side)
    if image.mode not in ("RGB", "L", "RGBA", "LA"):  # palette, 16-bit, CMYK, …
        image = image.convert("RGB")
    if image.size != target:
        image = image.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0)
    image = ImageOps.exif_transpose(image)
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85, optimize=True)  # no exif= argument: nothing copied
    return out.getvalue(), gps


async def store_photo(session: AsyncSession, core: Core, person: Person, inp: Input,
                      kind: str) -> Media:
    """Clean (metadata stripped, size limited) and store a photo; raises PhotoError (or
    PhotoNeeded if it is not downloaded yet). The channel's file id is not kept: it would
    still carry the original's metadata."""
    require(inp.photo)
    if inp.photo.unreadable or inp.photo.too_many_pixels:
        raise PhotoError("not an image")
    if inp.photo.cleaned:
        data, gps = inp.photo.data, inp.photo.gps
    else:
        data, gps = clean(inp.photo.data, core.config.privacy.photo_max_side,
                          core.config.intake.max_photo_pixels)
    path, digest = core.media.save(data)
    media = Media(owner_id=person.id, kind=kind, path=path, sha256=digest, size=len(data),
                  telegram_file_id=None, created_at=core.now())
    media.gps = gps  # not a column: for the caller to offer as the location
    session.add(media)
    await session.flush()
    return media
