"""Unit tests of models/media/photos.py (cleaning photos: metadata dropped, size limited, GPS
read first, files that would cost too much refused from their header) and
models/intake/nearby.py (distances, the bounding box, and the nearby / same grid queries on
an in-memory SQLite database); and, through the fake Bot API, what a hostile photo does to
the running bot, and that a photo nobody asked for is never downloaded."""
from __future__ import annotations

import io
import math
import struct
import zlib
from datetime import datetime, timedelta, timezone

import pytest
from chat import Resident
from flows import (
    G01_CHAT, ask_note, claim, count, file_report, group_text, last_id, photo_bytes,
    send_photo_reply, ticket_row,
)
from images import gif_with_frames, jpeg, jpeg_declaring, png_bomb, ppm, zip_file
from PIL import Image
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from models.inputs import Input, PhotoIn, Sender
from models.intake.nearby import EARTH_RADIUS_M, bounding_box, distance_m, in_grid, nearby
from models.media.photos import PhotoError, PhotoTooLarge, clean, decode, gps_of
from models.messages.outbox import Target
from models.store.tables import Base, Media, Ticket

HERE = (39.93085, 116.41298)
NOW = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)


def offset(point, north: float = 0.0, east: float = 0.0) -> tuple[float, float]:
    lat, lon = point
    return (lat + math.degrees(north / EARTH_RADIUS_M),
            lon + math.degrees(east / (EARTH_RADIUS_M * math.cos(math.radians(lat)))))


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# ==== photos: clean() =========================================================================

def test_clean_drops_exif_gps_and_camera_and_returns_the_position():
    original = jpeg(1, size=(320, 240), gps=(39.92627, 116.40697), camera="SpyCam 9000")
    assert b"Exif" in original and b"SpyCam 9000" in original
    data, gps = clean(original)
    assert b"Exif" not in data and b"SpyCam" not in data
    image = opened(data)
    assert image.format == "JPEG" and image.size == (320, 240)
    assert dict(image.getexif()) == {} and "exif" not in image.info
    assert gps == pytest.approx((39.92627, 116.40697), abs=1e-6)


def test_clean_without_metadata_gives_no_position():
    data, gps = clean(jpeg(2))
    assert gps is None and opened(data).format == "JPEG"


def test_clean_limits_the_long_side():
    for size, limit, expected in [((3000, 2000), 2048, (2048, 1365)),
                                  ((2000, 3000), 2048, (1365, 2048)),
                                  ((1600, 900), 512, (512, 288)),
                                  ((640, 480), 2048, (640, 480))]:   # never enlarged
        data, _ = clean(jpeg(3, size=size), max_side=limit)
        assert opened(data).size == expected, (size, limit)


def test_clean_is_deterministic_for_the_same_input():
    photo = jpeg(4, gps=(1.0, 2.0), camera="X")
    assert clean(photo) == clean(photo)


def test_clean_re_encodes_png_with_alpha_and_keeps_the_orientation():
    rgba = Image.new("RGBA", (40, 20), (10, 200, 30, 128))
    out = io.BytesIO()
    rgba.save(out, "PNG")
    data, _ = clean(out.getvalue())
    image = opened(data)
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (40, 20))

    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6   # Orientation: rotate 90° clockwise to display
    Image.new("RGB", (60, 20), (200, 10, 10)).save(rotated, "JPEG", exif=exif.tobytes())
    data, _ = clean(rotated.getvalue())
    assert opened(data).size == (20, 60)
    assert b"Exif" not in data


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + b"x" * 500,
                                  jpeg(5, size=(400, 300))[:200]],
                         ids=["empty", "text", "fake-jpeg-header", "truncated"])
def test_clean_refuses_what_is_not_a_readable_image(data):
    with pytest.raises(PhotoError):
        clean(data)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring a huge size (a decompression bomb); only its header is real."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def test_clean_refuses_a_decompression_bomb():
    with pytest.raises(PhotoError):
        clean(_png_header_only(40_000, 40_000))


# ==== photos: bounded memory whatever is sent ==================================================
# Each of these is a file an outside check sent: the header is read first, and what declares
# more pixels than the limit is refused before a byte of it is decoded.

@pytest.fixture(scope="module")
def bomb() -> bytes:
    return png_bomb()


def test_a_png_bomb_is_refused_from_its_header(bomb):
    assert len(bomb) < 200_000  # 161 KB that decode to 13,000 × 13,000 pixels (507 MB)
    with pytest.raises(PhotoTooLarge):
        clean(bomb)
    with pytest.raises(PhotoTooLarge):
        decode(bomb, 2048)


