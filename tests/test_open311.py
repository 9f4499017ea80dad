"""Open311 GeoReport v2 over real HTTP against the bot's running web server.

Every endpoint in both formats is checked against the structure of the spec's own
examples (wiki.open311.org/GeoReport_v2: field names and nesting), a request posted
through the API reaches the grid's chat and is claimed and resolved there by the
chief, every error case answers as the spec says in both formats, and no response
carries a resident's personal data."""
from __future__ import annotations

import asyncio
import json
import logging
import re
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from defusedxml import ElementTree as SafeET
from openapi_spec_validator import validate as validate_openapi
from sqlalchemy import func, select

from bot.__main__ import main
from bot.open311 import keys
from deadline_helpers import sweep_at
from flows import (
    DUTY_CHAT, G01, G01_CHAT, Filed, ask_note, body, claim, file_report, reply_note, wait_card,
)
from models.store.tables import ApiKey, Identity, Outbox, Person, Ticket

FORMATS = ("json", "xml")
NUMBER = re.compile(r"^\d{8}-\d{4}$")

# The structure of the spec's example documents (field names, in the spec's order).
SPEC_SERVICE = ["service_code", "service_name", "description", "metadata", "type", "keywords",
                "group"]
SPEC_DEFINITION = ["service_code", "attributes"]
SPEC_ATTRIBUTE = ["variable", "code", "datatype", "required", "datatype_description", "order",
                  "description", "values"]
SPEC_VALUE = ["key", "name"]
SPEC_CREATED = ["service_request_id", "service_notice", "account_id"]
SPEC_REQUEST = ["service_request_id", "status", "status_notes", "service_name", "service_code",
                "description", "agency_responsible", "service_notice", "requested_datetime",
                "updated_datetime", "expected_datetime", "address", "address_id", "zipcode",
                "lat", "long", "media_url"]
SPEC_ERROR = ["code", "description"]
LIST_TAGS = {"services", "service_requests", "attributes", "values", "errors"}
ROOTS = {"services": "services", "definition": "service_definition",
         "requests": "service_requests", "errors": "errors"}

# The spec's example POST request (its parameters and values; service_code is ours).
SPEC_POST = {
    "jurisdiction_id": "city.gov", "service_code": "road", "lat": "37.76524078",
    "long": "-122.4212043", "address_string": "1234 5th street", "email": "smit333@sfgov.edu",
    "device_id": "tt222111", "account_id": "123456", "first_name": "john", "last_name": "smith",
    "phone": "111111111", "description": "A large sinkhole is destroying the street",
    "media_url": "http://farm3.static.flickr.com/2002/2212426634_5ed477a060.jpg",
    "attribute[WHISPAWN]": "123456", "attribute[WHISDORN]": "COISL001",
}
PERSONAL = ["smit333", "sfgov", "john", "smith", "111111111", "tt222111", "123456"]


# ---- HTTP and the two formats --------------------------------------------------------------

class Answer:
    def __init__(self, status: int, content_type: str, raw: bytes, fmt: str):
        self.status, self.content_type, self.raw, self.fmt = status, content_type, raw, fmt
        self.text = raw.decode("utf-8")

    def data(self, root: str | None = None):
        """The document as Python data; XML mapped like the spec maps it to JSON."""
        if self.fmt == "json":
            assert self.content_type == "application/json", self.content_type
            return json.loads(self.text)
        assert self.content_type == "text/xml", self.content_type
        assert self.raw.startswith(b'<?xml version="1.0" encoding="utf-8"?>'), self.raw[:60]
        element = SafeET.fromstring(self.raw)
        if root is not None:
            assert element.tag == root, element.tag
        return _from_xml(element)


def _from_xml(element):
    if element.tag in LIST_TAGS:
        return [_from_xml(child) for child in element]
    if len(element):
        return {child.tag: _from_xml(child) for child in element}
    return element.text


