"""Every text a person sees is translated: the catalogs cover every text in the code,
both are complete, and translations keep the placeholders of their source."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from models.messages.i18n import I18n, normalise

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def catalog(locale):
    with (ROOT / "locale" / locale / "LC_MESSAGES" / "whistle.po").open("rb") as fp:
        return read_po(fp, locale=locale)


def strings(message) -> list[str]:
    return list(message.string) if isinstance(message.string, (list, tuple)) else [message.string]


@pytest.fixture(scope="module")
def extracted(tmp_path_factory) -> set:
    pot = tmp_path_factory.mktemp("pot") / "whistle.pot"
    pybabel = Path(sys.executable).parent / "pybabel"
    subprocess.run([pybabel, "-q", "extract", "-F", "babel.cfg", "-k", "N_", "-k", "_", "-k",
                    "n_:1,2", "-o", pot, "--no-location", "models", "bot", "handlers"],
                   cwd=ROOT, check=True)
    with pot.open("rb") as fp:
        return {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(fp) if m.id}


@pytest.mark.parametrize("locale", ["zh_Hans", "en"])
def test_catalog_covers_the_code(locale, extracted):
    ids = {m.id if isinstance(m.id, str) else m.id[0] for m in catalog(locale) if m.id}
    missing = sorted(extracted - ids)
    assert not missing, f"run `make catalogs`; not in the {locale} catalog: {missing[:10]}"


@pytest.mark.parametrize("locale", ["zh_Hans", "en"])
def test_catalog_is_complete(locale):
    empty = [m.id for m in catalog(locale) if m.id and not all(strings(m))]
    assert not empty, f"untranslated in {locale}: {empty[:10]}"


@pytest.mark.parametrize("locale", ["zh_Hans", "en"])
def test_placeholders_survive_translation(locale):
    for message in catalog(locale):
        if not message.id:
            continue
        source = message.id if isinstance(message.id, str) else message.id[0]
        for text in filter(None, strings(message)):  # empty ones: test_catalog_is_complete
            assert sorted(PLACEHOLDER.findall(text)) == sorted(PLACEHOLDER.findall(source)), source


def test_chinese_is_chinese_and_english_is_english():
    i18n = I18n()
    assert i18n.get("zh_Hans")._("Claim") == "接单"
    assert i18n.get("en")._("Claim") == "Claim"
    assert i18n.get(None)._("Claim") == "接单"  # the default locale is zh_Hans


@pytest.mark.parametrize("tag, expected", [("zh-hans", "zh_Hans"), ("zh-CN", "zh_Hans"),
                                           ("zh_TW", "zh_Hans"), ("en-GB", "en"), ("en", "en"),
                                           ("ru", None), (None, None), ("", None)])
def test_client_language_tags(tag, expected):
    assert normalise(tag) == expected