def test_the_pixel_limit_is_the_callers():
    photo = jpeg(9, size=(400, 300))
    with pytest.raises(PhotoTooLarge):
        clean(photo, max_pixels=119_999)
    data, _ = clean(photo, max_pixels=120_000)
    assert opened(data).size == (400, 300)


@pytest.mark.parametrize("size", [(10_000, 10_000), (65_000, 65_000)],
                         ids=["under-pillows-own-limit", "far-over-it"])
def test_a_jpeg_declaring_a_huge_frame_is_refused_before_decoding(size):
    assert len(jpeg_declaring(*size)) < 1000
    with pytest.raises(PhotoTooLarge):
        clean(jpeg_declaring(*size))


def test_a_large_jpeg_is_decoded_at_a_reduced_scale():
    """6000 × 4000 for a long side of 2048: the decoder scales by 2 (DCT scaling), so the
    decoded picture is a quarter of the full one (18 MB instead of 72 MB)."""
    out = io.BytesIO()
    Image.linear_gradient("L").resize((6000, 4000)).convert("RGB").save(out, "JPEG", quality=70)
    big = out.getvalue()
    image = decode(big, 2048)
    assert image.size == (3000, 2000)
    assert decode(big, 512).size == (750, 500)  # 1/8, the smallest scale
    data, _ = clean(big)
    assert opened(data).size == (2048, 1365)


def test_a_gif_of_thousands_of_frames_costs_its_first_frame():
    gif = gif_with_frames(3000)
    assert Image.open(io.BytesIO(gif)).n_frames == 3000
    data, _ = clean(gif)
    image = opened(data)
    assert (image.format, image.size, getattr(image, "n_frames", 1)) == ("JPEG", (64, 48), 1)
    assert image.getpixel((10, 10)) == pytest.approx((20, 90, 200), abs=8)  # the first frame's


@pytest.mark.parametrize("data", [zip_file(), ppm(), png_bomb(64, 48)[:-40]],
                         ids=["zip", "ppm", "truncated-png"])
def test_clean_refuses_files_that_are_no_photo(data):
    with pytest.raises(PhotoError):
        clean(data)


# ==== photos: through the running bot =========================================================

ASK_PHOTOS = "Send up to 3 photos of the problem, or press Skip."
TOO_MANY_PIXELS = "That picture has too many pixels (the limit is 40 megapixels)."


def downloads(api) -> int:
    """Files the bot asked the fake Bot API for (each download starts with getFile)."""
    return sum(1 for method, _ in api.requests if method.lower() == "getfile")


async def at_step(api, people, step: str) -> Resident:
    people(9001, "Li Si", language="en")
    r = Resident(api, 9001)
    prompt = await r.text("/start", "Welcome", "Choose a category")
    await r.press(prompt, "cat:garbage", "Describe the problem")
    if step == "photos":
        await r.text("The bins at the gate overflow again.", ASK_PHOTOS)
    return r


async def test_a_png_bomb_sent_as_a_file_is_refused_and_the_step_goes_on(whistle, api, people,
                                                                         bomb):
    r = await at_step(api, people, "photos")
    await r.document(bomb, "bins.png", "image/png", TOO_MANY_PIXELS)
    assert await count(whistle, Media) == 0
    await r.document(jpeg_declaring(10_000, 10_000), "bins.jpg", "image/jpeg", TOO_MANY_PIXELS)
    await r.document(zip_file(), "bins.jpg", "image/jpeg", "That file is not a photo I can read.")
    await r.photo(jpeg(1), "Photo 1 of 3 received.")
    assert await count(whistle, Media) == 1
    # Pillow's own guard is set to the same limit (it refuses at twice that, decoding nothing)
    assert Image.MAX_IMAGE_PIXELS == whistle.config.intake.max_photo_pixels == 40_000_000


async def test_a_photo_is_downloaded_only_where_a_step_takes_it(whistle, api, people):
    r = await at_step(api, people, "description")
    await r.photo(jpeg(2), "Please describe the problem in words")  # the wrong step
    await r.document(png_bomb(64, 48), "gate.png", "image/png", "Please describe the problem")
    assert downloads(api) == 0
    await r.text("The bins at the gate overflow again.", ASK_PHOTOS)
    await r.photo(jpeg(3), "Photo 1 of 3 received.")
    assert downloads(api) == 1  # downloaded once, though the step was asked twice
    await r.text("/cancel", "Cancelled")
    await r.photo(jpeg(4), "Press “📝 Report a problem”")  # no dialogue at all
    assert downloads(api) == 1


