"""Importing the org file into a real SQLite database, and the tree helpers."""
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import func, select

from models.org import tree as org
from models.store.db import Database
from models.org.file import PersonSpec, RoleSpec, load_org_file
from models.org.routing import Router
from models.store.tables import Base, ChatBinding, Identity, Person, Role, Unit

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "district" / "district.toml"
NOW = datetime(2026, 11, 22, 8, 0, tzinfo=timezone.utc)


@pytest_asyncio.fixture
async def db(tmp_path):
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'whistle.db'}")
    async with database.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield database
    await database.dispose()


@pytest.fixture(scope="module")
def spec():
    return load_org_file(SAMPLE)


async def count(db: Database, table) -> int:
    return await db.run(lambda s: s.scalar(select(func.count()).select_from(table)))


async def unit_id(db: Database, code: str) -> int:
    return await db.run(lambda s: s.scalar(select(Unit.id).where(Unit.code == code)))


async def person_id(db: Database, code: str) -> int:
    return await db.run(lambda s: s.scalar(select(Person.id).where(Person.code == code)))


async def import_(db: Database, spec) -> org.ImportReport:
    return await db.run(lambda s: org.import_org(s, spec, NOW))


def with_person(spec, code: str, **changes):
    """The spec with one person changed (the geometries are kept)."""
    people = tuple(p.model_copy(update=changes) if p.code == code else p for p in spec.people)
    return spec.model_copy(update={"people": people})


@pytest.mark.asyncio
async def test_import_creates_everything(db, spec):
    report = await import_(db, spec)
    assert (report.units_created, report.people_created, report.roles_added, report.chats_created) == (21, 24, 24, 21)
    assert report.identities_created == 27  # 24 Telegram ids and 3 WeCom userids
    assert await count(db, Unit) == 21
    assert await count(db, Person) == 24
    assert await count(db, Identity) == 27
    assert await count(db, Role) == 24
    assert await count(db, ChatBinding) == 21
    created = await db.run(lambda s: s.scalar(select(Person.created_at).where(Person.code == "p-handong")))
    assert created == NOW


@pytest.mark.asyncio
async def test_hierarchy_helpers(db, spec):
    await import_(db, spec)
    g06, c1 = await unit_id(db, "g06"), await unit_id(db, "c1")

    async def check(s):
        assert [u.code for u in await org.ancestors(s, g06)] == ["g06", "c2", "s1", "demo"]
        assert [u.kind for u in await org.ancestors(s, g06)] == ["grid", "community", "street", "district"]
        assert [u.code for u in await org.children(s, c1)] == ["g01", "g02", "g03", "g04"]
        district = await org.unit_by_code(s, "demo")
        assert [u.code for u in await org.children(s, district.id, "department")] == ["d-cg", "d-hw", "d-sj", "d-zj"]
        assert [u.code for u in await org.children(s, district.id, "street")] == ["s1"]
        assert len(await org.units_of_kind(s, "grid")) == 12
        assert await org.unit_by_code(s, "nope") is None
        assert await org.ancestors(s, 999_999) == []

    await db.run(check)


@pytest.mark.asyncio
async def test_chat_helpers(db, spec):
    await import_(db, spec)
    g06 = await unit_id(db, "g06")

    async def check(s):
        assert (await org.unit_of_chat(s, "telegram", "-100106")).code == "g06"
        assert (await org.unit_of_chat(s, "telegram", -100500)).code == "demo"
        assert await org.unit_of_chat(s, "telegram", "-1") is None
        assert await org.unit_of_chat(s, "wecom", "-100106") is None
        assert [b.chat_id for b in await org.chats_of_unit(s, g06)] == ["-100106"]
        assert await org.chats_of_unit(s, g06, "wecom") == []

    await db.run(check)


@pytest.mark.asyncio
async def test_roles_and_authority(db, spec):
    await import_(db, spec)
    ids = {code: await unit_id(db, code) for code in ["g01", "g06", "c1", "c2", "d-cg"]}
    people = {code: await person_id(db, code) for code in
              ["p-yangli", "p-gaojianhua", "p-handong", "p-wangjianguo", "p-zhengguodong"]}

    async def check(s):
        assert [r.role for r in await org.roles_of(s, people["p-yangli"])] == ["grid_chief"]
        assert await org.has_role_at_or_above(s, people["p-yangli"], ids["g06"])
        assert not await org.has_role_at_or_above(s, people["p-yangli"], ids["g01"])
        assert not await org.has_role_at_or_above(s, people["p-yangli"], ids["c2"])  # not above the grid
        assert await org.has_role_at_or_above(s, people["p-gaojianhua"], ids["g06"])
        assert not await org.has_role_at_or_above(s, people["p-gaojianhua"], ids["g01"])
        assert await org.has_role_at_or_above(s, people["p-handong"], ids["g01"])
        assert await org.has_role_at_or_above(s, people["p-handong"], ids["d-cg"])
        assert await org.has_role_at_or_above(s, people["p-zhengguodong"], ids["d-cg"])
        assert not await org.has_role_at_or_above(s, people["p-zhengguodong"], ids["g01"])

    await db.run(check)


@pytest.mark.asyncio
async def test_display_name(db, spec):
    await import_(db, spec)
    g06 = await db.run(lambda s: org.unit_by_code(s, "g06"))
    assert org.display_name(g06, "en") == "Liuyin Grid 2"
    assert org.display_name(g06, "en-GB") == "Liuyin Grid 2"
    assert org.display_name(g06, "zh-hans") == "柳荫社区第二网格"
    assert org.display_name(g06, None) == "柳荫社区第二网格"
    g06.name_en = None
    assert org.display_name(g06, "en") == "柳荫社区第二网格"


