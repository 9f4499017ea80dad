"""Real JPEG photos for tests (the bot re-encodes what it stores, so fake bytes won't do)."""
import io

from PIL import Image


def jpeg(seed: int = 0, size: tuple[int, int] = (64, 48),
         gps: tuple[float, float] | None = None, camera: str | None = None) -> bytes:
    """A small JPEG, different for each seed; with EXIF GPS and a camera model if given."""
    image = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    exif = Image.Exif()
    if camera:
        exif[0x0110] = camera  # Model
    if gps:
        lat, lon = gps
        exif.get_ifd(0x8825).update({1: "N" if lat >= 0 else "S", 2: _dms(abs(lat)),
                                     3: "E" if lon >= 0 else "W", 4: _dms(abs(lon))})
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes() if (gps or camera) else b"")
    return out.getvalue()


def _dms(value: float) -> tuple[float, float, float]:
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    return (float(degrees), float(minutes), round((value - degrees - minutes / 60) * 3600, 4))
