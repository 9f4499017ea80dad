"""Open311 hardened (issue #19): no phone number, identity card or exact point of a chat
report leaks, no 500s and no plain-text answers, the spec where it says "must" (optional
description, personal fields dropped with a notice, 400 for a general error, service
discovery), a per-key rate limit and the key in a header, and an OpenAPI description
that matches the server. Everything over real HTTP against the running bot."""
from __future__ import annotations

import logging
import re

import aiohttp
import pytest
from chat import Resident, all_button_data, body
from openapi_spec_validator import validate as validate_openapi
from sqlalchemy import text as sql
from test_open311 import (
    FORMATS, GARBAGE, ROOTS, SPEC_ERROR, assert_error, base, call, english, new_key, post,
    posted_number, ticket_of, tickets_count,
)
from test_resident_side import G07, nearby_lines, offset, walk

from flows import G01, file_report
from models.intake.nearby import distance_m

# ---- the masking itself, on the texts the outside check found ---------------------------

LEAKS = [
    ("我是张三，电话13655556666，***", "我是张三，电话***，***"),
    ("电话:13655556666号楼下", "电话:***号楼下"),
    ("tel13655556666now", "tel***now"),
    ("请打138 - 0013 - 8000找我", "请打***找我"),
    ("请打138,0013,8000找我", "请打***找我"),
    ("号码 138.0013.8000。", "号码 ***。"),
    ("手机一三八零零一三八零零零，谢谢", "手机***，谢谢"),
    ("手机幺三八 〇〇一三 八〇〇〇", "手机***"),
    ("手机１３８００１３８０００", "手机***"),
    ("手机１３８－００１３－８０００", "手机***"),
    ("+86 138 0013 8000", "***"),
    ("座机(010)6655-4433转12", "座机(***转12"),
    ("座机0755-88887777", "座机***"),
    ("座机０２１ ６６５５ ４４３３", "座机***"),
    ("身份证11010519491231002X，谢谢", "身份证***，谢谢"),
    ("身份证110105 19491231 002x", "身份证***"),
    ("邮箱zw＠mail.cn", "邮箱***"),
    ("邮箱zw@mail．cn或ZW＠MAIL．CN", "邮箱***或***"),
    ("13655556666@qq.com", "***"),
]
KEPT = [
    "工单20261123-0007已处理", "2026-11-23 10:00 清运", "2026年11月23日", "3号楼2单元501室",
    "共5户，约30平方米", "第一网格、第二网格", "路灯坏了3盏，2026.11.20 起", "罚款1,000,000元",
]


@pytest.mark.parametrize("given, shown", LEAKS)
def test_mask_finds_phone_numbers_identity_cards_and_addresses_in_any_form(given, shown):
    from models.messages.masking import mask
    assert mask(given) == shown


@pytest.mark.parametrize("given", KEPT)
def test_mask_keeps_ticket_numbers_dates_and_small_numbers(given):
    from models.messages.masking import mask
    assert mask(given) == given


async def test_a_chat_reports_phone_next_to_chinese_is_masked_in_get_requests(whistle, api, people):
    resident = people(9001, "Zhang San", language="en")
    description = "我是张三，电话13655556666，邮箱zs＠mail.cn"
    await file_report(api, whistle, resident, description=description)
    key = await new_key(whistle)
    for given, _shown in LEAKS[1:8]:
        await posted_number(whistle, key, **{**GARBAGE, "description": given})
    for fmt in FORMATS:
        page = await call(whistle, "GET", "requests", fmt)
        assert page.status == 200
        for secret in ("13655556666", "5555", "6666", "zs＠mail", "0013", "8000", "一三八",
                       "〇〇一三"):
            assert secret not in page.text, (secret, page.text)
    listed = (await call(whistle, "GET", "requests")).data()
    assert "我是张三，电话***，邮箱***" in {r["description"] for r in listed}


async def test_the_me_too_list_and_a_followed_timeline_mask_other_residents_numbers(
        whistle, api, people):
    people(9101, "Qiao Mei", language="en")
    people(9001, "Li Si", language="en")
    first, other = Resident(api, 9101), Resident(api, 9001)
    description = "垃圾堆在门口好几天了，电话13655556666，身份证11010519491231002X"
    await walk_and_confirm(first, description)
    suggestions = await walk(other, "nearby", where=("point", offset(G07, north=20)))
    [line] = nearby_lines(suggestions)
    assert "13655556666" not in line and "1949" not in line, line
    assert "电话***，身份证***" in line, line

    [data] = [d for d in all_button_data(suggestions) if d.startswith("mt:")]
    await other.press(suggestions, data, "You now follow")
    ticket_id = data.split(":")[1]
    followed = await other.press(await other.text("/my", "Your reports"), f"my:{ticket_id}",
                                 "Status")
    assert "电话***，身份证***" in body(followed) and "13655556666" not in body(followed)
    own = await first.press(await first.text("/my", "Your reports"), f"my:{ticket_id}", "Status")
    assert description in body(own)  # the reporter sees what they wrote