@pytest.mark.asyncio
async def test_boundaries_are_geojson_that_routes(db, spec):
    await import_(db, spec)
    grids = await db.run(lambda s: org.units_of_kind(s, "grid"))
    assert json.loads(grids[0].boundary)["type"] == "Polygon"
    router = Router.from_units(grids)
    assert router.grid_count == 12
    assert router.locate(39.92960, 116.40520) == await unit_id(db, "g06")
    assert router.locate(39.93125, 116.40765) is None  # the lake


@pytest.mark.asyncio
async def test_second_import_changes_nothing(db, spec):
    await import_(db, spec)
    again = await import_(db, spec)
    assert again.changes == 0, str(again)
    assert str(again) == "no changes"
    assert await count(db, Unit) == 21 and await count(db, Role) == 24 and await count(db, Identity) == 27


@pytest.mark.asyncio
async def test_changed_roles_are_replaced(db, spec):
    await import_(db, spec)
    moved = with_person(spec, "p-yangli", roles=(RoleSpec(unit="g07", role="grid_worker"),
                                                  RoleSpec(unit="c2", role="community_secretary")))
    report = await import_(db, moved)
    assert (report.roles_added, report.roles_removed, report.changes) == (2, 1, 3)
    yang = await person_id(db, "p-yangli")
    held = await db.run(lambda s: org.roles_of(s, yang))
    assert sorted(r.role for r in held) == ["community_secretary", "grid_worker"]
    assert await count(db, Role) == 25


@pytest.mark.asyncio
async def test_renamed_unit_and_person_are_updated(db, spec):
    await import_(db, spec)
    renamed = spec.model_copy(update={"district": spec.district.model_copy(update={"name_en": "Showcase District"})})
    report = await import_(db, with_person(renamed, "p-handong", name="韩冬"))
    assert (report.units_updated, report.people_updated, report.changes) == (1, 1, 2)


@pytest.mark.asyncio
async def test_roles_outside_the_file_survive(db, spec):
    await import_(db, spec)
    g01 = await unit_id(db, "g01")

    async def grant_by_command(s):
        helper = Person(name="临时管理员", created_at=NOW)
        s.add(helper)
        await s.flush()
        s.add(Role(person_id=helper.id, unit_id=g01, role="admin"))

    await db.run(grant_by_command)
    assert (await import_(db, spec)).changes == 0
    assert await count(db, Role) == 25


@pytest.mark.asyncio
async def test_binding_made_by_command_survives(db, spec):
    await import_(db, spec)
    g01 = await unit_id(db, "g01")

    async def bind(s):
        s.add(ChatBinding(unit_id=g01, channel="telegram", chat_id="-100999"))

    await db.run(bind)
    assert (await import_(db, spec)).changes == 0
    assert (await db.run(lambda s: org.unit_of_chat(s, "telegram", "-100999"))).code == "g01"


@pytest.mark.asyncio
async def test_rebound_chat_is_updated(db, spec):
    await import_(db, spec)
    g01 = await unit_id(db, "g01")

    async def rebind(s):
        binding = await s.scalar(select(ChatBinding).where(ChatBinding.chat_id == "-100106"))
        binding.unit_id = g01

    await db.run(rebind)
    report = await import_(db, spec)
    assert (report.chats_updated, report.changes) == (1, 1)
    assert (await db.run(lambda s: org.unit_of_chat(s, "telegram", "-100106"))).code == "g06"


@pytest.mark.asyncio
async def test_unit_dropped_from_file_is_kept(db, spec):
    await import_(db, spec)
    fewer = spec.model_copy(update={"departments": spec.departments[:3],
                                    "chats": tuple(c for c in spec.chats if c.unit != "d-hw"),
                                    "people": tuple(p for p in spec.people if p.code != "p-xiechunmei")})
    assert (await import_(db, fewer)).changes == 0
    assert await unit_id(db, "d-hw") is not None


@pytest.mark.asyncio
async def test_resident_becomes_staff_member(db, spec):
    async def resident(s):
        person = Person(name="Yang", locale="en", created_at=NOW)
        s.add(person)
        await s.flush()
        s.add(Identity(person_id=person.id, channel="telegram", external_id="1006"))
        return person.id

    before = await db.run(resident)
    report = await import_(db, spec)
    assert report.people_created == 23 and report.people_updated == 1
    assert await person_id(db, "p-yangli") == before
    assert await count(db, Identity) == 27


@pytest.mark.asyncio
async def test_changed_telegram_id_replaces_the_old_one(db, spec):
    await import_(db, spec)
    report = await import_(db, with_person(spec, "p-yangli", telegram_id=1999))
    assert (report.identities_created, report.identities_removed) == (1, 1)
    yang = await person_id(db, "p-yangli")

    async def addresses(s):
        return list(await s.scalars(select(Identity.external_id).where(Identity.person_id == yang)))

    assert await db.run(addresses) == ["1999"]


@pytest.mark.asyncio
async def test_new_person_added(db, spec):
    await import_(db, spec)
    newcomer = PersonSpec(code="p-new", name="新人", telegram_id=1200,
                          roles=(RoleSpec(unit="g02", role="grid_worker"),))
    report = await import_(db, spec.model_copy(update={"people": (*spec.people, newcomer)}))
    assert (report.people_created, report.identities_created, report.roles_added, report.changes) == (1, 1, 1, 3)
