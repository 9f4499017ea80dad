"""Loading and validating org files: the sample loads, and each mistake is named."""
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from models.org.file import OrgFileError, OrgSpec, load_org_file

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "district" / "district.toml"

SQUARE = "[[[116.40, 39.93], [116.41, 39.93], [116.41, 39.94], [116.40, 39.94], [116.40, 39.93]]]"
BOWTIE = "[[[116.40, 39.93], [116.41, 39.94], [116.41, 39.93], [116.40, 39.94], [116.40, 39.93]]]"

HEAD = """
[district]
code = "d"
name = "区"

[[streets]]
code = "s1"
name = "街道"

[[communities]]
code = "c1"
street = "s1"
name = "社区"
"""

GRID = f"""
[[grids]]
code = "g1"
community = "c1"
name = "网格"
boundary = {{ type = "Polygon", coordinates = {SQUARE} }}
"""


BARE_GRID = '\n[[grids]]\ncode = "g1"\ncommunity = "c1"\nname = "网格"\n'


def write(tmp_path: Path, text: str, geojson: dict | None = None) -> Path:
    if geojson is not None:
        (tmp_path / "grids.geojson").write_text(json.dumps(geojson), encoding="utf-8")
    path = tmp_path / "org.toml"
    path.write_text(text, encoding="utf-8")
    return path


def feature(code: str, coordinates: str = SQUARE) -> dict:
    return {"type": "Feature", "properties": {"code": code},
            "geometry": {"type": "Polygon", "coordinates": json.loads(coordinates)}}


def problem(path: Path) -> str:
    with pytest.raises(OrgFileError) as caught:
        load_org_file(path)
    message = str(caught.value)
    assert str(path) in message or "grids.geojson" in message
    return message


def test_sample_loads():
    spec = load_org_file(SAMPLE)
    assert spec.district.code == "demo"
    assert (len(spec.streets), len(spec.communities), len(spec.grids), len(spec.departments)) == (1, 3, 12, 4)
    assert len(spec.people) == 24 and len(spec.chats) == 21
    assert set(spec.geometries) == {f"g{n:02d}" for n in range(1, 13)}
    assert all(geometry.is_valid for geometry in spec.geometries.values())
    assert len(spec.geometries["g06"].interiors) == 1  # the lake
    assert [entry.kind for entry in spec.units()][:3] == ["district", "street", "community"]
    chief = next(p for p in spec.people if p.telegram_id == 1001)
    assert chief.addresses() == [("telegram", "1001"), ("wecom", "wangjianguo")]


def test_minimal_file_with_inline_boundary(tmp_path):
    spec = load_org_file(write(tmp_path, HEAD + GRID))
    assert spec.geometries["g1"].geom_type == "Polygon"
    assert spec.units()[-1].geometry is spec.geometries["g1"]


def test_boundaries_from_geojson_multipolygon(tmp_path):
    parts = {"type": "MultiPolygon", "coordinates": [json.loads(SQUARE), json.loads(SQUARE.replace("116.4", "116.5"))]}
    collection = {"type": "FeatureCollection",
                  "features": [{"type": "Feature", "properties": {"code": "g1"}, "geometry": parts}]}
    spec = load_org_file(write(tmp_path, 'boundaries = "grids.geojson"\n' + HEAD + BARE_GRID, collection))
    assert spec.geometries["g1"].geom_type == "MultiPolygon"


def test_not_toml(tmp_path):
    assert "not valid TOML" in problem(write(tmp_path, "[district\n"))


def test_missing_file(tmp_path):
    assert "cannot read" in problem(tmp_path / "nowhere.toml")


def test_unknown_key(tmp_path):
    message = problem(write(tmp_path, HEAD.replace('street = "s1"', 'stret = "s1"') + GRID))
    assert "communities #1" in message and "stret" in message


def test_duplicate_unit_codes_across_kinds(tmp_path):
    text = HEAD + GRID + '\n[[departments]]\ncode = "c1"\nname = "部门"\n'
    assert "unit code 'c1' is used 2 times" in problem(write(tmp_path, text))


def test_duplicate_person_address(tmp_path):
    people = '\n[[people]]\ncode = "p1"\nname = "甲"\ntelegram_id = 7\n' \
             '\n[[people]]\ncode = "p2"\nname = "乙"\ntelegram_id = 7\n'
    assert "person address 'telegram:7' is used 2 times" in problem(write(tmp_path, HEAD + GRID + people))


def test_unknown_street(tmp_path):
    text = HEAD.replace('street = "s1"', 'street = "s9"') + GRID
    assert "community 'c1' names unknown street 's9'" in problem(write(tmp_path, text))


