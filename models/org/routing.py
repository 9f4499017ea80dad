"""Which grid a reported location belongs to.

Rules:

- a point on a grid's edge or vertex counts as inside that grid (``covers``), so a
  report on the street line between two grids still reaches one of them;
- a point in a hole of a grid's polygon (a park, a lake) is outside that grid;
- where grids overlap (including the shared edge of two neighbours), the grid
  with the smallest area wins, being the most specific; equal areas go to the
  lower code, so the answer never depends on load order;
- a point that no grid covers gets ``None`` and the caller routes it by hand.

Areas are compared in square degrees: grids of one district lie at nearly the same
latitude, so the distortion is the same for all of them and the order is right.

A ``Router`` is immutable; build a new one when the org changes. Lookups go
through a shapely ``STRtree``, so thousands of grids cost one tree query.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from shapely import STRtree
from shapely.geometry import Point, shape
from shapely.geometry.base import BaseGeometry

from models.store.tables import Unit

from .file import OrgSpec

# Areas equal to this many decimals of a square degree (about 0.01 m²) are a tie:
# the same-sized block drawn at another place must not win by rounding noise.
AREA_DECIMALS = 12


class Router:
    """Point → grid unit id, following the rules in the module docstring."""

    __slots__ = ("_ids", "_codes", "_tree")

    def __init__(self, grids: Iterable[tuple[int, str, BaseGeometry]]):
        """``grids``: (unit id, code, polygon in lon/lat). They are kept in order of
        precedence, so the lowest matching index is the winner."""
        ranked = sorted(grids, key=lambda grid: (round(grid[2].area, AREA_DECIMALS), grid[1]))
        self._ids = tuple(unit_id for unit_id, _, _ in ranked)
        self._codes = tuple(code for _, code, _ in ranked)
        self._tree = STRtree([geometry for _, _, geometry in ranked])

    @classmethod
    def from_units(cls, units: Iterable[Unit]) -> Router:
        """From Unit rows holding GeoJSON boundaries; units without one are skipped."""
        return cls((unit.id, unit.code, shape(json.loads(unit.boundary))) for unit in units if unit.boundary)

    @classmethod
    def from_spec(cls, spec: OrgSpec, unit_ids: Mapping[str, int] | None = None) -> Router:
        """From a loaded org file. ``unit_ids`` maps grid codes to Unit ids; without it
        the ids are the grids' positions in the file (1, 2, …), for use without a database."""
        ids = unit_ids if unit_ids is not None else {grid.code: n for n, grid in enumerate(spec.grids, 1)}
        return cls((ids[code], code, geometry) for code, geometry in spec.geometries.items())

    @property
    def grid_count(self) -> int:
        return len(self._ids)

    def locate(self, lat: float, lon: float) -> int | None:
        """The id of the grid covering the point, or None."""
        rank = self._winner(lat, lon)
        return None if rank is None else self._ids[rank]

    def locate_code(self, lat: float, lon: float) -> str | None:
        """The code of the grid covering the point, or None."""
        rank = self._winner(lat, lon)
        return None if rank is None else self._codes[rank]

    def _winner(self, lat: float, lon: float) -> int | None:
        # predicate(point, tree geometry): the point is covered by the grid
        hits = self._tree.query(Point(lon, lat), predicate="covered_by")
        return int(hits.min()) if hits.size else None
