"""Open reports of the same category near a point, for "me too" instead of a duplicate.

The query prefilters on indexed columns (category, lat) with a bounding box around the
point, then measures great-circle distance (haversine) on the few rows left, so it
stays fast with millions of tickets."""
from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.lifecycle import OPEN
from models.store.tables import Ticket

EARTH_RADIUS_M = 6_371_008.8


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def bounding_box(lat: float, lon: float, radius_m: float) -> tuple[float, float, float, float]:
    """(min lat, max lat, min lon, max lon) enclosing the circle."""
    dlat = math.degrees(radius_m / EARTH_RADIUS_M)
    dlon = math.degrees(radius_m / (EARTH_RADIUS_M * max(math.cos(math.radians(lat)), 1e-6)))
    return lat - dlat, lat + dlat, lon - dlon, lon + dlon


# built once: every report's location step runs it
_NEARBY = select(Ticket).where(
    Ticket.category == bindparam("category"),
    Ticket.lat.between(bindparam("min_lat"), bindparam("max_lat")),
    Ticket.lon.between(bindparam("min_lon"), bindparam("max_lon")),
    Ticket.state.in_([s.value for s in OPEN]), Ticket.created_at >= bindparam("since"))


async def nearby(session: AsyncSession, category: str, lat: float, lon: float, now: datetime,
                 radius_m: float = 250, days: int = 30, limit: int = 5) -> list[tuple[Ticket, float]]:
    """Open tickets of ``category`` within ``radius_m``, reported in the last ``days``,
    nearest first."""
    min_lat, max_lat, min_lon, max_lon = bounding_box(lat, lon, radius_m)
    rows = await session.scalars(_NEARBY, {
        "category": category, "min_lat": min_lat, "max_lat": max_lat, "min_lon": min_lon,
        "max_lon": max_lon, "since": now - timedelta(days=days)})
    found = [(t, distance_m(lat, lon, t.lat, t.lon)) for t in rows]
    found = [(t, d) for t, d in found if d <= radius_m]
    return sorted(found, key=lambda pair: pair[1])[:limit]


async def in_grid(session: AsyncSession, category: str, grid_id: int, now: datetime,
                  days: int = 30, limit: int = 5) -> list[tuple[Ticket, None]]:
    """Without a point (a grid chosen from the menu): the grid's open reports of the category."""
    rows = await session.scalars(select(Ticket).where(
        Ticket.category == category, Ticket.grid_id == grid_id,
        Ticket.state.in_([s.value for s in OPEN]), Ticket.created_at >= now - timedelta(days=days))
        .order_by(Ticket.created_at.desc()).limit(limit))
    return [(t, None) for t in rows]