async def test_staff_photos_are_downloaded_only_as_proof_of_a_resolution(whistle, api, people):
    resident = people(9001, "Li Si", language="en")
    people(1001, "王建国")
    filed = await file_report(api, whistle, resident)
    await claim(api, 1001, filed)
    before = downloads(api)
    api.user_sends_photo(1001, G01_CHAT, photo_bytes(5))  # group chatter, not for the bot
    prompt = await ask_note(api, 1001, G01_CHAT, filed.card["message_id"],
                            f"progress:{filed.id}", filed.number)
    after = last_id(api, G01_CHAT)
    send_photo_reply(api, 1001, G01_CHAT, prompt["message_id"], photo_bytes(6))
    await api.wait_message(G01_CHAT, after=after, contains=group_text(
        whistle, "Please send the note as text (or /cancel)."))  # a progress note is a text
    assert downloads(api) == before

    prompt = await ask_note(api, 1001, G01_CHAT, filed.card["message_id"],
                            f"resolve:{filed.id}", filed.number)
    after = last_id(api, G01_CHAT)
    send_photo_reply(api, 1001, G01_CHAT, prompt["message_id"], png_bomb(), caption="Done")
    await api.wait_message(G01_CHAT, after=after, contains=group_text(
        whistle, "That photo is too large; please send a smaller one."))
    assert (await ticket_row(whistle, filed.id)).state == "claimed"
    send_photo_reply(api, 1001, G01_CHAT, prompt["message_id"], photo_bytes(7),
                     caption="All cleared")
    await api.wait_message(resident.id, contains="All cleared")
    assert (await ticket_row(whistle, filed.id)).state == "resolved"
    assert downloads(api) == before + 2
    assert await count(whistle, Media) == 1  # the proof


async def test_a_redelivered_photo_is_not_downloaded_again(whistle, api, people):
    """The same update twice (a webhook retried, a journalled update replayed): the inbox
    recognises the second before anything asks for its photo."""
    r = await at_step(api, people, "photos")
    fetched = []

    async def fetch() -> PhotoIn:
        fetched.append(1)
        return PhotoIn(data=jpeg(5), size=len(jpeg(5)))
    photo = Input(sender=Sender("telegram", "9001", "Li Si", "en"),
                  chat=Target("telegram", "9001"), private=True, kind="photo",
                  photo=PhotoIn(data=None, size=800, fetch=fetch), dedupe_key="123456:901")
    after = r.last_id()
    assert (await whistle.handle(photo)).duplicate is False
    await r.expect(after, "Photo 1 of 3 received.")
    assert (await whistle.handle(photo)).duplicate is True
    assert fetched == [1] and await count(whistle, Media) == 1


# ==== photos: gps_of() ========================================================================

def _image_with_gps(fields: dict) -> Image.Image:
    exif = Image.Exif()
    exif.get_ifd(0x8825).update(fields)
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "JPEG", exif=exif.tobytes())
    return opened(out.getvalue())


def test_gps_of_reads_south_and_west_as_negative():
    image = _image_with_gps({1: "S", 2: (33.0, 51.0, 36.0), 3: "W", 4: (70.0, 30.0, 0.0)})
    assert gps_of(image) == pytest.approx((-(33 + 51 / 60 + 36 / 3600), -70.5), abs=1e-6)


@pytest.mark.parametrize("fields", [
    {1: "N", 2: (39.0, 55.0, 0.0)},                                    # no longitude
    {1: "N", 2: (0.0, 0.0, 0.0), 3: "E", 4: (0.0, 0.0, 0.0)},          # null island
    {1: "N", 2: (95.0, 0.0, 0.0), 3: "E", 4: (116.0, 0.0, 0.0)},       # latitude out of range
    {1: "N", 2: (39.0, 55.0, 0.0), 3: "E", 4: (190.0, 0.0, 0.0)},      # longitude out of range
], ids=["no-longitude", "zero", "bad-latitude", "bad-longitude"])
def test_gps_of_ignores_incomplete_or_impossible_positions(fields):
    assert gps_of(_image_with_gps(fields)) is None


def test_gps_of_an_image_without_exif():
    assert gps_of(opened(jpeg(6))) is None


# ==== nearby: distance and bounding box =========================================================

def test_distance_is_the_great_circle_distance():
    assert distance_m(*HERE, *HERE) == 0
    north = offset(HERE, north=250)
    assert distance_m(*HERE, *north) == pytest.approx(250, abs=0.01)
    east = offset(HERE, east=250)
    assert distance_m(*HERE, *east) == pytest.approx(250, abs=0.05)
    assert distance_m(*HERE, *east) == pytest.approx(distance_m(*east, *HERE))
    # one degree of latitude is about 111.2 km
    assert distance_m(39.0, 116.0, 40.0, 116.0) == pytest.approx(111_195, rel=1e-4)


