"""The org file: a district's units, staff and group chats, kept in one TOML file
(plus an optional GeoJSON file with the grids' boundaries) so that the
organisation is edited and reviewed like code and imported with ``models.org.tree``.

Format::

    boundaries = "grids.geojson"   # optional, relative to this file (see below)

    [district]                     # exactly one; the root of the tree
    code = "demo"
    name = "示范区"
    name_en = "Demo District"      # optional everywhere; shown to English users

    [[streets]]                    # parent: the district
    code = "s1"
    name = "北桥街道"
    name_en = "Beiqiao Subdistrict"

    [[communities]]
    code = "c1"
    street = "s1"                  # code of a street
    name = "槐树社区"

    [[grids]]
    code = "g01"
    community = "c1"               # code of a community
    name = "槐树社区第一网格"
    # the boundary comes from the GeoJSON file (the feature whose properties.code
    # is "g01") or is written inline, never both:
    # boundary = { type = "Polygon", coordinates = [[[116.40, 39.93], ...]] }

    [[departments]]                # parent: the district
    code = "d-cg"
    name = "城管执法"
    name_en = "Urban management"

    [[people]]
    code = "p-wang"
    name = "王建国"
    telegram_id = 1001             # optional
    wecom_userid = "wangjg"        # optional
    roles = [{ unit = "g01", role = "grid_chief" }]

    [[chats]]                      # a group chat that speaks for a unit
    unit = "g01"
    telegram = -100101             # Telegram chat id; `wecom = "..."` is reserved for WeCom

The GeoJSON file is a FeatureCollection; each Feature's ``properties.code``
names a grid and its geometry is a Polygon or MultiPolygon in WGS-84
longitude/latitude order, holes allowed (a hole belongs to no grid).

Role names: grid_chief, grid_worker, community_secretary, street_dispatcher,
department_officer, commander, admin.

Unit codes (district, streets, communities, grids, departments) share one
namespace. Every problem is reported as an ``OrgFileError`` naming the file;
all cross-reference problems are listed at once so one edit round fixes them.
"""
from __future__ import annotations

import json
import tomllib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, NamedTuple, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import ErrorDetails
from shapely.errors import ShapelyError
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

RoleName = Literal[
    "grid_chief", "grid_worker", "community_secretary", "street_dispatcher",
    "department_officer", "commander", "admin",
]
ROLES: tuple[str, ...] = get_args(RoleName)

Code = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Position = Annotated[list[float], Field(min_length=2, max_length=3)]


class OrgFileError(ValueError):
    """An org file (or its boundaries file) that cannot be used; the message names the file."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}")


# ---- geometry -------------------------------------------------------------------------

class _GeoJSON(BaseModel):
    """GeoJSON objects may carry foreign members (bbox, id …); they are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class PolygonGeometry(_GeoJSON):
    type: Literal["Polygon"]
    coordinates: list[list[Position]]


class MultiPolygonGeometry(_GeoJSON):
    type: Literal["MultiPolygon"]
    coordinates: list[list[list[Position]]]


Geometry = Annotated[PolygonGeometry | MultiPolygonGeometry, Field(discriminator="type")]


class _FeatureProperties(_GeoJSON):
    code: Code


class _Feature(_GeoJSON):
    type: Literal["Feature"]
    properties: _FeatureProperties
    geometry: Geometry


class _FeatureCollection(_GeoJSON):
    type: Literal["FeatureCollection"]
    features: list[_Feature]


# ---- the org file's entries -------------------------------------------------------------

