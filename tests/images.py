"""Real JPEG photos for tests (the bot re-encodes what it stores, so fake bytes won't do),
and the hostile files an outside check sent: bombs, lies about size, archives."""
import io
import struct
import zipfile
import zlib

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


# ---- what an attacker (or an odd phone) sends ------------------------------------------------

def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def png_bomb(width: int = 13_000, height: int = 13_000) -> bytes:
    """A valid, complete greyscale PNG of black pixels: 161 KB that decode to 13,000 ×
    13,000 pixels (169 MB, then 507 MB as RGB), the outside check's bomb."""
    row = b"\x00" * (1 + width)  # filter byte, then the pixels
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is rewritten to claim ``width × height``:
    what a decoder allocates before it finds the data missing."""
    data = bytearray(jpeg(7, size=(16, 16)))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def gif_with_frames(count: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """An animated GIF of ``count`` frames, each a different pixel lit (so none is merged)."""
    frames = []
    for i in range(count):
        frame = Image.new("P", size, 0)
        frame.putpalette([20, 90, 200, 255, 255, 255] + [0, 0, 0] * 254)
        frame.putpixel((i % size[0], (i // size[0]) % size[1]), 1)
        frames.append(frame)
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=20,
                   optimize=False)
    return out.getvalue()


def zip_file() -> bytes:
    """A ZIP archive (sent with an image's name and type)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("photo.jpg", jpeg(8))
    return out.getvalue()


def ppm(size: tuple[int, int] = (32, 24)) -> bytes:
    """A picture in a format no phone sends (Pillow reads it, the bot does not)."""
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, "PPM")
    return out.getvalue()
