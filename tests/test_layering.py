"""The layering of the code, checked on its import graph (not on one file's text).

Import Linter (``[tool.importlinter]`` in pyproject.toml) builds the graph of every
import in the source, including those inside functions, and checks three contracts:
the core imports no channel library, web framework or outer layer; the top-level
packages form layers (sandbox → bot → handlers | dashboard | scheduler → reports →
models); and no two sibling packages or modules import each other, directly or round
a circle, at any depth. Imports under ``if TYPE_CHECKING:`` are annotations and are
left out of that graph; the second test forbids even those from the core upwards."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "handlers", "models", "dashboard", "reports", "scheduler", "sandbox")
ABOVE_THE_CORE = ("telegram", "aiohttp", "bot", "handlers", "dashboard", "reports", "scheduler",
                  "sandbox")


def test_the_import_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint), "--no-cache", str(ROOT / "pyproject.toml")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    report = done.stdout + done.stderr
    assert "3 kept, 0 broken" in report, report
    assert done.returncode == 0, report


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement in ``path`` names, type-only ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_the_core_does_not_even_name_the_layers_above_it():
    files = sorted((ROOT / "models").rglob("*.py"))
    assert len(files) > 40  # the whole core is read
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {name}"
             for path in files for line, name in _imports(path)
             if name.split(".")[0] in ABOVE_THE_CORE]
    assert wrong == []


def test_every_package_says_what_lives_there_and_what_it_may_import():
    inits = [path for top in PACKAGES for path in (ROOT / top).rglob("__init__.py")]
    folders = {path.parent for top in PACKAGES for path in (ROOT / top).rglob("*.py")}
    assert {init.parent for init in inits} == folders  # no folder of code without one
    silent = [str(init.relative_to(ROOT)) for init in inits
              if "May import" not in (ast.get_docstring(ast.parse(init.read_text())) or "")]
    assert silent == []
