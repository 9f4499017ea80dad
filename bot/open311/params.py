"""Reading and checking GeoReport parameters. Every problem becomes an ``Open311Error``
with a description the client can show; all the 400s of one request come together."""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from models.messages.i18n import Translator, normalise
from models.tickets.external import ExternalReport

from .catalog import GRID_ATTRIBUTE
from .records import STATUSES, Query
from .wire import Open311Error

MAX_ADDRESS = 500
MAX_ADDRESS_ID = 64
MAX_NAME = 100
MAX_EMAIL = 254
MAX_URL = 1000
MIN_YEAR, MAX_YEAR = 1970, 9998  # start_date and end_date (later ones would overflow)
PHONE_PATTERN = r"^\+?[0-9][0-9 ()\-.]{1,30}$"
_PHONE = re.compile(PHONE_PATTERN)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # keeps tabs and line breaks


def value(params: Mapping[str, str], name: str) -> str:
    """A parameter, stripped; an empty one counts as absent (the spec's optional arguments)."""
    return _CONTROL.sub("", params.get(name) or "").strip()


def locale_of(params: Mapping[str, str], accept_language: str | None, default: str) -> str:
    """``locale=en`` (or zh_Hans), else the first language of Accept-Language, else the default."""
    wanted = value(params, "locale") or (accept_language or "").split(",")[0].split(";")[0]
    return normalise(wanted.strip()) or default


def check_jurisdiction(params: Mapping[str, str], configured: str, t: Translator) -> None:
    """Accepted always; checked when the deployment names its jurisdiction."""
    given = value(params, "jurisdiction_id")
    if configured and given and given != configured:
        raise Open311Error(404, t._("jurisdiction_id {given} was not found.", given=given))


def comma_list(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))


def w3_datetime(text: str, name: str, tz, t: Translator) -> datetime:
    """A W3C date-time with its offset (``2010-05-24T00:00:00Z``); a bare date is local midnight."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or (moment.tzinfo is None and len(text) != 10):
        raise Open311Error(400, t._("{name} must be a W3C date-time with a time zone, "
                                    "e.g. 2010-01-01T00:00:00Z.", name=name))
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise Open311Error(400, t._("{name} must be a date between the years {first} and {last}.",
                                    name=name, first=MIN_YEAR, last=MAX_YEAR))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)


def request_query(params: Mapping[str, str], config, now: datetime, t: Translator) -> Query:
    """GET requests: service_request_id overrides everything; else the date range (the last
    ``default_days`` days by default, never longer), service_code and status."""
    cfg = config.open311
    numbers = comma_list(value(params, "service_request_id"))
    if numbers:
        return Query(numbers=numbers[:cfg.max_results], limit=cfg.max_results)
    errors = []
    statuses = comma_list(value(params, "status").lower())
    if any(s not in STATUSES for s in statuses):
        errors.append(t._("status must be open, closed or both (comma separated)."))
    start = end = None
    span = timedelta(days=cfg.default_days)
    for name in ("start_date", "end_date"):
        if value(params, name):
            try:
                moment = w3_datetime(value(params, name), name, config.tz, t)
            except Open311Error as exc:
                errors.extend(exc.descriptions)
                continue
            start, end = (moment, end) if name == "start_date" else (start, moment)
    if not errors:
        try:
            end = end or (start + span if start else now)
            start = start or end - span
        except OverflowError:  # a huge default_days
            raise Open311Error(400, t._("start_date and end_date are out of range.")) from None
        if end < start:
            errors.append(t._("end_date is before start_date."))
        elif end - start > span:
            errors.append(t._("start_date and end_date may not be more than {days} days apart.",
                              days=cfg.default_days))
    if errors:
        raise Open311Error(400, *errors)
    return Query(codes=comma_list(value(params, "service_code")), statuses=statuses,
                 start=start, end=end, limit=cfg.max_results)


def new_report(params: Mapping[str, str], config,
               t: Translator) -> tuple[ExternalReport, str, list[str]]:
    """POST requests: the report, the grid code it names (``attribute[grid]``, or "") and
    what was left out of it. ``description`` is optional, as in the spec; a malformed
    ``phone`` or ``email`` does not refuse the report: the field is dropped, and the
    notes say so (for ``service_notice``)."""
    code = value(params, "service_code")
    if code and config.category(code) is None:
        raise Open311Error(404, t._("service_code {code} was not found.", code=code))
    errors = [] if code else [t._("service_code was not provided.")]
    location = _point(params, t, errors)
    address, address_id = value(params, "address_string"), value(params, "address_id")
    if location is None and not address and not address_id and not any(
            value(params, n) for n in ("lat", "long")):
        errors.append(t._("A location is required: lat and long, address_string or address_id."))
    if len(address) > MAX_ADDRESS:
        errors.append(t._("address_string is longer than {n} characters.", n=MAX_ADDRESS))
    if len(address_id) > MAX_ADDRESS_ID:
        errors.append(t._("address_id is longer than {n} characters.", n=MAX_ADDRESS_ID))
    description = value(params, "description")
    if len(description) > config.open311.max_description:
        errors.append(t._("description is longer than {n} characters.",
                          n=config.open311.max_description))
    media_url = value(params, "media_url")
    parts = urlsplit(media_url) if media_url else None
    if parts is not None and (parts.scheme not in ("http", "https") or not parts.netloc
                              or len(media_url) > MAX_URL):
        errors.append(t._("media_url must be an http or https URL of at most {n} characters.",
                          n=MAX_URL))
    dropped = []
    email = value(params, "email").lower()
    if email and (len(email) > MAX_EMAIL or not _EMAIL.match(email)):
        email = ""
        dropped.append(t._("email is not a valid e-mail address and was left out."))
    phone = value(params, "phone")
    if phone and not _PHONE.match(phone):
        phone = ""
        dropped.append(t._("phone is not a valid phone number and was left out."))
    names = [value(params, "first_name"), value(params, "last_name")]
    if any(len(n) > MAX_NAME for n in names):
        errors.append(t._("first_name and last_name may have at most {n} characters each.",
                          n=MAX_NAME))
    if errors:
        raise Open311Error(400, *errors)
    account = value(params, "account_id")[:200]
    key = f"email:{email}" if email else (f"account:{account}" if account else None)
    report = ExternalReport(
        category=code, description=description, location=location, address=address or None,
        address_id=address_id or None, media_url=media_url or None,
        name=" ".join(n for n in names if n), phone=phone or None, reporter_key=key)
    return report, value(params, f"attribute[{GRID_ATTRIBUTE}]"), dropped


def _point(params: Mapping[str, str], t: Translator, errors: list[str]) -> tuple[float, float] | None:
    lat, lon = value(params, "lat"), value(params, "long")
    if not lat and not lon:
        return None
    if not lat or not lon:
        errors.append(t._("lat and long must be given together."))
        return None
    try:
        point = float(lat), float(lon)
    except ValueError:
        point = None
    if point is None or not all(map(math.isfinite, point)) or not (
            -90 <= point[0] <= 90 and -180 <= point[1] <= 180):
        errors.append(t._("lat and long must be numbers (WGS-84 degrees)."))
        return None
    return point
