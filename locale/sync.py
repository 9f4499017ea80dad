"""Keep the catalogs in step with the code: extract texts, update zh_Hans and en,
and fill the English catalog (English is the source language, so msgstr = msgid).

Run: .venv/bin/python locale/sync.py   (``make catalogs``)"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from babel.messages.pofile import read_po, write_po

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent


# Python packages whose texts people see, and the dashboard's Jinja2 templates.
SOURCES = ("models", "bot", "handlers", "scheduler", "reports", "dashboard")
TEMPLATES = """
[extractors]
jinja2 = jinja2.ext:babel_extract

[jinja2: **/templates/**.html]
extensions = jinja2.ext.i18n
"""


def extract(pot: Path) -> None:
    """Every msgid of the code (``t._``, ``N_``, ``n_``) and of the templates (``_``,
    ``ngettext`` through ``jinja2.ext.i18n``) into ``pot``."""
    with tempfile.TemporaryDirectory() as folder:
        mapping = Path(folder) / "babel.cfg"
        mapping.write_text((ROOT / "babel.cfg").read_text(encoding="utf-8") + TEMPLATES,
                           encoding="utf-8")
        sources = [name for name in SOURCES if (ROOT / name).is_dir()]
        subprocess.run([BIN / "pybabel", "extract", "-F", mapping, "-k", "N_", "-k", "_",
                        "-k", "n_:1,2", "-o", pot, "--no-location", "--sort-output",
                        "--project", "Whistle", *sources], check=True, cwd=ROOT)


def main() -> None:
    pot = HERE / "whistle.pot"
    extract(pot)
    for locale in ("zh_Hans", "en"):
        po = HERE / locale / "LC_MESSAGES" / "whistle.po"
        action = "update" if po.exists() else "init"
        args = ["-i", pot, "-d", HERE, "-D", "whistle", "-l", locale]
        if action == "update":
            args += ["--no-fuzzy-matching", "--ignore-obsolete"]
        subprocess.run([BIN / "pybabel", action, *args], check=True, cwd=ROOT)
    english = HERE / "en" / "LC_MESSAGES" / "whistle.po"
    with english.open("rb") as fp:
        catalog = read_po(fp, locale="en")
    for message in catalog:
        if isinstance(message.id, (list, tuple)):
            if not all(message.string):
                message.string = tuple(message.id)
        elif message.id and not message.string:
            message.string = message.id
    with english.open("wb") as fp:
        write_po(fp, catalog, width=100)


if __name__ == "__main__":
    main()