@pytest.mark.parametrize("lat", [0.0, 39.93, -45.0, 70.0])
def test_bounding_box_encloses_the_circle(lat):
    centre = (lat, 116.4)
    min_lat, max_lat, min_lon, max_lon = bounding_box(*centre, 250)
    for bearing in range(0, 360, 15):
        rad = math.radians(bearing)
        point = offset(centre, north=249.9 * math.cos(rad), east=249.9 * math.sin(rad))
        assert distance_m(*centre, *point) <= 250
        assert min_lat <= point[0] <= max_lat and min_lon <= point[1] <= max_lon, bearing
    # and not much more than it
    assert distance_m(min_lat, centre[1], max_lat, centre[1]) == pytest.approx(500, abs=0.5)


# ==== nearby: the queries ========================================================================

@pytest.fixture
async def session():
    engine = create_async_engine("sqlite+aiosqlite://")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with AsyncSession(engine, expire_on_commit=False) as s:
        yield s
    await engine.dispose()


_numbers = iter(range(1, 10_000))


def add(session, point=None, *, category="garbage", state="routed", age=timedelta(days=1),
        grid_id=7) -> Ticket:
    n = next(_numbers)
    ticket = Ticket(number=f"20261123-{n:04d}", category=category, klass="request",
                    order_type="routine", state=state, description=f"ticket {n}",
                    lat=point[0] if point else None, lon=point[1] if point else None,
                    channel="telegram", reporter_id=1, anonymous=True, grid_id=grid_id,
                    unit_id=grid_id, level="grid", route_reason="point",
                    created_at=NOW - age, updated_at=NOW - age)
    session.add(ticket)
    return ticket


async def test_nearby_filters_and_sorts(session):
    at = {d: add(session, offset(HERE, north=d)) for d in (200, 10, 120)}
    edge = add(session, offset(HERE, east=249.5))
    add(session, offset(HERE, east=-251))                                # outside the radius
    add(session, offset(HERE, north=5), category="road")                 # another category
    for state in ("closed", "closed_duplicate", "closed_not_fixed", "resolved"):
        add(session, offset(HERE, north=20), state=state)                # not open
    add(session, offset(HERE, north=30), age=timedelta(days=30, minutes=1))   # too old
    young = add(session, offset(HERE, north=-30), age=timedelta(days=29, hours=23))
    add(session, None)                                                   # no point
    await session.flush()

    found = await nearby(session, "garbage", *HERE, NOW)
    assert [t.id for t, _ in found] == [at[10].id, young.id, at[120].id, at[200].id, edge.id]
    distances = [d for _, d in found]
    assert distances == sorted(distances) and distances[-1] == pytest.approx(249.5, abs=0.1)


async def test_nearby_keeps_open_states_and_limits(session):
    for i, state in enumerate(("reported", "routed", "claimed", "in_progress", "returned",
                               "escalated", "reopened"), 1):
        add(session, offset(HERE, north=10 * i), state=state)
    await session.flush()
    assert len(await nearby(session, "garbage", *HERE, NOW, limit=8)) == 7
    found = await nearby(session, "garbage", *HERE, NOW, limit=5)
    assert [round(d) for _, d in found] == [10, 20, 30, 40, 50]
    assert len(await nearby(session, "garbage", *HERE, NOW, radius_m=25)) == 2
    # all are exactly a day old: not older than one day, so still shown
    assert len(await nearby(session, "garbage", *HERE, NOW, days=1)) == 5
    assert await nearby(session, "garbage", *HERE, NOW + timedelta(seconds=1), days=1) == []


async def test_in_grid_lists_the_grids_open_reports_newest_first(session):
    oldest = add(session, None, age=timedelta(days=20))
    newest = add(session, offset(HERE, north=900), age=timedelta(hours=1))
    middle = add(session, None, age=timedelta(days=3))
    add(session, None, grid_id=8)                                        # another grid
    add(session, None, category="road")                                  # another category
    add(session, None, state="closed_not_fixed")                         # closed
    add(session, None, age=timedelta(days=31))                           # too old
    await session.flush()
    found = await in_grid(session, "garbage", 7, NOW)
    assert found == [(newest, None), (middle, None), (oldest, None)]
    assert [t.id for t, _ in await in_grid(session, "garbage", 7, NOW, limit=2)] == [
        newest.id, middle.id]