async def walk_and_confirm(r: Resident, description: str) -> None:
    summary = await walk(r, where=("point", G07), description=description)
    after = r.last_id()
    r.api.user_presses(r.id, r.id, summary["message_id"], "cf")
    await r.api.wait_message(r.id, after=after, contains="ticket number is")


# ---- coordinates ---------------------------------------------------------------------------

async def published_point(whistle, number: str) -> tuple[float, float]:
    [record] = (await call(whistle, "GET", f"requests/{number}")).data()
    return record["lat"], record["long"]


async def test_a_chat_reports_point_is_published_rounded_unless_the_category_is_exact(
        whistle, api, people):
    resident = people(9001, "Li Si", language="en")
    exact = offset(G01, north=13.3, east=-21.7)
    filed = await file_report(api, whistle, resident, point=exact)
    ticket = await ticket_of(whistle, filed.number)
    assert (ticket.lat, ticket.lon) == pytest.approx(exact)  # stored exactly, for the grid
    shown = await published_point(whistle, filed.number)
    assert shown != pytest.approx(exact, abs=1e-6)
    assert distance_m(*shown, *exact) <= 100 * 0.75  # within half a cell of about 100 m
    neighbour = await file_report(api, whistle, resident, point=offset(exact, north=1, east=1))
    assert await published_point(whistle, neighbour.number) == shown  # the same cell

    whistle.config.open311.location_precision_m = 1000
    coarse = await published_point(whistle, filed.number)
    assert 0 < distance_m(*coarse, *exact) <= 1000 * 0.75 and coarse != shown
    whistle.config.open311.location_precision_m = 0
    assert await published_point(whistle, filed.number) == pytest.approx(exact)

    whistle.config.open311.location_precision_m = 100
    whistle.config.category("road").public_exact = True
    road = await file_report(api, whistle, resident, point=exact, category="road")
    assert await published_point(whistle, road.number) == pytest.approx(exact)
    key = await new_key(whistle)  # a point an API client posted itself is returned as given
    posted = await posted_number(whistle, key, **{**GARBAGE, "lat": str(exact[0]),
                                                  "long": str(exact[1])})
    assert await published_point(whistle, posted) == pytest.approx(exact)


# ---- no 500s, no plain text ----------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
async def test_dates_out_of_range_are_a_400(whistle, fmt):
    for query in [{"start_date": "0001-01-01T00:00:00Z"}, {"end_date": "0001-01-01T00:00:00Z"},
                  {"start_date": "9999-12-31T00:00:00Z"}, {"end_date": "9999-12-31T23:59:59Z"},
                  {"start_date": "0001-01-01T00:00:00+14:00", "end_date": "0001-01-02"},
                  {"start_date": "9999-12-30", "end_date": "9999-12-31T00:00:00-12:00"}]:
        assert_error(await english(whistle, "GET", "requests", fmt, params=query), 400, "date")


async def test_a_malformed_multipart_post_is_a_400_without_a_traceback(whistle, caplog):
    caplog.set_level(logging.DEBUG)
    key = await new_key(whistle)
    before = await tickets_count(whistle)
    for fmt in FORMATS:
        for content_type, payload in [
                ("multipart/form-data; boundary=XyZ", b"--XyZ\r\nnot a header line\r\n\r\nx"),
                ("multipart/form-data; boundary=XyZ", b"garbage without any boundary"),
                ("multipart/form-data", b"--\r\n"),
                ("application/x-www-form-urlencoded", b"service_code=\xff\xfe&api_key=" +
                 key.encode())]:
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{base(whistle)}/requests.{fmt}", data=payload,
                                     headers={"Content-Type": content_type,
                                              "Accept-Language": "en"}) as r:
                    raw = await r.read()
                    answer = _answer(r, raw, fmt)
            assert_error(answer, 400, "body")
    assert await tickets_count(whistle) == before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], \
        [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def _answer(response, raw: bytes, fmt: str):
    from test_open311 import Answer
    return Answer(response.status, response.content_type, raw, fmt)


async def test_unmatched_paths_and_methods_answer_with_the_error_document(whistle):
    for path, fmt in [("nothing.json", "json"), ("nothing.xml", "xml"), ("nothing", "xml"),
                      ("requests/a/b.json", "json"), ("tokens/123.xml", "xml"), ("", "xml")]:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base(whistle)}/{path}") as r:
                answer = _answer(r, await r.read(), fmt)
        assert_error(answer, 404)
    for method, path in [("DELETE", "requests.json"), ("PUT", "services.json"),
                         ("POST", "services/garbage.json")]:
        async with aiohttp.ClientSession() as http:
            async with http.request(method, f"{base(whistle)}/{path}") as r:
                answer = _answer(r, await r.read(), "json")
                allow = r.headers.get("Allow", "")
        assert_error(answer, 405)
        assert "GET" in allow or "POST" in allow, allow


