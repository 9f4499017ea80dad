"""Texts people see, through gettext. Catalogs are the .po files in ``locale/``,
compiled in memory at start (Babel), so no generated .mo file is committed.

Code marks text with ``t._("…")`` (a translator for one locale) or ``N_("…")``
for text translated later; ``pybabel extract`` finds both."""
from __future__ import annotations

import gettext
import io
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

DOMAIN = "whistle"
LOCALES = ("zh_Hans", "en")
LOCALE_DIR = Path(__file__).resolve().parents[2] / "locale"


def N_(message: str) -> str:
    """Mark a text for extraction; it is translated where it is shown."""
    return message


class Translator:
    """Texts for one locale."""

    def __init__(self, locale: str, catalog: gettext.NullTranslations):
        self.locale = locale
        self._catalog = catalog

    def _(self, message: str, **params) -> str:
        text = self._catalog.gettext(message)
        return text.format(**params) if params else text

    def n_(self, singular: str, plural: str, n: int, **params) -> str:
        return self._catalog.ngettext(singular, plural, n).format(n=n, **params)

    @property
    def is_en(self) -> bool:
        return self.locale == "en"


class I18n:
    """All catalogs, loaded once."""

    def __init__(self, default_locale: str = "zh_Hans", locale_dir: Path = LOCALE_DIR):
        self.default = default_locale
        self._translators = {loc: Translator(loc, _load(locale_dir, loc)) for loc in LOCALES}

    def get(self, locale: str | None) -> Translator:
        return self._translators[locale if locale in self._translators else self.default]

    def labels(self, message: str) -> set[str]:
        """A text in every locale: a reply-keyboard button comes back as its label."""
        return {tr._(message) for tr in self._translators.values()}

    def pick(self, stored: str | None, language_code: str | None) -> str:
        """A person's locale: their /lang choice, else their client's language, else the default."""
        if stored in LOCALES:
            return stored
        return normalise(language_code) or self.default


def normalise(language_code: str | None) -> str | None:
    """Map a client's language tag (``zh-hans``, ``zh-CN``, ``en-GB``) to one of ours."""
    if not language_code:
        return None
    tag = language_code.lower().replace("_", "-")
    if tag.startswith("zh"):
        return "zh_Hans"
    if tag.startswith("en"):
        return "en"
    return None


def _load(locale_dir: Path, locale: str) -> gettext.NullTranslations:
    po_path = locale_dir / locale / "LC_MESSAGES" / f"{DOMAIN}.po"
    if not po_path.exists():
        return gettext.NullTranslations()
    with po_path.open("rb") as fp:
        catalog = read_po(fp, locale=locale)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)
