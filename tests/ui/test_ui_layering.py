"""What the UI package may import, and what may import Kivy (checked on the source)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "app" / "ui"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_nothing_outside_the_ui_imports_kivy():
    offenders = []
    for base in ("app", "firmware_bridge", "bench"):
        for path in (ROOT / base).rglob("*.py"):
            if UI in path.parents:
                continue
            if any(m == "kivy" or m.startswith("kivy.") for m in _imports(path)):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders


def test_the_ui_reaches_the_engine_only_through_the_api():
    stages = ("app.engine", "app.rules", "app.analysis", "app.alarms", "app.outputs", "app.record", "firmware_bridge")
    offenders = []
    for path in UI.rglob("*.py"):
        for m in _imports(path):
            if any(m == s or m.startswith(s + ".") for s in stages):
                offenders.append(f"{path.relative_to(ROOT)} imports {m}")
    assert not offenders


def test_modules_without_a_display_do_not_load_kivy():
    code = ("import sys, app.ui.link, app.ui.data, app.ui.present, app.ui.words, app.ui.forms, app.ui.faults, "
            "app.ui.display, app.ui.launch, app.ui.options, "
            "app.ui.cli, app.commands.run; print(sorted(m for m in sys.modules if m.split('.')[0] == 'kivy'))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_every_screen_is_a_py_and_kv_pair_loaded_relative_to_its_file():
    screens = [p for p in (UI / "screens").glob("*.py") if p.name != "__init__.py"]
    assert len(screens) >= 10
    for py in screens:
        assert py.with_suffix(".kv").exists(), py.name
        assert "load_kv(__file__)" in py.read_text(), py.name
    assert "os.path.dirname(__file__)" in (UI / "widgets.py").read_text()


def test_every_ui_module_says_what_it_owns_and_may_import():
    for py in UI.rglob("*.py"):
        doc = ast.get_docstring(ast.parse(py.read_text(encoding="utf-8"))) or ""
        assert doc, py
        if py.parent == UI or py.name == "__init__.py":
            assert "May import" in doc or "may import" in doc, py
