"""Routing a point to a grid: edges, holes, overlaps and the sample district (no database)."""
from pathlib import Path

import pytest
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.ops import unary_union

from models.org.file import load_org_file
from models.org.routing import Router

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "district" / "district.toml"

# the README's table: grid → a point inside it (lat, lon)
SAMPLE_POINTS = {
    "g01": (39.93524, 116.40107), "g02": (39.93530, 116.40705),
    "g03": (39.93545, 116.41286), "g04": (39.93518, 116.41896),
    "g05": (39.93072, 116.40087), "g06": (39.92960, 116.40520),
    "g07": (39.93085, 116.41298), "g08": (39.93093, 116.41899),
    "g09": (39.92618, 116.40107), "g10": (39.92627, 116.40697),
    "g11": (39.92621, 116.41317), "g12": (39.92629, 116.41900),
}
LAKE_CENTRE = (39.93125, 116.40765)


def square(lon: float, lat: float, side: float) -> Polygon:
    return box(lon, lat, lon + side, lat + side)


@pytest.fixture
def two_neighbours() -> Router:
    """g1 west of g2, same size, sharing the edge lon = 116.41."""
    return Router([(1, "g1", square(116.40, 39.93, 0.01)), (2, "g2", square(116.41, 39.93, 0.01))])


def test_interior_point(two_neighbours):
    assert two_neighbours.locate(39.935, 116.405) == 1
    assert two_neighbours.locate_code(39.935, 116.415) == "g2"


def test_point_on_outer_edge_is_inside(two_neighbours):
    assert two_neighbours.locate(39.93, 116.405) == 1  # south edge
    assert two_neighbours.locate(39.935, 116.40) == 1  # west edge


def test_point_on_vertex_is_inside(two_neighbours):
    assert two_neighbours.locate(39.93, 116.40) == 1
    assert two_neighbours.locate(39.94, 116.42) == 2


def test_shared_edge_goes_to_lower_code_of_equal_grids(two_neighbours):
    assert two_neighbours.locate(39.935, 116.41) == 1


def test_outside_all_grids(two_neighbours):
    assert two_neighbours.locate(39.95, 116.405) is None
    assert two_neighbours.locate(0.0, 0.0) is None


def test_hole_is_outside_its_grid():
    outer = [(116.40, 39.93), (116.42, 39.93), (116.42, 39.95), (116.40, 39.95)]
    lake = [(116.405, 39.935), (116.415, 39.935), (116.415, 39.945), (116.405, 39.945)]
    router = Router([(7, "g7", Polygon(outer, [lake]))])
    assert router.locate(39.94, 116.41) is None
    assert router.locate(39.932, 116.41) == 7
    assert router.locate(39.935, 116.41) == 7  # the lake's shore is the grid's edge


def test_overlap_smaller_grid_wins():
    big = square(116.40, 39.93, 0.02)
    small = square(116.405, 39.935, 0.005)
    router = Router([(1, "a-big", big), (2, "z-small", small)])
    assert router.locate(39.9375, 116.4075) == 2
    assert router.locate(39.945, 116.415) == 1


def test_overlap_equal_area_lower_code_wins():
    first = square(116.40, 39.93, 0.01)
    second = square(116.405, 39.93, 0.01)
    for grids in ([(1, "g2", first), (2, "g1", second)], [(2, "g1", second), (1, "g2", first)]):
        router = Router(grids)
        assert router.locate(39.935, 116.4075) == 2  # in both: g1 < g2
        assert router.locate(39.935, 116.402) == 1  # only in the first


def test_multipolygon_grid():
    parts = MultiPolygon([square(116.40, 39.93, 0.01), square(116.43, 39.93, 0.01)])
    router = Router([(3, "g3", parts)])
    assert router.locate(39.935, 116.405) == 3
    assert router.locate(39.935, 116.435) == 3
    assert router.locate(39.935, 116.42) is None


def test_empty_router():
    router = Router([])
    assert router.grid_count == 0
    assert router.locate(39.93, 116.41) is None


def test_sample_district_inside_points():
    router = Router.from_spec(load_org_file(SAMPLE))
    assert router.grid_count == 12
    for code, (lat, lon) in SAMPLE_POINTS.items():
        assert router.locate_code(lat, lon) == code


def test_sample_district_lake_belongs_to_no_grid():
    router = Router.from_spec(load_org_file(SAMPLE))
    assert router.locate(*LAKE_CENTRE) is None


def test_sample_district_tiles_without_gaps_or_overlaps():
    grids = list(load_org_file(SAMPLE).geometries.values())
    union = unary_union(grids)
    assert union.area == pytest.approx(sum(g.area for g in grids), rel=1e-9)  # no overlaps
    assert union.geom_type == "Polygon" and len(union.interiors) == 1  # the lake is the only gap


def test_from_spec_uses_given_unit_ids():
    spec = load_org_file(SAMPLE)
    router = Router.from_spec(spec, {grid.code: 100 + n for n, grid in enumerate(spec.grids)})
    assert router.locate(*SAMPLE_POINTS["g06"]) == 105


def test_five_thousand_grids():
    side = 1 / 512  # exact in binary, so every square has exactly the same area
    grids = [(row * 100 + col + 1, f"g{row:02d}-{col:02d}", square(116.0 + col * side, 39.5 + row * side, side))
             for row in range(50) for col in range(100)]
    router = Router(grids)
    assert router.grid_count == 5000
    for row, col in [(0, 0), (17, 42), (49, 99), (25, 0)]:
        lat, lon = 39.5 + (row + 0.5) * side, 116.0 + (col + 0.5) * side
        assert router.locate(lat, lon) == row * 100 + col + 1
    corner = (39.5 + 10 * side, 116.0 + 10 * side)  # shared by four squares: the lowest code wins
    assert router.locate_code(*corner) == "g09-09"
    assert router.locate(39.5 + 51 * side, 116.0) is None
