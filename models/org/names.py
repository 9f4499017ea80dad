"""The names people read for a category and a unit, in their language."""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import tree as org

if TYPE_CHECKING:
    from models.context import Core
    from models.messages.i18n import Translator
    from models.store.tables import Unit


def category_name(core: Core, code: str, t: Translator) -> str:
    category = core.config.category(code)
    if category is None:
        return code
    return category.name_en if t.is_en else category.name


def unit_name(unit: Unit | None, t: Translator) -> str:
    return "—" if unit is None else org.display_name(unit, t.locale)
