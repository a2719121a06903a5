"""The import contracts (``.importlinter``) let the engine's command handlers and rooms
name ``app.engine.core`` in their type annotations without counting it as a cycle. That is
true only while those imports stay under ``typing.TYPE_CHECKING``: this test reads the
source and fails on any import of ``app.engine.core`` they make at run time."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "app" / "engine"
TYPE_ONLY = sorted((ENGINE / "commands").glob("*.py")) + [ENGINE / "lifecycle.py", ENGINE / "views.py",
                                                          ENGINE / "inbox.py"]


def _runtime_imports_of_core(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            guarded.update(id(n) for child in node.body for n in ast.walk(child))
    lines = []
    for node in ast.walk(tree):
        names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                 else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        if any(n == "app.engine.core" or n.startswith("app.engine.core.") for n in names) and id(node) not in guarded:
            lines.append(node.lineno)
    return lines


def test_the_rooms_the_contracts_trust_import_the_monitor_for_types_only():
    assert len(TYPE_ONLY) >= 10  # the command modules are found
    found = {p.relative_to(ENGINE.parents[1]).as_posix(): lines for p in TYPE_ONLY
             if (lines := _runtime_imports_of_core(p))}
    assert not found, f"app.engine.core imported at run time (not under TYPE_CHECKING): {found}"


def test_the_check_sees_a_runtime_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from app.engine.core import Monitor\n"
                   "def f():\n    from app.engine.core import Monitor\n", encoding="utf-8")
    assert _runtime_imports_of_core(bad) == [5]