class _Entry(BaseModel):
    """Unknown keys are errors: a typo ("comunity") must not silently drop a link."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class UnitSpec(_Entry):
    """The district, a street or a department (their parent is implied)."""

    code: Code
    name: Name
    name_en: Name | None = None


class CommunitySpec(UnitSpec):
    street: Code


class GridSpec(UnitSpec):
    community: Code
    boundary: Geometry | None = None  # inline; otherwise from the boundaries file


class RoleSpec(_Entry):
    unit: Code
    role: RoleName


class PersonSpec(_Entry):
    code: Code
    name: Name
    telegram_id: int | None = None
    wecom_userid: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    roles: tuple[RoleSpec, ...] = ()

    def addresses(self) -> list[tuple[str, str]]:
        """(channel, external id) pairs, as stored in ``Identity``."""
        return _addresses(telegram=self.telegram_id, wecom=self.wecom_userid)


class ChatSpec(_Entry):
    unit: Code
    telegram: int | None = None
    wecom: Annotated[str, Field(min_length=1, max_length=64)] | None = None

    @model_validator(mode="after")
    def _names_a_chat(self) -> ChatSpec:
        if not self.addresses():
            raise ValueError(f"chat for unit {self.unit!r} names no chat (telegram or wecom)")
        return self

    def addresses(self) -> list[tuple[str, str]]:
        """(channel, chat id) pairs, as stored in ``ChatBinding``."""
        return _addresses(telegram=self.telegram, wecom=self.wecom)


def _addresses(**by_channel: int | str | None) -> list[tuple[str, str]]:
    return [(channel, str(value)) for channel, value in by_channel.items() if value is not None]


class UnitEntry(NamedTuple):
    """One unit of the tree, flattened for importing; ``geometry`` only for grids."""

    kind: str
    code: str
    name: str
    name_en: str | None
    parent: str | None
    geometry: BaseGeometry | None


class OrgSpec(_Entry):
    """A validated org file. Cross-references are checked here, so an ``OrgSpec``
    always describes a consistent tree; grid geometries are built once and kept."""

    boundaries: str | None = None
    district: UnitSpec
    streets: tuple[UnitSpec, ...] = ()
    communities: tuple[CommunitySpec, ...] = ()
    grids: tuple[GridSpec, ...] = ()
    departments: tuple[UnitSpec, ...] = ()
    people: tuple[PersonSpec, ...] = ()
    chats: tuple[ChatSpec, ...] = ()

    _geometries: dict[str, BaseGeometry] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> OrgSpec:
        """Context (from ``load_org_file``): ``features`` maps grid codes to boundaries
        read from ``features_source``."""
        context = info.context or {}
        features: Mapping[str, Any] = context.get("features", {})
        source = context.get("features_source") or "the boundaries file"
        problems = [*self._duplicates(), *self._dangling_references()]
        problems += [f"{source}: feature names unknown grid {code!r}"
                     for code in sorted(features.keys() - {g.code for g in self.grids})]
        for grid in self.grids:
            try:
                self._geometries[grid.code] = _grid_geometry(grid, features.get(grid.code), source)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def geometries(self) -> Mapping[str, BaseGeometry]:
        """Each grid's boundary as a shapely (Multi)Polygon, by grid code."""
        return MappingProxyType(self._geometries)

    def units(self) -> list[UnitEntry]:
        """All units, parents before children: district, streets, communities, grids, departments."""
        district = self.district.code
        return [
            UnitEntry("district", district, self.district.name, self.district.name_en, None, None),
            *(UnitEntry("street", s.code, s.name, s.name_en, district, None) for s in self.streets),
            *(UnitEntry("community", c.code, c.name, c.name_en, c.street, None) for c in self.communities),
            *(UnitEntry("grid", g.code, g.name, g.name_en, g.community, self._geometries.get(g.code))
              for g in self.grids),
            *(UnitEntry("department", d.code, d.name, d.name_en, district, None) for d in self.departments),
        ]

    def _duplicates(self) -> Iterator[str]:
        yield from _repeated("unit code", (u.code for u in self.units()))
        yield from _repeated("person code", (p.code for p in self.people))
        yield from _repeated("person address", (f"{ch}:{ext}" for p in self.people for ch, ext in p.addresses()))
        yield from _repeated("chat", (f"{ch}:{ext}" for c in self.chats for ch, ext in c.addresses()))

    def _dangling_references(self) -> Iterator[str]:
        streets = {s.code for s in self.streets}
        communities = {c.code for c in self.communities}
        units = {u.code for u in self.units()}
        yield from (f"community {c.code!r} names unknown street {c.street!r}"
                    for c in self.communities if c.street not in streets)
        yield from (f"grid {g.code!r} names unknown community {g.community!r}"
                    for g in self.grids if g.community not in communities)
        yield from (f"person {p.code!r} has a role on unknown unit {r.unit!r}"
                    for p in self.people for r in p.roles if r.unit not in units)
        yield from (f"chat {c.addresses()[0][1]} names unknown unit {c.unit!r}"
                    for c in self.chats if c.unit not in units)