def as_text(value):
    """A JSON scalar as the XML shows it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return [as_text(v) for v in value]
    if isinstance(value, dict):
        return {k: as_text(v) for k, v in value.items()}
    return None if value is None or value == "" else str(value)


def base(whistle) -> str:
    return whistle.web.origin + whistle.config.open311.path


async def call(whistle, method: str, path: str, fmt: str = "json", params=None,
               data=None, headers=None) -> Answer:
    url = f"{base(whistle)}/{path}.{fmt}" if fmt else f"{base(whistle)}/{path}"
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url, params=params, data=data, headers=headers) as r:
            return Answer(r.status, r.content_type, await r.read(), fmt or "json")


async def english(whistle, method: str, path: str, fmt: str = "json", **kwargs) -> Answer:
    headers = {"Accept-Language": "en", **(kwargs.pop("headers", None) or {})}
    return await call(whistle, method, path, fmt, headers=headers, **kwargs)


async def both(whistle, method: str, path: str, **kwargs) -> dict[str, Answer]:
    return {fmt: await call(whistle, method, path, fmt, **kwargs) for fmt in FORMATS}


async def new_key(whistle, name: str = "city-app") -> str:
    return await whistle.db.run(lambda s: keys.add(s, name, whistle.core.now()))


async def post(whistle, key: str, fmt: str = "json", **fields) -> Answer:
    return await call(whistle, "POST", "requests", fmt, data={"api_key": key, **fields})


async def posted_number(whistle, key: str, **fields) -> str:
    answer = await post(whistle, key, **fields)
    assert answer.status == 200, answer.text
    return answer.data()[0]["service_request_id"]


async def ticket_of(whistle, number: str) -> Ticket:
    return await whistle.db.run(lambda s: s.scalar(select(Ticket).where(Ticket.number == number)))


async def tickets_count(whistle) -> int:
    return await whistle.db.run(lambda s: s.scalar(select(func.count()).select_from(Ticket)))


def assert_error(answer: Answer, status: int, *parts: str) -> list[str]:
    assert answer.status == status, (answer.status, answer.text)
    errors = answer.data(ROOTS["errors"])
    assert errors, answer.text
    for error in errors:
        assert list(error) == SPEC_ERROR
        assert str(error["code"]) == str(status) and error["description"]
    descriptions = " | ".join(e["description"] for e in errors)
    for part in parts:
        assert part in descriptions, descriptions
    return [e["description"] for e in errors]


GARBAGE = {"service_code": "garbage", "lat": str(G01[0]), "long": str(G01[1]),
           "description": "Overflowing bins at the north gate"}


# ---- services ------------------------------------------------------------------------------

async def test_services_in_both_formats_have_the_spec_fields(whistle):
    answers = await both(whistle, "GET", "services", params={"jurisdiction_id": "city.gov"})
    services = answers["json"].data()
    assert answers["json"].status == answers["xml"].status == 200
    assert [s["service_code"] for s in services] == [c.code for c in whistle.config.categories]
    for service in services:
        assert list(service) == SPEC_SERVICE
        assert service["metadata"] is True and service["type"] == "realtime"
    garbage = services[0]
    assert garbage["service_name"] == "垃圾堆放"  # the default locale
    assert {"garbage", "垃圾堆放", "Garbage and litter"} <= set(garbage["keywords"].split(", "))
    assert answers["xml"].data(ROOTS["services"]) == as_text(services)

    english = (await call(whistle, "GET", "services", params={"locale": "en"})).data()
    assert english[0]["service_name"] == "Garbage and litter"
    assert english[0]["group"] == "resident request"
    assert "5 working days" in english[0]["description"]
    by_header = await call(whistle, "GET", "services", "xml",
                           headers={"Accept-Language": "en-GB,en;q=0.9"})
    assert by_header.data()[0]["service_name"] == "Garbage and litter"


async def test_service_definition_in_both_formats_lists_the_grids(whistle):
    answers = await both(whistle, "GET", "services/garbage", params={"locale": "en"})
    definition = answers["json"].data()
    assert list(definition) == SPEC_DEFINITION and definition["service_code"] == "garbage"
    [attribute] = definition["attributes"]
    assert list(attribute) == SPEC_ATTRIBUTE
    assert (attribute["code"], attribute["datatype"], attribute["variable"],
            attribute["required"], attribute["order"]) == ("grid", "singlevaluelist", True,
                                                           False, 1)
    assert [list(v) for v in attribute["values"]] == [SPEC_VALUE] * 12
    assert attribute["values"][0] == {"key": "g01", "name": "Huaishu Grid 1"}
    assert answers["xml"].data(ROOTS["definition"]) == as_text(definition)


# ---- posting, and the same lifecycle as a chat report ----------------------------------------

async def test_the_specs_example_request_is_filed_and_reaches_the_duty_chat(whistle, api):
    """The spec's example POST (a point in San Francisco: outside every grid) in XML: the
    ticket waits in the duty chat for routing, exactly like a chat report from outside."""
    key = await new_key(whistle)
    answer = await post(whistle, key, "xml", **SPEC_POST)
    assert answer.status == 200, answer.text
    [created] = answer.data(ROOTS["requests"])
    assert list(created) == SPEC_CREATED
    assert NUMBER.match(created["service_request_id"]) and created["service_notice"]
    assert created["account_id"] is None
    ticket = await ticket_of(whistle, created["service_request_id"])
    assert (ticket.channel, ticket.state, ticket.route_reason) == ("open311", "reported", "outside")
    assert (ticket.media_url, ticket.address) == (SPEC_POST["media_url"], "1234 5th street")
    assert ticket.contact_phone == "111111111" and not ticket.anonymous
    card = await wait_card(api, DUTY_CHAT, ticket.id, prefix="route:")
    assert SPEC_POST["description"] in body(card)

    for fmt, got in (await both(whistle, "GET", f"requests/{ticket.number}")).items():
        [record] = got.data(ROOTS["requests"])
        assert list(record) == SPEC_REQUEST
        assert record["status"] == "open" and record["address"] == "1234 5th street"
        assert float(record["lat"]) == pytest.approx(37.76524078)
        assert float(record["long"]) == pytest.approx(-122.4212043)
        assert record["media_url"] == SPEC_POST["media_url"]
        assert not any(p in got.text for p in PERSONAL), got.text


async def test_a_posted_request_is_claimed_and_resolved_in_the_grid_chat(whistle, api, people, clock):
    people(1001, "王建国")
    key = await new_key(whistle)
    answer = await post(whistle, key, "json", **GARBAGE, email="li@example.org",
                        first_name="Li", last_name="Si", phone="+86 138 0013 8000")
    assert answer.status == 200, answer.text
    number = answer.data()[0]["service_request_id"]
    assert "槐树社区第一网格" in answer.data()[0]["service_notice"]
    ticket = await ticket_of(whistle, number)
    assert (ticket.channel, ticket.state, ticket.route_reason) == ("open311", "routed", "point")
    card = await wait_card(api, G01_CHAT, ticket.id, prefix="claim:")
    assert GARBAGE["description"] in body(card) and f"return:{ticket.id}" in str(card)
    opened = (await call(whistle, "GET", f"requests/{number}")).data()[0]
    assert (opened["status"], opened["agency_responsible"]) == ("open", "槐树社区第一网格")
    assert opened["expected_datetime"] == ticket.resolve_due_at.astimezone(
        whistle.config.tz).isoformat(timespec="seconds")
    assert opened["requested_datetime"] == "2026-11-23T10:00:00+08:00"

    filed = Filed(number, ticket.id, card)
    clock.advance(minutes=20)
    assert number in (await claim(api, 1001, filed))["text"]
    claimed = (await call(whistle, "GET", f"requests/{number}", params={"locale": "en"})).data()[0]
    assert (claimed["status"], claimed["status_notes"]) == ("open", "claimed")
    assert claimed["updated_datetime"] == "2026-11-23T10:20:00+08:00"

    clock.advance(hours=2)
    prompt = await ask_note(api, 1001, G01_CHAT, card["message_id"], f"resolve:{ticket.id}", number)
    await reply_note(api, 1001, G01_CHAT, prompt, "Bins emptied, call 13900139000 for more")
    await api.wait_for(lambda: "Bins emptied" in body(api.message(G01_CHAT, card["message_id"])))
    for fmt, got in (await both(whistle, "GET", f"requests/{number}",
                                params={"locale": "en"})).items():
        [record] = got.data(ROOTS["requests"])
        assert record["status"] == "closed"
        assert record["status_notes"] == "resolved: Bins emptied, call *** for more"
        assert record["updated_datetime"] == "2026-11-23T12:20:00+08:00"
        assert "li@example.org" not in got.text and "0013 8000" not in got.text, got.text
    listed = (await call(whistle, "GET", "requests", params={"status": "closed"})).data()
    assert [r["service_request_id"] for r in listed] == [number]
    assert (await call(whistle, "GET", "requests", params={"status": "open"})).data() == []


async def test_a_reporter_without_a_chat_identity_is_never_messaged(whistle, api, people, clock):
    """The same client and e-mail is one person, without any chat identity; nothing is
    queued for them, and the unanswered vote closes the ticket as unrated."""
    people(1001, "王建国")
    key = await new_key(whistle)
    first = await posted_number(whistle, key, **GARBAGE, email="Wang@Example.org")
    second = await posted_number(whistle, key, **GARBAGE, email="wang@example.org")
    anonymous = await posted_number(whistle, key, **GARBAGE)
    a, b, c = [await ticket_of(whistle, n) for n in (first, second, anonymous)]
    assert a.reporter_id == b.reporter_id != c.reporter_id
    other_key = await new_key(whistle, "another-app")
    d = await ticket_of(whistle, await posted_number(whistle, other_key, **GARBAGE,
                                                     email="wang@example.org"))
    assert d.reporter_id != a.reporter_id  # one person per client and e-mail
    reporters = [a.reporter_id, c.reporter_id, d.reporter_id]
    identities = await whistle.db.run(lambda s: s.scalar(select(func.count()).select_from(
        Identity).where(Identity.person_id.in_(reporters))))
    assert identities == 0
    person = await whistle.db.run(lambda s: s.get(Person, a.reporter_id))
    assert "wang" not in (person.code or "").lower() and person.code.startswith("open311:")

    card = await wait_card(api, G01_CHAT, a.id, prefix="claim:")
    await claim(api, 1001, Filed(first, a.id, card))
    prompt = await ask_note(api, 1001, G01_CHAT, card["message_id"], f"resolve:{a.id}", first)
    await reply_note(api, 1001, G01_CHAT, prompt, "Cleared")
    await sweep_at(whistle, clock, clock.now + timedelta(hours=80))
    row = await ticket_of(whistle, first)
    assert (row.state, row.unrated) == ("closed", True)
    chats = await whistle.db.run(lambda s: s.scalars(select(Outbox.chat_id).distinct()))
    assert all(chat.startswith("-") or chat == "1001" for chat in chats), list(chats)


# ---- listing ---------------------------------------------------------------------------------

async def test_listing_filters_by_number_code_status_and_dates(whistle, clock):
    key = await new_key(whistle)
    old = await posted_number(whistle, key, **GARBAGE)
    clock.advance(days=10)
    road = await posted_number(whistle, key, **{**GARBAGE, "service_code": "road"})
    clock.advance(hours=1)
    newest = await posted_number(whistle, key, **GARBAGE)

    async def numbers(fmt="json", **query):
        answer = await call(whistle, "GET", "requests", fmt, params=query)
        assert answer.status == 200, answer.text
        return [r["service_request_id"] for r in answer.data(ROOTS["requests"])]

    for fmt in FORMATS:
        assert await numbers(fmt) == [newest, road, old]  # newest first
        assert await numbers(fmt, service_code="garbage") == [newest, old]
        assert await numbers(fmt, service_code="road,stall") == [road]
        assert await numbers(fmt, service_request_id=f"{old}, 19990101-0001,{road}",
                             service_code="stall") == [road, old]  # ids override the rest
        assert await numbers(fmt, start_date="2026-11-30T00:00:00+08:00") == [newest, road]
        assert await numbers(fmt, end_date="2026-11-24T00:00:00Z") == [old]
        assert await numbers(fmt, start_date="2026-11-23", end_date="2026-11-23T12:00:00+08:00") \
            == [old]
        assert await numbers(fmt, status="open,closed") == [newest, road, old]
        # the spec's sample query: its dates are long ago, its jurisdiction is accepted
        assert await numbers(fmt, start_date="2010-05-24T00:00:00Z",
                             end_date="2010-06-24T00:00:00Z", status="open",
                             jurisdiction_id="city.gov") == []
    whistle.config.open311.max_results = 2
    assert await numbers() == [newest, road]
    whistle.config.open311.max_results = 1000
    clock.advance(days=85)  # the default window is the last 90 days
    assert await numbers() == [newest, road]


# ---- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
async def test_every_error_answers_as_the_spec_says(whistle, fmt):
    call = english  # the assertions read the English error texts
    key = await new_key(whistle)
    revoked = await new_key(whistle, "old-app")
    await whistle.db.run(lambda s: keys.revoke(s, "old-app", whistle.core.now()))
    before = await tickets_count(whistle)

    async def posting(**fields):
        return await call(whistle, "POST", "requests", fmt, data=fields)

    assert_error(await posting(**GARBAGE), 403, "api_key")
    assert_error(await posting(api_key="w311_nope", **GARBAGE), 403, "api_key")
    assert_error(await posting(api_key=revoked, **GARBAGE), 403, "api_key")
    assert_error(await posting(api_key="w311_nope", service_code="garbage"), 403)  # key first
    assert_error(await posting(api_key=key, **{**GARBAGE, "service_code": "potholes"}), 404,
                 "potholes")
    assert_error(await posting(api_key=key, **{**GARBAGE, "service_code": ""}), 400,
                 "service_code")
    too_long = "x" * (whistle.config.open311.max_description + 1)
    assert_error(await posting(api_key=key, **{**GARBAGE, "description": too_long}), 400, "4000")
    assert_error(await posting(api_key=key, service_code="garbage", description="Bins"), 400,
                 "location")
    both_missing = assert_error(await posting(api_key=key, service_code="garbage",
                                              media_url="ftp://x.org/a.jpg"), 400)
    assert len(both_missing) == 2  # every problem at once
    for bad, word in [({"long": ""}, "together"), ({"lat": "north"}, "numbers"),
                      ({"lat": "91"}, "numbers"), ({"media_url": "ftp://x.org/a.jpg"}, "media_url"),
                      ({"media_url": "javascript:alert(1)"}, "media_url"),
                      ({"first_name": "x" * 101}, "first_name"),
                      ({"address_string": "x" * 501}, "address_string"),
                      ({"attribute[grid]": "g99"}, "g99"), ({"attribute[grid]": "c1"}, "c1")]:
        assert_error(await posting(api_key=key, **{**GARBAGE, **bad}), 400, word)
    assert await tickets_count(whistle) == before  # nothing was filed

    assert_error(await call(whistle, "GET", "services/potholes", fmt), 404, "potholes")
    assert_error(await call(whistle, "GET", "requests/20000101-0001", fmt), 404, "20000101-0001")
    for query, word in [({"start_date": "yesterday"}, "start_date"),
                        ({"end_date": "2026-11-23T10:00:00"}, "end_date"),  # no time zone
                        ({"start_date": "2026-11-23T00:00:00Z", "end_date": "2026-11-01T00:00:00Z"},
                         "end_date"),
                        ({"start_date": "2026-01-01T00:00:00Z", "end_date": "2026-11-01T00:00:00Z"},
                         "90"),
                        ({"status": "pending"}, "status")]:
        assert_error(await call(whistle, "GET", "requests", fmt, params=query), 400, word)

    whistle.config.open311.jurisdiction_id = "demo.example.org"
    for method, path, extra in [("GET", "services", {}), ("GET", "services/garbage", {}),
                                ("GET", "requests", {}), ("GET", "requests/20000101-0001", {}),
                                ("POST", "requests", {"api_key": key, **GARBAGE})]:
        wrong = {"jurisdiction_id": "city.gov", **extra}
        answer = await call(whistle, method, path, fmt, **(
            {"data": wrong} if method == "POST" else {"params": wrong}))
        assert_error(answer, 404, "city.gov")
    good = await call(whistle, "GET", "services", fmt, params={"jurisdiction_id": "demo.example.org"})
    assert good.status == 200
    assert (await posting(api_key=key, jurisdiction_id="demo.example.org", **GARBAGE)).status == 200


async def test_an_unknown_format_and_the_longest_description(whistle):
    answer = await call(whistle, "GET", "services", "html")
    answer.fmt = "xml"
    assert_error(answer, 400, "html")
    key = await new_key(whistle)
    longest = "说" * whistle.config.open311.max_description
    number = await posted_number(whistle, key, **{**GARBAGE, "description": longest})
    assert (await ticket_of(whistle, number)).description == longest


# ---- privacy -------------------------------------------------------------------------------

async def test_no_personal_data_of_chat_or_api_reporters_is_returned(whistle, api, people):
    resident = people(9001, "Zhang Wei", language="en")
    await file_report(api, whistle, resident, contact="phone", phone="+8613800138000",
                      description="Rubbish at gate 3, ring me on 13800138000 or zw@mail.cn")
    key = await new_key(whistle)
    await post(whistle, key, **{**GARBAGE, "email": "li@example.org", "first_name": "Lihua",
                                "last_name": "Chen", "phone": "010-6655-4433",
                                "device_id": "device-77", "account_id": "acct-99"})
    secrets = ["Zhang", "Wei", "9001", "13800138000", "zw@mail.cn", "li@example.org", "Lihua",
               "Chen", "6655", "device-77", "acct-99", key]
    numbers = await whistle.db.run(lambda s: s.scalars(select(Ticket.number)))
    pages = [await call(whistle, "GET", "requests", fmt) for fmt in FORMATS]
    pages += [await call(whistle, "GET", f"requests/{n}", fmt) for n in numbers for fmt in FORMATS]
    for page in pages:
        assert page.status == 200
        leaked = [s for s in secrets if s in page.text]
        assert not leaked, (leaked, page.text)
    listed = pages[0].data()
    assert {r["description"] for r in listed} == {
        "Rubbish at gate 3, ring me on *** or ***", GARBAGE["description"]}


# ---- OpenAPI and keys ------------------------------------------------------------------------

async def test_the_openapi_document_names_every_endpoint(whistle):
    answer = await call(whistle, "GET", "openapi.json", fmt=None)
    assert answer.status == 200
    document = answer.data()
    assert document["openapi"].startswith("3.")
    validate_openapi(document)  # raises on anything OpenAPI 3 does not allow
    assert document["servers"] == [{"url": "/open311/v2"}]
    operations = {(path, method) for path, item in document["paths"].items() for method in item}
    assert operations == {("/discovery.{format}", "get"), ("/services.{format}", "get"), ("/services/{service_code}.{format}", "get"),
                          ("/requests.{format}", "get"), ("/requests.{format}", "post"),
                          ("/requests/{service_request_id}.{format}", "get")}
    refs = re.findall(r'"\$ref": "#/components/schemas/(\w+)"', answer.text)
    assert refs and set(refs) <= set(document["components"]["schemas"])
    for path, item in document["paths"].items():
        for operation in item.values():
            names = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert names == set(re.findall(r"{(\w+)}", path)), path
            assert {"200", "400"} <= set(operation["responses"])
    schema = document["components"]["schemas"]
    assert list(schema["ServiceRequest"]["properties"]) == SPEC_REQUEST
    assert list(schema["Service"]["properties"]) == SPEC_SERVICE
    assert schema["NewRequest"]["properties"]["description"]["maxLength"] == 4000


async def test_the_apikey_commands(whistle, config, tmp_path, capsys):
    text = (Path(__file__).parent.parent / "config.example.toml").read_text()
    text = text.replace('url = "sqlite+aiosqlite:///var/whistle.db"',
                        f'url = "{config.database.url}"')
    text = text.replace('org_file = "samples/district/district.toml"',
                        f'org_file = "{config.org_file}"')
    source = tmp_path / "cli.toml"
    source.write_text(text)

    async def run(*argv) -> tuple[int, str, str]:
        capsys.readouterr()
        handlers, level = logging.root.handlers[:], logging.root.level
        try:
            code = await asyncio.to_thread(main, ["--config", str(source), "apikey", *argv])
        finally:  # the CLI sets up logging to this test's captured stderr: undo it
            logging.root.handlers[:], logging.root.level = handlers, level
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = await run("add", "fixmystreet")
    assert code == 0
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("w311_") and len(secret) > 40
    assert (await post(whistle, secret, **GARBAGE)).status == 200
    code, out, _ = await run("list")
    assert code == 0 and "fixmystreet\tactive" in out and secret not in out and "last used 2026" in out
    code, _, err = await run("add", "fixmystreet")
    assert code == 1 and "revoke it first" in err
    code, out, _ = await run("revoke", "fixmystreet")
    assert code == 0 and "revoked 1" in out
    assert_error(await post(whistle, secret, **GARBAGE), 403, "api_key")
    code, out, _ = await run("list")
    assert "fixmystreet\trevoked" in out
    code, _, err = await run("revoke", "nobody")
    assert code == 1 and "no active key" in err
    stored = list(await whistle.db.run(lambda s: s.scalars(select(ApiKey.key_hash))))
    assert stored == [keys.digest(secret)]  # only the hash is kept