def test_unknown_community(tmp_path):
    text = HEAD + GRID.replace('community = "c1"', 'community = "c9"')
    assert "grid 'g1' names unknown community 'c9'" in problem(write(tmp_path, text))


def test_grid_without_boundary(tmp_path):
    assert "grid 'g1' has no boundary" in problem(write(tmp_path, HEAD + BARE_GRID))


def test_boundary_both_inline_and_in_geojson(tmp_path):
    text = 'boundaries = "grids.geojson"\n' + HEAD + GRID
    collection = {"type": "FeatureCollection", "features": [feature("g1")]}
    assert "grid 'g1' has a boundary both inline and in grids.geojson" in problem(write(tmp_path, text, collection))


def test_invalid_geometry_is_explained(tmp_path):
    message = problem(write(tmp_path, HEAD + GRID.replace(SQUARE, BOWTIE)))
    assert "grid 'g1': invalid boundary: Self-intersection" in message


def test_ring_too_short(tmp_path):
    message = problem(write(tmp_path, HEAD + GRID.replace(SQUARE, "[[[116.40, 39.93], [116.41, 39.93]]]")))
    assert "grid 'g1': boundary is not a polygon" in message


def test_latitude_longitude_swapped(tmp_path):
    swapped = "[[[39.93, 116.40], [39.93, 116.41], [39.94, 116.41], [39.94, 116.40], [39.93, 116.40]]]"
    assert "outside longitude/latitude range" in problem(write(tmp_path, HEAD + GRID.replace(SQUARE, swapped)))


def test_wrong_geometry_type(tmp_path):
    text = HEAD + GRID.replace('type = "Polygon"', 'type = "LineString"')
    assert "grids #1, boundary" in problem(write(tmp_path, text))


def test_role_on_unknown_unit(tmp_path):
    person = '\n[[people]]\ncode = "p1"\nname = "甲"\nroles = [{ unit = "g9", role = "grid_chief" }]\n'
    assert "person 'p1' has a role on unknown unit 'g9'" in problem(write(tmp_path, HEAD + GRID + person))


def test_unknown_role_name(tmp_path):
    person = '\n[[people]]\ncode = "p1"\nname = "甲"\nroles = [{ unit = "g1", role = "mayor" }]\n'
    message = problem(write(tmp_path, HEAD + GRID + person))
    assert "people #1, roles #1, role" in message and "grid_chief" in message


def test_chat_on_unknown_unit(tmp_path):
    chat = '\n[[chats]]\nunit = "x"\ntelegram = -100\n'
    assert "chat -100 names unknown unit 'x'" in problem(write(tmp_path, HEAD + GRID + chat))


def test_chat_without_an_id(tmp_path):
    chat = '\n[[chats]]\nunit = "g1"\n'
    assert "chat for unit 'g1' names no chat" in problem(write(tmp_path, HEAD + GRID + chat))


def test_feature_for_unknown_grid(tmp_path):
    collection = {"type": "FeatureCollection", "features": [feature("g7")]}
    text = 'boundaries = "grids.geojson"\n' + HEAD + GRID
    assert "grids.geojson: feature names unknown grid 'g7'" in problem(write(tmp_path, text, collection))


def test_feature_listed_twice(tmp_path):
    collection = {"type": "FeatureCollection", "features": [feature("g1"), feature("g1")]}
    text = 'boundaries = "grids.geojson"\n' + HEAD + BARE_GRID
    assert "grid 'g1' is used 2 times in features" in problem(write(tmp_path, text, collection))


def test_missing_boundaries_file(tmp_path):
    text = 'boundaries = "grids.geojson"\n' + HEAD + GRID
    assert "cannot read boundaries file" in problem(write(tmp_path, text))


def test_several_problems_reported_at_once(tmp_path):
    text = HEAD + GRID + '\n[[chats]]\nunit = "x"\ntelegram = -1\n\n[[chats]]\nunit = "y"\ntelegram = -2\n'
    message = problem(write(tmp_path, text))
    assert "unknown unit 'x'" in message and "unknown unit 'y'" in message


def test_spec_built_in_code_is_checked_too():
    with pytest.raises(ValidationError, match="no boundary"):
        OrgSpec.model_validate({"district": {"code": "d", "name": "区"},
                                "streets": [{"code": "s", "name": "街"}],
                                "communities": [{"code": "c", "street": "s", "name": "社"}],
                                "grids": [{"code": "g", "community": "c", "name": "格"}]})
