"""The district drawn as SVG from the grids' polygons (``Unit.boundary``, GeoJSON, WGS-84):
no tile server, no internet. An equirectangular projection, north up, scaled by
cos(latitude) so a district-sized area keeps its shape."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from shapely.geometry import shape

from models.store.tables import Unit

WIDTH = 1000


@dataclass(frozen=True)
class Projection:
    origin_lon: float
    origin_lat: float
    kx: float
    scale: float
    width: int
    height: int

    def xy(self, lon: float, lat: float) -> tuple[float, float]:
        return ((lon - self.origin_lon) * self.kx * self.scale,
                (self.origin_lat - lat) * self.scale)

    def contains(self, lon: float, lat: float) -> bool:
        x, y = self.xy(lon, lat)
        return 0 <= x <= self.width and 0 <= y <= self.height


@dataclass(frozen=True)
class Shape:
    """One grid as the map draws it."""

    unit: Unit
    d: str  # the SVG path
    label_x: float
    label_y: float


def _geometry(unit: Unit):
    try:
        return shape(json.loads(unit.boundary)) if unit.boundary else None
    except (ValueError, TypeError, KeyError, AttributeError):
        return None  # a broken boundary is left off the map, not a broken page


def draw(grids: list[Unit]) -> tuple[Projection | None, list[Shape]]:
    """The projection that fits every grid, and each grid's path."""
    geometries = [(unit, g) for unit in grids if (g := _geometry(unit)) is not None and not g.is_empty]
    if not geometries:
        return None, []
    bounds = [g.bounds for _, g in geometries]
    min_lon, min_lat = min(b[0] for b in bounds), min(b[1] for b in bounds)
    max_lon, max_lat = max(b[2] for b in bounds), max(b[3] for b in bounds)
    kx = math.cos(math.radians((min_lat + max_lat) / 2))
    width_deg = max((max_lon - min_lon) * kx, 1e-9)
    height_deg = max(max_lat - min_lat, 1e-9)
    margin = 0.04 * max(width_deg, height_deg)
    scale = WIDTH / (width_deg + 2 * margin)
    projection = Projection(min_lon - margin / kx, max_lat + margin, kx, scale, WIDTH,
                            round((height_deg + 2 * margin) * scale))

    def ring(coords) -> str:
        return "M" + " L".join("%.1f,%.1f" % projection.xy(lon, lat)
                               for lon, lat, *_ in coords) + " Z"

    shapes = []
    for unit, geometry in geometries:
        polygons = getattr(geometry, "geoms", [geometry])
        d = " ".join(" ".join([ring(p.exterior.coords), *(ring(i.coords) for i in p.interiors)])
                     for p in polygons)
        point = geometry.representative_point()
        x, y = projection.xy(point.x, point.y)
        shapes.append(Shape(unit, d, round(x, 1), round(y, 1)))
    return projection, shapes
