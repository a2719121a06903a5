"""The alarm and output packages import only what their docstrings allow."""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
ALLOWED = {
    "app/alarms": ("app.model", "app.settings", "app.alarms", "firmware_bridge.clock"),
    "app/outputs": ("numpy", "scipy", "app.model", "app.settings", "app.alarms", "app.outputs",
                    "firmware_bridge.clock"),
}


def imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_stay_within_the_layer(package):
    allowed = ALLOWED[package]
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in imports(path):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            if path.name == "gpio_rpi.py" and name.startswith("RPi"):
                continue
            ok = any(name == a or name.startswith(a + ".") for a in allowed)
            assert ok, f"{path.relative_to(ROOT)} imports {name}"


def test_every_module_has_a_docstring_saying_what_it_owns_and_may_import():
    for package in ALLOWED:
        for path in sorted((ROOT / package).rglob("*.py")):
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
            assert doc, f"{path} has no docstring"
            if path.name != "__init__.py":
                assert "Owns" in doc and "May import" in doc, path
            else:
                assert "May import" in doc, path
