"""Photos as we store them: re-encoded as JPEG with every metadata block (EXIF, GPS,
maker notes) dropped and the long side limited, so what residents send never leaks
where or with what they took it. The GPS position is read first, so intake can
offer it as the report's location (asked, never assumed)."""
from __future__ import annotations

import io
from typing import TYPE_CHECKING

from PIL import Image, ImageOps, UnidentifiedImageError
from sqlalchemy.ext.asyncio import AsyncSession

from models.store.tables import Media, Person

if TYPE_CHECKING:
    from models.context import Core
    from models.inputs import Input

GPS_IFD = 0x8825


class PhotoError(ValueError):
    """The bytes are not an image we can read."""


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


def clean(data: bytes, max_side: int = 2048) -> tuple[bytes, tuple[float, float] | None]:
    """(JPEG bytes without metadata, GPS position found in the original or None)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise PhotoError(str(exc)) from None
    gps = gps_of(image)
    image = ImageOps.exif_transpose(image)  # keep the orientation the EXIF tag asked for
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    image.thumbnail((max_side, max_side))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85, optimize=True)  # no exif= argument: nothing copied
    return out.getvalue(), gps


async def store_photo(session: AsyncSession, core: Core, person: Person, inp: Input,
                      kind: str) -> Media:
    """Clean (metadata stripped, size limited) and store a photo; raises PhotoError.
    The channel's file id is not kept: it would still carry the original's metadata."""
    if inp.photo.unreadable:
        raise PhotoError("not an image")
    if inp.photo.cleaned:
        data, gps = inp.photo.data, inp.photo.gps
    else:
        data, gps = clean(inp.photo.data, core.config.privacy.photo_max_side)
    path, digest = core.media.save(data)
    media = Media(owner_id=person.id, kind=kind, path=path, sha256=digest, size=len(data),
                  telegram_file_id=None, created_at=core.now())
    media.gps = gps  # not a column: for the caller to offer as the location
    session.add(media)
    await session.flush()
    return media