async def test_an_unexpected_failure_is_the_specs_400_general_service_error(whistle, caplog):
    await whistle.db.run(lambda s: s.execute(sql("ALTER TABLE ticket RENAME TO ticket_gone")))
    try:
        for fmt in FORMATS:
            answer = await english(whistle, "GET", "requests", fmt)
            assert_error(answer, 400, "General service error")
    finally:
        await whistle.db.run(lambda s: s.execute(sql("ALTER TABLE ticket_gone RENAME TO ticket")))
    assert any(r.levelno == logging.ERROR for r in caplog.records)  # what failed is logged


# ---- the spec's optional fields --------------------------------------------------------------

async def test_description_is_optional_as_in_the_spec(whistle, api):
    key = await new_key(whistle)
    fields = {k: v for k, v in GARBAGE.items() if k != "description"}
    number = await posted_number(whistle, key, **fields)
    ticket = await ticket_of(whistle, number)
    assert ticket.description == "" and ticket.state == "routed"
    [record] = (await call(whistle, "GET", f"requests/{number}")).data()
    assert record["description"] in ("", None)
    card = await api.wait_message(-100101, predicate=lambda m: number in body(m))
    assert "(no description)" in body(card) or "（无描述）" in body(card), body(card)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_malformed_phone_or_email_is_dropped_and_the_notice_says_so(whistle, fmt):
    key = await new_key(whistle)
    answer = await english(whistle, "POST", "requests", fmt, data={
        "api_key": key, **GARBAGE, "phone": "call me", "email": "not-an-address"})
    assert answer.status == 200, answer.text
    [created] = answer.data(ROOTS["requests"])
    notice = created["service_notice"]
    assert "phone" in notice and "email" in notice, notice
    ticket = await ticket_of(whistle, created["service_request_id"])
    assert ticket.contact_phone is None
    good = await english(whistle, "POST", "requests", fmt, data={
        "api_key": key, **GARBAGE, "phone": "+86 138 0013 8000", "email": "li@example.org"})
    [created] = good.data(ROOTS["requests"])
    assert "phone" not in created["service_notice"] and "email" not in created["service_notice"]


# ---- service discovery -----------------------------------------------------------------------

async def test_the_service_discovery_document(whistle):
    whistle.config.open311.contact = "市民服务热线 12345"
    whistle.config.open311.key_service = "Ask the district's command centre for a key."
    answers = {fmt: await call(whistle, "GET", "discovery", fmt) for fmt in FORMATS}
    document = answers["json"].data()
    assert list(document) == ["changeset", "contact", "key_service", "endpoints"]
    assert document["contact"] == "市民服务热线 12345"
    assert document["key_service"] == "Ask the district's command centre for a key."
    [endpoint] = document["endpoints"]
    assert list(endpoint) == ["specification", "url", "changeset", "type", "formats"]
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint["url"] == base(whistle) and endpoint["type"] == "production"
    assert endpoint["formats"] == ["text/xml", "application/json"]
    assert document["changeset"].endswith("+08:00") or document["changeset"].endswith("Z")
    xml = answers["xml"]
    assert xml.status == 200 and xml.content_type == "text/xml"
    assert "<discovery><changeset>" in xml.text
    assert "<formats><format>text/xml</format><format>application/json</format></formats>" \
        in xml.text
    # the endpoint it names answers
    async with aiohttp.ClientSession() as http:
        async with http.get(endpoint["url"] + "/services.json") as r:
            assert r.status == 200


# ---- abuse: a rate limit per key, the key in a header ------------------------------------------