def _repeated(label: str, values: Iterable[str]) -> Iterator[str]:
    for value, count in Counter(values).items():
        if count > 1:
            yield f"{label} {value!r} is used {count} times"


def _grid_geometry(grid: GridSpec, from_file: PolygonGeometry | MultiPolygonGeometry | None,
                   source: str) -> BaseGeometry:
    if grid.boundary is not None and from_file is not None:
        raise ValueError(f"grid {grid.code!r} has a boundary both inline and in {source}")
    boundary = grid.boundary or from_file
    if boundary is None:
        raise ValueError(f"grid {grid.code!r} has no boundary (inline or in the boundaries file)")
    return _valid_shape(boundary, f"grid {grid.code!r}")


def _valid_shape(boundary: PolygonGeometry | MultiPolygonGeometry, what: str) -> BaseGeometry:
    """A usable polygon, or a ValueError saying what is wrong with it."""
    try:
        geometry = shape(boundary.model_dump())
    except (ValueError, ShapelyError) as exc:
        raise ValueError(f"{what}: boundary is not a polygon: {exc}") from exc
    if geometry.is_empty:
        raise ValueError(f"{what}: boundary is empty")
    if not geometry.is_valid:
        raise ValueError(f"{what}: invalid boundary: {explain_validity(geometry)}")
    min_lon, min_lat, max_lon, max_lat = geometry.bounds
    if min_lon < -180 or max_lon > 180 or min_lat < -90 or max_lat > 90:
        raise ValueError(f"{what}: boundary is outside longitude/latitude range (is it lon, lat order?)")
    return geometry


# ---- loading ----------------------------------------------------------------------------

def load_org_file(path: str | Path) -> OrgSpec:
    """Read and validate an org file and the boundaries file it names."""
    path = Path(path)
    data = _read_toml(path)
    boundaries = data.get("boundaries")
    features = _read_features(path.parent / boundaries) if isinstance(boundaries, str) else {}
    try:
        return OrgSpec.model_validate(data, context={"features": features, "features_source": boundaries})
    except ValidationError as exc:
        raise OrgFileError(path, _describe(exc)) from exc


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise OrgFileError(path, f"cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise OrgFileError(path, f"not valid TOML: {exc}") from exc


def _read_features(path: Path) -> dict[str, PolygonGeometry | MultiPolygonGeometry]:
    """Grid code → boundary from a GeoJSON FeatureCollection."""
    try:
        collection = _FeatureCollection.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise OrgFileError(path, f"cannot read boundaries file: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise OrgFileError(path, f"not valid JSON: {exc}") from exc
    except ValidationError as exc:
        raise OrgFileError(path, _describe(exc)) from exc
    repeated = list(_repeated("grid", (f.properties.code for f in collection.features)))
    if repeated:
        raise OrgFileError(path, "; ".join(f"{problem} in features" for problem in repeated))
    return {f.properties.code: f.geometry for f in collection.features}


def _describe(exc: ValidationError) -> str:
    """Pydantic's errors as one line each: where (``grids #3, community``) and what."""
    return "; ".join(_describe_error(error) for error in exc.errors())


def _describe_error(error: ErrorDetails) -> str:
    where: list[str] = []
    for part in error["loc"]:
        if isinstance(part, int) and where:
            where[-1] += f" #{part + 1}"  # entries counted from 1, as a person reads the file
        else:
            where.append(str(part))
    cause = error.get("ctx", {}).get("error") if error["type"] == "value_error" else None
    message = str(cause) if cause is not None else error["msg"]
    return f"{', '.join(where)}: {message}" if where else message
