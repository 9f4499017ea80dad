"""Keep the catalogs in step with the code: extract texts, update zh_Hans and en,
and fill the English catalog (English is the source language, so msgstr = msgid).

Run: .venv/bin/python locale/sync.py   (``make catalogs``)"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from babel.messages.pofile import read_po, write_po

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent


def main() -> None:
    pot = HERE / "whistle.pot"
    subprocess.run([BIN / "pybabel", "extract", "-F", ROOT / "babel.cfg", "-k", "N_", "-k", "_",
                    "-k", "n_:1,2", "-o", pot, "--no-location", "--sort-output",
                    "--project", "Whistle", "models", "bot", "handlers"], check=True, cwd=ROOT)
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