async def test_each_key_has_a_rate_limit_with_a_429(whistle, clock):
    whistle.config.open311.posts_per_minute = 3
    key, other = await new_key(whistle), await new_key(whistle, "other-app")
    assert (await post(whistle, key, **GARBAGE)).status == 200
    assert (await post(whistle, key, **{**GARBAGE, "lat": "north"})).status == 400  # counts too
    assert (await post(whistle, key, **GARBAGE)).status == 200
    before = await tickets_count(whistle)
    for fmt in FORMATS:
        answer = await english(whistle, "POST", "requests", fmt, data={"api_key": key, **GARBAGE})
        assert_error(answer, 429, "3")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base(whistle)}/requests.json",
                             data={"api_key": key, **GARBAGE}) as r:
            assert r.status == 429 and 0 < int(r.headers["Retry-After"]) <= 60
    assert await tickets_count(whistle) == before
    assert (await post(whistle, other, **GARBAGE)).status == 200  # another key is not limited
    assert_error(await post(whistle, "w311_unknown", **GARBAGE), 403)  # unknown keys: 403
    clock.advance(minutes=1)
    assert (await post(whistle, key, **GARBAGE)).status == 200  # a new minute


async def test_the_key_in_a_header_and_never_in_the_log(whistle, caplog):
    caplog.set_level(logging.DEBUG)
    key = await new_key(whistle)
    for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
        answer = await call(whistle, "POST", "requests", data=GARBAGE, headers=headers)
        assert answer.status == 200, answer.text
    wrong = await call(whistle, "POST", "requests", data=GARBAGE, headers={"X-API-Key": "w311_x"})
    assert_error(wrong, 403)
    # in the query string it still works, and is never written to the log, even when the
    # request fails unexpectedly and is logged
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base(whistle)}/requests.json", params={"api_key": key},
                             data=GARBAGE) as r:
            assert r.status == 200
    await whistle.db.run(lambda s: s.execute(sql("ALTER TABLE ticket RENAME TO ticket_gone")))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base(whistle)}/requests.json", params={"api_key": key},
                                 data=GARBAGE) as r:
                assert r.status == 400
            async with http.get(f"{base(whistle)}/requests.json", params={"api_key": key}) as r:
                assert r.status == 400
    finally:
        await whistle.db.run(lambda s: s.execute(sql("ALTER TABLE ticket_gone RENAME TO ticket")))
    assert caplog.records and any("requests.json" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if key in r.getMessage() or key[5:20] in str(r.__dict__)]


# ---- the OpenAPI description matches the server ------------------------------------------------

async def test_the_openapi_document_matches_the_server(whistle):
    document = (await call(whistle, "GET", "openapi.json", fmt=None)).data()
    validate_openapi(document)
    paths = document["paths"]
    assert "/discovery.{format}" in paths
    new = document["components"]["schemas"]["NewRequest"]
    assert new["required"] == ["service_code"]  # the key may come in a header
    assert "description" not in new["required"]
    assert {tuple(option["required"]) for option in new["anyOf"]} == {
        ("lat", "long"), ("address_string",), ("address_id",)}
    assert {"not": {"required": ["lat"], "not": {"required": ["long"]}}} in new["allOf"]
    props = new["properties"]
    # a malformed phone or e-mail never refuses a report: no format that a client (or a
    # schema-driven tester) would take for a reason to refuse
    assert "left out" in props["email"]["description"] and "format" not in props["email"]
    assert "left out" in props["phone"]["description"] and "pattern" not in props["phone"]
    assert props["description"]["maxLength"] == whistle.config.open311.max_description
    post_op = paths["/requests.{format}"]["post"]
    assert set(post_op["requestBody"]["content"]) == {"application/x-www-form-urlencoded",
                                                      "multipart/form-data"}
    assert {p["name"] for p in post_op["parameters"] if p["in"] == "header"} >= {"X-API-Key"}
    assert set(post_op["responses"]) == {"200", "400", "403", "404", "405", "429"}
    for path, item in paths.items():
        for method, operation in item.items():
            assert {"200", "400", "404", "405"} <= set(operation["responses"]), (path, method)
            for status, response in operation["responses"].items():
                if status != "200":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema["items"] == {"$ref": "#/components/schemas/Error"}
    errors = document["components"]["schemas"]["Error"]
    assert list(errors["properties"]) == SPEC_ERROR
    query = {p["name"]: p for p in paths["/requests.{format}"]["get"]["parameters"]}
    assert [o["format"] for o in query["start_date"]["schema"]["anyOf"]] == ["date-time", "date"]
    assert "1970" in query["start_date"]["description"]
    years = re.compile(query["end_date"]["schema"]["anyOf"][0]["pattern"])
    assert years.match("1970-01-01T00:00:00Z") and years.match("9998-12-31")
    assert not years.match("1969-12-31") and not years.match("9999-01-01")
    assert not years.match("0001-01-01")
    status = re.compile(query["status"]["schema"]["pattern"])
    assert status.match("open") and status.match("Open, closed") and not status.match("pending")
