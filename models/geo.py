"""GCJ-02 (the offset datum Chinese maps and WeCom use) to WGS-84 (our grids).

No well-kept package exists for this on PyPI (the ones there are unmaintained), so
this is the widely published forward transform (Krasovsky 1940 ellipsoid) and its
standard iterative inverse, accurate to well under a metre."""
from __future__ import annotations

import math

A = 6378245.0  # Krasovsky 1940 semi-major axis
EE = 0.00669342162296594323  # its eccentricity squared


def outside_china(lat: float, lon: float) -> bool:
    """The offset applies only inside China's rough bounding box."""
    return not (0.8293 <= lat <= 55.8271 and 72.004 <= lon <= 137.8347)


def _lat_shift(x: float, y: float) -> float:
    r = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    r += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    r += (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
    r += (160.0 * math.sin(y / 12.0 * math.pi) + 320 * math.sin(y * math.pi / 30.0)) * 2.0 / 3.0
    return r


def _lon_shift(x: float, y: float) -> float:
    r = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    r += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    r += (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
    r += (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) * 2.0 / 3.0
    return r


def wgs_to_gcj(lat: float, lon: float) -> tuple[float, float]:
    if outside_china(lat, lon):
        return lat, lon
    dlat = _lat_shift(lon - 105.0, lat - 35.0)
    dlon = _lon_shift(lon - 105.0, lat - 35.0)
    rad = lat / 180.0 * math.pi
    magic = 1 - EE * math.sin(rad) ** 2
    sqrt_magic = math.sqrt(magic)
    dlat = (dlat * 180.0) / ((A * (1 - EE)) / (magic * sqrt_magic) * math.pi)
    dlon = (dlon * 180.0) / (A / sqrt_magic * math.cos(rad) * math.pi)
    return lat + dlat, lon + dlon


def gcj_to_wgs(lat: float, lon: float, tolerance: float = 1e-9) -> tuple[float, float]:
    """Invert ``wgs_to_gcj`` by fixed-point iteration: guess, see where the guess lands
    in GCJ-02, move by the miss. Converges in a handful of steps."""
    if outside_china(lat, lon):
        return lat, lon
    wlat, wlon = lat, lon
    for _ in range(30):
        glat, glon = wgs_to_gcj(wlat, wlon)
        dlat, dlon = glat - lat, glon - lon
        wlat, wlon = wlat - dlat, wlon - dlon
        if abs(dlat) < tolerance and abs(dlon) < tolerance:
            break
    return wlat, wlon


METRES_PER_DEGREE = 111_320.0  # of latitude (and of longitude at the equator)


def coarse(lat: float, lon: float, metres: float) -> tuple[float, float]:
    """The centre of the cell of about ``metres`` × ``metres`` the point falls in: a
    point published without giving away the exact place (a door, a home). The same
    cell always gives the same centre, so repeated readings reveal nothing more.
    ``metres`` ≤ 0: the point as it is."""
    if metres <= 0:
        return lat, lon
    step_lat = metres / METRES_PER_DEGREE
    cell_lat = math.floor(lat / step_lat)
    centre_lat = (cell_lat + 0.5) * step_lat
    # the longitude step of the cell's row, so a cell is about as wide as it is high
    step_lon = metres / (METRES_PER_DEGREE * max(math.cos(math.radians(centre_lat)), 0.01))
    centre_lon = (math.floor(lon / step_lon) + 0.5) * step_lon
    return round(max(-90.0, min(90.0, centre_lat)), 6), round(
        (centre_lon + 180.0) % 360.0 - 180.0, 6)
